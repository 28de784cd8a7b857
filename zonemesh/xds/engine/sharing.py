"""Equal outbounds shared between Dataplanes, owned by the generation engine.

Sidecars of one mesh mostly list the same outbounds (every service they may call): equal
`Outbound` models (frozen) are shared between Dataplanes rather than held per proxy, so 1000
registrations hold one copy of each, and the outbound signatures the generators derive from
them hash and compare quickly. Weakly held: an outbound no Dataplane lists disappears.
"""

from __future__ import annotations

import weakref
from typing import Any

from zonemesh.resources.base import Resource
from zonemesh.resources.types.dataplane import DataplaneSpec, Outbound


class SharedOutbounds:
    def __init__(self) -> None:
        self._by_content: weakref.WeakValueDictionary[tuple[Any, ...], Outbound] = (
            weakref.WeakValueDictionary()
        )

    def share(self, resource: Resource) -> Resource:
        """`resource` with each outbound replaced by the shared equal one."""
        spec = resource.spec
        if not isinstance(spec, DataplaneSpec) or not spec.networking.outbound:
            return resource
        shared = self.share_list(spec.networking.outbound)
        networking = spec.networking.model_copy(update={"outbound": shared})
        return resource.with_(spec=spec.model_copy(update={"networking": networking}))

    def share_list(self, outbounds: list[Outbound]) -> list[Outbound]:
        """`outbounds`, each replaced by the shared equal one."""
        shared = []
        for outbound in outbounds:
            key = _outbound_key(outbound)
            found = self._by_content.get(key)
            if found is None:
                self._by_content[key] = found = outbound
            shared.append(found)
        return shared

    def __len__(self) -> int:
        return len(self._by_content)


def _outbound_key(o: Outbound) -> tuple[Any, ...]:
    ref = o.backend_ref
    return (
        o.port,
        o.address,
        tuple(sorted(o.tags.items())) if o.tags is not None else None,
        frozenset(o.model_fields_set),
        None
        if ref is None
        else (
            ref.kind,
            ref.name,
            ref.port,
            tuple(sorted(ref.labels.items())) if ref.labels is not None else None,
            frozenset(ref.model_fields_set),
        ),
    )
