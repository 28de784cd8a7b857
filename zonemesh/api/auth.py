"""Who is asking, and may they: authentication and authorization of every API request.

One ASGI middleware in front of every route, unknown paths included, so no handler can forget
it. Authentication (Kuma's `tokens` type):
- `Authorization: Bearer <user token>`: verified by the control plane's `TokenService`. A bad,
  expired or revoked token is a 401 naming why; it never falls back to anonymous, so a user
  whose token is wrong learns it at once instead of seeing reads work and writes fail.
- no token, from a trusted loopback client (see `is_trusted_loopback`) while
  `apiServer.authn.localhostIsAdmin` is on: the admin, as in Kuma;
- no token otherwise: anonymous.

Authorization: reads are open (resources, inspect, `/config`, `/metrics`, xDS dumps), as in
Kuma, except Secrets and GlobalSecrets; writes of any kind, everything under `/tokens` and
every read of secrets need group `mesh-system:admin`. Anonymous → 401, a user without the
group → 403; AIP-193 bodies, nothing done, and every refusal logged and counted.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from zonemesh.api.errors import ApiError
from zonemesh.api.middleware import discard_body, send_error
from zonemesh.auth.proxies import bearer
from zonemesh.auth.tokens import ADMIN_GROUP, TokenError
from zonemesh.resources.registry import GLOBAL_SECRET, SECRET
from zonemesh.runtime.kernel import Runtime

log = logging.getLogger("zonemesh.api")

AUTHENTICATED_GROUP = "mesh-system:authenticated"
UNAUTHENTICATED_GROUP = "mesh-system:unauthenticated"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Headers a reverse proxy adds: their presence means the TCP peer is not the client.
_PROXY_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip", b"x-forwarded-host")
# Path segments naming a secret type, in any spelling the registry knows.
_SECRET_SEGMENTS = frozenset(
    name.lower()
    for rtype in (SECRET, GLOBAL_SECRET)
    for name in (rtype.plural, rtype.singular, *rtype.aliases)
)
_MAX_SHOWN_PATH = 200


@dataclass(frozen=True)
class Identity:
    """The user a request acts as; `via` says how we know (token, localhost, anonymous)."""

    name: str
    groups: tuple[str, ...]
    via: str

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    @property
    def anonymous(self) -> bool:
        return self.via == "anonymous"


ANONYMOUS = Identity("mesh-system:anonymous", (UNAUTHENTICATED_GROUP,), "anonymous")
LOCALHOST_ADMIN = Identity(ADMIN_GROUP, (ADMIN_GROUP, AUTHENTICATED_GROUP), "localhost")


class Refused(Exception):
    """A request refused by authentication (401) or authorization (401/403)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # the short word counted in zonemesh_auth_refusals_total
        self.message = message

    def error(self) -> ApiError:
        headers = {"WWW-Authenticate": 'Bearer realm="zonemesh"'} if self.status == 401 else None
        return ApiError(self.status, self.message, headers=headers)


# --- authentication ------------------------------------------------------------------------


def authenticate(scope: Scope, runtime: Runtime) -> Identity:
    """The identity of a request; raises `Refused` (401) for a token that does not verify."""
    values = _header_values(scope, b"authorization")
    if not values:
        if runtime.config.api_server.authn.localhost_is_admin and is_trusted_loopback(scope):
            return LOCALHOST_ADMIN
        return ANONYMOUS
    if len(values) > 1:
        raise Refused(401, "malformed", "send exactly one Authorization header")
    raw = values[0].decode("latin-1").strip()
    if raw.lower() == "bearer":
        raise Refused(401, "missing", "the Authorization header holds no token")
    if raw[:7].lower() != "bearer ":
        raise Refused(401, "malformed", "the Authorization header must be `Bearer <user token>`")
    try:
        token = runtime.tokens.verify_user(bearer(raw))
    except TokenError as e:
        raise Refused(401, e.reason, f"the user token is refused: {e.message}") from None
    except Exception:
        # A token no rule foresaw must still be a 401, never a 500 or a way in.
        log.exception("verifying a user token failed unexpectedly")
        raise Refused(401, "malformed", "the user token is refused: it cannot be read") from None
    groups = (*token.groups, AUTHENTICATED_GROUP)
    return Identity(token.name, tuple(dict.fromkeys(groups)), "token")


