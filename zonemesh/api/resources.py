"""CRUD of every registered type on Kuma's paths.

Mesh-scoped types live at `/meshes/{mesh}/{plural}[/{name}]` (and `/{plural}` lists them
across meshes); global-scoped types at `/{plural}[/{name}]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from zonemesh.api.admission import check_write
from zonemesh.api.auth import is_admin
from zonemesh.api.errors import ApiError
from zonemesh.api.listing import filter_resources, page
from zonemesh.api.route_warnings import missing_backend_warnings
from zonemesh.api.wire import render
from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey, ResourceType
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.documents import DocumentLimitError, load_json, load_yaml_all
from zonemesh.resources.errors import ValidationError
from zonemesh.resources.origin import stamp_origin
from zonemesh.resources.registry import ALL_TYPES, MESH
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import AlreadyExistsError, ConflictError, NotFoundError

router = APIRouter()

BY_PLURAL: dict[str, ResourceType] = {t.plural: t for t in ALL_TYPES}
_STAMPED_LABELS = (labels.ORIGIN, labels.ZONE, labels.MESH)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def resolve_type(plural: str) -> ResourceType:
    """The type named by a path segment; 404 naming the known types."""
    rtype = BY_PLURAL.get(plural)
    if rtype is None:
        known = ", ".join(t.plural for t in ALL_TYPES)
        raise ApiError(
            404,
            f'unknown resource type "{plural}" (known: {known})',
            title="Not Found",
        )
    return rtype


def _mesh_scoped(plural: str) -> ResourceType:
    rtype = resolve_type(plural)
    if not rtype.mesh_scoped:
        raise ApiError(
            404,
            f"{rtype.name} is not scoped to a mesh: use /{rtype.plural}",
            title="Not Found",
        )
    return rtype


def _global_scoped(plural: str) -> ResourceType:
    rtype = resolve_type(plural)
    if rtype.mesh_scoped:
        raise ApiError(
            404,
            f"{rtype.name} is scoped to a mesh: use /meshes/{{mesh}}/{rtype.plural}/{{name}}",
            title="Not Found",
        )
    return rtype


def not_found(key: ResourceKey) -> ApiError:
    where = f' in mesh "{key.mesh}"' if key.mesh else ""
    return ApiError(404, f'{key.type} "{key.name}" not found{where}', title="Not Found")


def etag(resource: Resource) -> dict[str, str]:
    return {"ETag": f'"{resource.version}"'}


# --- reads -------------------------------------------------------------------------------


@router.get("/meshes/{mesh}/{plural}", include_in_schema=False)
async def list_in_mesh(request: Request, mesh: str, plural: str) -> dict[str, Any]:
    rtype = _mesh_scoped(plural)
    found = await runtime_of(request).store.list(rtype.name, mesh)
    admin = is_admin(request)
    return page(request, filter_resources(request, found), lambda r: render(r, rtype, admin=admin))


@router.get("/meshes/{mesh}/{plural}/{name}", include_in_schema=False)
async def get_in_mesh(request: Request, mesh: str, plural: str, name: str) -> JSONResponse:
    return await _get(request, _mesh_scoped(plural), mesh, name)


@router.get("/{plural}", include_in_schema=False)
async def list_all(request: Request, plural: str) -> dict[str, Any]:
    """A global type, or a mesh-scoped type across every mesh."""
    rtype = resolve_type(plural)
    found = await runtime_of(request).store.list(rtype.name, None)
    admin = is_admin(request)
    return page(request, filter_resources(request, found), lambda r: render(r, rtype, admin=admin))


@router.get("/{plural}/{name}", include_in_schema=False)
async def get_global(request: Request, plural: str, name: str) -> JSONResponse:
    return await _get(request, _global_scoped(plural), "", name)


async def _get(request: Request, rtype: ResourceType, mesh: str, name: str) -> JSONResponse:
    key = ResourceKey(rtype.name, mesh, name)
    found = await runtime_of(request).store.find(key)
    if found is None:
        raise not_found(key)
    return JSONResponse(render(found, rtype, admin=is_admin(request)), headers=etag(found))


# --- writes ------------------------------------------------------------------------------


@router.put("/meshes/{mesh}/{plural}/{name}", include_in_schema=False)
async def put_in_mesh(request: Request, mesh: str, plural: str, name: str) -> JSONResponse:
    return await _put(request, _mesh_scoped(plural), mesh, name)


@router.put("/{plural}/{name}", include_in_schema=False)
async def put_global(request: Request, plural: str, name: str) -> JSONResponse:
    return await _put(request, _global_scoped(plural), "", name)


@router.delete("/meshes/{mesh}/{plural}/{name}", include_in_schema=False)
async def delete_in_mesh(request: Request, mesh: str, plural: str, name: str) -> dict[str, Any]:
    return await _delete(request, _mesh_scoped(plural), mesh, name)


@router.delete("/{plural}/{name}", include_in_schema=False)
async def delete_global(request: Request, plural: str, name: str) -> dict[str, Any]:
    return await _delete(request, _global_scoped(plural), "", name)


async def _put(request: Request, rtype: ResourceType, mesh: str, name: str) -> JSONResponse:
    runtime = runtime_of(request)
    check_type_writable(runtime, rtype)
    doc = await read_document(request)
    _check_matches_url(doc, rtype, mesh, name)
    try:
        resource = resource_from_wire(doc)
    except ValidationError as e:
        raise ApiError.from_validation(e) from None
    if rtype.mesh_scoped and await runtime.store.find(ResourceKey(MESH.name, "", mesh)) is None:
        raise ApiError.invalid(
            "mesh", f"mesh of name {mesh} is not found", title="Resource is not valid"
        )
    try:
        await check_write(runtime.store, resource)
    except ValidationError as e:
        raise ApiError.from_validation(e) from None
    wanted_version = if_match(request)
    create_only = _if_none_match_any(request)
    store = runtime.store
    existing = await store.find(resource.key)
    check_resource_writable(runtime, rtype, existing)
    if create_only and existing is not None:
        raise _conflict(f"{_describe(resource.key)} exists already (If-None-Match: * was given)")
    stamped = stamp_origin(resource, is_global=runtime.config.is_global, zone=runtime.zone)
    warnings = _replaced_label_warnings(resource, stamped)
    warnings += await missing_backend_warnings(store, resource)
    try:
        if existing is None:
            if wanted_version is not None:
                raise _conflict(f"{_describe(resource.key)} does not exist (If-Match was given)")
            stored = await store.create(stamped)
            status_code = 201
        else:
            version = wanted_version if isinstance(wanted_version, int) else existing.version
            # Users do not write status: the control plane computes it and keeps it.
            stored = await store.update(stamped.with_(version=version, status=existing.status))
            status_code = 200
    except (ConflictError, AlreadyExistsError) as e:
        raise _conflict(f"{e}: read it again and retry") from None
    except NotFoundError:
        raise _conflict(f"{_describe(resource.key)} was deleted meanwhile") from None
    body: dict[str, Any] = {"warnings": warnings} if warnings else {}
    return JSONResponse(body, status_code=status_code, headers=etag(stored))


async def _delete(request: Request, rtype: ResourceType, mesh: str, name: str) -> dict[str, Any]:
    runtime = runtime_of(request)
    check_type_writable(runtime, rtype)
    key = ResourceKey(rtype.name, mesh, name)
    store = runtime.store
    existing = await store.find(key)
    if existing is None:
        raise not_found(key)
    check_resource_writable(runtime, rtype, existing)
    wanted = if_match(request)
    version = wanted if isinstance(wanted, int) else None
    if version is not None and version != existing.version:
        # Checked before a Mesh's contents go, so that a stale delete removes nothing.
        raise _conflict(f"{key}: version {version} is stale (stored: {existing.version})")
    if rtype is MESH:
        for t in ALL_TYPES:
            if t.mesh_scoped:
                for inner in await store.list(t.name, name):
                    with contextlib.suppress(NotFoundError):
                        await store.delete(inner.key)
    try:
        await store.delete(key, version)
    except ConflictError as e:
        raise _conflict(f"{e}: read it again and retry") from None
    except NotFoundError:
        raise not_found(key) from None
    return {}


# --- helpers -----------------------------------------------------------------------------


def check_type_writable(runtime: Runtime, rtype: ResourceType) -> None:
    """405 for the types this control plane only mirrors (see the contract's ownership)."""
    config = runtime.config
    if config.federated_zone and rtype.global_owned:
        raise ApiError(
            405,
            f"{rtype.name} is synced from the global control plane and is read-only on a "
            "zone control plane: create it on the global control plane",
            title="Method Not Allowed",
            headers={"Allow": "GET"},
        )
    if config.is_global and rtype.zone_owned:
        raise ApiError(
            405,
            f"{rtype.name} is created in the zones and is read-only on the global control "
            "plane: create it on a zone control plane",
            title="Method Not Allowed",
            headers={"Allow": "GET"},
        )


def check_resource_writable(
    runtime: Runtime, rtype: ResourceType, existing: Resource | None
) -> None:
    """A zone's copy of another zone's resource (synced through global) is read-only."""
    if existing is None or runtime.config.is_global or not rtype.zone_owned:
        return
    owner = existing.label(labels.ZONE)
    if owner and owner != runtime.zone:
        raise ApiError(
            405,
            f'{rtype.name} "{existing.name}" belongs to zone "{owner}" and is read-only here',
            title="Method Not Allowed",
            headers={"Allow": "GET"},
        )


def if_match(request: Request) -> int | str | None:
    """The version an `If-Match` header asks for: an int, "*" (any), or None (no header)."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    value = raw.strip()
    if value == "*":
        return "*"
    value = value.removeprefix("W/").strip('"')
    try:
        return int(value)
    except ValueError:
        raise ApiError.invalid(
            "If-Match", f'must be the ETag a GET returned (like "3"), got {raw!r}'
        ) from None


def _if_none_match_any(request: Request) -> bool:
    """`If-None-Match: *`: create only, never overwrite (a read-modify-write's first write)."""
    raw = request.headers.get("if-none-match")
    if raw is None:
        return False
    if raw.strip() != "*":
        raise ApiError.invalid("If-None-Match", f'only "*" is supported, got {raw!r}')
    return True


async def read_document(request: Request) -> dict[str, Any]:
    """One JSON or YAML object from the body; 400 with the parser's reason otherwise."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send the resource", title="Bad Request")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text", title="Bad Request") from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = content_type == "application/json" or content_type.endswith("+json")
    try:
        # In a worker thread: a large body must not hold up the event loop while it parses.
        docs = await asyncio.to_thread(_parse_body, text, is_json)
    except DocumentLimitError as e:
        raise ApiError.from_validation(e) from None
    except json.JSONDecodeError as e:
        raise _unparsable("JSON", e) from None
    except yaml.YAMLError as e:
        raise _unparsable("YAML", e) from None
    if len(docs) != 1:
        raise ApiError(
            400,
            f"the request body holds {len(docs)} documents: send one resource per request",
            title="Could not parse the body",
        )
    if not isinstance(docs[0], dict):
        raise ApiError(400, "the request body must be an object", title="Could not parse the body")
    return docs[0]


def _parse_body(text: str, is_json: bool) -> list[Any]:
    """Depth, size and YAML alias expansion bounded (resources/documents.py)."""
    if is_json:
        return [load_json(text, source="request body")]
    return [d for d in load_yaml_all(text, source="request body") if d is not None]


def _unparsable(kind: str, error: Exception) -> ApiError:
    reason = " ".join(str(error).split())
    return ApiError(
        400,
        f"the request body is not valid {kind}: {reason}",
        title="Could not parse the body",
    )


def _check_matches_url(doc: dict[str, Any], rtype: ResourceType, mesh: str, name: str) -> None:
    expected = {"type": rtype.name, "name": name}
    if rtype.mesh_scoped:
        expected["mesh"] = mesh
    for field, value in expected.items():
        if doc.get(field) != value:
            raise ApiError.invalid(
                field,
                f"{field} from the URL has to be the same as in body",
                title="Resource is not valid",
            )


def _replaced_label_warnings(given: Resource, stamped: Resource) -> list[str]:
    return [
        f'label "{key}" was set to "{stamped.labels[key]}": the control plane owns it'
        for key in _STAMPED_LABELS
        if key in given.labels and given.labels[key] != stamped.labels.get(key)
    ]


def _describe(key: ResourceKey) -> str:
    where = f' in mesh "{key.mesh}"' if key.mesh else ""
    return f'{key.type} "{key.name}"{where}'


def _conflict(detail: str) -> ApiError:
    return ApiError(409, detail, title="Conflict")
