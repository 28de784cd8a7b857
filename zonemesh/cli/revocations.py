"""`zonemesh revoke dataplane-token|zone-token|user-token`: add token ids to a revocation list.

The lists are Kuma's: comma-separated token ids (`jti`) in the Secret
`dataplane-token-revocations-<mesh>` or the GlobalSecrets `zone-token-revocations` /
`user-token-revocations`. Writing that Secret yourself keeps working; these commands do the
read-modify-write through the API for you, with `If-Match` (or `If-None-Match: *` for the
first id) so that two revocations at the same moment never drop each other: a 409 means
someone else wrote first, so read again and retry.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import click

from zonemesh.auth.service import revocations_secret
from zonemesh.auth.tokens import TokenError, TokenKind, peek
from zonemesh.cli.client import ApiClient, CliError, Connection, client_options, resource_path
from zonemesh.resources.registry import by_kind

MAX_ATTEMPTS = 5
# The claim only tokens of each kind carry: a token file of the wrong kind is refused.
_KIND_CLAIM = {TokenKind.DATAPLANE: "Mesh", TokenKind.ZONE: "Zone", TokenKind.USER: "Groups"}


def token_file_claims(path: str, kind: TokenKind) -> dict[str, Any]:
    """The (unverified) claims of a token file: only its id and mesh are used."""
    try:
        raw = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CliError(f"--token-file {path}: cannot read: {reason}") from None
    try:
        claims = peek(raw).claims
    except TokenError as e:
        raise CliError(f"--token-file {path}: {e.message}") from None
    if _KIND_CLAIM[kind] not in claims or not isinstance(claims.get("jti"), str):
        raise CliError(f"--token-file {path}: this is not a {kind.value} token")
    return claims


def _ids_of(data: str) -> list[str]:
    try:
        text = base64.b64decode(data, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        raise CliError("the stored revocation list is not base64 data") from None
    ids = [t.strip() for t in text.replace("\n", ",").split(",")]
    return list(dict.fromkeys(t for t in ids if t))


def revoke(client: ApiClient, kind: TokenKind, mesh: str, token_ids: list[str]) -> list[str]:
    """Add `token_ids` to the list of `kind` (in `mesh`); returns the ids that were new."""
    type_name, secret_mesh, name = revocations_secret(kind, mesh)
    rtype = by_kind(type_name)
    path = resource_path(rtype, secret_mesh, name)
    for _ in range(MAX_ATTEMPTS):
        found = client.request("GET", path, allow=(404,), context=f"{type_name} {name}")
        current: dict[str, Any] = {} if found.status_code == 404 else found.json()
        known = _ids_of(current["data"]) if current.get("data") else []
        new = [t for t in dict.fromkeys(token_ids) if t not in known]
        if not new:
            return []
        doc: dict[str, Any] = {
            "type": type_name,
            "name": name,
            "labels": current.get("labels") or {},
            "data": base64.b64encode(",".join(known + new).encode()).decode(),
        }
        if rtype.mesh_scoped:
            doc["mesh"] = secret_mesh
        etag = found.headers.get("etag") if found.status_code != 404 else None
        precondition = {"If-Match": etag} if etag else {"If-None-Match": "*"}
        written = client.request(
            "PUT",
            path,
            body=doc,
            headers=precondition,
            allow=(409,),
            context=f"{type_name} {name}",
        )
        if written.status_code != 409:
            return new
    raise CliError(
        f"{type_name} {name} changed under every one of {MAX_ATTEMPTS} attempts: try again"
    )


def _revoke_cmd(
    kind: TokenKind,
    mesh: str | None,
    ids: tuple[str, ...],
    token_files: tuple[str, ...],
    connection: Connection,
) -> None:
    if not ids and not token_files:
        raise CliError("name the token to revoke: --id TOKEN_ID or --token-file FILE")
    token_ids = [i.strip() for i in ids if i.strip()]
    for path in token_files:
        claims = token_file_claims(path, kind)
        if kind is TokenKind.DATAPLANE:
            if mesh is None:
                mesh = str(claims["Mesh"])
            elif claims["Mesh"] != mesh:
                raise CliError(
                    f'--token-file {path}: the token is for mesh "{claims["Mesh"]}", not "{mesh}"'
                )
        token_ids.append(claims["jti"])
    mesh = (mesh or "default") if kind is TokenKind.DATAPLANE else ""
    with connection.client() as client:
        new = revoke(client, kind, mesh, token_ids)
    where = f' in mesh "{mesh}"' if mesh else ""
    for token_id in dict.fromkeys(token_ids):
        verb = "revoked" if token_id in new else "already revoked"
        click.echo(f"{verb} {kind.value} token {token_id}{where}")


def _options(command: Any) -> Any:
    command = click.option(
        "--token-file",
        "token_files",
        multiple=True,
        metavar="FILE",
        help="A file holding the token to revoke (repeatable)",
    )(command)
    return click.option(
        "--id", "ids", multiple=True, metavar="TOKEN_ID", help="The token's id (jti; repeatable)"
    )(command)


@click.group("revoke")
def revoke_group() -> None:
    """Revoke tokens: they are refused from then on, and live streams using them end."""


@revoke_group.command("dataplane-token")
@click.option("--mesh", help="Mesh of the token (default: the token file's, else default)")
@_options
@client_options
def revoke_dataplane_cmd(
    mesh: str | None, ids: tuple[str, ...], token_files: tuple[str, ...], connection: Connection
) -> None:
    """Revoke dataplane tokens (on global, or a standalone CP: the list syncs to the zones)."""
    _revoke_cmd(TokenKind.DATAPLANE, mesh, ids, token_files, connection)


@revoke_group.command("zone-token")
@_options
@client_options
def revoke_zone_cmd(
    ids: tuple[str, ...], token_files: tuple[str, ...], connection: Connection
) -> None:
    """Revoke zone tokens (on the global control plane)."""
    _revoke_cmd(TokenKind.ZONE, None, ids, token_files, connection)


@revoke_group.command("user-token")
@_options
@client_options
def revoke_user_cmd(
    ids: tuple[str, ...], token_files: tuple[str, ...], connection: Connection
) -> None:
    """Revoke user tokens (on the control plane that issued them)."""
    _revoke_cmd(TokenKind.USER, None, ids, token_files, connection)
