"""The fan-out benchmark's mesh: its resources, and the changes it measures.

Three control planes, as a multi-zone mesh really is: `global`, the zone under test `bench`
(every simulated proxy connects to it) and `zone2` (a remote zone with one service behind its
ZoneIngress). Everything is written through the HTTP APIs, the way users write it.

In `bench`: M services x E instances (`svc-NNNN`), two services only a MeshMultiZoneService
reaches (`svc-mz-a`, `svc-mz-b`), and the N proxies, members of `bench-client` (an inbound
each, as real sidecars). Every proxy has an outbound to each of the M services, to `svc-new`
(created by the "new service" change), to MMZS `bench-mz` (selects `svc-mz-a`, then `svc-mz-b`)
and to MMZS `bench-remote` (`svc-remote`, which runs only in zone2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MESH = "default"
SERVICE_PORT = 8080  # every benchmark service's port (the MeshService port)
INBOUND_PORT = 18080  # every instance's sidecar inbound port
CLIENT_SERVICE = "bench-client"
NEW_SERVICE = "svc-new"
MZ_SERVICES = ("svc-mz-a", "svc-mz-b")
REMOTE_SERVICE = "svc-remote"
MMZS_SELECTOR = "bench-mz"
MMZS_REMOTE = "bench-remote"
REMOTE_INSTANCES = 2
INGRESS_NAME = "ingress-zone2"
INGRESS_ADDRESS = "127.0.200.1"
INGRESS_PORT = 10001
OUTBOUND_PORT_BASE = 20000  # a proxy's outbound k listens on 127.0.0.1:(this + k)
CHANGE_KINDS = ("address", "new-instance", "remove", "new-service", "mmzs-selector", "ingress-lost")


def loopback(first: int, n: int) -> str:
    """The n-th address of a loopback block starting at 127.<first>.0.1 (62500 per octet)."""
    return f"127.{first + n // 62500}.{(n // 250) % 250}.{n % 250 + 1}"


def service_name(service: int) -> str:
    return f"svc-{service:04d}"


def instance_address(service: int, instance: int, per_service: int) -> str:
    return loopback(1, service * per_service + instance)


def proxy_address(index: int) -> str:
    return loopback(50, index)


def proxy_name(index: int) -> str:
    return f"bench-proxy-{index:05d}"


def dataplane(name: str, service: str, address: str) -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": MESH,
        "name": name,
        "networking": {
            "address": address,
            "inbound": [
                {
                    "port": INBOUND_PORT,
                    "servicePort": SERVICE_PORT,
                    "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"},
                }
            ],
        },
    }


def instance(
    service: int, index: int, per_service: int, address: str | None = None
) -> dict[str, Any]:
    return dataplane(
        f"{service_name(service)}-{index:03d}",
        service_name(service),
        address or instance_address(service, index, per_service),
    )


def named_instances(
    service: str, first_octet: int, count: int, offset: int = 0
) -> list[dict[str, Any]]:
    return [
        dataplane(f"{service}-{i:03d}", service, loopback(first_octet, offset + i))
        for i in range(count)
    ]


def mz_instances(which: int, per_service: int) -> list[dict[str, Any]]:
    return named_instances(MZ_SERVICES[which], 110, per_service, which * per_service)


def new_service_instances(rep: int, per_service: int) -> list[dict[str, Any]]:
    """Fresh addresses every repetition, so that a proxy's old view cannot pass for the new."""
    return named_instances(NEW_SERVICE, 120, per_service, rep * per_service)


def remote_instances() -> list[dict[str, Any]]:
    return named_instances(REMOTE_SERVICE, 130, REMOTE_INSTANCES)


def zone_ingress() -> dict[str, Any]:
    return {
        "type": "ZoneIngress",
        "name": INGRESS_NAME,
        "networking": {
            "address": INGRESS_ADDRESS,
            "port": INGRESS_PORT,
            "advertisedAddress": INGRESS_ADDRESS,
            "advertisedPort": INGRESS_PORT,
        },
    }


def mmzs(name: str, display_name: str) -> dict[str, Any]:
    return {
        "type": "MeshMultiZoneService",
        "mesh": MESH,
        "name": name,
        "spec": {
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": display_name}}},
            "ports": [{"port": SERVICE_PORT, "appProtocol": "http"}],
        },
    }


def proxy_dataplane(index: int, services: int) -> dict[str, Any]:
    """A simulated proxy as its node metadata registers it: a member of `bench-client`."""
    backends = [("MeshService", service_name(s)) for s in range(services)]
    backends += [
        ("MeshService", NEW_SERVICE),
        ("MeshMultiZoneService", MMZS_SELECTOR),
        ("MeshMultiZoneService", MMZS_REMOTE),
    ]
    doc = dataplane(proxy_name(index), CLIENT_SERVICE, proxy_address(index))
    doc["networking"]["outbound"] = [
        {
            "port": OUTBOUND_PORT_BASE + k,
            "address": "127.0.0.1",
            "backendRef": {"kind": kind, "name": name, "port": SERVICE_PORT},
        }
        for k, (kind, name) in enumerate(backends)
    ]
    return doc


