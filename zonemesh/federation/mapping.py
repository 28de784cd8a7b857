"""What a resource looks like on the other side of the federation.

Three mappings, all pure functions of a stored resource:
- `to_zone` (global -> zone, global's own types): `kuma.io/origin: global`, no status.
- `to_global_copy` (zone -> global, applied by global): the zone's name gets a suffix derived
  from the zone (`echo` from zone1 is `echo-<8 hex>` on global), so two zones' MeshServices
  of the same name never collide; `kuma.io/display-name` keeps the name users and selectors
  see; `kuma.io/origin: zone` and `kuma.io/zone` are set by global, never trusted from the zone.
  A resource that names another zone (a `kuma.io/zone` label, or a ZoneIngress/ZoneEgress
  `zone` field) is refused (`ForeignZone`), never rewritten: a zone speaks only for itself.
- `pass_on` (global -> the other zones, a zone's copy): the global copy relabelled
  `kuma.io/origin: global`, keeping `kuma.io/zone` so the receiving zone knows where it lives;
  nothing at all of a disabled zone.
- `secret_for_zone` (global -> one zone, a Secret): what of the mesh CAs a zone may hold.
  Decided: per-zone intermediates. The root `ca-builtin` goes out as its certificate only
  (every PEM block whose type contains "PRIVATE KEY" is stripped), so no zone can mint
  certificates under the root; a Secret labelled `zonemesh.io/ca-zone: Z` (zone Z's
  intermediate CA, cert + key) goes to zone Z and nowhere else, so a compromised zone can
  sign only under its own intermediate, which global can replace. GlobalSecrets (token
  signing keys, revocation lists of zone and user tokens) are never sent.

Status never travels: every control plane computes its own. The content hash is taken over
the canonical JSON (sorted keys, no status, no timestamps), so equal hashes mean equal content
on both sides and a receiver can skip writes that would change nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from zonemesh.mtls.ca import CA_SECRET_NAME
from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_to_wire
from zonemesh.resources.documents import dump_json
from zonemesh.resources.registry import (
    GLOBAL_SECRET,
    SECRET,
    ZONE_EGRESS,
    ZONE_INGRESS,
    by_kind,
)
from zonemesh.resources.types.secret import SecretSpec

# A zone-internal bookkeeping label (which local controller manages a resource): meaningless
# anywhere else, and harmful if another zone's controller took the copy for its own.
ZONE_LOCAL_LABELS = frozenset({"zonemesh.io/generated-by"})

MAX_NAME = 253

# On a mesh Secret: the one zone it is for (a zone's intermediate CA, `zone-ca-<zone>`).
CA_ZONE_LABEL = "zonemesh.io/ca-zone"
_PRIVATE_KEY_BLOCK = re.compile(
    rb"-----BEGIN ([^-\r\n]*PRIVATE KEY[^-\r\n]*)-----.*?-----END \1-----[ \t]*\r?\n?", re.DOTALL
)


class ForeignZone(ValueError):
    """A zone sent a resource that names another zone."""


@dataclass(frozen=True)
class Entry:
    """One resource as sent: its key in the sender's namespace, canonical JSON and hash."""

    key: ResourceKey
    json: bytes
    hash: str


def canonical_wire(resource: Resource) -> dict[str, Any]:
    """The wire form without status and timestamps: what sync carries and compares."""
    bare = resource.with_(status=None, creation_time=None, modification_time=None, version=0)
    return resource_to_wire(bare)


def encode(wire: dict[str, Any]) -> bytes:
    return dump_json(wire, sort_keys=True)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def entry(resource: Resource) -> Entry:
    data = encode(canonical_wire(resource))
    return Entry(resource.key, data, content_hash(data))


def same_content(a: Resource, b: Resource) -> bool:
    """Equal labels and spec (status, version and timestamps aside)."""
    return encode(canonical_wire(a)) == encode(canonical_wire(b))


def zone_suffix(zone: str) -> str:
    return hashlib.sha256(zone.encode()).hexdigest()[:8]


def global_name(name: str, zone: str) -> str:
    """The name of a zone's resource on global (and in the other zones)."""
    return f"{name}-{zone_suffix(zone)}"


def zone_name_of(copy_name: str, zone: str) -> str | None:
    """The zone's own name of a copy global holds; None if `copy_name` is not one of zone's."""
    suffix = f"-{zone_suffix(zone)}"
    return copy_name[: -len(suffix)] if copy_name.endswith(suffix) else None


