"""The rules for the identifiers users write: resource names, label keys and values, tags,
service names and port names. One home, used by the envelope and by every type.

The rules follow Kuma (worded here, not copied):

- resource names: lower case letters, digits, '-', '_' and '.', starting and ending with a
  letter or digit, at most 253 characters;
- label keys are Kubernetes qualified names: an optional DNS subdomain prefix (at most 253
  characters) and '/', then a name of at most 63 letters, digits, '-', '_' and '.', starting
  and ending with a letter or digit; label values are empty or such a name. Kuma checks them
  at its API; zonemesh checks every resource it reads from outside. Labels that carry a
  resource name (`kuma.io/display-name`, `kuma.io/mesh`, `kuma.io/zone`) may be as long as a
  name: the control plane writes them from names of up to 253 characters;
- tag names are letters, digits, '.', '-', '_', ':' and '/'; tag values letters, digits, '.',
  '-', '_' and ':'; neither empty. Kuma sets no length: zonemesh allows 253;
- a service name (`kuma.io/service`) is the path of the SPIFFE ID `spiffe://<mesh>/<service>`
  and part of Envoy resource names, so it is what a SPIFFE path segment allows: ASCII letters,
  digits, '.', '-' and '_', and neither '.' nor '..'.

Control characters (NUL, newline, ...) are outside every one of these sets; they get a
message of their own because they are the usual sign of an injection attempt.
"""

from __future__ import annotations

import json
import re
from typing import Any

from zonemesh.resources import labels as well_known
from zonemesh.resources.errors import Violations

MAX_NAME = 253
MAX_LABEL_NAME = 63  # a label key's name part, and a label value
MAX_TAG = 253
MAX_PORT_NAME = 63

