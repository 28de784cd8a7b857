"""What registering one proxy costs the control plane, in process: `parse_node` (identity and
the `dataplane.resource` document from the node metadata) and `ProxyRegistry._from_metadata`
(the document validated into a Dataplane), then a whole `ProxyRegistry.connect` against an
in-memory store, first (the Dataplane is created) and again (it is stored and unchanged).

The proxies are the fan-out benchmark's (`fanout_topology.proxy_dataplane`: an inbound and
M + 3 outbounds each), their nodes built by `zonemesh.dp.bootstrap` as `dp run` builds them.
All N proxies list the same outbounds, as sidecars started from one template do, so the
registry's memo of validated outbound lists (`OutboundListMemo`) validates that list once:

- `memo on`: the registry's own memo (the default);
- `memo off`: `ProxyRegistry(memo_lists=0)`, every document validated in full;
- `cold`: memo on, but every proxy lists other outbounds (its own ports), so every lookup
  misses: what a miss costs on top of a full validation.

Run: `PYTHONPATH=$PWD .venv/bin/python benchmarks/registration.py [--proxies N] [--services M]
[--repeat R]`. Each figure is the best of R passes over the N proxies, in µs per proxy. The
interpreter's GC is set as `cp run` sets it (`xds.engine.gc_policy`). Bounded: N ≤ 20 000.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fanout_topology as topo

from zonemesh.config import load_config
from zonemesh.dp.bootstrap import render_bootstrap
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.types.dataplane import MEMO_MAX_LISTS
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.memory import MemoryStore
from zonemesh.xds.engine import gc_policy
from zonemesh.xds.registry import NodeIdentity, ProxyRegistry, parse_node

MAX_PROXIES = 20_000


def proxy_doc(index: int, services: int, cold: bool) -> dict[str, Any]:
    doc = topo.proxy_dataplane(index, services)
    if cold:  # outbound ports of its own: a list no other proxy sends
        for k, outbound in enumerate(doc["networking"]["outbound"]):
            outbound["port"] = 1024 + (index * (services + 3) + k) % 60_000
    return doc


def proxy_node(doc: dict[str, Any]) -> base_pb2.Node:
    bootstrap = render_bootstrap(doc, "dataplane", "grpc://127.0.0.1:1", 0, delta=True)
    return json_format.ParseDict(bootstrap["node"], base_pb2.Node())


def runtime() -> Runtime:
    config = load_config(env={}, flags={"store": "memory", "zone": "bench", "xds_port": 0})
    return Runtime(config=config, store=MemoryStore())


def registry(rt: Runtime, memo_on: bool) -> ProxyRegistry:
    return ProxyRegistry(rt, memo_lists=MEMO_MAX_LISTS if memo_on else 0)


def best_us(passes: int, count: int, one_pass: Callable[[], float]) -> float:
    return min(one_pass() for _ in range(passes)) * 1e6 / count


def time_parse(nodes: list[base_pb2.Node], passes: int) -> float:
    def one_pass() -> float:
        start = time.perf_counter()
        for node in nodes:
            parse_node(node)
        return time.perf_counter() - start

    return best_us(passes, len(nodes), one_pass)


def time_from_metadata(identities: list[NodeIdentity], memo_on: bool, passes: int) -> float:
    rt = runtime()

    def one_pass() -> float:
        reg = registry(rt, memo_on)  # a fresh memo each pass: the first proxy misses
        start = time.perf_counter()
        for identity in identities:
            reg._from_metadata(identity)
        return time.perf_counter() - start

    return best_us(passes, len(identities), one_pass)


async def time_connect(
    nodes: list[base_pb2.Node], memo_on: bool, passes: int
) -> tuple[float, float]:
    """Whole connects (parse, validate, find, create, events), each pass on a fresh store and
    registry; then every proxy connects again (a reconnect: its Dataplane is stored, unchanged).
    """
    first: list[float] = []
    again: list[float] = []

    def on_close(code: grpc.StatusCode, reason: str) -> None:
        return None

    for _ in range(passes):
        rt = runtime()
        await rt.store.create(resource_from_wire({"type": "Mesh", "name": topo.MESH}))
        reg = registry(rt, memo_on)
        for elapsed in (first, again):
            start = time.perf_counter()
            for node in nodes:
                await reg.connect(node, on_close)
            elapsed.append(time.perf_counter() - start)
    return min(first) * 1e6 / len(nodes), min(again) * 1e6 / len(nodes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxies", type=int, default=1000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.proxies <= MAX_PROXIES or not 1 <= args.repeat <= 10:
        parser.error(f"--proxies must be 1..{MAX_PROXIES}, --repeat 1..10")

    warm = [proxy_node(proxy_doc(i, args.services, cold=False)) for i in range(args.proxies)]
    cold = [proxy_node(proxy_doc(i, args.services, cold=True)) for i in range(args.proxies)]
    warm_ids = [parse_node(n) for n in warm]
    cold_ids = [parse_node(n) for n in cold]
    gc_policy.apply()
    outbounds = args.services + 3
    print(
        f"{args.proxies} proxies, 1 inbound + {outbounds} outbounds each; "
        f"µs per proxy, best of {args.repeat}"
    )
    rows = [
        ("parse_node", time_parse(warm, args.repeat), None, time_parse(cold, args.repeat)),
        (
            "_from_metadata",
            time_from_metadata(warm_ids, True, args.repeat),
            time_from_metadata(warm_ids, False, args.repeat),
            time_from_metadata(cold_ids, True, args.repeat),
        ),
    ]
    connects = [
        asyncio.run(time_connect(nodes, memo_on, args.repeat))
        for nodes, memo_on in ((warm, True), (warm, False), (cold, True))
    ]
    rows.append(("connect (memory store)", *(c[0] for c in connects)))
    rows.append(("reconnect, unchanged", *(c[1] for c in connects)))
    print(f"  {'':<24}{'memo on':>10}{'memo off':>10}{'cold':>10}")
    for label, on, off, miss in rows:
        shown_off = f"{off:10.1f}" if off is not None else f"{'-':>10}"
        print(f"  {label:<24}{on:10.1f}{shown_off}{miss:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
