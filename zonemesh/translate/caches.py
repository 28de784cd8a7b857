"""Caches the translation reuses across mesh states, as objects with an owner.

The generation engine (`zonemesh.xds.engine`) owns one `TranslationCaches` and hands it to every
`MeshState` it builds, so a new state (every connect writes a Dataplane) rebuilds, and the
xDS cache re-encodes, only what changed. A state built elsewhere (tests, `config_dump` of a
one-off state) gets caches of its own: nothing is shared through module globals.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
V = TypeVar("V")

CONTENT_MEMO_SIZE = 1 << 16


class ContentMemo:
    """`build()` once per distinct `key` while it stays among the recently used (LRU).
    `key` must hold every input of `build`; the result is shared: never mutate it."""

    def __init__(self, size: int = CONTENT_MEMO_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, build: Callable[[], T]) -> T:
        items = self._items
        try:
            value = items[key]
        except KeyError:
            value = items[key] = build()
            if len(items) > self.size:
                items.popitem(last=False)
            return value  # type: ignore[no-any-return]
        items.move_to_end(key)
        return value  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self._items)


class ObjectMemo(Generic[V]):
    """A value derived from one object, keyed by the object's identity. Stores hand out the
    same resource object until it changes, so this skips re-deriving for unchanged ones. The
    object is held with its value (its id cannot be reused meanwhile); `limit()` forgets
    everything once more entries exist than live objects could explain."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[object, V]] = {}

    def get(self, obj: object, build: Callable[[], V]) -> V:
        hit = self._items.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = build()
        self._items[id(obj)] = (obj, value)
        return value

    def limit(self, live: int) -> None:
        if len(self._items) > 2 * live + 64:
            self._items.clear()  # forget objects gone or replaced

    def __len__(self) -> int:
        return len(self._items)


class RepeatFilter:
    """A proxy's warnings pass once, until they change: a problem that lasts over thousands
    of regenerations (every connect builds a new state) is logged when it appears and when
    it changes, not on each of them."""

    def __init__(self, size: int = CONTENT_MEMO_SIZE) -> None:
        self.size = size
        self._last: OrderedDict[Any, tuple[Any, ...]] = OrderedDict()

    def fresh(self, subject: Any, warnings: tuple[Any, ...]) -> bool:
        """Whether `warnings` differ from what was last seen for `subject` (then remembered)."""
        if self._last.get(subject, ()) == warnings:
            if subject in self._last:
                self._last.move_to_end(subject)
            return False
        self._last[subject] = warnings
        if len(self._last) > self.size:
            self._last.popitem(last=False)
        return bool(warnings)


class TranslationCaches:
    """Everything the generators memoize across states (see the module docstring)."""

    def __init__(self) -> None:
        self.content = ContentMemo()
        self.warnings = RepeatFilter()  # translate.outbound, translate.transparent
        self.outbound_signatures: ObjectMemo[Any] = ObjectMemo()  # translate.outbound
        # Equal outbound signatures, one object each (weak: gone with the last proxy using it).
        self.shared_signatures: weakref.WeakValueDictionary[Any, Any] = (
            weakref.WeakValueDictionary()
        )
        self.serving_inbounds: ObjectMemo[Any] = ObjectMemo()  # translate.endpoints
        # (state version, index) of the last local-inbound index (translate.endpoints)
        self.inbound_index: tuple[int, Any] | None = None
