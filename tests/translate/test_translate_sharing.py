"""Proxies with the same outbounds share one generated result; what differs stays per proxy."""

from __future__ import annotations

import logging

import pytest
from translate_topologies import build, dataplane, inbound, mmzs_outbound, ms_outbound

from zonemesh.envoy_types import CLUSTER, LISTENER
from zonemesh.translate import names
from zonemesh.translate.default import default_generator

GENERATOR = default_generator()
OUTBOUNDS = [mmzs_outbound("echo", 1027, 11027), ms_outbound("ghost", 80, 11002)]


def test_same_outbounds_share_messages_but_not_collisions_or_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topology = build("t", local_instances=1)
    proxies = {
        "a": dataplane("a", "127.0.1.20", [inbound("a", 20080, 8080)], OUTBOUNDS),
        "b": dataplane("b", "127.0.1.21", [inbound("b", 20080, 8080)], OUTBOUNDS),
        # An inbound on an outbound's port and a wildcard address: that outbound is skipped.
        "c": dataplane(
            "c", "127.0.1.22", [{**inbound("c", 11027, 8080), "address": "0.0.0.0"}], OUTBOUNDS
        ),
    }
    for role, resource in proxies.items():
        topology.resources.append(resource)
        topology.proxies[role] = resource.key
    state = topology.state()
    with caplog.at_level(logging.WARNING, logger="zonemesh.translate"):
        out = {role: GENERATOR.generate(state, topology.proxy(role, state)) for role in proxies}
    listener = "outbound:127.0.0.1:11027"
    assert out["a"].of_type(LISTENER)[listener] is out["b"].of_type(LISTENER)[listener]
    assert listener not in out["c"].of_type(LISTENER)
    echo = names.mmzs_cluster("default", "echo", 1027)
    assert out["a"].of_type(CLUSTER)[echo] is out["b"].of_type(CLUSTER)[echo]
    for role in proxies:  # every proxy's own warning, with its own key
        assert f"Dataplane/default/{role}: outbound[1] skipped" in caplog.text
    assert "Dataplane/default/c: outbound[0] 127.0.0.1:11027 collides" in caplog.text
