"""The OpenAPI document: FastAPI's own routes plus one path pair per resource type.

The resource routes are generic (`/{plural}/{name}`), so their paths are written out here
per type, with the spec schema each type validates against.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from zonemesh.resources.base import ResourceType
from zonemesh.resources.registry import ALL_TYPES

_REF = "#/components/schemas/{model}"
_ERROR = {"$ref": "#/components/schemas/Error"}

_ERROR_SCHEMA = {
    "type": "object",
    "description": "Kong AIP-193 error",
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "integer"},
        "title": {"type": "string"},
        "detail": {"type": "string"},
        "invalid_parameters": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}


def _param(name: str, where: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": {"type": "string"},
        "description": description,
    }


_LIST_PARAMS = [
    _param("size", "query", "page size (default 100, at most 1000)"),
    _param("offset", "query", "opaque offset from the `next` URL of the previous page"),
    _param("name", "query", "only resources whose name contains this"),
]


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
        for c in codes
    }


def _resource_schema(rtype: ResourceType) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "type": {"type": "string", "enum": [rtype.name]},
        "name": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    }
    if rtype.mesh_scoped:
        envelope["mesh"] = {"type": "string"}
    spec_ref = {"$ref": _REF.format(model=f"{rtype.name}Spec")}
    if rtype.flat:
        return {"allOf": [{"type": "object", "properties": envelope}, spec_ref]}
    envelope["spec"] = spec_ref
    if rtype.status_model is not None:
        envelope["status"] = {"$ref": _REF.format(model=f"{rtype.name}Status"), "readOnly": True}
    return {"type": "object", "properties": envelope, "required": ["type", "name"]}


def _paths_for(rtype: ResourceType) -> dict[str, Any]:
    item_ref = {"$ref": _REF.format(model=rtype.name)}
    json_item = {"application/json": {"schema": item_ref}}
    list_schema = {
        "type": "object",
        "properties": {
            "total": {"type": "integer"},
            "items": {"type": "array", "items": item_ref},
            "next": {"type": ["string", "null"]},
        },
    }
    list_op = {
        "tags": [rtype.name],
        "summary": f"List {rtype.plural}",
        "parameters": list(_LIST_PARAMS),
        "responses": {
            "200": {
                "description": "a page",
                "content": {"application/json": {"schema": list_schema}},
            },
            **_errors(400, 404),
        },
    }
    name = _param("name", "path", f"name of the {rtype.name}")
    item_ops = {
        "get": {
            "tags": [rtype.name],
            "summary": f"Get a {rtype.name}",
            "parameters": [name],
            "responses": {"200": {"description": "found", "content": json_item}, **_errors(404)},
        },
        "put": {
            "tags": [rtype.name],
            "summary": f"Create or update a {rtype.name}",
            "parameters": [name, _param("If-Match", "header", "ETag of a previous GET")],
            "requestBody": {"required": True, "content": json_item},
            "responses": {
                "200": {"description": "updated"},
                "201": {"description": "created"},
                **_errors(400, 405, 409, 413),
            },
        },
        "delete": {
            "tags": [rtype.name],
            "summary": f"Delete a {rtype.name}",
            "parameters": [name, _param("If-Match", "header", "ETag of a previous GET")],
            "responses": {"200": {"description": "deleted"}, **_errors(404, 405, 409)},
        },
    }
    if rtype.mesh_scoped:
        mesh = _param("mesh", "path", "name of the mesh")
        scoped_list = {**list_op, "parameters": [mesh, *_LIST_PARAMS]}
        scoped_items = {
            method: {**op, "parameters": [mesh, *op["parameters"]]}
            for method, op in item_ops.items()
        }
        across = {**list_op, "summary": f"List {rtype.plural} of every mesh"}
        return {
            f"/meshes/{{mesh}}/{rtype.plural}": {"get": scoped_list},
            f"/meshes/{{mesh}}/{rtype.plural}/{{name}}": scoped_items,
            f"/{rtype.plural}": {"get": across},
        }
    return {f"/{rtype.plural}": {"get": list_op}, f"/{rtype.plural}/{{name}}": item_ops}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = _ERROR_SCHEMA
    for rtype in ALL_TYPES:
        for suffix, model in (("Spec", rtype.spec_model), ("Status", rtype.status_model)):
            if model is None:
                continue
            schema = model.model_json_schema(by_alias=True, ref_template=_REF)
            for def_name, definition in schema.pop("$defs", {}).items():
                schemas.setdefault(def_name, definition)
            schemas[f"{rtype.name}{suffix}"] = schema
        schemas[rtype.name] = _resource_schema(rtype)
        doc["paths"].update(_paths_for(rtype))
    # A user token is optional (reads are open); writes, tokens and secrets need an admin's.
    doc["components"]["securitySchemes"] = {
        "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    doc["security"] = [{}, {"userToken": []}]
    return doc
