"""YAML and JSON text into plain documents, within bounds that a short text cannot stretch.

Every document an interface accepts (API bodies, `zonemesh apply` files, `dp run` files, the
`dataplane.resource` node metadata) is parsed here. Three bounds keep a small text from
costing a lot later:

- nesting depth: the parsers and every later walk of the result (pydantic, `json.dumps`)
  recurse, and a hundred thousand `[` must not reach them;
- the number of nodes of one document;
- for YAML, the size aliases expand to: `*a` places the whole collection anchored as `&a`
  again, so ten aliases of ten aliases of ... make a few hundred bytes mean ten million
  nodes once anything walks the result.

A YAML document is built here from the parser's events in one pass without recursion, and an
alias counts as the size and depth of what it names, so such a bomb is refused after its text
has been read once, before anything is expanded. JSON depth is checked on the text before the
(recursive) decoder sees it.

The other way, `dump_json` writes the compact JSON the store and KDS keep of each resource.

Syntax errors surface as the parsers' own exceptions (`yaml.YAMLError`,
`json.JSONDecodeError`) so that each caller words them its own way; exceeding a bound raises
`DocumentLimitError`, a `ValidationError` naming the bound.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml
from yaml import events
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from zonemesh.resources.errors import ValidationError, Violation

MAX_DEPTH = 64
MAX_NODES = 100_000


@dataclass(frozen=True)
class DocumentLimits:
    max_depth: int = MAX_DEPTH  # collections inside collections
    max_nodes: int = MAX_NODES  # scalars, keys and collections of one document, aliases expanded


DEFAULT_LIMITS = DocumentLimits()


class ParseError(ValidationError):
    """The text is not YAML/JSON, or a document is not an object."""


class DocumentLimitError(ParseError):
    """A document is nested too deeply, has too many nodes, or its aliases expand too far."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__([Violation("", f"{source}: {reason}")], title="Document exceeds a limit")


class YamlStructureError(yaml.YAMLError):
    """YAML that parses but cannot be a plain document (undefined alias, unhashable key...)."""


def dump_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON of a plain document, with orjson: every registration writes its
    Dataplane (some 12 KB for a hundred outbounds) to the store and to KDS, and the
    standard encoder took 110-135 us per copy of that, a tenth of a connect. Integers past
    64 bits, which orjson refuses, go through the standard encoder (same text)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        text = json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)
        return text.encode()


