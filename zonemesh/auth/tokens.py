"""The three token kinds and what each one allows, as signed JWTs.

Dataplane tokens name what a proxy may be (mesh, optionally a name, tags such as
`kuma.io/service`, a proxy type); zone tokens name the zone a control plane may speak for;
user tokens name an API user and their groups. Claim names are Kuma's (`Name`, `Mesh`,
`Tags`, `Type`, `Zone`, `Scope`, `Groups`, plus `jti`, `iat`, `nbf`, `exp`), so a Kuma user
reading a token sees familiar fields. RS256 with the key id in the header, as Kuma signs.

This module only encodes and decodes: which keys exist and which token ids are revoked is
`zonemesh.auth.service`'s business.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt

from zonemesh.resources.proxy_types import PROXY_TYPES

ALGORITHM = "RS256"
# Kuma backdates iat/nbf a little, for verifiers whose clock is slightly behind the issuer's.
BACKDATE = timedelta(seconds=5)
ADMIN_GROUP = "mesh-system:admin"
ZONE_SCOPE_CP = "cp"


class TokenKind(StrEnum):
    DATAPLANE = "dataplane"
    ZONE = "zone"
    USER = "user"


class TokenError(Exception):
    """A token that is refused; `reason` is a short word for logs and metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class DataplaneToken:
    """What a dataplane token allows: `name` None = any name; empty `tags` = any tags."""

    mesh: str
    name: str | None
    tags: Mapping[str, tuple[str, ...]]
    proxy_type: str
    token_id: str
    expires_at: datetime


@dataclass(frozen=True)
class ZoneToken:
    zone: str
    scope: tuple[str, ...]
    token_id: str
    expires_at: datetime


@dataclass(frozen=True)
class UserToken:
    name: str
    groups: tuple[str, ...]
    token_id: str
    expires_at: datetime

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups


Token = DataplaneToken | ZoneToken | UserToken


@dataclass(frozen=True)
class Unverified:
    """A token's header and claims before its signature is checked: enough to pick the key."""

    kid: str
    claims: dict[str, Any] = field(repr=False)

    @property
    def mesh(self) -> str:
        value = self.claims.get("Mesh")
        return value if isinstance(value, str) else ""


def peek(token: str) -> Unverified:
    """Read the key id and claims without trusting them; raises `TokenError("malformed")`."""
    if not token:
        raise TokenError("missing", "no token given")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as e:
        raise TokenError("malformed", f"the token is not a valid JWT: {e}") from None
    kid = header.get("kid")
    # A non-string kid crashed Kuma's validator (kumahq/kuma#17465): refuse it plainly.
    if not isinstance(kid, str) or not kid:
        raise TokenError("malformed", "the token has no key id (kid) in its header")
    if header.get("alg") != ALGORITHM:
        raise TokenError("malformed", f"the token must be signed with {ALGORITHM}")
    return Unverified(kid, claims)


def encode(claims: Mapping[str, Any], *, private_key: Any, kid: str, valid_for: timedelta) -> str:
    now = datetime.now(UTC)
    body = {
        **claims,
        "jti": str(uuid.uuid4()),
        "iat": now - BACKDATE,
        "nbf": now - BACKDATE,
        "exp": now + valid_for,
    }
    return jwt.encode(body, private_key, algorithm=ALGORITHM, headers={"kid": kid})


def verify(token: str, public_key: Any) -> dict[str, Any]:
    """The claims, once signature and validity period check out."""
    try:
        return jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "jti"]},
            leeway=timedelta(seconds=5),
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("expired", "the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("not-yet-valid", "the token is not valid yet") from None
    except jwt.InvalidSignatureError:
        raise TokenError("bad-signature", "the token's signature does not verify") from None
    except jwt.PyJWTError as e:
        raise TokenError("malformed", f"the token is invalid: {e}") from None


def dataplane_claims(
    mesh: str, name: str | None, tags: Mapping[str, list[str]], proxy_type: str
) -> dict[str, Any]:
    return {"Mesh": mesh, "Name": name or "", "Tags": dict(tags), "Type": proxy_type}


def zone_claims(zone: str, scope: list[str]) -> dict[str, Any]:
    return {"Zone": zone, "Scope": list(scope)}


def user_claims(name: str, groups: list[str]) -> dict[str, Any]:
    return {"Name": name, "Groups": list(groups)}


def _str(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name, "")
    if not isinstance(value, str):
        raise TokenError("malformed", f"claim {name} must be a string")
    return value


def _strings(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenError("malformed", f"claim {name} must be a list of strings")
    return tuple(value)


def _expiry(claims: Mapping[str, Any]) -> datetime:
    return datetime.fromtimestamp(float(claims["exp"]), UTC)


def as_dataplane(claims: Mapping[str, Any]) -> DataplaneToken:
    raw_tags = claims.get("Tags") or {}
    if not isinstance(raw_tags, dict):
        raise TokenError("malformed", "claim Tags must be a map of lists")
    tags = {str(k): _strings(raw_tags, k) for k in raw_tags}
    proxy_type = _str(claims, "Type") or "dataplane"
    if proxy_type not in PROXY_TYPES:
        raise TokenError("malformed", f"claim Type must be one of: {', '.join(PROXY_TYPES)}")
    return DataplaneToken(
        mesh=_str(claims, "Mesh"),
        name=_str(claims, "Name") or None,
        tags=tags,
        proxy_type=proxy_type,
        token_id=_str(claims, "jti"),
        expires_at=_expiry(claims),
    )


def as_zone(claims: Mapping[str, Any]) -> ZoneToken:
    return ZoneToken(
        zone=_str(claims, "Zone"),
        scope=_strings(claims, "Scope"),
        token_id=_str(claims, "jti"),
        expires_at=_expiry(claims),
    )


def as_user(claims: Mapping[str, Any]) -> UserToken:
    return UserToken(
        name=_str(claims, "Name"),
        groups=_strings(claims, "Groups"),
        token_id=_str(claims, "jti"),
        expires_at=_expiry(claims),
    )
