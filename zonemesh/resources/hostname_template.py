"""The small Go-template dialect of HostnameGenerator templates.

Kuma users write `{{ .DisplayName }}.svc.{{ .Zone }}.mesh.local` and `{{ label "k" }}`; this
module understands exactly those actions and rejects everything else at parse time, so an
invalid template is refused when the generator is applied rather than when it is used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

FIELDS = ("DisplayName", "Name", "Zone", "Mesh", "Namespace")

_FIELD = re.compile(r"^\.([A-Za-z_][A-Za-z0-9_]*)$")
_LABEL = re.compile(r'^label\s+("(?:[^"\\]|\\.)*"|`[^`]*`)$')


class TemplateError(ValueError):
    """The template cannot be parsed, or cannot be rendered for one resource."""


@dataclass(frozen=True)
class TemplateContext:
    """What a template can refer to, for one resource."""

    name: str
    display_name: str
    zone: str
    mesh: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def field(self, name: str) -> str:
        return {
            "DisplayName": self.display_name,
            "Name": self.name,
            "Zone": self.zone,
            "Mesh": self.mesh,
            "Namespace": self.namespace,
        }[name]


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _Label:
    key: str


_Part = _Text | _Field | _Label


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[_Part, ...]

    def render(self, context: TemplateContext) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, _Text):
                out.append(part.text)
            elif isinstance(part, _Field):
                out.append(context.field(part.name))
            else:
                value = context.labels.get(part.key)
                if value is None:
                    raise TemplateError(f'label "{part.key}" not found')
                out.append(value)
        return "".join(out)


@lru_cache(maxsize=256)
def parse_template(text: str) -> Template:
    """Parse once; raises `TemplateError` naming the offending action."""
    parts: list[_Part] = []
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            if pos < len(text):
                parts.append(_Text(text[pos:]))
            break
        if start > pos:
            parts.append(_Text(text[pos:start]))
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"unclosed action starting at offset {start}")
        parts.append(_parse_action(text[start + 2 : end]))
        pos = end + 2
    return Template(text, tuple(parts))


def _parse_action(body: str) -> _Part:
    action = body.strip()
    if not action:
        raise TemplateError("empty action {{ }}")
    if match := _FIELD.match(action):
        name = match.group(1)
        if name not in FIELDS:
            raise TemplateError(
                f"unknown field .{name} (known: " + ", ".join("." + f for f in FIELDS) + ")"
            )
        return _Field(name)
    if match := _LABEL.match(action):
        literal = match.group(1)
        if literal.startswith("`"):
            return _Label(literal[1:-1])
        try:
            return _Label(json.loads(literal))
        except json.JSONDecodeError:
            raise TemplateError(f"invalid string literal {literal}") from None
    raise TemplateError(
        f'unsupported action {{{{{body}}}}}: only .DisplayName, .Name, .Zone, .Mesh, .Namespace and label "key" are allowed'
    )
