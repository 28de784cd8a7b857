#!/usr/bin/env python
"""The replay floor: an ADS server (SotW and Delta) that serves zonemesh's own resources, byte
for byte, and computes nothing.

`fanout_fleet.py --capture` recorded, per simulated proxy, every resource zonemesh served it
(first config, then after every change, as numbered steps). This server loads those captures,
encodes every response entry once at start, and then only joins pre-encoded bytes: a response
is its header (version, type, nonce) followed by the entries' bytes, which protobuf reads as
one message (a repeated field's entries may be concatenated). On `{"op": "step", "step": K}`
on stdin it applies step K to its per-proxy state and pushes to every affected stream what
changed (SotW: the whole set of CDS/LDS, the changed CLAs the stream subscribed; Delta: the
changed and removed resources) - the least any control plane must send for that change.
Cost over this floor, in the same run with the same simulated proxies, is the control plane's.

Usage: floor_ads.py --port P --capture FILE[,FILE...] [--at-step K]   (prints {"event": "ready"})
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
PUSH_ORDER = (CDS, EDS, LDS)  # Envoy's: clusters, their endpoints, then listeners
SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

Held = dict[str, dict[str, str]]  # type -> name -> blob hash
Diff = tuple[str, dict[str, str], list[str]]  # type, set, removed


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


@dataclass
class Capture:
    blobs: dict[str, bytes] = field(default_factory=dict)
    steps: dict[int, dict[str, list[Diff]]] = field(default_factory=lambda: defaultdict(dict))

    @classmethod
    def load(cls, paths: list[str]) -> Capture:
        capture = cls()
        for path in paths:
            with open(path) as f:
                for line in f:
                    item = json.loads(line)
                    if "blob" in item:
                        capture.blobs[item["blob"]] = base64.b64decode(item["b64"])
                    else:
                        diffs = capture.steps[item["step"]].setdefault(item["node"], [])
                        diffs.append((item["type"], item["set"], item["removed"]))
        return capture


class Encoded:
    """Every response entry, encoded once: SotW by (type, hash), Delta by (type, name, hash)."""

    def __init__(self, capture: Capture) -> None:
        from envoy.service.discovery.v3 import discovery_pb2
        from google.protobuf import any_pb2

        self.sotw: dict[tuple[str, str], bytes] = {}
        self.delta: dict[tuple[str, str, str], bytes] = {}
        for per_node in capture.steps.values():
            for diffs in per_node.values():
                for type_url, set_, _ in diffs:
                    for name, h in set_.items():
                        if (type_url, name, h) in self.delta:
                            continue
                        packed = any_pb2.Any(type_url=type_url, value=capture.blobs[h])
                        self.sotw[(type_url, h)] = discovery_pb2.DiscoveryResponse(
                            resources=[packed]
                        ).SerializeToString()
                        self.delta[(type_url, name, h)] = discovery_pb2.DeltaDiscoveryResponse(
                            resources=[
                                discovery_pb2.Resource(name=name, version=h, resource=packed)
                            ]
                        ).SerializeToString()


@dataclass
class Stream:
    queue: asyncio.Queue[bytes]
    delta: bool
    types: set[str] = field(default_factory=set)  # wildcard types asked for
    eds: set[str] = field(default_factory=set)  # EDS names subscribed
    nonce: int = 0


class Floor:
    def __init__(self, capture: Capture, at_step: int) -> None:
        from envoy.service.discovery.v3 import discovery_pb2

        self.pb = discovery_pb2
        self.capture = capture
        self.encoded = Encoded(capture)
        self.held: dict[str, Held] = defaultdict(dict)
        self.streams: dict[str, Stream] = {}
        for step in sorted(s for s in capture.steps if s <= at_step):
            self.apply(step)

    def apply(self, step: int) -> dict[str, list[Diff]]:
        per_node = self.capture.steps.get(step, {})
        for node, diffs in per_node.items():
            held = self.held[node]
            for type_url, set_, removed in diffs:
                current = held.setdefault(type_url, {})
                current.update(set_)
                for name in removed:
                    current.pop(name, None)
        return per_node

    # --- responses: a header, then pre-encoded entries

    def sotw_response(self, stream: Stream, type_url: str, hashes: list[str]) -> bytes:
        stream.nonce += 1
        header = self.pb.DiscoveryResponse(
            version_info=str(stream.nonce), type_url=type_url, nonce=str(stream.nonce)
        ).SerializeToString()
        sotw = self.encoded.sotw
        return header + b"".join(sotw[(type_url, h)] for h in hashes)

    def delta_response(
        self, stream: Stream, type_url: str, items: list[tuple[str, str]], removed: list[str]
    ) -> bytes:
        stream.nonce += 1
        header = self.pb.DeltaDiscoveryResponse(
            system_version_info=str(stream.nonce),
            type_url=type_url,
            nonce=str(stream.nonce),
            removed_resources=removed,
        ).SerializeToString()
        delta = self.encoded.delta
        return header + b"".join(delta[(type_url, n, h)] for n, h in items)

    # --- the two ADS methods

    async def sotw(self, requests: Any, context: Any) -> Any:
        stream = Stream(asyncio.Queue(), delta=False)

        async def read() -> None:
            node = ""
            async for req in requests:
                if req.node.id:
                    node = req.node.id
                    self.streams[node] = stream
                held = self.held.get(node, {})
                if req.type_url == EDS:
                    names = set(req.resource_names)
                    if req.response_nonce and names == stream.eds:
                        continue  # an ACK
                    stream.eds = names
                    clas = held.get(EDS, {})
                    hashes = [clas[n] for n in sorted(names) if n in clas]
                    stream.queue.put_nowait(self.sotw_response(stream, EDS, hashes))
                elif not req.response_nonce:
                    stream.types.add(req.type_url)
                    hashes = list(held.get(req.type_url, {}).values())
                    stream.queue.put_nowait(self.sotw_response(stream, req.type_url, hashes))

        async for message in self._serve(stream, read()):
            yield message

    async def delta(self, requests: Any, context: Any) -> Any:
        stream = Stream(asyncio.Queue(), delta=True)

        async def read() -> None:
            node = ""
            async for req in requests:
                if req.node.id:
                    node = req.node.id
                    self.streams[node] = stream
                held = self.held.get(node, {})
                subscribe, unsubscribe = (
                    req.resource_names_subscribe,
                    req.resource_names_unsubscribe,
                )
                if req.response_nonce and not subscribe and not unsubscribe:
                    continue  # an ACK or NACK
                if req.type_url == EDS:
                    stream.eds.update(subscribe)
                    stream.eds.difference_update(unsubscribe)
                    clas = held.get(EDS, {})
                    items = [(n, clas[n]) for n in subscribe if n in clas]
                    stream.queue.put_nowait(self.delta_response(stream, EDS, items, []))
                elif not req.response_nonce:
                    stream.types.add(req.type_url)
                    items = list(held.get(req.type_url, {}).items())
                    stream.queue.put_nowait(self.delta_response(stream, req.type_url, items, []))

        async for message in self._serve(stream, read()):
            yield message

    async def _serve(self, stream: Stream, reading: Any) -> Any:
        reader = asyncio.ensure_future(reading)
        try:
            while True:
                yield await stream.queue.get()
        finally:
            reader.cancel()
            for node, s in list(self.streams.items()):
                if s is stream:
                    del self.streams[node]

    def push(self, step: int) -> int:
        """Apply a step and send each affected stream what changed; returns the streams."""
        per_node = self.apply(step)
        pushed = 0
        for node, diffs in per_node.items():
            stream = self.streams.get(node)
            if stream is None:
                continue
            held = self.held[node]
            by_type = {t: (s, r) for t, s, r in diffs}
            order = [t for t in PUSH_ORDER if t in by_type] + [
                t for t in by_type if t not in PUSH_ORDER
            ]
            for type_url in order:
                set_, removed = by_type[type_url]
                message = self._changed(stream, held, type_url, set_, removed)
                if message is not None:
                    stream.queue.put_nowait(message)
            pushed += 1
        return pushed

    def _changed(
        self, stream: Stream, held: Held, type_url: str, set_: dict[str, str], removed: list[str]
    ) -> bytes | None:
        if type_url == EDS:
            items = [(n, h) for n, h in set_.items() if n in stream.eds]
            gone = [n for n in removed if n in stream.eds]
            if not items and not gone:
                return None
            if stream.delta:
                return self.delta_response(stream, EDS, items, gone)
            if not items:
                return None  # SotW: a CLA goes with its cluster, in CDS
            return self.sotw_response(stream, EDS, [h for _, h in items])
        if type_url not in stream.types:
            return None
        if stream.delta:
            return self.delta_response(stream, type_url, list(set_.items()), removed)
        return self.sotw_response(stream, type_url, list(held.get(type_url, {}).values()))


async def main() -> None:
    import grpc
    from envoy.service.discovery.v3 import discovery_pb2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--capture", required=True, help="comma-separated capture files")
    parser.add_argument("--at-step", type=int, default=0, help="serve the state after this step")
    args = parser.parse_args()
    floor = Floor(Capture.load(args.capture.split(",")), args.at_step)
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            # No response serializer: the handlers yield bytes, encoded already.
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                floor.sotw, request_deserializer=discovery_pb2.DiscoveryRequest.FromString
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                floor.delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString
            ),
        },
    )
    server = grpc.aio.server(options=[("grpc.max_send_message_length", -1)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    emit({"event": "ready", "pid": os.getpid()})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["op"] == "step":
                emit({"event": "pushed", "step": cmd["step"], "streams": floor.push(cmd["step"])})
            elif cmd["op"] == "quit":
                break
    finally:
        await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
