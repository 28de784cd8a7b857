"""One home per domain rule: computed state and translation ask the same function, so they
cannot disagree about what an MMZS selects, which proxy is healthy, or what an inbound's state
means. Each rule is checked two ways: both readers give the same answers on cases that tell the
rule apart, and no second definition of it is left in the source (found with `ast`).
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest
from translate_topologies import LOCAL_ZONE, MESH, Topology, mesh_service

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.types.dataplane import InboundState, InboundStateName
from zonemesh.runtime.health import InstanceHealth
from zonemesh.state.mmzs_status import match_mesh_services
from zonemesh.translate.endpoints import matched_mesh_services
from zonemesh.translate.state import HealthSnapshot

ROOT = Path(__file__).resolve().parents[2] / "zonemesh"


def definitions(name: str) -> list[str]:
    """Modules under zonemesh/ defining a function `name` (at any depth)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                found.append(str(path.relative_to(ROOT.parent)))
    return found


def string_literals(value: str) -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == value:
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    return found


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("is_local", "zonemesh/resources/ownership.py"),
        ("is_synced", "zonemesh/resources/ownership.py"),
        ("display_name", "zonemesh/resources/ownership.py"),
        ("zone_of", "zonemesh/resources/ownership.py"),
        ("selects_mesh_service", "zonemesh/resources/types/mmzs.py"),
    ],
)
def test_a_rule_is_defined_once(name: str, home: str) -> None:
    assert definitions(name) == [home]


def test_the_health_rule_is_defined_once() -> None:
    """`InstanceHealth.is_healthy` and `MeshState.is_healthy` both delegate to the function."""
    sources = {
        p: p.read_text() for p in (ROOT / "runtime" / "health.py", ROOT / "translate" / "state.py")
    }
    for path, text in sources.items():
        assert "not_ready_inbounds" not in _method_body(text, "is_healthy"), path


def _method_body(text: str, name: str) -> str:
    bodies = [
        ast.unparse(node)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef)
        and node.name == name
        and node.args.args[0].arg == "self"
    ]
    assert bodies, f"no method {name}"
    return "\n".join(bodies)


@pytest.mark.parametrize("word", ["NotReady", "Ignored"])
def test_inbound_state_words_are_spelled_once(word: str) -> None:
    """In the enum, and in the Literal the model validates with (nowhere else)."""
    assert [where.split(":")[0] for where in string_literals(word)] == [
        "zonemesh/resources/types/dataplane.py"
    ] * 2


def test_the_inbound_state_enum_is_what_the_model_accepts() -> None:
    assert set(typing.get_args(InboundStateName)) == {s.value for s in InboundState}


def _ms(name: str, zone: str, **labels: str) -> Resource:
    base = mesh_service(name, zone, [(1027, 21027, "http")])
    return base.with_(labels={**base.labels, **labels})


def selecting(name: str, match_labels: dict[str, str]) -> Resource:
    return resource_from_wire(
        {
            "type": "MeshMultiZoneService",
            "mesh": MESH,
            "name": name,
            "labels": {"kuma.io/origin": "global"},
            "spec": {
                "selector": {"meshService": {"matchLabels": match_labels}},
                "ports": [{"port": 80, "appProtocol": "http"}],
            },
        }
    )


def test_state_and_translation_select_the_same_mesh_services_for_an_mmzs() -> None:
    """The status global shows (`status.meshServices`) and the clusters a sidecar gets come
    from the same selection: local and synced, several labels, other meshes excluded."""
    other_mesh = resource_from_wire(
        {
            "type": "MeshService",
            "mesh": "other",
            "name": "echo",
            "labels": {"kuma.io/display-name": "echo"},
            "spec": {
                "selector": {"dataplaneTags": {"kuma.io/service": "echo"}},
                "ports": [{"port": 1027, "targetPort": 21027, "appProtocol": "http"}],
            },
        }
    )
    services = [
        _ms("echo", LOCAL_ZONE, tier="web"),
        _ms("echo", "zone-2", tier="web"),
        _ms("echo", "zone-3"),  # lacks tier
        _ms("other", LOCAL_ZONE, tier="web"),
        other_mesh,
    ]
    selectors = [
        selecting("by-name", {"kuma.io/display-name": "echo"}),
        selecting("two-labels", {"kuma.io/display-name": "echo", "tier": "web"}),
        selecting("nothing", {"kuma.io/display-name": "absent"}),
    ]
    state = Topology("t", [*services, *selectors]).state()
    by_state = match_mesh_services(selectors, services, LOCAL_ZONE)
    for selector in selectors:
        translated = sorted(
            (ms.labels.get("kuma.io/zone", ""), ms.mesh, ms.name)
            for ms in matched_mesh_services(state, selector)
        )
        from_state = sorted((m.zone, m.mesh, m.name) for m in by_state[selector.key])
        # state reports display names, translation holds the stored copies
        assert [(z, m) for z, m, _ in translated] == [(z, m) for z, m, _ in from_state]
    assert [m.zone for m in by_state[selectors[0].key]] == [LOCAL_ZONE, "zone-2", "zone-3"]
    assert [m.zone for m in by_state[selectors[1].key]] == [LOCAL_ZONE, "zone-2"]
    assert by_state[selectors[2].key] == []
    assert all(m.mesh == MESH for ms in by_state.values() for m in ms)


def test_live_and_frozen_health_give_the_same_answers() -> None:
    key = ResourceKey("Dataplane", MESH, "web-1")
    # (connected, inbound ports reported down): readiness is "no inbound down"
    cases = [(False, ()), (True, ()), (True, (8080,)), (False, (8080,))]
    for connected, down in cases:
        live = InstanceHealth()
        live.set_connected(key, connected)
        live.set_readiness(key, down)
        frozen = Topology("t", [], health={key: HealthSnapshot(connected, not down, down)}).state()
        for port in (None, 8080, 9090):
            assert live.is_healthy(key, port) == frozen.is_healthy(key, port), (
                connected,
                down,
                port,
            )
    unknown = ResourceKey("Dataplane", MESH, "applied-through-the-api")
    assert InstanceHealth().is_healthy(unknown) and Topology("t", []).state().is_healthy(unknown)
