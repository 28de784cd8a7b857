"""The resource envelope shared by every type, and the descriptor of a resource type.

A `Resource` is immutable by convention: code that changes one builds a new one with
`dataclasses.replace` or `Resource.with_(...)`, so the store, the computed state and the xDS
cache can share instances without copying.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from zonemesh.resources.errors import Violations


class Model(BaseModel):
    """Base of every spec and status model: camelCase on the wire, unknown fields rejected.

    Strict: a value is taken only in its own type. A port written `"2000"`, `2000.0` or `true`
    (which lax validation would turn into 2000, 2000 and 1) is refused as not an integer, a
    boolean written `"yes"` as not a boolean."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def validate_semantics(self, path: str, errors: Violations) -> None:
        """Checks beyond types (ranges, one-of, cross-field). Override; report under `path`."""


class Scope(Enum):
    MESH = "mesh"
    GLOBAL = "global"


@dataclass(frozen=True)
class SyncFlags:
    """Where a type travels in a federation (see reference §4)."""

    global_to_zones: bool = False
    zone_to_global: bool = False
    zone_to_zones: bool = False  # passed on by global to the other zones


@dataclass(frozen=True)
class ResourceType:
    name: str  # "MeshMultiZoneService"
    plural: str  # "meshmultizoneservices"
    singular: str  # "meshmultizoneservice"
    scope: Scope
    spec_model: type[Model]
    status_model: type[Model] | None = None
    flat: bool = False  # legacy Universal form: spec fields at top level, no `spec` key
    aliases: tuple[str, ...] = ()
    sync: SyncFlags = SyncFlags()
    # Written on global, read-only on a federated zone (405 there).
    global_owned: bool = False
    # Written in a zone, read-only on global (405 there).
    zone_owned: bool = False

    @property
    def mesh_scoped(self) -> bool:
        return self.scope is Scope.MESH


class ResourceKey(NamedTuple):
    """Type, mesh, name. A named tuple, not a dataclass: keys are hashed, compared and
    sorted on every hot path (registry, tracker, scheduler, cache), and a tuple does all
    three in C (a dataclass's `__hash__`/`__eq__`/`__lt__` run Python code each time)."""

    type: str
    mesh: str  # "" for global-scoped types
    name: str

    def __str__(self) -> str:
        return f"{self.type}/{self.mesh}/{self.name}" if self.mesh else f"{self.type}/{self.name}"


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    mesh: str
    spec: Model
    labels: dict[str, str] = field(default_factory=dict)
    status: Model | None = None
    version: int = 0  # 0 = never stored; the store sets 1 on create and +1 on every update
    creation_time: datetime | None = None
    modification_time: datetime | None = None

    WIRE_META: ClassVar[tuple[str, ...]] = ("type", "name", "mesh", "labels")

    @functools.cached_property
    def key(self) -> ResourceKey:
        # Cached in the instance (fields never change: frozen); read on every hot path.
        return ResourceKey(self.type, self.mesh, self.name)

    def with_(self, **changes: Any) -> Resource:
        return dataclasses.replace(self, **changes)

    def label(self, key: str, default: str = "") -> str:
        return self.labels.get(key, default)
