"""Hostile `dataplane.resource` node metadata on a real ADS stream: INVALID_ARGUMENT naming the
problem, nothing registered, and the server keeps serving everyone else.

Before documents were bounded, `[` x 100 000 in the metadata raised RecursionError inside the
stream handler (gRPC UNKNOWN), and a non-ASCII `kuma.io/service` was registered, then failed
certificate issuance on every pass.
"""

from __future__ import annotations

import grpc
import pytest
from test_xds_harness import dataplane_doc, node, running_xds, sotw

from zonemesh.envoy_types import CLUSTER
from zonemesh.resources.base import ResourceKey


def alias_bomb_yaml() -> str:
    """A Dataplane whose `transparentProxying` expands to ten million nodes (under 400 bytes)."""
    lines = [
        "type: Dataplane",
        "networking:",
        "  address: 127.0.1.9",
        "  inbound: [{port: 20080, servicePort: 8080, tags: {kuma.io/service: evil}}]",
        "  transparentProxying:",
        "    l0: &l0 [" + ", ".join(["x"] * 10) + "]",
    ]
    for level in range(1, 7):
        lines.append(f"    l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("[" * 100_000, "dataplane.resource: document nested deeper than 64 levels"),
        (
            alias_bomb_yaml(),
            "dataplane.resource: YAML aliases expand to more than 100000 nodes",
        ),
    ],
    ids=["deep", "alias-bomb"],
)
async def test_hostile_metadata_documents_are_invalid_argument(
    resource: str, expected: str
) -> None:
    async with running_xds() as h:
        bad = h.client()
        bad.send(sotw(CLUSTER, node_=node("default.evil", resource=resource)))
        code, details = await bad.status()
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert expected in details
        assert await h.store.find(ResourceKey("Dataplane", "default", "evil")) is None
        # The server still serves others.
        _, cds = await h.connect_sotw("dp-1")
        assert cds.resources


@pytest.mark.parametrize(
    ("service", "reason"),
    [
        ("p\u0430yments", "service name must be"),  # a Cyrillic a
        ("echo\nmore", "service name must not contain control characters"),
        ("x/../y:z", "service name must be"),
    ],
    ids=["non-ascii", "newline", "path"],
)
async def test_service_names_that_cannot_be_an_identity_are_not_registered(
    service: str, reason: str
) -> None:
    async with running_xds() as h:
        doc = dataplane_doc("evil")
        doc["networking"]["inbound"][0]["tags"]["kuma.io/service"] = service
        bad = h.client()
        bad.send(sotw(CLUSTER, node_=node("default.evil", resource=doc)))
        code, details = await bad.status()
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert f'networking.inbound[0].tags["kuma.io/service"]: {reason}' in details
        assert await h.store.find(ResourceKey("Dataplane", "default", "evil")) is None


async def test_port_as_a_string_in_metadata_is_refused() -> None:
    async with running_xds() as h:
        doc = dataplane_doc("evil")
        doc["networking"]["inbound"][0]["port"] = "20080"
        bad = h.client()
        bad.send(sotw(CLUSTER, node_=node("default.evil", resource=doc)))
        code, details = await bad.status()
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert "networking.inbound[0].port: must be an integer" in details
        assert await h.store.find(ResourceKey("Dataplane", "default", "evil")) is None
