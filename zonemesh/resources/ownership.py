"""Where a resource comes from and which zone it belongs to, as its labels say.

One home for these rules: computed state, translation, federation and the API all ask them,
and an answer that differed between two of them would be a bug no test of either shows.
"""

from __future__ import annotations

from zonemesh.resources import labels
from zonemesh.resources.base import Resource


def is_synced(resource: Resource) -> bool:
    """Arrived from global (another zone's MeshService, or anything global owns)."""
    return resource.labels.get(labels.ORIGIN) == labels.ORIGIN_GLOBAL


def is_local(resource: Resource, zone: str) -> bool:
    """Belongs to this zone: not synced in, and not labelled with another zone."""
    return not is_synced(resource) and resource.labels.get(labels.ZONE, zone) == zone


def display_name(resource: Resource) -> str:
    """The name its owner gave it (a synced copy's store name carries a hash suffix)."""
    return resource.labels.get(labels.DISPLAY_NAME) or resource.name


def zone_of(resource: Resource, local_zone: str) -> str:
    """The zone it is labelled with; unlabelled means this zone's."""
    return resource.labels.get(labels.ZONE) or local_zone
