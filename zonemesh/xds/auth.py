"""Who may speak for a proxy on the xDS port: the dataplane token on every RPC there.

The token travels as gRPC metadata `authorization`, raw (as Kuma's Envoy sends it from its
bootstrap's `initial_metadata`) or as `Bearer <token>`, exactly one value. ADS streams, the
readiness RPC and the CA's Sign RPC all go through `DpAuthenticator`, so the three can never
disagree on what a token allows:

1. `authenticate`: the token verifies (signature, validity, revocation) — before anything
   else is read or looked up; else UNAUTHENTICATED saying what is wrong.
2. `authorize`: the proxy (its key, type and every resource that describes it) is within the
   token; else PERMISSION_DENIED naming the claim.

Every refusal is logged and counted (`runtime.refusals`). `dpServer.authn.dpProxy.type: none`
(`KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE`) switches both off: anyone may then claim any proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from zonemesh.auth.proxies import NotAllowed, authorize_proxy, bearer
from zonemesh.auth.tokens import DataplaneToken, TokenError
from zonemesh.mtls.identities import claimed_tags
from zonemesh.resources.base import Resource, ResourceKey

if TYPE_CHECKING:
    from zonemesh.runtime.kernel import Runtime

log = logging.getLogger("zonemesh.xds")

AUTHORIZATION = "authorization"
MODE_TOKEN = "dpToken"
MODE_NONE = "none"


@dataclass(frozen=True)
class Credential:
    """A verified token and its raw form (re-verified when it is due to expire)."""

    token: DataplaneToken
    raw: str


class AuthError(Exception):
    """A refused credential; the RPC ends with `code` and `message`."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def token_from_metadata(metadata: Iterable[Any] | None) -> str:
    """The one `authorization` value, without `Bearer `; raises `TokenError` otherwise."""
    values = []
    for item in metadata or ():
        key, value = item if isinstance(item, tuple) else (item.key, item.value)
        if str(key).lower() == AUTHORIZATION:
            values.append(value.decode() if isinstance(value, bytes) else str(value))
    if not values:
        raise TokenError(
            "missing", "no dataplane token: send it as the gRPC metadata 'authorization'"
        )
    if len(values) > 1:
        raise TokenError("malformed", f"{len(values)} 'authorization' values; send exactly one")
    token = bearer(values[0])
    if not token:
        raise TokenError("missing", "the 'authorization' metadata is empty")
    return token


class DpAuthenticator:
    """The token checks of the xDS port; see the module docstring."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.mode = runtime.config.dp_server.authn.dp_proxy.type

    @property
    def enabled(self) -> bool:
        return self.mode == MODE_TOKEN

    def warn_if_disabled(self) -> None:
        if not self.enabled:
            log.warning(
                "data plane authentication is off (dpServer.authn.dpProxy.type=none): "
                "anyone who reaches the xDS port can claim any proxy and get its certificate"
            )

    def refuse(
        self, interface: str, code: grpc.StatusCode, reason: str, message: str, peer: str
    ) -> AuthError:
        """Record a refusal; the returned error is for the caller to raise."""
        self._runtime.refusals.record(interface, reason, message, peer)
        return AuthError(code, reason, message)

    def authenticate(
        self, metadata: Sequence[Any] | None, *, interface: str, peer: str
    ) -> Credential | None:
        """The verified token (None when authentication is off); raises `AuthError`."""
        if not self.enabled:
            return None
        try:
            raw = token_from_metadata(metadata)
            return Credential(self._runtime.tokens.verify_dataplane(raw), raw)
        except TokenError as e:
            raise self._refused(interface, e, peer) from None

    def reverify(self, credential: Credential, *, interface: str, peer: str) -> None:
        """Raises `AuthError` once the token no longer verifies (expired, revoked …), by the
        same rule as at the start of the stream."""
        try:
            self._runtime.tokens.verify_dataplane(credential.raw)
        except TokenError as e:
            raise self._refused(interface, e, peer) from None

    def _refused(self, interface: str, error: TokenError, peer: str) -> AuthError:
        message = f"dataplane token refused: {error.message}"
        return self.refuse(interface, grpc.StatusCode.UNAUTHENTICATED, error.reason, message, peer)

    def authorize(
        self,
        credential: Credential | None,
        key: ResourceKey,
        proxy_type: str,
        resources: Iterable[Resource | None] = (),
        *,
        interface: str,
        peer: str,
    ) -> None:
        """The proxy `key` of `proxy_type`, and each resource claiming to be it, must be
        within the token; raises `AuthError` (PERMISSION_DENIED) naming what is not."""
        if credential is None:
            return
        token = credential.token
        claims: list[dict[str, frozenset[str]]] = [{}]  # the name, mesh and type alone first
        claims += [claimed_tags(r) for r in resources if r is not None]
        try:
            for tags in claims:
                authorize_proxy(
                    token, mesh=key.mesh, name=key.name, proxy_type=proxy_type, tag_values=tags
                )
        except NotAllowed as e:
            who = f"{key.mesh}.{key.name}" if key.mesh else key.name
            raise self.refuse(
                interface,
                grpc.StatusCode.PERMISSION_DENIED,
                "forbidden",
                f"{proxy_type} {who}: {e}",
                peer,
            ) from None