_RESOURCE_NAME = re.compile(r"[a-z0-9]([-a-z0-9._]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_TAG_NAME = re.compile(r"[A-Za-z0-9._:/-]+")
_TAG_VALUE = re.compile(r"[A-Za-z0-9._:-]+")
_SERVICE = re.compile(r"[A-Za-z0-9._-]+")
_PORT_NAME = re.compile(r"[A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

NAME_VALUED_LABELS = frozenset({well_known.DISPLAY_NAME, well_known.MESH, well_known.ZONE})

RESOURCE_NAME_RULE = (
    "must consist of lower case alphanumeric characters, '-', '_' or '.', and start and end "
    f"with an alphanumeric character (at most {MAX_NAME} characters)"
)
_LABEL_KEY_NAME_RULE = (
    f"label key must end in a name of at most {MAX_LABEL_NAME} alphanumeric characters, '-', "
    "'_' or '.', starting and ending with an alphanumeric character"
)
_LABEL_KEY_PREFIX_RULE = (
    "label key prefix (before '/') must be a DNS subdomain: lower case alphanumeric "
    f"characters, '-' and '.', at most {MAX_NAME} characters"
)
_LABEL_VALUE_RULE = (
    f"label value must be empty or at most {MAX_LABEL_NAME} alphanumeric characters, '-', '_' "
    "or '.', starting and ending with an alphanumeric character"
)
_TAG_NAME_RULE = (
    f"tag name must be 1 to {MAX_TAG} alphanumeric characters, '.', '-', '_', ':' or '/'"
)
_TAG_VALUE_RULE = f"tag value must be 1 to {MAX_TAG} alphanumeric characters, '.', '-', '_' or ':'"
_SERVICE_RULE = (
    f"service name must be 1 to {MAX_NAME} ASCII alphanumeric characters, '.', '-' or '_', "
    "and not '.' or '..': it is the path of the identity spiffe://<mesh>/<service>"
)
_PORT_NAME_RULE = f"must be 1 to {MAX_PORT_NAME} alphanumeric characters, '.', '-' or '_'"


def key_path(path: str, key: str) -> str:
    """`path["key"]`, the way Kuma names a map entry; odd keys are escaped and cut short."""
    shown = key if len(key) <= 64 else key[:64] + "..."
    return f"{path}[{json.dumps(shown)}]"


def is_resource_name(value: str) -> bool:
    return 0 < len(value) <= MAX_NAME and _RESOURCE_NAME.fullmatch(value) is not None


def check_resource_name(value: str, path: str, errors: Violations) -> None:
    """A resource name, or a reference to one (backendRef.name, a zone, a mesh)."""
    if not value:
        errors.add(path, "cannot be empty")
    elif not is_resource_name(value):
        errors.add(path, _problem(value, MAX_NAME, "") or f"invalid name: {RESOURCE_NAME_RULE}")


def check_string_map(value: Any, path: str, errors: Violations) -> dict[str, str]:
    """A map of strings to strings (labels, tags); what is not is refused by entry."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add(path, "must be a map of strings to strings")
        return {}
    good: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            errors.add(path, f"keys must be strings (got {type(key).__name__})")
        elif not isinstance(item, str):
            errors.add(key_path(path, key), "must be a string")
        else:
            good[key] = item
    return good


def check_labels(value: dict[str, str], path: str, errors: Violations) -> None:
    """Label keys and values, also of label selectors (`matchLabels`)."""
    for key in sorted(value):
        at = key_path(path, key)
        reason = _label_key_problem(key)
        if reason:
            errors.add(at, reason)
        reason = _label_value_problem(key, value[key])
        if reason:
            errors.add(at, reason)


def check_tags(
    value: dict[str, str], path: str, errors: Violations, *, selector: bool = False
) -> None:
    """Tags of inbounds, gateways and outbounds; `selector` also lets a value be "*"."""
    for key in sorted(value):
        at = key_path(path, key)
        item = value[key]
        if not key:
            errors.add(at, "tag name cannot be empty")
        elif len(key) > MAX_TAG or not _TAG_NAME.fullmatch(key):
            errors.add(at, _problem(key, MAX_TAG, "tag name") or _TAG_NAME_RULE)
        if selector and item == "*":
            continue
        if key == well_known.SERVICE_TAG:
            check_service_name(item, at, errors)
        elif not item:
            errors.add(at, "tag value cannot be empty")
        elif len(item) > MAX_TAG or not _TAG_VALUE.fullmatch(item):
            errors.add(at, _problem(item, MAX_TAG, "tag value") or _TAG_VALUE_RULE)


def check_tag_name(value: str, path: str, errors: Violations) -> None:
    if not value:
        errors.add(path, "cannot be empty")
    elif len(value) > MAX_TAG or not _TAG_NAME.fullmatch(value):
        errors.add(path, _problem(value, MAX_TAG, "tag name") or _TAG_NAME_RULE)


def is_service_name(value: str) -> bool:
    return (
        0 < len(value) <= MAX_NAME
        and value not in (".", "..")
        and _SERVICE.fullmatch(value) is not None
    )


def check_service_name(value: str, path: str, errors: Violations) -> None:
    """`kuma.io/service`: refused here rather than failing certificate issuance on every pass."""
    if not value:
        errors.add(path, "service name cannot be empty")
    elif not is_service_name(value):
        errors.add(path, _problem(value, MAX_NAME, "service name") or _SERVICE_RULE)


def check_port_name(value: str, path: str, errors: Violations) -> None:
    """The name of a port (a `sectionName` of targetRefs, part of Envoy names)."""
    if not value:
        errors.add(path, "must not be empty")
    elif len(value) > MAX_PORT_NAME or not _PORT_NAME.fullmatch(value):
        errors.add(path, _problem(value, MAX_PORT_NAME, "") or _PORT_NAME_RULE)


def _label_key_problem(key: str) -> str | None:
    if not key:
        return "label key cannot be empty"
    if key.count("/") > 1:
        return "label key may contain at most one '/'"
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > MAX_NAME or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return _problem(prefix, MAX_NAME, "label key prefix") or _LABEL_KEY_PREFIX_RULE
    if not name:
        return "label key name (after '/') cannot be empty"
    if len(name) > MAX_LABEL_NAME or not _LABEL_NAME.fullmatch(name):
        return _problem(name, MAX_LABEL_NAME, "label key name") or _LABEL_KEY_NAME_RULE
    return None


def _label_value_problem(key: str, value: str) -> str | None:
    if key in NAME_VALUED_LABELS and value:
        if is_resource_name(value):
            return None
        return (
            _problem(value, MAX_NAME, "label value")
            or f"label value must be a resource name: {RESOURCE_NAME_RULE}"
        )
    if not value:
        return None
    if len(value) > MAX_LABEL_NAME or not _LABEL_NAME.fullmatch(value):
        return _problem(value, MAX_LABEL_NAME, "label value") or _LABEL_VALUE_RULE
    return None


def _problem(value: str, max_length: int, subject: str) -> str | None:
    """The reasons shared by every rule, said specifically: too long, control characters."""
    lead = f"{subject} must" if subject else "must"
    if len(value) > max_length:
        return f"{lead} be at most {max_length} characters (got {len(value)})"
    if _CONTROL.search(value):
        return f"{lead} not contain control characters (such as NUL or a line break)"
    return None
