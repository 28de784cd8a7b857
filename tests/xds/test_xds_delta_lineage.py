"""A Delta or SotW stream in step with a snapshot's parent diffs only the names the snapshot
says changed; what it sends must be exactly what comparing every name would send."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from zonemesh.envoy_types import ENDPOINT
from zonemesh.xds.cache import (
    Interned,
    ResourceInterner,
    Snapshot,
    changed_names,
    changed_types,
    compose,
)
from zonemesh.xds.protocol import DeltaSession, Outgoing, SotwSession

STEPS = 60


def cla(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    lb = message.endpoints.add().lb_endpoints.add()
    lb.endpoint.address.socket_address.address = "10.0.0.1"
    lb.endpoint.address.socket_address.port_value = port
    return message


def part(interner: ResourceInterner, clusters: dict[str, int]) -> Interned:
    interned = {n: interner.intern(ENDPOINT, n, cla(n, p)) for n, p in clusters.items()}
    return {ENDPOINT: (interned, sum(r.item_hash for r in interned.values()))}


def next_snapshots(
    interner: ResourceInterner, previous: list[Interned], base: Snapshot, clusters: dict[str, int]
) -> tuple[list[Interned], Snapshot, Snapshot, frozenset[str]]:
    """The pieces of `clusters`, the snapshot derived from `base` with its changed names, the
    same snapshot without them (what a full comparison sees), and the changed types."""
    current = [part(interner, clusters)]
    types = changed_types(previous, current)
    assert types is not None
    delta = changed_names(previous, current, types)
    derived = compose({}, current, base=base, types=types, delta=delta)
    return current, derived, dataclasses.replace(derived, parent=None, delta=None), types


def subscribe(names: list[str], nonce: str = "") -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT, resource_names_subscribe=names, response_nonce=nonce
    )


def sent(out: list[Outgoing]) -> list[tuple[list[tuple[str, str]], list[str]]]:
    result = []
    for o in out:
        response = discovery_pb2.DeltaDiscoveryResponse.FromString(o.payload)
        resources = [(r.name, r.version) for r in response.resources]
        result.append((resources, list(response.removed_resources)))
    return result


def ack(session: DeltaSession, out: list[Outgoing]) -> None:
    for o in out:
        session.on_request(
            discovery_pb2.DeltaDiscoveryRequest(type_url=o.type_url, response_nonce=o.nonce)
        )


def test_incremental_diff_sends_what_a_full_comparison_sends() -> None:
    rng = random.Random(11)
    interner = ResourceInterner()
    clusters = {f"svc-{i}": 80 for i in range(20)}
    previous = [part(interner, clusters)]
    snapshot = compose({}, previous)
    # Subscribed: every cluster, and two names that do not exist (yet).
    wanted = [*clusters, "svc-late", "svc-never"]
    incremental, full = DeltaSession(), DeltaSession()
    for session in (incremental, full):
        session.on_request(subscribe(wanted))
        session.set_snapshot(snapshot)
        out = session.pending()
        ack(session, out)
    used_delta = 0
    for step in range(STEPS):
        for name in rng.sample(sorted(clusters), 3):
            clusters[name] = rng.choice((80, 81, 82))  # often unchanged: no-op entries
        if step % 7 == 3:
            clusters.pop(rng.choice(sorted(clusters)))  # gone: the stream is told
        if step % 11 == 5:
            clusters["svc-late"] = 90  # a subscribed name appears
        current, derived, plain, types = next_snapshots(interner, previous, snapshot, clusters)
        incremental.set_snapshot(derived, types)
        full.set_snapshot(plain, types)
        if derived.derives_from(snapshot):
            used_delta += 1
        got, expected = incremental.pending(), full.pending()
        assert sent(got) == sent(expected), f"step {step}"
        ack(incremental, got)
        ack(full, expected)
        previous, snapshot = current, derived
    assert used_delta == STEPS


def test_a_subscription_change_compares_every_name_again() -> None:
    interner = ResourceInterner()
    first = [part(interner, {"a": 80, "b": 80})]
    base = compose({}, first)
    session = DeltaSession()
    session.on_request(subscribe(["a"]))
    session.set_snapshot(base)
    ack(session, session.pending())
    # "b" is subscribed after; the next snapshot's delta names only "a".
    session.on_request(subscribe(["b"], nonce="unrelated"))
    second = [part(interner, {"a": 81, "b": 80})]
    types = changed_types(first, second)
    assert types is not None
    derived = compose({}, second, base=base, types=types, delta=changed_names(first, second, types))
    assert derived.delta == {ENDPOINT: frozenset({"a"})}
    session.set_snapshot(derived, types)
    (response,) = sent(session.pending())
    assert sorted(name for name, _ in response[0]) == ["a", "b"]


def test_snapshots_hold_their_parent_weakly() -> None:
    interner = ResourceInterner()
    first = [part(interner, {"a": 80})]
    base: Snapshot | None = compose({}, first)
    second = [part(interner, {"a": 81})]
    types = changed_types(first, second)
    assert types is not None and base is not None
    derived = compose({}, second, base=base, types=types, delta=changed_names(first, second, types))
    assert derived.derives_from(base)
    base = None
    assert derived.parent is not None and derived.parent() is None  # no chain kept alive


def sotw_sent(out: list[Outgoing]) -> list[tuple[str, list[tuple[str, bytes]]]]:
    result = []
    for o in out:
        response = discovery_pb2.DiscoveryResponse.FromString(o.payload)
        cla_names = [
            (endpoint_pb2.ClusterLoadAssignment.FromString(r.value).cluster_name, r.value)
            for r in response.resources
        ]
        result.append((response.version_info, cla_names))
    return result


def test_sotw_incremental_diff_sends_what_a_full_comparison_sends() -> None:
    """SotW's named types (EDS) too: the same responses, versions included, with the names
    re-requested now and then (a subscription change compares everything again)."""
    rng = random.Random(5)
    interner = ResourceInterner()
    clusters = {f"svc-{i}": 80 for i in range(20)}
    previous = [part(interner, clusters)]
    snapshot = compose({}, previous)
    wanted = [*clusters, "svc-late"]
    incremental, full = SotwSession(), SotwSession()
    compared_all = {id(incremental): 0, id(full): 0}  # pushes that compared every name
    for session in (incremental, full):
        whole = session._desired

        def counted(type_url: str, ts: Any, whole: Any = whole, key: int = id(session)) -> Any:
            compared_all[key] += 1
            return whole(type_url, ts)

        session._desired = counted  # type: ignore[method-assign]
        session.on_request(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=wanted))
        session.set_snapshot(snapshot)
    used_delta = 0
    for step in range(STEPS):
        got, expected = incremental.pending(), full.pending()
        assert sotw_sent(got) == sotw_sent(expected), f"step {step}"
        for session, out in ((incremental, got), (full, expected)):
            for o in out:
                names = wanted if step % 9 != 4 else wanted[:-3]  # now and then fewer names
                session.on_request(
                    discovery_pb2.DiscoveryRequest(
                        type_url=ENDPOINT,
                        resource_names=names,
                        response_nonce=o.nonce,
                        version_info=o.version,
                    )
                )
        for name in rng.sample(sorted(clusters), 3):
            clusters[name] = rng.choice((80, 81, 82))
        if step % 11 == 5:
            clusters["svc-late"] = 90
        current, derived, plain, types = next_snapshots(interner, previous, snapshot, clusters)
        incremental.set_snapshot(derived, types)
        full.set_snapshot(plain, types)
        if derived.derives_from(snapshot):
            used_delta += 1
        previous, snapshot = current, derived
    assert used_delta == STEPS
    # The in-step pushes skipped the full comparison; the re-requests did not.
    assert 0 < compared_all[id(incremental)] < compared_all[id(full)] // 2, compared_all
