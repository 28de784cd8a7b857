"""The memo of validated outbound lists: a list seen before is not validated again, and the
outcome (the models, every error message) is what a full validation gives."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.errors import ValidationError
from zonemesh.resources.types.dataplane import OutboundListMemo


def outbounds(count: int = 4) -> list[dict[str, Any]]:
    return [
        {
            "port": 20000 + k,
            "address": "127.0.0.1",
            "backendRef": {"kind": "MeshService", "name": f"svc-{k}", "port": 8080},
        }
        for k in range(count)
    ]


def sidecar(name: str, outbound: list[dict[str, Any]], **networking: Any) -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": name,
        "networking": {
            "address": "127.0.1.11",
            "inbound": [{"port": 21000, "servicePort": 8080, "tags": {"kuma.io/service": "c"}}],
            "outbound": copy.deepcopy(outbound),
            **networking,
        },
    }


def refusal(doc: dict[str, Any], memo: OutboundListMemo | None) -> str:
    with pytest.raises(ValidationError) as e:
        resource_from_wire(doc, context=memo.context() if memo is not None else None)
    return str(e.value)


def test_a_second_dataplane_with_the_same_list_gets_the_validated_outbounds() -> None:
    memo = OutboundListMemo()
    first = resource_from_wire(sidecar("dp-1", outbounds()), context=memo.context())
    second = resource_from_wire(sidecar("dp-2", outbounds()), context=memo.context())
    assert (memo.misses, memo.hits, len(memo)) == (1, 1, 1)
    got, want = first.spec.networking.outbound, second.spec.networking.outbound
    assert all(a is b for a, b in zip(got, want, strict=True))  # validated once, shared
    # What a validation without the memo gives, to the last default.
    assert second.spec == resource_from_wire(sidecar("dp-2", outbounds())).spec


def test_equal_content_hits_however_its_objects_are_shared() -> None:
    memo = OutboundListMemo()
    doc = sidecar("dp-1", outbounds())
    resource_from_wire(doc, context=memo.context())
    # Its strings are now held by the models too, and a copy shares them: still a hit.
    resource_from_wire(doc, context=memo.context())
    resource_from_wire(copy.deepcopy(doc), context=memo.context())
    assert (memo.misses, memo.hits) == (1, 2)


BAD_LISTS = [
    (  # a type error (pydantic)
        [{"port": "20000", "backendRef": {"kind": "MeshService", "name": "a", "port": 80}}],
        "networking.outbound[0].port: must be an integer",
    ),
    (  # an outbound's own check
        [{"port": 20000, "backendRef": {"kind": "Service", "name": "a", "port": 80}}],
        "networking.outbound[0].backendRef.kind: must be one of: MeshService, "
        "MeshMultiZoneService, MeshExternalService",
    ),
    (  # two outbounds on one port
        [*outbounds(2), {**outbounds(1)[0]}],
        "networking.outbound[2].port: port collides with outbound[0]",
    ),
]


@pytest.mark.parametrize(("bad", "expected"), BAD_LISTS)
def test_a_bad_list_is_refused_in_the_same_words_every_time(
    bad: list[dict[str, Any]], expected: str
) -> None:
    memo = OutboundListMemo()
    # Another error outside the list too: both reported, in the usual order.
    doc = sidecar("dp-1", bad, address="not an address")
    without = refusal(doc, None)
    assert expected in without
    assert refusal(doc, memo) == without
    assert refusal(sidecar("dp-2", bad, address="not an address"), memo) == without
    assert memo.hits == 0 and len(memo) == 0  # never kept


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"port": 70000}, "networking.outbound[3].port: must be in inclusive range [1, 65535]"),
        ({"port": 20003.0}, "networking.outbound[3].port: must be an integer"),
        ({"address": "localhost"}, "networking.outbound[3].address: must be a valid IP address"),
        ({"port": 20001}, "networking.outbound[3].port: port collides with outbound[1]"),
    ],
)
def test_a_list_one_field_off_a_kept_one_is_validated_in_full(
    change: dict[str, Any], expected: str
) -> None:
    memo = OutboundListMemo()
    resource_from_wire(sidecar("dp-1", outbounds()), context=memo.context())
    changed = outbounds()
    changed[3].update(change)
    assert refusal(sidecar("dp-2", changed), memo) == expected
    assert memo.hits == 0


def test_ref_name_one_character_off_is_checked() -> None:
    memo = OutboundListMemo()
    resource_from_wire(sidecar("dp-1", outbounds()), context=memo.context())
    changed = outbounds()
    changed[2]["backendRef"]["name"] = "Svc-2"
    assert refusal(sidecar("dp-2", changed), memo).startswith(
        "networking.outbound[2].backendRef.name: invalid name"
    )


def test_checks_that_involve_the_rest_of_the_dataplane_run_on_a_kept_list() -> None:
    memo = OutboundListMemo()
    resource_from_wire(sidecar("dp-1", outbounds()), context=memo.context())
    redirect = {
        "transparentProxying": {"redirectPortInbound": 15006, "redirectPortOutbound": 20001}
    }
    assert refusal(sidecar("dp-2", outbounds(), **redirect), memo) == (
        "networking.transparentProxying.redirectPortOutbound: port 20001 collides with outbound[1]"
    )
    gateway = sidecar("gw", outbounds())
    gateway["networking"]["inbound"] = []
    gateway["networking"]["gateway"] = {"type": "BUILTIN", "tags": {"kuma.io/service": "gw"}}
    assert refusal(gateway, memo) == (
        "networking.outbound: outbound cannot be defined for builtin gateways"
    )
    no_inbound = sidecar("dp-3", outbounds())
    no_inbound["networking"]["inbound"] = []
    assert refusal(no_inbound, memo) == (
        "networking: has to contain at least one inbound interface or gateway"
    )
    assert memo.hits == 3  # the list itself was not validated again


def test_the_memo_is_bounded_and_can_be_off() -> None:
    memo = OutboundListMemo(max_lists=2)
    lists = [outbounds(n) for n in (1, 2, 3)]
    for n, listed in enumerate(lists):
        resource_from_wire(sidecar(f"dp-{n}", listed), context=memo.context())
    assert len(memo) == 2
    resource_from_wire(sidecar("again", lists[0]), context=memo.context())  # evicted first
    assert (memo.hits, memo.misses) == (0, 4)
    by_count = OutboundListMemo(max_outbounds=3)
    for n, listed in enumerate(lists):
        resource_from_wire(sidecar(f"dp-{n}", listed), context=by_count.context())
    assert len(by_count) == 1  # the list of 3 alone fits
    off = OutboundListMemo(max_lists=0)
    for name in ("dp-1", "dp-2"):
        resource_from_wire(sidecar(name, outbounds()), context=off.context())
    assert (off.hits, off.misses, len(off)) == (0, 0, 0)
