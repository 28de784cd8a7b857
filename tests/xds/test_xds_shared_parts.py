"""Fan-out sharing: shared parts of `ProxyResources`, interned once and referenced by snapshots."""

from __future__ import annotations

import pytest
from support.simple_generator import _eds_cluster

from zonemesh.envoy_types import CLUSTER, ENDPOINT
from zonemesh.translate.generator import GenerationError, ProxyResources
from zonemesh.xds.cache import ResourceInterner, item_hash, versions_hash


def _part(*names: str) -> ProxyResources:
    part = ProxyResources()
    for name in names:
        part.add(_eds_cluster(name))
    return part


def test_a_part_is_seen_as_the_proxy_own_resources() -> None:
    part = _part("a_80", "b_80")
    res = ProxyResources()
    res.add(_eds_cluster("local_80"))
    res.include(part)
    assert sorted(res.of_type(CLUSTER)) == ["a_80", "b_80", "local_80"]
    assert list(res.types()) == [CLUSTER]
    assert len(res) == 3
    merged = ProxyResources()
    merged.merge(res)
    assert sorted(merged.of_type(CLUSTER)) == ["a_80", "b_80", "local_80"]
    assert merged.parts() == [part]


def test_a_name_clash_with_a_part_is_an_error() -> None:
    res = ProxyResources()
    res.include(_part("a_80"))
    with pytest.raises(GenerationError, match="a_80"):
        res.add(_eds_cluster("a_80"))
    with pytest.raises(GenerationError, match="a_80"):
        res.include(_part("a_80"))
    other = ProxyResources()
    other.add(_eds_cluster("a_80"))
    with pytest.raises(GenerationError, match="a_80"):
        res.merge(other)


def test_snapshots_share_a_part_and_version_it_like_a_flat_copy() -> None:
    interner = ResourceInterner()
    part = _part("a_80", "b_80")
    one, two = ProxyResources(), ProxyResources()
    one.include(part)
    two.include(part)
    s1, s2 = interner.snapshot(one), interner.snapshot(two)
    assert s1.of_type(CLUSTER) is s2.of_type(CLUSTER)  # one dict for every proxy
    flat = ProxyResources()
    flat.add(_eds_cluster("a_80"))
    flat.add(_eds_cluster("b_80"))
    s3 = interner.snapshot(flat)
    assert s3.versions == s1.versions
    assert s1.changed_types(s3) == frozenset()
    # With a resource of its own, the proxy gets its own dict; the part's is untouched.
    three = ProxyResources()
    three.include(part)
    three.add(_eds_cluster("c_80"))
    s4 = interner.snapshot(three)
    assert sorted(s4.of_type(CLUSTER)) == ["a_80", "b_80", "c_80"]
    assert sorted(s1.of_type(CLUSTER)) == ["a_80", "b_80"]
    assert s4.changed_types(s1) == frozenset({CLUSTER})


def test_versions_do_not_depend_on_order_and_see_every_pair() -> None:
    pairs = [("a", "1"), ("b", "2"), ("c", "3")]
    assert versions_hash(pairs) == versions_hash(reversed(pairs))
    assert versions_hash(pairs) != versions_hash(pairs[:2])
    assert versions_hash([("a", "1")]) != versions_hash([("a", "2")])
    assert item_hash("a", "1") != item_hash("a1", "")


def test_a_message_reused_by_the_next_state_is_not_encoded_again() -> None:
    interner = ResourceInterner()
    cluster = _eds_cluster("a_80")
    res = ProxyResources()
    res.add(cluster)
    interner.snapshot(res)
    before = interner.serializations
    interner.new_round()  # a new state that reuses the same message object
    interner.snapshot(res)
    assert interner.serializations == before
    assert ENDPOINT not in interner.snapshot(res).versions
