"""Who may speak for a zone on global's KDS: the holder of a zone token for that zone.

Open-source Kuma has no KDS authentication at all: any process that reaches global's KDS
port can claim any zone name (kumahq/kuma#6104; the zone sends only its name). This is where
zonemesh goes beyond it, as Kong Mesh does: a zone CP presents a zone token (scope `cp`,
issued by global: `POST /tokens/zone`) as gRPC metadata `authorization` (`Bearer ` before it
is accepted too), and global checks it before it acts on anything the peer sent:

- no token, or one that does not verify (malformed, unknown key, bad signature, expired,
  revoked) -> UNAUTHENTICATED, saying which;
- a valid token whose scope lacks `cp`, or that names another zone than the Hello ->
  PERMISSION_DENIED.

Every refusal is logged and counted (`zonemesh_auth_refusals_total{interface="kds"}`).
`multizone.global.kdsAuth.type: none` (`KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE=none`) turns the
check off, for a network where only trusted zone CPs can reach the KDS port.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import grpc

from zonemesh.auth.proxies import bearer
from zonemesh.auth.refusals import Refusals
from zonemesh.auth.service import TokenService
from zonemesh.auth.tokens import ZONE_SCOPE_CP, TokenError, TokenKind, ZoneToken
from zonemesh.federation.zone_token import METADATA_KEY
from zonemesh.runtime.kernel import Runtime

INTERFACE = "kds"


class Refused(Exception):
    """A peer refused for a reason counted under `reason`; `message` goes back to it."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


class KdsAuthenticator:
    """Checks a KDS peer's zone token; `required` False = `kdsAuth.type: none`."""

    def __init__(self, tokens: TokenService, refusals: Refusals, *, required: bool) -> None:
        self.tokens = tokens
        self.refusals = refusals
        self.required = required

    @classmethod
    def of(cls, runtime: Runtime) -> KdsAuthenticator:
        """As global's configuration says (`multizone.global.kdsAuth.type`)."""
        required = runtime.config.multizone.global_.kds_auth.type == "cpToken"
        return cls(runtime.tokens, runtime.refusals, required=required)

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> ZoneToken | None:
        """The verified token of a stream's metadata (None when not required); raises Refused."""
        if not self.required:
            return None
        values = [v for k, v in metadata if k.lower() == METADATA_KEY]
        if not values:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing",
                "no zone token: a zone control plane presents its zone token as metadata "
                f"{METADATA_KEY!r} (KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH or _INLINE; "
                "global issues it: POST /tokens/zone)",
            )
        if len(values) > 1:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                "malformed",
                f"zone token: more than one {METADATA_KEY!r} value",
            )
        raw = values[0]
        text = raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw
        try:
            token = self.tokens.verify_zone(bearer(text))
        except TokenError as e:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, e.reason, f"zone token: {e.message}"
            ) from None
        # Strict on KDS: the verifier's leeway is for clocks of other issuers; global issued it.
        if token.expires_at <= datetime.now(UTC):
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, "expired", "zone token: the token has expired"
            )
        if ZONE_SCOPE_CP not in token.scope:
            scope = ", ".join(token.scope) or "empty"
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                "scope",
                f'zone token: its scope ({scope}) does not include "{ZONE_SCOPE_CP}", '
                "which a zone control plane needs",
            )
        return token

    def authorize(self, token: ZoneToken | None, zone: str) -> None:
        """The token may speak for `zone` (the Hello's), and is still not revoked."""
        if token is None:
            return
        if token.zone != zone:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                "wrong-zone",
                f'zone token: issued for zone "{token.zone}", not for "{zone}"',
            )
        if self.tokens.is_revoked(TokenKind.ZONE, token.token_id):
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, "revoked", "zone token: the token has been revoked"
            )

    def record(self, refused: Refused, peer: str) -> None:
        self.refusals.record(INTERFACE, refused.reason, refused.message, peer)