def to_zone(resource: Resource) -> Resource:
    """A global-owned resource as a zone stores it."""
    new_labels = dict(resource.labels)
    new_labels[labels.ORIGIN] = labels.ORIGIN_GLOBAL
    new_labels.setdefault(labels.DISPLAY_NAME, resource.name)
    return resource.with_(labels=new_labels, status=None)


def foreign_zone(resource: Resource, zone: str) -> str | None:
    """Why `resource`, sent by `zone`, belongs to another zone; None when it does not."""
    claimed = resource.labels.get(labels.ZONE)
    if claimed is not None and claimed != zone:
        return (
            f"labelled {labels.ZONE}: {claimed!r}, but it comes from zone {zone!r}: "
            "a zone publishes only its own resources"
        )
    if resource.type in (ZONE_INGRESS.name, ZONE_EGRESS.name):
        spec_zone = getattr(resource.spec, "zone", None)
        if spec_zone is not None and spec_zone != zone:
            return (
                f"zone: {spec_zone!r}, but it comes from zone {zone!r}: "
                "a zone publishes only its own zone proxies"
            )
    return None


def to_global_copy(resource: Resource, zone: str) -> Resource:
    """A zone's resource (as the zone sent it) as global stores it. Raises ForeignZone when it
    names another zone, ValueError when the suffixed name would be too long."""
    problem = foreign_zone(resource, zone)
    if problem is not None:
        raise ForeignZone(problem)
    name = global_name(resource.name, zone)
    if len(name) > MAX_NAME:
        raise ValueError(
            f"name: too long to federate (at most {MAX_NAME - 9} characters, "
            "global adds a zone suffix)"
        )
    new_labels = {k: v for k, v in resource.labels.items() if k not in ZONE_LOCAL_LABELS}
    new_labels[labels.ORIGIN] = labels.ORIGIN_ZONE
    new_labels[labels.ZONE] = zone
    new_labels.setdefault(labels.DISPLAY_NAME, resource.name)
    if by_kind(resource.type).mesh_scoped:
        new_labels[labels.MESH] = resource.mesh
    return resource.with_(name=name, labels=new_labels, status=None)


def pass_on(resource: Resource, *, zone_enabled: bool) -> Resource | None:
    """A zone's copy on global as the other zones receive it; None when it is withheld.

    A zone disabled on global (`Zone` `enabled: false`) is cut out of the federation as Kuma
    does it: none of its MeshServices, ZoneIngresses or ZoneEgresses is passed on, so the
    other zones delete them, their MMZS status stops listing it and no proxy is given an
    endpoint there. Re-enabling passes them on again.

    A zone whose control plane is offline is passed on exactly as it last reported, however
    long it has been gone. A CP outage says nothing about the data path: its ingresses and
    instances keep serving with the configuration they have (Kuma's "zone CP offline =
    freeze" promise), so withdrawing them would throw away healthy capacity — the other zones
    used to stop sending to a zone whose CP was down while its instances answered fine.
    Whether that zone's data path works is decided where traffic is, by the sidecars' active
    health checks of its ingresses (`translate.resilience.apply_zone_health_checks`), which
    take a blackholed or dead ingress out within seconds. A zone that is gone for good is
    removed by deleting its `Zone` on global, which deletes what it synced.
    """
    if not zone_enabled:
        return None
    new_labels = dict(resource.labels)
    new_labels[labels.ORIGIN] = labels.ORIGIN_GLOBAL
    return resource.with_(labels=new_labels, status=None)


def strip_private_keys(pem: bytes) -> bytes | None:
    """`pem` without its private key blocks; None when a key may remain (fail closed)."""
    stripped = _PRIVATE_KEY_BLOCK.sub(b"", pem)
    return None if b"PRIVATE KEY" in stripped or not stripped.strip() else stripped


def secret_for_zone(resource: Resource, zone: str) -> Resource | None:
    """What zone `zone` receives of a Secret global holds; None = it is not sent there.

    See the module docstring: `ca-builtin` as its certificate only, a `zonemesh.io/ca-zone`
    Secret to its own zone only, GlobalSecrets never; any other mesh Secret (e.g.
    `dataplane-token-revocations-<mesh>`) to every zone as it is."""
    if resource.type == GLOBAL_SECRET.name:
        return None
    if resource.type != SECRET.name:
        return resource
    if CA_ZONE_LABEL in resource.labels:
        return resource if resource.labels[CA_ZONE_LABEL] == zone else None
    if resource.name != CA_SECRET_NAME or not isinstance(resource.spec, SecretSpec):
        return resource
    certificates = strip_private_keys(resource.spec.value)
    if certificates is None:
        return None
    return resource.with_(spec=SecretSpec(data=base64.b64encode(certificates).decode()))