def is_trusted_loopback(scope: Scope) -> bool:
    """Whether a request without a token may act as the admin because it is local.

    The TCP peer being loopback is not enough (kumahq/kuma#16416, fixed in Kuma 2.14.0):
    - a reverse proxy on the same host makes every remote client's request arrive from
      loopback; it announces itself with Forwarded / X-Forwarded-For / X-Real-IP;
    - a web page in the operator's browser can send requests to 127.0.0.1 (a "simple"
      cross-origin POST or DELETE needs no preflight); the browser marks them with
      `Sec-Fetch-Site: cross-site`, or `same-site` when the page is served from another port
      of the same loopback host, so both are refused (only `same-origin`, `none` or no header
      pass);
    - DNS rebinding points an attacker's host name at 127.0.0.1: the browser then sends
      `Host: attacker.example`, so the Host header must name a loopback address or
      `localhost` too.
    """
    client = scope.get("client")
    if not client or not _is_loopback_address(str(client[0])):
        return False
    if any(_header_values(scope, name) for name in _PROXY_HEADERS):
        return False
    fetch_site = _header_values(scope, b"sec-fetch-site")
    if any(v.strip().lower() not in (b"same-origin", b"none") for v in fetch_site):
        return False
    hosts = _header_values(scope, b"host")
    return len(hosts) == 1 and _is_loopback_host(hosts[0].decode("latin-1"))


def _is_loopback_address(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _is_loopback_host(host_header: str) -> bool:
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:5681
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in ("localhost", "localhost.") or _is_loopback_address(host)


def _header_values(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope.get("headers", ()) if key.lower() == name]


# --- authorization -------------------------------------------------------------------------


def admin_needed(method: str, path: str) -> str | None:
    """What makes a request admin-only (a phrase for messages), or None when anyone may."""
    segments = [s.lower() for s in path.split("/") if s]
    if segments and segments[0] == "tokens":
        return "managing tokens"
    # The type sits at /{type}… or /meshes/{mesh}/{type}…; empty segments are dropped, so a
    # path the router would not match cannot slip past either.
    type_segment = segments[2] if len(segments) >= 3 and segments[0] == "meshes" else None
    if type_segment is None and segments:
        type_segment = segments[0]
    if type_segment in _SECRET_SEGMENTS:
        return "reading or writing secrets"
    if method.upper() not in READ_METHODS:
        return "changing resources"
    return None


def authorize(identity: Identity, method: str, path: str) -> None:
    """Raise `Refused` unless `identity` may do `method path`."""
    what = admin_needed(method, path)
    if what is None or identity.is_admin:
        return
    shown = f"{method} {path[:_MAX_SHOWN_PATH]}"
    if identity.anonymous:
        raise Refused(
            401,
            "missing",
            f"this needs an admin user token: {what} is for group {ADMIN_GROUP} ({shown}); "
            "send Authorization: Bearer <token>",
        )
    raise Refused(
        403,
        "forbidden",
        f'access denied: user "{identity.name}" is not in group {ADMIN_GROUP}, '
        f"which {what} needs ({shown})",
    )


# --- the middleware --------------------------------------------------------------------------


class AuthMiddleware:
    """Authenticates and authorizes every HTTP request; see the module docstring."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.drain_cap = runtime.config.api_server.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            identity = authenticate(scope, self.runtime)
            authorize(identity, scope["method"], scope["path"])
        except Refused as refused:
            self.runtime.refusals.record("api", refused.reason, refused.message, _peer(scope))
            drained = await discard_body(scope, receive, self.drain_cap)
            await send_error(send, refused.error(), close=not drained)
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


def identity_of(request: Request) -> Identity:
    """The identity the middleware found (anonymous if, somehow, it did not run)."""
    identity = request.scope.get("state", {}).get("identity")
    return identity if isinstance(identity, Identity) else ANONYMOUS


def is_admin(request: Request) -> bool:
    return identity_of(request).is_admin


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""
