"""Warnings for a MeshHTTPRoute whose backends do not exist (yet) when it is applied.

Not an error: Kuma accepts such a route, and the service may come later (a zone not yet
connected, a MeshService generated once its first instance registers). Until it exists its
share of the requests is answered 500 (`translate.policies.meshhttproute`); the warning says
so at once, where the user looks, instead of only in the control plane's log.
"""

from __future__ import annotations

from collections.abc import Iterator

from zonemesh.resources import labels
from zonemesh.resources.base import Resource
from zonemesh.resources.registry import MESH_MULTI_ZONE_SERVICE, MESH_SERVICE
from zonemesh.resources.types.meshhttproute import BackendRef, MeshHTTPRouteSpec
from zonemesh.store.base import Store


def _named_refs(spec: MeshHTTPRouteSpec) -> Iterator[tuple[str, BackendRef]]:
    for i, entry in enumerate(spec.to):
        for j, rule in enumerate(entry.rules):
            base = f"spec.to[{i}].rules[{j}].default"
            for k, ref in enumerate(rule.default.backend_refs or ()):
                yield f"{base}.backendRefs[{k}]", ref
            for k, item in enumerate(rule.default.filters or ()):
                if item.request_mirror is not None:
                    yield (
                        f"{base}.filters[{k}].requestMirror.backendRef",
                        item.request_mirror.backend_ref,
                    )


async def missing_backend_warnings(store: Store, resource: Resource) -> list[str]:
    """One line per backendRef (by name) that names no MeshService / MeshMultiZoneService."""
    spec = resource.spec
    if not isinstance(spec, MeshHTTPRouteSpec):
        return []
    refs = [(path, ref) for path, ref in _named_refs(spec) if ref.name]
    if not refs:
        return []
    known: dict[str, set[str]] = {}
    for rtype in (MESH_SERVICE, MESH_MULTI_ZONE_SERVICE):
        found = await store.list(rtype.name, mesh=resource.mesh)
        known[rtype.name] = {r.name for r in found} | {
            r.labels[labels.DISPLAY_NAME] for r in found if labels.DISPLAY_NAME in r.labels
        }
    return [
        f'{path}: {ref.kind} "{ref.name}" does not exist (yet): until it does, its share of '
        "the requests is answered 500"
        for path, ref in refs
        if ref.name not in known.get(ref.kind, set())
    ]
