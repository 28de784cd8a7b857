"""VIP allocation: from the configured CIDRs, stable, never reused until the range wraps."""

from __future__ import annotations

import pytest
from state_helpers import (
    dataplane,
    dp_key,
    eventually,
    make_runtime,
    mmzs,
    mmzs_key,
    ms_key,
    put,
    wire_status,
)

from zonemesh.store.memory import MemoryStore


async def vip_of(rt, key) -> str:
    async def check():
        status = wire_status(await rt.store.find(key))
        assert status["vips"], status
        return status["vips"][0]["ip"]

    return await eventually(check)


async def test_vips_come_from_the_cidrs_and_stay(start_state):
    rt = make_runtime()
    state = await start_state(rt)
    await put(rt, dataplane("echo-a"))
    await put(rt, mmzs("echo", {"kuma.io/display-name": "echo"}))
    ms_vip = await vip_of(rt, ms_key("echo"))
    mmzs_vip = await vip_of(rt, mmzs_key("echo"))
    assert ms_vip.startswith("241.") and ms_vip != "241.0.0.0"
    assert mmzs_vip.startswith("243.") and mmzs_vip != "243.0.0.0"

    # Unrelated changes and health flips recompute everything; the VIPs stay.
    await put(rt, dataplane("echo-b", address="127.0.1.12"))
    rt.health.set_connected(dp_key("echo-a"), True)
    await put(rt, dataplane("other", "other"))
    await vip_of(rt, ms_key("other"))
    await state.recompute()
    assert await vip_of(rt, ms_key("echo")) == ms_vip
    assert await vip_of(rt, mmzs_key("echo")) == mmzs_vip


async def test_vip_survives_a_status_wipe(start_state):
    """Sync from global rewrites resources without status; the VIP must not change."""
    rt = make_runtime()
    await start_state(rt)
    await put(rt, mmzs("echo", {"kuma.io/display-name": "echo"}))
    first = await vip_of(rt, mmzs_key("echo"))
    current = await rt.store.get(mmzs_key("echo"))
    await rt.store.update(current.with_(status=None))
    await rt.store.update((await rt.store.get(mmzs_key("echo"))).with_(status=None))

    async def back():
        status = wire_status(await rt.store.find(mmzs_key("echo")))
        assert status["vips"] == [{"ip": first}]

    await eventually(back)


async def test_freed_vip_not_reused_until_the_range_wraps(start_state):
    rt = make_runtime(ms_cidr="10.9.0.0/29")  # hosts .1 - .6
    await start_state(rt)
    await put(rt, dataplane("a-1", "a"))
    assert await vip_of(rt, ms_key("a")) == "10.9.0.1"
    await put(rt, dataplane("b-1", "b"))
    assert await vip_of(rt, ms_key("b")) == "10.9.0.2"
    await rt.store.delete(dp_key("a-1"))

    async def a_gone():
        assert await rt.store.find(ms_key("a")) is None

    await eventually(a_gone)
    got = []
    for name in "cdef":
        await put(rt, dataplane(f"{name}-1", name))
        got.append(await vip_of(rt, ms_key(name)))
    assert got == ["10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    # The range is used up: only now does the freed .1 come back.
    await put(rt, dataplane("g-1", "g"))
    assert await vip_of(rt, ms_key("g")) == "10.9.0.1"


async def test_exhausted_range_gives_a_condition(start_state):
    rt = make_runtime(ms_cidr="10.9.0.0/30")  # two usable hosts: .1 and .2
    await start_state(rt)
    for name in "abc":
        await put(rt, dataplane(f"{name}-1", name))

    async def third_has_condition():
        statuses = {n: wire_status(await rt.store.find(ms_key(n))) for n in "abc"}
        assert sorted(s["vips"][0]["ip"] for s in statuses.values() if s["vips"]) == [
            "10.9.0.1",
            "10.9.0.2",
        ]
        starved = [s for s in statuses.values() if not s["vips"]]
        assert len(starved) == 1
        assert starved[0]["conditions"] == [
            {
                "type": "VIPAllocated",
                "status": "False",
                "reason": "RangeExhausted",
                "message": "no free virtual IP left in 10.9.0.0/30",
            }
        ]
        return next(n for n, s in statuses.items() if not s["vips"])

    starved = await eventually(third_has_condition)
    holder = next(n for n in "abc" if n != starved)
    freed = (await rt.store.get(ms_key(holder))).status.vips[0].ip
    await rt.store.delete(dp_key(f"{holder}-1"))

    async def starved_gets_the_freed_vip():
        status = wire_status(await rt.store.find(ms_key(starved)))
        assert status["vips"] == [{"ip": freed}]
        assert status["conditions"] == []

    await eventually(starved_gets_the_freed_vip)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_vips_and_cursor_survive_a_restart(start_state, tmp_path, backend):
    if backend == "sqlite":
        sqlite = pytest.importorskip("zonemesh.store.sqlite")

        def open_store():
            return sqlite.SqliteStore(tmp_path / "zonemesh.db")
    else:
        memory = MemoryStore()

        def open_store():
            return memory

    cidrs = {"ms_cidr": "10.9.0.0/28", "mmzs_cidr": "10.10.0.0/28"}
    rt = make_runtime(open_store(), **cidrs)
    first = await start_state(rt)
    await put(rt, dataplane("a-1", "a"))
    await put(rt, dataplane("b-1", "b"))
    await put(rt, mmzs("echo", {"kuma.io/display-name": "a"}))
    a_vip = await vip_of(rt, ms_key("a"))
    b_vip = await vip_of(rt, ms_key("b"))
    mmzs_vip = await vip_of(rt, mmzs_key("echo"))
    await rt.store.delete(dp_key("b-1"))

    async def b_gone():
        assert await rt.store.find(ms_key("b")) is None

    await eventually(b_gone)
    await first.stop()
    if backend == "sqlite":
        await rt.store.close()

    # A new control plane on the same data (health starts empty, as after a restart).
    rt2 = make_runtime(open_store(), **cidrs)
    try:
        second = await start_state(rt2)
        # What was computed before the restart reads back equal: the first pass writes nothing.
        assert second.last_result is not None and second.last_result.writes == 0
        await put(rt2, dataplane("c-1", "c"))
        c_vip = await vip_of(rt2, ms_key("c"))
        assert await vip_of(rt2, ms_key("a")) == a_vip
        assert await vip_of(rt2, mmzs_key("echo")) == mmzs_vip
        assert c_vip not in (a_vip, b_vip)  # b's freed VIP is not handed out again yet
    finally:
        await rt2.store.close()