def load_json(text: str, *, source: str = "input", limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """One JSON value; raises `json.JSONDecodeError` or `DocumentLimitError`."""
    try:
        value = json.loads(text)
    except RecursionError:  # nested beyond the interpreter's own bound: surely too deep
        raise _too_deep(source, limits) from None
    except json.JSONDecodeError:
        # Too deep is the answer even when the text is broken too (the scan is the slow
        # part, so only a document that failed to parse pays for it).
        if _json_nesting_exceeds(text, limits.max_depth):
            raise _too_deep(source, limits) from None
        raise
    _check_json_limits(value, source, limits)
    return value


def load_yaml_all(
    text: str, *, source: str = "input", limits: DocumentLimits = DEFAULT_LIMITS
) -> list[Any]:
    """Every document of a YAML stream (empty ones as None); raises `yaml.YAMLError` or
    `DocumentLimitError`. Uses libyaml's parser when PyYAML has it (much faster)."""
    parser = _PARSER(text)
    try:
        docs: list[Any] = []
        while not isinstance(event := parser.get_event(), events.StreamEndEvent):
            if isinstance(event, events.DocumentStartEvent):
                docs.append(_DocumentBuilder(source, limits).build(parser))
        return docs
    except yaml.MarkedYAMLError as e:
        # libyaml looks ahead and stops at its own nesting bound (1000) before the builder
        # would stop at ours: the same problem, so the same answer.
        if "nesting depth" in (e.problem or ""):
            raise _too_deep(source, limits) from None
        raise
    finally:
        parser.dispose()


# --- JSON ------------------------------------------------------------------------------------


# A string literal (skipped whole, brackets inside it do not count) or a bracket.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _json_nesting_exceeds(text: str, max_depth: int) -> bool:
    if "[" not in text and "{" not in text:
        return False
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif token in "]}":
            depth -= 1
    return False


def _check_json_limits(value: Any, source: str, limits: DocumentLimits) -> None:
    """Depth and node count of a parsed document, in one walk over its collections.

    Checked after `json.loads` rather than by scanning the text first: the C parser bounds
    its own recursion (RecursionError, handled above), and a walk that pushes only
    collections costs a fraction of a per-character scan. This runs for every proxy's
    registration metadata and every KDS message, so it is on the connect path."""
    level = [value] if type(value) in _JSON_COLLECTIONS else []
    count, depth = 1, 1
    while level:  # one pass per nesting level, each over the collections at that level
        if depth > limits.max_depth:
            raise _too_deep(source, limits)
        below: list[Any] = []
        for item in level:
            if type(item) is dict:
                count += 2 * len(item)  # its keys and its values
                below += [v for v in item.values() if type(v) in _JSON_COLLECTIONS]
            else:
                count += len(item)
                below += [v for v in item if type(v) in _JSON_COLLECTIONS]
        if count > limits.max_nodes:
            raise DocumentLimitError(source, f"document has more than {limits.max_nodes} nodes")
        level, depth = below, depth + 1


_JSON_COLLECTIONS = (dict, list)  # the only container types json.loads produces


# --- YAML ------------------------------------------------------------------------------------

_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # only its event parser is used

_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE_TAG = _TAG + "str", _TAG + "map", _TAG + "seq", _TAG + "merge"
# Timestamps stay the text they are written as: documents are JSON-shaped, and a label value
# like 2026-01-01 is a string.
_AS_TEXT = frozenset({_STR, _TAG + "timestamp"})


class _MergeKey:
    """`<<` as a mapping key: merge the mapping(s) it names (YAML 1.1 merge keys)."""


_MERGE = _MergeKey()


@dataclass(frozen=True)
class _Anchored:
    value: Any
    nodes: int  # with aliases inside it expanded
    depth: int


_OPEN = _Anchored(None, 0, 0)  # an anchored collection not closed yet: an alias to it is a cycle


@dataclass
class _Frame:
    is_mapping: bool
    anchor: str | None
    nodes_before: int
    mark: Any
    items: list[Any] = field(default_factory=list)  # mapping: key, value, key, value...
    child_depth: int = 0

    def finish(self) -> Any:
        if not self.is_mapping:
            return self.items
        merged: dict[Any, Any] = {}
        own: dict[Any, Any] = {}
        for key, value in zip(self.items[0::2], self.items[1::2], strict=True):
            if key is _MERGE:
                _merge_into(merged, value, self.mark)
                continue
            if isinstance(key, (dict, list)):
                raise YamlStructureError(f"found unhashable key {_where(self.mark)}")
            own[key] = value
        merged.update(own)
        return merged


def _merge_into(merged: dict[Any, Any], value: Any, mark: Any) -> None:
    """Earlier mappings of a `<<: [*a, *b]` list win, and keys written in place win over all."""
    sources = value if isinstance(value, list) else [value]
    if not all(isinstance(s, dict) for s in sources):
        raise YamlStructureError(f"<< merges a mapping or a list of mappings {_where(mark)}")
    for source in reversed(sources):
        merged.update(source)


class _DocumentBuilder:
    """Builds one document from events, counting nodes and depth as they arrive."""

    def __init__(self, source: str, limits: DocumentLimits) -> None:
        self.source = source
        self.limits = limits
        self.anchors: dict[str, _Anchored] = {}
        self.stack: list[_Frame] = []
        self.nodes = 0
        self.expanded_alias = False
        self.root: Any = None
        # PyYAML's rules for plain scalars (`yes`, `0x1f`, `~`...); scalars only, never the
        # collections (its constructor would recurse and expand aliases).
        self.resolver = Resolver()
        constructor = SafeConstructor()
        self.constructors = {
            _TAG + "int": constructor.construct_yaml_int,
            _TAG + "float": constructor.construct_yaml_float,
            _TAG + "bool": constructor.construct_yaml_bool,
            _TAG + "null": constructor.construct_yaml_null,
        }

    def build(self, parser: Any) -> Any:
        while True:
            event = parser.get_event()
            if isinstance(event, events.ScalarEvent):
                self._count(1)
                self._claim(event.anchor, event)
                value = self._scalar(event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = _Anchored(value, 1, 0)
                self._place(value, 0)
            elif isinstance(event, (events.SequenceStartEvent, events.MappingStartEvent)):
                self._open(event)
            elif isinstance(event, (events.SequenceEndEvent, events.MappingEndEvent)):
                self._close()
            elif isinstance(event, events.AliasEvent):
                self._alias(event)
            elif isinstance(event, events.DocumentEndEvent):
                return self.root

    def _open(self, event: Any) -> None:
        is_mapping = isinstance(event, events.MappingStartEvent)
        if event.tag not in (None, "!", _MAP if is_mapping else _SEQ):
            raise YamlStructureError(f"YAML tag {event.tag} is not supported {_where(event)}")
        if len(self.stack) + 1 > self.limits.max_depth:
            raise _too_deep(self.source, self.limits)
        self._count(1)
        self._claim(event.anchor, event)
        self.stack.append(_Frame(is_mapping, event.anchor, self.nodes - 1, event.start_mark))

    def _close(self) -> None:
        frame = self.stack.pop()
        value = frame.finish()
        depth = frame.child_depth + 1
        if frame.anchor is not None:
            self.anchors[frame.anchor] = _Anchored(value, self.nodes - frame.nodes_before, depth)
        self._place(value, depth)

    def _alias(self, event: Any) -> None:
        anchored = self.anchors.get(event.anchor)
        if anchored is None:
            raise YamlStructureError(f"found undefined alias *{event.anchor} {_where(event)}")
        if anchored is _OPEN:
            raise DocumentLimitError(
                self.source, f"YAML alias *{event.anchor} is used inside the collection it names"
            )
        if len(self.stack) + anchored.depth > self.limits.max_depth:
            raise _too_deep(self.source, self.limits)
        self.expanded_alias = True
        self._count(anchored.nodes)
        self._place(anchored.value, anchored.depth)

    def _claim(self, anchor: str | None, event: Any) -> None:
        """An anchor names one node (as PyYAML has it); marked open until its node is built."""
        if anchor is None:
            return
        if anchor in self.anchors:
            raise YamlStructureError(f"found duplicate anchor &{anchor} {_where(event)}")
        self.anchors[anchor] = _OPEN

    def _place(self, value: Any, depth: int) -> None:
        frame = self.stack[-1] if self.stack else None
        if value is _MERGE and not (frame and frame.is_mapping and len(frame.items) % 2 == 0):
            value = "<<"  # `<<` only merges as a key; anywhere else it is the text
        if frame is None:
            self.root = value
            return
        frame.items.append(value)
        frame.child_depth = max(frame.child_depth, depth)

    def _count(self, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > self.limits.max_nodes:
            limit = self.limits.max_nodes
            reason = (
                f"YAML aliases expand to more than {limit} nodes"
                if self.expanded_alias
                else f"document has more than {limit} nodes"
            )
            raise DocumentLimitError(self.source, reason)

    def _scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(ScalarNode, event.value, event.implicit)
        if tag in _AS_TEXT:
            return event.value
        if tag == _MERGE_TAG:
            return _MERGE
        construct = self.constructors.get(tag)
        if construct is not None:
            return construct(ScalarNode(tag, event.value, event.start_mark))
        raise YamlStructureError(f"YAML tag {tag} is not supported {_where(event)}")


def _where(mark_or_event: Any) -> str:
    mark = getattr(mark_or_event, "start_mark", mark_or_event)
    if mark is None:
        return ""
    return f"(line {mark.line + 1}, column {mark.column + 1})"


def _too_deep(source: str, limits: DocumentLimits) -> DocumentLimitError:
    return DocumentLimitError(source, f"document nested deeper than {limits.max_depth} levels")
