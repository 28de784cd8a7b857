"""`POST /tokens/{dataplane,zone,user}`: Kuma's token endpoints; each answers the raw JWT.
`POST /tokens/signing-keys`: rotate the signing key of one kind (and mesh).

Everything under `/tokens` is for admins only (`zonemesh.api.auth`). Where each kind is issued
(and so where its signing keys live and rotate):
- dataplane tokens by the zone (or standalone) control plane the proxy connects to — its keys
  never leave it, so a token works only in the zone that issued it (a compromised zone cannot
  mint tokens for another); global refuses them with a 405 saying where to go;
- zone tokens by global only, which is where KDS verifies them;
- user tokens by any control plane, for its own API.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from zonemesh.api.errors import ApiError
from zonemesh.api.resources import read_document, runtime_of
from zonemesh.auth.service import MAX_VALIDITY
from zonemesh.auth.tokens import ZONE_SCOPE_CP, TokenKind
from zonemesh.config import parse_duration
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.proxy_types import PROXY_TYPES
from zonemesh.resources.registry import MESH
from zonemesh.runtime.kernel import Runtime

router = APIRouter(tags=["tokens"])

_FIELDS = {
    "dataplane": {"mesh", "name", "tags", "type", "workload", "validFor"},
    "zone": {"zone", "scope", "validFor"},
    "user": {"name", "groups", "validFor"},
    "signing-keys": {"kind", "mesh"},
}


def _check_fields(kind: str, body: dict[str, Any]) -> None:
    unknown = sorted(set(body) - _FIELDS[kind])
    if unknown:
        raise ApiError.invalid(
            unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS[kind]))})"
        )


def _string(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise ApiError.invalid(field, "cannot be empty")
        return None
    if not isinstance(value, str):
        raise ApiError.invalid(field, "must be a string")
    return value


def _strings(body: dict[str, Any], field: str) -> list[str]:
    value = body.get(field) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ApiError.invalid(field, "must be a list of non-empty strings")
    return list(value)


def _valid_for(body: dict[str, Any]) -> timedelta:
    raw = _string(body, "validFor", required=True)
    assert raw is not None
    try:
        valid_for = parse_duration(raw)
    except ValueError as e:
        raise ApiError.invalid("validFor", str(e)) from None
    if valid_for > MAX_VALIDITY:
        raise ApiError.invalid("validFor", f"must be at most {MAX_VALIDITY.days} days (10 years)")
    return valid_for


def _token(text: str) -> PlainTextResponse:
    return PlainTextResponse(text)


def _check_issued_here(runtime: Runtime, kind: TokenKind) -> None:
    """405 for a kind this control plane neither issues nor verifies (module docstring)."""
    if kind is TokenKind.DATAPLANE and runtime.config.is_global:
        raise ApiError(
            405,
            "dataplane tokens are issued by the zone control plane the proxy connects to",
            title="Method Not Allowed",
        )
    if kind is TokenKind.ZONE and not runtime.config.is_global:
        raise ApiError(
            405, "zone tokens are issued by the global control plane", title="Method Not Allowed"
        )


async def _existing_mesh(runtime: Runtime, body: dict[str, Any]) -> str:
    mesh = _string(body, "mesh", required=True)
    assert mesh is not None
    if await runtime.store.find(ResourceKey(MESH.name, "", mesh)) is None:
        raise ApiError.invalid("mesh", f'mesh "{mesh}" not found')
    return mesh


@router.post("/tokens/dataplane")
async def dataplane_token(request: Request) -> PlainTextResponse:
    """A token for data plane proxies of a mesh (optionally one name, some tags, a type)."""
    runtime = runtime_of(request)
    _check_issued_here(runtime, TokenKind.DATAPLANE)
    body = await read_document(request)
    _check_fields("dataplane", body)
    mesh = await _existing_mesh(runtime, body)
    proxy_type = _string(body, "type", required=False) or "dataplane"
    if proxy_type not in PROXY_TYPES:
        raise ApiError.invalid("type", f"must be one of: {', '.join(PROXY_TYPES)}")
    raw_tags = body.get("tags") or {}
    if not isinstance(raw_tags, dict):
        raise ApiError.invalid("tags", "must be a map of tag name to a list of values")
    tags = {}
    for tag, values in raw_tags.items():
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v for v in values)
        ):
            raise ApiError.invalid(f"tags[{tag}]", "must be a non-empty list of values")
        tags[str(tag)] = list(values)
    token = await runtime.tokens.issue_dataplane(
        mesh=mesh,
        name=_string(body, "name", required=False),
        tags=tags,
        proxy_type=proxy_type,
        valid_for=_valid_for(body),
    )
    return _token(token)


@router.post("/tokens/zone")
async def zone_token(request: Request) -> PlainTextResponse:
    """A token a zone control plane presents to global's KDS (scope `cp`)."""
    runtime = runtime_of(request)
    _check_issued_here(runtime, TokenKind.ZONE)
    body = await read_document(request)
    _check_fields("zone", body)
    zone = _string(body, "zone", required=True)
    assert zone is not None
    scope = _strings(body, "scope") or [ZONE_SCOPE_CP]
    if ZONE_SCOPE_CP not in scope:
        raise ApiError.invalid("scope", f'must include "{ZONE_SCOPE_CP}" (a zone control plane)')
    return _token(
        await runtime.tokens.issue_zone(zone=zone, scope=scope, valid_for=_valid_for(body))
    )


@router.post("/tokens/user")
async def user_token(request: Request) -> PlainTextResponse:
    """A token for this control plane's API (`Authorization: Bearer …`)."""
    runtime = runtime_of(request)
    body = await read_document(request)
    _check_fields("user", body)
    name = _string(body, "name", required=True)
    assert name is not None
    groups = _strings(body, "groups")
    return _token(
        await runtime.tokens.issue_user(name=name, groups=groups, valid_for=_valid_for(body))
    )


@router.post("/tokens/signing-keys")
async def rotate_signing_key(request: Request) -> dict[str, str]:
    """Add the next signing key of a kind (`{"kind": "dataplane", "mesh": "default"}`).

    It signs every token issued from now on; tokens signed by older keys keep verifying until
    those keys (GlobalSecrets `<kind>-token-signing-key[-<mesh>]-<serial>`) are deleted.
    """
    runtime = runtime_of(request)
    body = await read_document(request)
    _check_fields("signing-keys", body)
    raw_kind = _string(body, "kind", required=True)
    try:
        kind = TokenKind(raw_kind)
    except ValueError:
        kinds = ", ".join(k.value for k in TokenKind)
        raise ApiError.invalid("kind", f"must be one of: {kinds}") from None
    _check_issued_here(runtime, kind)
    mesh = ""
    if kind is TokenKind.DATAPLANE:
        mesh = await _existing_mesh(runtime, body)
    elif body.get("mesh"):
        raise ApiError.invalid("mesh", f"{kind.value} tokens are not scoped to a mesh")
    kid = await runtime.tokens.rotate(kind, mesh)
    return {"kind": kind.value, "mesh": mesh, "kid": kid}
