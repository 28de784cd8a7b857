"""List pages (`size`, opaque `offset`, `next` URL) and the `name` / label filters of lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from starlette.requests import Request

from zonemesh.api.errors import ApiError
from zonemesh.resources.base import Resource

DEFAULT_SIZE = 100
MAX_SIZE = 1000
_LABEL_FILTER_PREFIX = "filter[labels."

T = TypeVar("T")


def page_params(request: Request) -> tuple[int, int]:
    """`(size, offset)` from the query; 400 naming `size` or `offset` when invalid."""
    raw_size = request.query_params.get("size")
    size = DEFAULT_SIZE
    if raw_size is not None:
        try:
            size = int(raw_size)
        except ValueError:
            raise ApiError.invalid("size", f"must be an integer, got {raw_size!r}") from None
        if not 1 <= size <= MAX_SIZE:
            raise ApiError.invalid("size", f"must be between 1 and {MAX_SIZE}")
    raw_offset = request.query_params.get("offset")
    offset = 0
    if raw_offset:
        # The offset is opaque to clients: they only pass back what `next` gave them.
        try:
            offset = int(raw_offset)
        except ValueError:
            offset = -1
        if offset < 0:
            raise ApiError.invalid("offset", "invalid offset: use the `next` URL of a list")
    return size, offset


def page(request: Request, items: Sequence[T], render: Callable[[T], Any]) -> dict[str, Any]:
    """The Kuma list shape `{"total", "items", "next"}` of one page of `items`."""
    size, offset = page_params(request)
    chunk = items[offset : offset + size]
    following = offset + size
    next_url = None
    if following < len(items):
        next_url = str(request.url.include_query_params(offset=str(following), size=str(size)))
    return {"total": len(items), "items": [render(i) for i in chunk], "next": next_url}


def label_filters(request: Request) -> list[tuple[str, str]]:
    """`?filter[labels.K]=V` pairs (repeatable); all of them must match."""
    found = []
    for key, value in request.query_params.multi_items():
        if key.startswith(_LABEL_FILTER_PREFIX) and key.endswith("]"):
            label = key[len(_LABEL_FILTER_PREFIX) : -1]
            if not label:
                raise ApiError.invalid(key, "the label key cannot be empty")
            found.append((label, value))
    return found


def filter_resources(request: Request, resources: Sequence[Resource]) -> list[Resource]:
    """Apply `?name=` (substring) and the label filters of the request."""
    name = request.query_params.get("name") or ""
    wanted = label_filters(request)
    return [r for r in resources if name in r.name and all(r.labels.get(k) == v for k, v in wanted)]