@dataclass(frozen=True)
class Expectation:
    """What a fully configured proxy holds: EDS clusters and endpoints, at least."""

    clusters: int
    endpoints: int


def first_config(services: int, per_service: int) -> Expectation:
    # M services, the selector MMZS (svc-mz-a's E) and the remote MMZS (zone2's ingress).
    return Expectation(clusters=services + 2, endpoints=services * per_service + per_service + 1)


@dataclass(frozen=True)
class WatchSpec:
    """When a proxy holds a change: the clusters holding `select` at the start (or, without
    `select`, some cluster) hold every `present` address and no `absent` one."""

    select: str
    present: tuple[str, ...]
    absent: tuple[str, ...]

    def wire(self) -> dict[str, Any]:
        return {"select": self.select, "present": list(self.present), "absent": list(self.absent)}


@dataclass(frozen=True)
class Write:
    """One API call: on which control plane, what."""

    cp: str  # "global" | "bench" | "zone2"
    method: str  # "put" | "delete"
    path: str
    doc: dict[str, Any] | None = None


@dataclass(frozen=True)
class Change:
    kind: str
    rep: int
    writes: tuple[Write, ...]
    watch: WatchSpec
    revert: tuple[Write, ...]  # back to the starting point, not measured


def dp_path(name: str) -> str:
    return f"/meshes/{MESH}/dataplanes/{name}"


def put_dp(doc: dict[str, Any], cp: str = "bench") -> Write:
    return Write(cp, "put", dp_path(doc["name"]), doc)


def put_mmzs(doc: dict[str, Any]) -> Write:
    return Write("global", "put", f"/meshes/{MESH}/meshmultizoneservices/{doc['name']}", doc)


def change(kind: str, rep: int, services: int, per_service: int) -> Change:
    """The `rep`-th change of `kind`; each touches a different service where it can."""
    service = rep % services
    first = instance(service, 0, per_service)
    old = first["networking"]["address"]
    if kind == "address":
        moved = instance(service, 0, per_service, loopback(100, rep))
        return Change(
            kind,
            rep,
            (put_dp(moved),),
            WatchSpec(old, (moved["networking"]["address"],), (old,)),
            (put_dp(first),),
        )
    if kind == "new-instance":
        extra = instance(service, per_service, per_service, loopback(101, rep))
        return Change(
            kind,
            rep,
            (put_dp(extra),),
            WatchSpec(old, (extra["networking"]["address"],), ()),
            (Write("bench", "delete", dp_path(extra["name"])),),
        )
    if kind == "remove":
        return Change(
            kind,
            rep,
            (Write("bench", "delete", dp_path(first["name"])),),
            WatchSpec(old, (), (old,)),
            (put_dp(first),),
        )
    if kind == "new-service":
        docs = new_service_instances(rep, per_service)
        return Change(
            kind,
            rep,
            tuple(put_dp(d) for d in docs),
            WatchSpec("", tuple(d["networking"]["address"] for d in docs), ()),
            tuple(Write("bench", "delete", dp_path(d["name"])) for d in docs),
        )
    if kind == "mmzs-selector":
        a = [d["networking"]["address"] for d in mz_instances(0, per_service)]
        b = [d["networking"]["address"] for d in mz_instances(1, per_service)]
        return Change(
            kind,
            rep,
            (put_mmzs(mmzs(MMZS_SELECTOR, MZ_SERVICES[1])),),
            WatchSpec(a[0], tuple(b), tuple(a)),
            (put_mmzs(mmzs(MMZS_SELECTOR, MZ_SERVICES[0])),),
        )
    if kind == "ingress-lost":
        return Change(
            kind,
            rep,
            (Write("zone2", "delete", f"/zoneingresses/{INGRESS_NAME}"),),
            WatchSpec(INGRESS_ADDRESS, (), (INGRESS_ADDRESS,)),
            (Write("zone2", "put", f"/zoneingresses/{INGRESS_NAME}", zone_ingress()),),
        )
    raise ValueError(f"unknown change kind {kind!r}; one of {', '.join(CHANGE_KINDS)}")


def setup_writes(services: int, per_service: int) -> list[Write]:
    """Everything but the proxies, in an order each CP accepts."""
    writes = [
        put_mmzs(mmzs(MMZS_SELECTOR, MZ_SERVICES[0])),
        put_mmzs(mmzs(MMZS_REMOTE, REMOTE_SERVICE)),
    ]
    writes += [Write("zone2", "put", f"/zoneingresses/{INGRESS_NAME}", zone_ingress())]
    writes += [put_dp(d, "zone2") for d in remote_instances()]
    writes += [
        put_dp(instance(s, i, per_service)) for s in range(services) for i in range(per_service)
    ]
    writes += [put_dp(d) for which in (0, 1) for d in mz_instances(which, per_service)]
    return writes
