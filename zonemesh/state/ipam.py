"""Virtual IPs for MeshServices and MeshMultiZoneServices, one per resource, from a CIDR.

A VIP is kept for as long as its resource exists: it lives in the resource's status (which
the store persists), and the allocator also remembers it in memory in case something rewrites
the resource without its status (a sync from global does). New VIPs come from a cursor that
only moves forward, so a freed VIP is handed out again only after the range has wrapped; the
cursor is persisted with `Store.set_value` so this holds across restarts.

Uniqueness is the store's to decide (`Store.claim_vip`): every VIP handed out or kept is
claimed for its resource first, and one that another resource holds is skipped. On PostgreSQL
that claim is a row with a unique key, so two instances that briefly both believe they lead
(the old leader has not noticed its lock is gone) never give one VIP to two resources, and a
resource both allocate for gets the same one from each. Claims already confirmed are
remembered, so a pass claims only what is new. The claims of deleted resources are freed
`CLAIM_GRACE_S` after they were made, at most every `RELEASE_EVERY_S`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.store.base import Store

log = logging.getLogger("zonemesh.state.ipam")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CLAIM_GRACE_S = 60.0  # far longer than from a claim to its resource's write
RELEASE_EVERY_S = 30.0


@dataclass(frozen=True)
class Allocation:
    """The VIP of each resource; None where the range had no address left."""

    vips: dict[ResourceKey, str | None]
    cidr: str

    def exhausted_message(self) -> str:
        return f"no free virtual IP left in {self.cidr}"


class VipAllocator:
    def __init__(self, cidr: str, store: Store, value_name: str) -> None:
        self.cidr = cidr
        self.network: IPNetwork = ipaddress.ip_network(cidr, strict=True)
        self._store = store
        self._value_name = value_name
        # Network and broadcast addresses are never handed out (except in /31, /32).
        if self.network.num_addresses > 2:
            self._first = int(self.network.network_address) + 1
            last = int(self.network.broadcast_address)
            self._last = last - 1 if self.network.version == 4 else last
        else:
            self._first = int(self.network.network_address)
            self._last = int(self.network.broadcast_address)
        self.size = self._last - self._first + 1
        self._cursor: int | None = None  # offset of the next candidate; None = not loaded
        self._saved_cursor: int | None = None
        self._remembered: dict[ResourceKey, str] = {}
        self._confirmed: dict[ResourceKey, int] = {}  # claims the store granted us
        self._released_at: float | None = None

    async def load(self) -> None:
        """Read the persisted cursor (kept only if it was written for the same CIDR)."""
        raw = await self._store.get_value(self._value_name)
        if raw:
            try:
                saved = json.loads(raw)
                if saved.get("cidr") == self.cidr and 0 <= int(saved["next"]) < self.size:
                    self._cursor = self._saved_cursor = int(saved["next"])
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring unreadable IPAM cursor %s=%r", self._value_name, raw)

    async def save(self) -> None:
        """Persist the cursor if it moved."""
        if self._cursor is not None and self._cursor != self._saved_cursor:
            value = json.dumps({"cidr": self.cidr, "next": self._cursor})
            await self._store.set_value(self._value_name, value)
            self._saved_cursor = self._cursor

    async def assign(self, resources: Iterable[Resource]) -> Allocation:
        """Keep every resource's existing VIP, give the others new ones (oldest first); each
        claimed in the store. Raises `StoreError` when the store cannot answer."""
        ordered = sorted(resources, key=_age)
        present = {r.key for r in ordered}
        self._confirmed = {k: v for k, v in self._confirmed.items() if k in present}
        await self._release_stale()
        taken: set[int] = set()  # not to be handed out: given this pass, or held by others
        given: set[int] = set()
        result: dict[ResourceKey, str | None] = {}
        missing: list[ResourceKey] = []
        for resource in ordered:
            kept = self._existing(resource, taken)
            try:
                held = None if kept is None else await self._claim(kept, resource.key, taken, given)
            except _Unusable as e:
                log.warning("%s", e)
                result[resource.key] = None
                continue
            if held is None:
                missing.append(resource.key)
            else:
                result[resource.key] = str(ipaddress.ip_address(held))
        if missing and self._cursor is None:
            # Nothing persisted: continue after the highest VIP in use, not at the start.
            self._cursor = (max(taken) - self._first + 1) % self.size if taken else 0
        for key in missing:
            try:
                held = await self._claim_new(key, taken, given)
            except _Unusable as e:
                log.warning("%s", e)
                held = None
            result[key] = None if held is None else str(ipaddress.ip_address(held))
        self._remembered = {k: ip for k, ip in result.items() if ip is not None}
        return Allocation(result, self.cidr)

    async def _claim(
        self, value: int, owner: ResourceKey, taken: set[int], given: set[int]
    ) -> int | None:
        """Claim `value` for `owner`: the VIP it holds then, or None when another resource
        holds `value` (which is then `taken`: nobody here may have it either)."""
        if self._confirmed.get(owner) == value and value not in given:
            held: int | None = value
        else:
            ip = str(ipaddress.ip_address(value))
            granted = await self._store.claim_vip(self.cidr, ip, owner)
            if granted is None:
                taken.add(value)
                return None
            held = self._in_range(granted)
            if held is None or held in given:
                raise _Unusable(
                    f"{owner} holds VIP {granted} of {self.cidr} in the store, which this pass "
                    "gave to another resource: it gets none until the next pass"
                )
            if held != value:
                log.info("%s holds VIP %s already (claimed by another instance)", owner, granted)
            self._confirmed[owner] = held
        assert held is not None
        taken.add(held)
        given.add(held)
        return held

    async def _claim_new(self, owner: ResourceKey, taken: set[int], given: set[int]) -> int | None:
        for _ in range(self.size):
            offset = self._next_free(taken)
            if offset is None:
                return None
            held = await self._claim(self._first + offset, owner, taken, given)
            if held is not None:
                return held
        return None

    async def _release_stale(self) -> None:
        now = time.monotonic()
        if self._released_at is not None and now - self._released_at < RELEASE_EVERY_S:
            return
        self._released_at = now
        freed = await self._store.release_stale_vips(self.cidr, CLAIM_GRACE_S)
        if freed:
            log.info("freed %d VIP claims of deleted resources in %s", freed, self.cidr)

    def _existing(self, resource: Resource, taken: set[int]) -> int | None:
        candidates = [v.ip for v in getattr(resource.status, "vips", None) or []]
        if resource.key in self._remembered:
            candidates.append(self._remembered[resource.key])
        for ip in candidates:
            value = self._in_range(ip)
            if value is not None and value not in taken:
                return value
        return None

    def _in_range(self, ip: str) -> int | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        value = int(addr)
        if addr.version != self.network.version or not self._first <= value <= self._last:
            return None
        return value

    def _next_free(self, taken: set[int]) -> int | None:
        if len(taken) >= self.size:
            return None
        cursor = self._cursor or 0
        for step in range(self.size):
            offset = (cursor + step) % self.size
            if self._first + offset not in taken:
                self._cursor = (offset + 1) % self.size
                return offset
        return None


class _Unusable(Exception):
    """The store says a resource holds a VIP this pass cannot give it (a stale view)."""


def _age(resource: Resource) -> tuple[int, float, ResourceKey]:
    """Oldest first, so that among duplicates the established resource keeps its VIP."""
    created = resource.creation_time
    return (0, created.timestamp(), resource.key) if created else (1, 0.0, resource.key)
