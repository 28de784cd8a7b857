"""`zonemesh generate …-token` and `zonemesh rotate signing-key`: kumactl's token commands.

Tokens are issued by the control plane (`POST /tokens/…`, admins only); the command prints
the token on stdout and nothing else, so `> file` or `$(…)` captures exactly the token.
"""

from __future__ import annotations

from typing import Any

import click

from zonemesh.auth.tokens import PROXY_TYPES, TokenKind
from zonemesh.cli.client import CliError, Connection, client_options

DATAPLANE_VALIDITY = "8760h"
ZONE_VALIDITY = "8760h"
USER_VALIDITY = "24h"


def parse_tags(raw: tuple[str, ...]) -> dict[str, list[str]]:
    """`--tag K=V` (repeatable) and `--tag K=V1,V2`: every value of a tag accumulates."""
    tags: dict[str, list[str]] = {}
    for item in raw:
        key, sep, values = item.partition("=")
        key = key.strip()
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not parts:
            raise CliError(f"--tag {item!r}: use KEY=VALUE or KEY=VALUE1,VALUE2")
        known = tags.setdefault(key, [])
        known.extend(v for v in parts if v not in known)
    return tags


@click.group("generate")
def generate_group() -> None:
    """Issue tokens (the control plane signs them; admins only)."""


def _issue(connection: Connection, kind: TokenKind, body: dict[str, Any]) -> None:
    with connection.client() as client:
        token = client.post_text(f"/tokens/{kind.value}", body)
    click.echo(token.strip())


@generate_group.command("dataplane-token")
@click.option("--mesh", default="default", show_default=True, help="Mesh of the proxies")
@click.option("--name", help="Only a proxy of this name (default: any name)")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE[,VALUE…]",
    help="Only proxies whose inbounds carry these tag values, e.g. kuma.io/service=echo "
    "(repeatable; values accumulate)",
)
@click.option(
    "--proxy-type",
    type=click.Choice(PROXY_TYPES),
    default="dataplane",
    show_default=True,
    help="The kind of proxy the token is for",
)
@click.option(
    "--valid-for",
    default=DATAPLANE_VALIDITY,
    show_default=True,
    metavar="DURATION",
    help="How long the token is valid (e.g. 24h, 720h; at most 10 years)",
)
@client_options
def dataplane_token_cmd(
    mesh: str,
    name: str | None,
    tags: tuple[str, ...],
    proxy_type: str,
    valid_for: str,
    connection: Connection,
) -> None:
    """A dataplane token, from the zone (or standalone) control plane the proxies connect to.

    \b
    Example:
      zonemesh generate dataplane-token --mesh default --tag kuma.io/service=echo > echo.token
      zonemesh dp run --dataplane-token-file echo.token …
    """
    body: dict[str, Any] = {
        "mesh": mesh,
        "tags": parse_tags(tags),
        "type": proxy_type,
        "validFor": valid_for,
    }
    if name:
        body["name"] = name
    _issue(connection, TokenKind.DATAPLANE, body)


@generate_group.command("zone-token")
@click.option("--zone", required=True, help="The zone the token speaks for")
@click.option(
    "--valid-for",
    default=ZONE_VALIDITY,
    show_default=True,
    metavar="DURATION",
    help="How long the token is valid (at most 10 years)",
)
@client_options
def zone_token_cmd(zone: str, valid_for: str, connection: Connection) -> None:
    """A zone token (scope cp), from the global control plane, for a zone CP's KDS.

    \b
    Example:
      zonemesh generate zone-token --zone zone1 > zone1.token
      KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH=zone1.token zonemesh cp run --zone zone1 …
    """
    _issue(connection, TokenKind.ZONE, {"zone": zone, "scope": ["cp"], "validFor": valid_for})


@generate_group.command("user-token")
@click.option("--name", required=True, help="The user's name")
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="GROUP",
    help="A group of the user (repeatable); mesh-system:admin may change everything",
)
@click.option(
    "--valid-for",
    default=USER_VALIDITY,
    show_default=True,
    metavar="DURATION",
    help="How long the token is valid (at most 10 years)",
)
@client_options
def user_token_cmd(
    name: str, groups: tuple[str, ...], valid_for: str, connection: Connection
) -> None:
    """A user token for this control plane's API (send it with --token).

    \b
    Example:
      zonemesh generate user-token --name alice --group mesh-system:admin --valid-for 8h
    """
    body = {"name": name, "groups": list(dict.fromkeys(groups)), "validFor": valid_for}
    _issue(connection, TokenKind.USER, body)


@click.group("rotate")
def rotate_group() -> None:
    """Rotate keys."""


@rotate_group.command("signing-key")
@click.option(
    "--kind",
    type=click.Choice([k.value for k in TokenKind]),
    required=True,
    help="Which tokens the key signs",
)
@click.option("--mesh", default="default", show_default=True, help="Mesh (dataplane keys only)")
@client_options
def rotate_signing_key_cmd(kind: str, mesh: str, connection: Connection) -> None:
    """Add the next signing key of a kind; it signs every token issued from now on.

    Tokens signed by older keys keep working until those keys are deleted
    (`zonemesh delete global-secret <kind>-token-signing-key[-<mesh>]-<N>`), which
    invalidates every token they signed. Prints the new key id.
    """
    body = {"kind": kind, "mesh": mesh} if kind == TokenKind.DATAPLANE.value else {"kind": kind}
    with connection.client() as client:
        answer = client.post("/tokens/signing-keys", body)
    kid = str((answer or {}).get("kid", ""))
    click.echo(kid)
    click.echo(f"{kind} tokens are now signed with key {kid}", err=True)


COMMANDS = (generate_group, rotate_group)
