"""Readiness reports from data planes, on the xDS port: one unary gRPC method, JSON body.

`/zonemesh.dp.v1.Readiness/Report` takes
`{"nodeId": "<mesh>.<name>", "proxyType": "dataplane", "notReadyInboundPorts": [21027]}`
(plus `"stopping": true` in the report `dp run` sends before it drains on SIGTERM: the end of
that stream is then a graceful stop, which deregisters what it registered) and answers `{"zone": "<this CP's zone>", "trustFingerprints": {"<mesh>": "<hex>"}}`: the
data plane logs which zone it joined, and re-signs its certificate when its mesh's trust
bundle changed. A report takes an instance out of EDS, so it needs the same dataplane token
as the ADS stream (metadata `authorization`), allowing the reported proxy, and only a proxy
with an open ADS stream may report. Defined with a generic handler so no .proto needs
compiling; JSON keeps the data-plane side a few lines.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import grpc
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from zonemesh.xds.auth import AuthError
from zonemesh.xds.registry import META_PROXY_TYPE, RegistrationError, parse_node

if TYPE_CHECKING:
    from zonemesh.xds.component import XdsServer

SERVICE = "zonemesh.dp.v1.Readiness"
METHOD = f"/{SERVICE}/Report"


class _BadReport(Exception):
    pass


def _parse(body: bytes) -> tuple[str, str, tuple[int, ...], bool]:
    try:
        doc = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _BadReport(f"body must be JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _BadReport("body must be a JSON object")
    node_id = doc.get("nodeId")
    if not isinstance(node_id, str) or not node_id:
        raise _BadReport("nodeId: cannot be empty")
    proxy_type = doc.get("proxyType", "dataplane")
    if not isinstance(proxy_type, str):
        raise _BadReport("proxyType: must be a string")
    ports = doc.get("notReadyInboundPorts", [])
    if not isinstance(ports, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in ports
    ):
        raise _BadReport("notReadyInboundPorts: must be a list of ports")
    stopping = doc.get("stopping", False)
    if not isinstance(stopping, bool):
        raise _BadReport("stopping: must be true or false")
    return node_id, proxy_type, tuple(ports), stopping


def readiness_handler(xds: XdsServer) -> grpc.GenericRpcHandler:
    auth = xds.registry.auth

    async def report(body: bytes, context: Any) -> bytes:
        peer = context.peer() or ""
        try:
            credential = auth.authenticate(
                context.invocation_metadata(), interface="xds", peer=peer
            )
            node_id, proxy_type, ports, stopping = _parse(body)
            metadata = struct_pb2.Struct()
            metadata.update({META_PROXY_TYPE: proxy_type})
            identity = parse_node(base_pb2.Node(id=node_id, metadata=metadata))
            key = identity.key
            auth.authorize(
                credential,
                key,
                identity.proxy_type.value,
                (await xds.runtime.store.find(key),),
                interface="xds",
                peer=peer,
            )
        except AuthError as e:
            await context.abort(e.code, e.message)
        except _BadReport as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except RegistrationError as e:
            await context.abort(e.code, e.message)
        if xds.registry.connection(key) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{key} has no open xDS stream")
        xds.registry.set_readiness(key, ports, stopping=stopping)
        answer: dict[str, Any] = {"zone": xds.runtime.zone}
        if key.mesh:
            fingerprint = await xds.trust.root_fingerprint(key.mesh)
            if fingerprint:
                answer["trustFingerprints"] = {key.mesh: fingerprint}
        return json.dumps(answer).encode()

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Report": grpc.unary_unary_rpc_method_handler(
                report, request_deserializer=None, response_serializer=None
            )
        },
    )
