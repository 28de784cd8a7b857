"""What a builtin gateway's Envoy gets in the cases goldens do not show: which MeshGateway
binds, and what is left out (with the reason logged) so that the rest stays valid."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from gateway.gateway_topologies import (
    ECHO_ROUTE,
    gateway_dataplane,
    https_listener,
    listener,
    mesh_gateway,
    resource,
    serving_pems,
    tls_secret,
)
from support.processes import ZONEMESH
from translate.translate_topologies import Topology, build

from zonemesh.envoy_types import LISTENER, SECRET
from zonemesh.resources.base import Resource
from zonemesh.translate.default import default_generator
from zonemesh.translate.generator import ProxyResources


def generate(*docs: dict | Resource, dataplane: dict | None = None) -> ProxyResources:
    base = build("t", local_instances=1, remote={"zone-2": 1})
    gateway = resource(dataplane or gateway_dataplane())
    extra = [d if isinstance(d, Resource) else resource(d) for d in docs]
    topology = Topology("t", [*base.resources, gateway, *extra], {"gateway": gateway.key})
    state = topology.state()
    return default_generator().generate(state, topology.proxy("gateway", state))


def listeners(resources: ProxyResources) -> set[str]:
    return set(resources.of_type(LISTENER))


def at(doc: dict, when: datetime) -> Resource:
    return dataclasses.replace(resource(doc), creation_time=when)


def test_the_best_selector_binds_and_the_other_gateway_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broad = mesh_gateway("broad", [listener(8080)])
    narrow = mesh_gateway("narrow", [listener(9090)])
    narrow["selectors"] = [{"match": {"kuma.io/service": "edge-gateway", "zone": "z1"}}]
    dataplane = gateway_dataplane()
    dataplane["networking"]["gateway"]["tags"]["zone"] = "z1"
    with caplog.at_level(logging.WARNING, "zonemesh.translate"):
        out = generate(broad, narrow, ECHO_ROUTE, dataplane=dataplane)
    assert listeners(out) == {"narrow:HTTP:9090"}
    assert "MeshGateway broad selects it too; it serves narrow only" in caplog.text


def test_on_a_tie_the_newest_gateway_binds() -> None:
    old = at(mesh_gateway("old", [listener(8080)]), datetime(2025, 1, 1, tzinfo=UTC))
    new = at(mesh_gateway("new", [listener(9090)]), datetime(2025, 6, 1, tzinfo=UTC))
    assert listeners(generate(old, new)) == {"new:HTTP:9090"}


def test_no_gateway_selecting_the_dataplane_means_no_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = mesh_gateway()
    other["selectors"] = [{"match": {"kuma.io/service": "someone-else"}}]
    with caplog.at_level(logging.WARNING, "zonemesh.translate"):
        out = generate(other)
    assert len(out) == 0
    assert "builtin gateway selected by no MeshGateway" in caplog.text


def test_a_listener_on_the_admin_port_is_left_out_at_translation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Dataplane registered over xDS is not checked on write: translation leaves it out."""
    with caplog.at_level(logging.WARNING, "zonemesh.translate"):
        out = generate(
            mesh_gateway(listeners=[listener(9901), listener(8080)]),
            dataplane=gateway_dataplane(address="127.0.0.1"),
        )
    assert listeners(out) == {"edge-gateway:HTTP:8080"}
    assert 'port 9901 is the Envoy admin port of Dataplane "edge-gateway-1"' in caplog.text


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("ca", "is a CA certificate; a gateway serves a leaf certificate"),
        ("mismatch", "the private key does not match the certificate"),
        ("garbage", "expected one PEM private key and at least one PEM certificate"),
    ],
)
def test_an_unusable_certificate_leaves_its_https_listener_out(
    caplog: pytest.LogCaptureFixture, case: str, expected: str
) -> None:
    cert, key = serving_pems("example.com", ca=case == "ca")
    if case == "mismatch":
        key = serving_pems("example.com")[1]
    if case == "garbage":
        cert, key = b"not a pem", b""
    gateway = mesh_gateway(listeners=[listener(8080), https_listener(8443, "gw-cert")])
    with caplog.at_level(logging.WARNING, "zonemesh.translate"):
        out = generate(gateway, tls_secret("gw-cert", cert, key), ECHO_ROUTE)
    assert listeners(out) == {"edge-gateway:HTTP:8080"}
    assert not out.of_type(SECRET)
    assert expected in caplog.text


def test_a_delegated_gateway_keeps_its_hand_written_outbound() -> None:
    dataplane = gateway_dataplane("delegated")
    dataplane["networking"]["gateway"]["type"] = "DELEGATED"
    dataplane["networking"]["outbound"] = [
        {
            "address": "127.0.1.80",
            "port": 10001,
            "backendRef": {"kind": "MeshMultiZoneService", "name": "echo", "port": 1027},
        }
    ]
    out = generate(mesh_gateway(), ECHO_ROUTE, dataplane=dataplane)
    assert listeners(out) == {"outbound:127.0.1.80:10001"}


def test_dp_bootstrap_names_the_gateway_service_as_envoys_cluster(tmp_path: Path) -> None:
    file = tmp_path / "gateway.yaml"
    file.write_text(yaml.safe_dump(gateway_dataplane()))
    args = ["dp", "bootstrap", "--cp-address", "grpc://127.0.0.1:5678"]
    result = subprocess.run(
        [ZONEMESH, *args, "--dataplane-file", str(file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    node = json.loads(result.stdout)["node"]
    assert node["cluster"] == "edge-gateway"
    assert node["id"] == "default.edge-gateway-1"
