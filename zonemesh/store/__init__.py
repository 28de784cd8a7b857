"""Persistence of resources behind one small interface (`Store`), with change events."""

from zonemesh.store.base import (
    AlreadyExistsError,
    ConflictError,
    EventKind,
    NotFoundError,
    ResourceEvent,
    Store,
    StoreError,
    StoreUnavailableError,
)

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "EventKind",
    "NotFoundError",
    "ResourceEvent",
    "Store",
    "StoreError",
    "StoreUnavailableError",
]
