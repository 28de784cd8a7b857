"""Kuma Universal wire form <-> `Resource`: parsing YAML/JSON documents and validating them.

Errors always name the field (`spec.ports[0].appProtocol: ...`), whether a type check
(pydantic) or a semantic check (`Model.validate_semantics`) found them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pydantic
import yaml

from zonemesh.resources import identifiers
from zonemesh.resources.base import Model, Resource, ResourceType
from zonemesh.resources.documents import DocumentLimitError, ParseError, load_json, load_yaml_all
from zonemesh.resources.errors import ValidationError, Violation, Violations
from zonemesh.resources.registry import UnknownTypeError, by_kind
from zonemesh.resources.types.common import is_dns_name

__all__ = [
    "READ_ONLY_FIELDS",
    "DocumentLimitError",
    "ParseError",
    "is_valid_hostname",
    "parse_documents",
    "resource_from_wire",
    "resource_to_wire",
]

# Fields a GET returns that an apply may carry back; accepted and ignored on input.
READ_ONLY_FIELDS = frozenset({"creationTime", "modificationTime", "status", "kri", "snis"})
_ENVELOPE = frozenset({"type", "name", "mesh", "labels"})
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_documents(text: str, source: str = "input") -> list[dict[str, Any]]:
    """Multi-document YAML (JSON is accepted too: a JSON object or a list of objects).

    Depth, size and YAML alias expansion are bounded (`documents`): exceeding them raises
    `DocumentLimitError`, a `ParseError` naming the bound."""
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            loaded = load_json(text, source=source)
            docs = loaded if isinstance(loaded, list) else [loaded]
        else:
            docs = [d for d in load_yaml_all(text, source=source) if d is not None]
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ParseError(
            [Violation("", f"{source}: could not parse: {_one_line(e)}")],
            title="Could not parse the input",
        ) from None
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ParseError(
                [Violation("", f"{source}: document {i + 1} is not an object")],
                title="Could not parse the input",
            )
    return docs


def resource_from_wire(
    doc: dict[str, Any], *, keep_status: bool = False, context: dict[str, Any] | None = None
) -> Resource:
    """Validate one wire document into a typed `Resource`; raises `ValidationError`.

    `context` is the pydantic validation context of the spec: what a type's validators may use
    beyond the document, such as an `OutboundListMemo` (`types.dataplane`). It never changes the
    outcome, only its cost."""
    kind = doc.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValidationError([Violation("type", "must be defined")])
    try:
        rtype = by_kind(kind)
    except UnknownTypeError as e:
        raise ValidationError([Violation("type", str(e))]) from None

    errors = Violations()
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        errors.add("name", "cannot be empty")
    else:
        identifiers.check_resource_name(name, "name", errors)
    mesh = doc.get("mesh", "")
    if rtype.mesh_scoped:
        if not isinstance(mesh, str) or not mesh:
            errors.add("mesh", "cannot be empty")
        else:
            identifiers.check_resource_name(mesh, "mesh", errors)
    elif mesh:
        errors.add("mesh", f"must be empty: {rtype.name} is not scoped to a mesh")
    labels = identifiers.check_string_map(doc.get("labels"), "labels", errors)
    identifiers.check_labels(labels, "labels", errors)

    if rtype.flat:
        spec_doc = {k: v for k, v in doc.items() if k not in _ENVELOPE | READ_ONLY_FIELDS}
        spec_path = ""
    else:
        unknown = set(doc) - _ENVELOPE - READ_ONLY_FIELDS - {"spec"}
        for field in sorted(unknown):
            errors.add(field, "unknown field")
        spec_doc = doc.get("spec", {})
        spec_path = "spec"
        if not isinstance(spec_doc, dict):
            errors.add("spec", "must be an object")
            spec_doc = {}

    spec = _validate_model(rtype.spec_model, spec_doc, spec_path, errors, context)
    if spec is not None:
        spec.validate_semantics(spec_path, errors)

    status = None
    if keep_status and rtype.status_model is not None and doc.get("status") is not None:
        status = _validate_model(rtype.status_model, doc["status"], "status", errors)
    errors.raise_if_any()
    assert spec is not None
    return Resource(
        type=rtype.name,
        name=name,
        mesh=mesh if rtype.mesh_scoped else "",
        spec=spec,
        labels=dict(labels),
        status=status,
        creation_time=_parse_time(doc.get("creationTime")) if keep_status else None,
        modification_time=_parse_time(doc.get("modificationTime")) if keep_status else None,
    )


def resource_to_wire(resource: Resource, rtype: ResourceType | None = None) -> dict[str, Any]:
    """The Kuma Universal JSON form that `GET` returns and `apply` accepts."""
    rtype = rtype or by_kind(resource.type)
    wire: dict[str, Any] = {"type": resource.type}
    if rtype.mesh_scoped:
        wire["mesh"] = resource.mesh
    wire["name"] = resource.name
    if resource.creation_time:
        wire["creationTime"] = _format_time(resource.creation_time)
    if resource.modification_time:
        wire["modificationTime"] = _format_time(resource.modification_time)
    wire["labels"] = dict(resource.labels)
    spec = resource.spec.to_wire()
    if rtype.flat:
        wire.update(spec)
    else:
        wire["spec"] = spec
    if resource.status is not None:
        wire["status"] = resource.status.to_wire()
    return wire


def is_valid_hostname(value: str) -> bool:
    return is_dns_name(value)


def _validate_model(
    model: type[Model],
    data: Any,
    path: str,
    errors: Violations,
    context: dict[str, Any] | None = None,
) -> Model | None:
    try:
        return model.model_validate(data, context=context)
    except pydantic.ValidationError as e:
        seen: set[str] = set()
        for err in e.errors():
            field = _loc_to_path(path, err["loc"])
            if field in seen:  # a union reports once per member; one line per field is enough
                continue
            seen.add(field)
            errors.add(field, _reason(err))
        return None


def _loc_to_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif (
            part in ("int", "str", "float", "bool") or "[" in part or ("-" in part and "(" in part)
        ):
            continue  # a union member's tag, not a field
        elif _IDENT.match(part):
            path = f"{path}.{part}" if path else part
        else:
            path += f'["{part}"]'
    return path


_REASONS = {
    "missing": "must be defined",
    "extra_forbidden": "unknown field",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
}


def _reason(err: Any) -> str:
    kind = err["type"]
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        choices = [c.strip(" '") for c in re.split(r",| or ", expected) if c.strip(" '")]
        return "must be one of: " + ", ".join(choices)
    return _REASONS.get(kind, err["msg"])


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _format_time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())
