"""The workload CA on the xDS port: signs a data plane's CSR, never sees its private key.

`/zonemesh.ca.v1.CertificateAuthority/Sign`, a unary RPC with a JSON body (like readiness:
no .proto to compile, a few lines on the data-plane side), token in metadata `authorization`:

  request  {"nodeId": "<mesh>.<name>", "proxyType": "dataplane", "csr": "<PEM>"}
  response {"certificateChain": "<PEM leaf + intermediate>", "trustBundle": "<PEM root>",
            "trustFingerprint": "<hex>", "notBefore": "<ISO 8601>", "notAfter": "<ISO 8601>",
            "serial": "<hex>", "spiffeIds": [...]}

The certificate names what the proxy's resource in the store is — `spiffe://<mesh>/<service>`
per inbound service and gateway — once the token is verified and allows that resource: the
CSR only contributes its public key, and only after its signature proves the caller holds
the private key. Every refusal is counted under interface `ca`. Zone ingresses and egresses
pass TLS through and get no certificate.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from zonemesh.mtls.ca import CsrError, sign_csr
from zonemesh.mtls.identities import workload_spiffe_ids
from zonemesh.mtls.trust import MeshTrust, NoAuthority
from zonemesh.resources.proxy_types import ProxyType
from zonemesh.xds.auth import AuthError, DpAuthenticator
from zonemesh.xds.registry import META_PROXY_TYPE, RegistrationError, parse_node

if TYPE_CHECKING:
    from zonemesh.runtime.kernel import Runtime

log = logging.getLogger("zonemesh.mtls")

SERVICE = "zonemesh.ca.v1.CertificateAuthority"
METHOD = f"/{SERVICE}/Sign"
MAX_BODY = 64 * 1024  # a CSR is about 500 bytes


class _BadRequest(Exception):
    pass


def _parse(body: bytes) -> tuple[str, str, bytes]:
    if len(body) > MAX_BODY:
        raise _BadRequest(f"body is {len(body)} bytes; at most {MAX_BODY}")
    try:
        doc = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _BadRequest(f"body must be JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _BadRequest("body must be a JSON object")
    node_id, proxy_type, csr = doc.get("nodeId"), doc.get("proxyType", "dataplane"), doc.get("csr")
    if not isinstance(node_id, str) or not node_id:
        raise _BadRequest("nodeId: cannot be empty")
    if not isinstance(proxy_type, str):
        raise _BadRequest("proxyType: must be a string")
    if not isinstance(csr, str) or not csr:
        raise _BadRequest("csr: cannot be empty")
    return node_id, proxy_type, csr.encode()


class CertificateAuthority:
    """Signs CSRs for authorized proxies; see the module docstring."""

    def __init__(
        self, runtime: Runtime, auth: DpAuthenticator, trust: MeshTrust, validity: timedelta
    ) -> None:
        self.runtime = runtime
        self.auth = auth
        self.trust = trust
        self.validity = validity
        self.signed = 0  # certificates issued (tests, logs)

    async def sign(self, body: bytes, context: Any) -> bytes:
        peer = context.peer() or ""
        try:
            credential = self.auth.authenticate(
                context.invocation_metadata(), interface="ca", peer=peer
            )
            node_id, proxy_type, csr = _parse(body)
            metadata = struct_pb2.Struct()
            metadata.update({META_PROXY_TYPE: proxy_type})
            identity = parse_node(base_pb2.Node(id=node_id, metadata=metadata))
            key = identity.key
            if identity.proxy_type is not ProxyType.DATAPLANE:
                raise _BadRequest(
                    f"proxyType {proxy_type}: zone proxies pass TLS through and get no certificate"
                )
            resource = await self.runtime.store.find(key)
            # Authorize the name alone first: whether another proxy exists is not for
            # a caller whose token does not allow it to learn.
            self.auth.authorize(credential, key, proxy_type, (), interface="ca", peer=peer)
            if resource is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"{node_id} is not registered yet: its ADS stream registers it",
                )
            self.auth.authorize(credential, key, proxy_type, (resource,), interface="ca", peer=peer)
            signer = await self.trust.signer(key.mesh)
            signed = sign_csr(signer.ca, csr, workload_spiffe_ids(resource), validity=self.validity)
        except AuthError as e:
            await context.abort(e.code, e.message)
        except (_BadRequest, RegistrationError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except CsrError as e:
            self.auth.refuse("ca", grpc.StatusCode.INVALID_ARGUMENT, "bad-csr", str(e), peer)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NoAuthority as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        self.signed += 1
        log.info(
            "signed a certificate for %s (%s), valid until %s",
            node_id,
            ", ".join(signed.spiffe_ids) or "no service",
            signed.not_after.isoformat(),
        )
        return json.dumps(
            {
                "certificateChain": signed.chain_pem.decode(),
                "trustBundle": signer.root.cert_pem.decode(),
                "trustFingerprint": signer.root.fingerprint,
                "notBefore": signed.not_before.isoformat(),
                "notAfter": signed.not_after.isoformat(),
                "serial": format(signed.serial, "x"),
                "spiffeIds": list(signed.spiffe_ids),
            }
        ).encode()

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Sign": grpc.unary_unary_rpc_method_handler(
                    self.sign, request_deserializer=None, response_serializer=None
                )
            },
        )
