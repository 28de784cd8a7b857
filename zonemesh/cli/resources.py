"""Client commands: `apply`, `get`, `delete`, `inspect` (kumactl's habits, zonemesh's API)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click

from zonemesh.cli import output
from zonemesh.cli.client import CliError, Connection, client_options, resource_path
from zonemesh.resources.base import Resource, ResourceType
from zonemesh.resources.codec import parse_documents, resource_from_wire
from zonemesh.resources.errors import ValidationError
from zonemesh.resources.registry import UnknownTypeError, by_kind, by_name

_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_INSPECTABLE = {
    "dataplanes": "dataplanes",
    "dataplane": "dataplanes",
    "zones": "zones",
    "zone": "zones",
    "zoneingresses": "zoneingresses",
    "zone-ingresses": "zoneingresses",
    "zoneingress": "zoneingresses",
    "zoneegresses": "zoneegresses",
    "zone-egresses": "zoneegresses",
    "zoneegress": "zoneegresses",
}

mesh_option = click.option(
    "-m", "--mesh", default="default", show_default=True, help="Mesh of mesh-scoped types"
)
format_option = click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(output.FORMATS),
    default="table",
    show_default=True,
    help="Output format",
)


def _type(name: str) -> ResourceType:
    try:
        return by_name(name)
    except UnknownTypeError as e:
        raise CliError(str(e)) from None


# --- apply -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Manifest:
    source: str
    doc: dict[str, Any]
    resource: Resource


def _sources(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, text) of every file named: `-` is stdin, a directory its manifests."""
    found: list[tuple[str, str]] = []
    for raw in paths:
        if raw == "-":
            found.append(("<stdin>", click.get_text_stream("stdin").read()))
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix in _MANIFEST_SUFFIXES
            )
            if not files:
                raise CliError(f"{raw}: the directory holds no .yaml, .yml or .json file")
        else:
            files = [path]
        for file in files:
            try:
                found.append((str(file), file.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise CliError(f"{file}: cannot read: {reason}") from None
    return found


def _parse_all(sources: list[tuple[str, str]]) -> list[_Manifest]:
    """Parse and validate everything first, so that an invalid file applies nothing."""
    manifests: list[_Manifest] = []
    problems: list[str] = []
    for source, text in sources:
        try:
            docs = parse_documents(text, source=source)
        except ValidationError as e:
            problems.extend(v.reason for v in e.violations)
            continue
        for index, doc in enumerate(docs):
            where = source if len(docs) == 1 else f"{source} (document {index + 1})"
            try:
                manifests.append(_Manifest(where, doc, resource_from_wire(doc)))
            except ValidationError as e:
                problems.extend(f"{where}: {v}" for v in e.violations)
    if problems:
        raise CliError("nothing was applied: the input is not valid", problems)
    if not manifests:
        raise CliError("nothing to apply: the input holds no resource")
    return manifests


@click.command("apply")
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    required=True,
    metavar="FILE|DIR|-",
    help="YAML or JSON manifests (repeatable); a directory means its .yaml/.yml/.json files",
)
@client_options
def apply_cmd(files: tuple[str, ...], connection: Connection) -> None:
    """Create or update resources from YAML or JSON files."""
    manifests = _parse_all(_sources(files))
    with connection.client() as client:
        for manifest in manifests:
            res = manifest.resource
            rtype = by_kind(res.type)
            status, body = client.put(
                resource_path(rtype, res.mesh, res.name),
                manifest.doc,
                context=f'{manifest.source}: {res.type} "{res.name}"',
            )
            verb = "Created" if status == 201 else "Updated"
            click.echo(f'resource type="{res.type}" mesh="{res.mesh}" name="{res.name}" {verb}')
            for warning in (body or {}).get("warnings") or []:
                click.echo(f"Warning: {warning}", err=True)


# --- get / delete ----------------------------------------------------------------------------


@click.command("get")
@click.argument("type_name", metavar="TYPE")
@click.argument("name", required=False)
@mesh_option
@format_option
@click.option("--size", type=click.IntRange(1, 1000), help="Page size (default 100)")
@click.option("--offset", help="Where the page starts (from a previous page)")
@client_options
def get_cmd(
    type_name: str,
    name: str | None,
    mesh: str,
    fmt: str,
    size: int | None,
    offset: str | None,
    connection: Connection,
) -> None:
    """Show resources of a TYPE (plural like meshmultizoneservices, alias like mzsvc), or one."""
    rtype = _type(type_name)
    with connection.client() as client:
        if name:
            item = client.get(resource_path(rtype, mesh, name))
            click.echo(
                output.resource_table(rtype, [item]) if fmt == "table" else output.dump(item, fmt)
            )
            return
        params: dict[str, Any] = {}
        if size is not None:
            params["size"] = size
        if offset:
            params["offset"] = offset
        listing = client.get(resource_path(rtype, mesh), params=params)
    if fmt != "table":
        click.echo(output.dump({k: listing.get(k) for k in ("items", "next", "total")}, fmt))
        return
    items = listing.get("items") or []
    if not items:
        where = f" in {mesh} mesh" if rtype.mesh_scoped else ""
        click.echo(f"No resources found{where}")
        return
    click.echo(output.resource_table(rtype, items))
    next_offset = _offset_of(listing.get("next"))
    if next_offset:
        click.echo(
            f"\nRerun command with --offset={next_offset} argument to retrieve more resources"
        )


def _offset_of(next_url: Any) -> str | None:
    if not isinstance(next_url, str) or not next_url:
        return None
    values = parse_qs(urlsplit(next_url).query).get("offset")
    return values[0] if values else None


@click.command("delete")
@click.argument("type_name", metavar="TYPE")
@click.argument("name")
@mesh_option
@client_options
def delete_cmd(type_name: str, name: str, mesh: str, connection: Connection) -> None:
    """Delete one resource."""
    rtype = _type(type_name)
    with connection.client() as client:
        client.delete(resource_path(rtype, mesh, name))
    click.echo(f'deleted {rtype.name} "{name}"')


# --- inspect ---------------------------------------------------------------------------------


@click.command("inspect")
@click.argument("what", metavar="dataplanes|zones|zoneingresses|zoneegresses")
@mesh_option
@format_option
@client_options
def inspect_cmd(what: str, mesh: str, fmt: str, connection: Connection) -> None:
    """Status tables: Online/Offline, last connected, updates, NACKs."""
    kind = _INSPECTABLE.get(what.lower())
    if kind is None:
        raise CliError(
            f'cannot inspect "{what}": choose one of dataplanes, zones, zoneingresses, zoneegresses'
        )
    path = f"/meshes/{mesh}/dataplanes/_overview" if kind == "dataplanes" else f"/{kind}/_overview"
    with connection.client() as client:
        items = client.get_all(path)
    if fmt != "table":
        click.echo(output.dump({"items": items, "total": len(items)}, fmt))
        return
    click.echo(output.inspect_table(kind, items))


COMMANDS = (apply_cmd, get_cmd, delete_cmd, inspect_cmd)
