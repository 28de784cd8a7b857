"""Generation scheduling: when to generate, for which proxies, and how little.

Inputs: store events and health changes (through `MeshStateTracker`) and proxy connects.

- A connecting proxy is generated at once from the current state (building one is a few
  dict copies, no store I/O; within a connect storm the state of the previous batch is
  reused for `NEW_PROXY_STATE_AGE_S`), its own resource from the tracker's mirror, never
  waiting for the debounce.
- After a burst of changes (`DebouncedSignal`), one round:
  - a *structural* change (Mesh, MeshService, MMZS, MLBS: inputs of a proxy's own
    resources) regenerates every proxy, as a full pass; so does any change when the
    generator does not promise `OWN_OUTPUT_IS_LOCAL` (`translate.generator`);
  - otherwise (Dataplanes, zone ingresses/egresses, health: inputs of the shared parts
    only) the proxies whose own resource or health changed are regenerated, so are those
    whose output is all their own (zone proxies, builtin gateways:
    `translate.profiles.refreshed_through_parts`), and every
    *group* of proxies holding the same shared parts is refreshed once: one member is
    regenerated, its new parts interned, and only when their content differs are the other
    members' snapshots recomposed from their unchanged own resources and the new parts — no
    generator run per proxy. An endpoint change thus reaches only the holders of that
    cluster, as an EDS-only push (the cluster's version does not change), and a change to
    a service used by 10 % of the groups costs about 10 % of one used by all.

Envoy's ordering rules are the sessions' business (`xds.protocol`): whatever changed in a
snapshot is sent clusters first, endpoints after every cluster change, listeners last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.proxy_types import PROXY_TYPE_OF
from zonemesh.runtime.debounce import DebouncedSignal
from zonemesh.runtime.health import InstanceHealth
from zonemesh.store.base import ResourceEvent, Store, Subscription
from zonemesh.translate.caches import TranslationCaches
from zonemesh.translate.generator import (
    Generator,
    Proxy,
    ProxyResources,
    own_output_is_local,
)
from zonemesh.translate.profiles import refreshed_through_parts
from zonemesh.translate.state import MeshState
from zonemesh.xds.cache import (
    Interned,
    ResourceInterner,
    Snapshot,
    SnapshotCache,
    changed_names,
    changed_types,
    compose,
)
from zonemesh.xds.engine.sharing import SharedOutbounds
from zonemesh.xds.engine.tracker import MeshStateTracker

log = logging.getLogger("zonemesh.xds")

BATCH_SIZE = 32  # proxies generated between two yields to the event loop
RECOMPOSE_BATCH = 256  # snapshots recomposed between two yields (no generator runs)
# During a connect storm new proxies are served from a state at most this old: every
# registration changes the store, and a new state (every per-state memo lost) per handful of
# new proxies would cost more than generating for them. The debounced round follows.
NEW_PROXY_STATE_AGE_S = 0.25


@dataclass(eq=False)
class _Group:
    """Proxies holding the same shared parts (the same objects, hence the same inputs)."""

    parts: tuple[ProxyResources, ...]
    interned: list[Interned]
    members: set[ResourceKey] = field(default_factory=set)

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(id(p) for p in self.parts)


@dataclass(eq=False, slots=True)
class _Held:
    """What is really per proxy: its own resources, interned, and the group of its parts;
    `snapshot` is what they were last composed into (a new one derives from it).
    `via_parts`: a part-only change reaches it through its group's refresh (a sidecar);
    else it is regenerated on every round (a builtin gateway, whose output is all its own,
    shares the empty group with sidecars without outbounds but not their promise)."""

    own: Interned
    group: _Group
    snapshot: Snapshot | None = None
    via_parts: bool = True


ConnectedCheck = Callable[[ResourceKey], str | None]  # node id when connected, else None
ConnectedKeys = Callable[[], Iterable[ResourceKey]]


class GenerationScheduler:
    """Owns the tracker, the interner, the groups and the translation caches (see module)."""

    def __init__(
        self,
        *,
        store: Store,
        health: InstanceHealth,
        zone: str,
        generator: Generator,
        cache: SnapshotCache,
        connected: ConnectedCheck,
        connected_keys: ConnectedKeys,
        quiet_s: float,
        max_s: float,
        observe: Callable[[float], None] = lambda _: None,
    ) -> None:
        self.use_generator(generator)
        self.cache = cache
        self.caches = TranslationCaches()
        self.outbounds = SharedOutbounds()  # what registrations share (`engine.sharing`)
        self.tracker = MeshStateTracker(store, health, zone, self.caches)
        self.interner = ResourceInterner()
        self.signal = DebouncedSignal(quiet_s, max_s)
        self._connected = connected
        self._connected_keys = connected_keys
        self._subscription: Subscription | None = None
        self._observe = observe
        self._held: dict[ResourceKey, _Held] = {}
        self._groups: dict[tuple[int, ...], _Group] = {}
        self._new_keys: set[ResourceKey] = set()
        self._interned_version = -1
        self._new_served_at = -1e9
        # Per round: the names that differ between the parts of two groups (`_derived`).
        self._group_deltas: dict[tuple[_Group, _Group], dict[str, frozenset[str]]] = {}
        self.generations = 0  # debounced rounds done (tests, benchmarks)
        self.full_passes = 0
        self.generated = 0  # generator runs (tests, benchmarks)
        self.recomposed = 0  # snapshots recomposed without a generator run

    def use_generator(self, generator: Generator) -> None:
        self.generator = generator
        # Whether sidecars can be refreshed through their shared parts alone.
        self.parts_only_refresh = own_output_is_local(generator)

    # --- inputs -------------------------------------------------------------------------

    async def load(self) -> None:
        await self.tracker.load()
        self.signal.mark()

    async def watch_store(self, subscription: Subscription) -> None:
        self._subscription = subscription
        while True:
            batch = [await subscription.get(), *subscription.drain()]
            self._apply(batch)

    def _apply(self, events: list[ResourceEvent]) -> None:
        if any([self.tracker.apply(event) for event in events]):
            self.signal.mark()

    def _catch_up(self) -> None:
        """Apply the store events queued but not yet read (a registration just written)."""
        if self._subscription is not None:
            self._apply(self._subscription.drain())

    async def watch_health(self) -> None:
        health = self.tracker.health
        seen = health.version
        while True:
            seen = await health.wait_newer(seen)
            self.signal.mark()

    def proxy_connected(self, key: ResourceKey) -> None:
        self._new_keys.add(key)
        self.signal.mark()  # its health changed with it

    def proxy_disconnected(self, key: ResourceKey) -> None:
        self._new_keys.discard(key)
        if self._connected(key) is None:
            self.cache.remove(key)
            self._forget(key)
        self.signal.mark()

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                if self._new_keys:
                    await self._serve_new_proxies()
                    continue
                if self.signal.due():
                    await self._round()
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("xDS generation round failed; retrying on the next change")
            await self.signal.wait()

    @property
    def state(self) -> MeshState | None:
        return self.tracker.current

    def _state(self, *, for_new_proxies: bool = False) -> MeshState:
        tracker = self.tracker
        current = tracker.current
        now = time.monotonic()
        # Reused only within a connect storm (the previous new proxies were served less
        # than NEW_PROXY_STATE_AGE_S ago) and without a structural change pending (else a
        # new proxy would miss, say, a service): a lone connect gets the latest state.
        reuse = (
            for_new_proxies
            and current is not None
            and not tracker.changes.structural
            and now - self._new_served_at < NEW_PROXY_STATE_AGE_S
            and now - tracker.built_at < NEW_PROXY_STATE_AGE_S
        )
        if for_new_proxies:
            self._new_served_at = now
        state = current if reuse and current is not None else tracker.state()
        if state.version != self._interned_version:
            self._interned_version = state.version
            self.interner.new_round()
        self._group_deltas = {}
        return state

    async def _serve_new_proxies(self) -> None:
        self._catch_up()
        keys, self._new_keys = self._new_keys, set()
        state = self._state(for_new_proxies=True)
        for i, key in enumerate(sorted(keys)):
            if i and i % BATCH_SIZE == 0:
                await asyncio.sleep(0)
            self._regenerate(state, key)

    async def _round(self) -> None:
        self._catch_up()
        state = self._state()
        changes = self.tracker.take_changes()
        keys = sorted(self._connected_keys())
        try:
            if changes.structural or not self.parts_only_refresh:
                self._groups = {}
                await self._regenerate_all(state, keys)
                self.full_passes += 1
            else:
                # Not every proxy whose health changed: its own output does not read health
                # (`own_output_is_local`), and its group's refresh brings its shared parts.
                # In a connect storm this is every new proxy, generated once on connect.
                direct = {k for k in keys if k in changes.resources or not self._via_group(k)}
                await self._regenerate_all(state, sorted(direct))
                await self._refresh_groups(state, direct)
        except BaseException:
            self.tracker.changes.structural = True  # the next round redoes everything
            self.signal.mark()
            raise
        self.generations += 1

    def _via_group(self, key: ResourceKey) -> bool:
        """Whether a part-only change reaches `key` through its group's refresh."""
        held = self._held.get(key)
        return (
            held is not None and held.via_parts and self._groups.get(held.group.key) is held.group
        )

    async def _regenerate_all(self, state: MeshState, keys: list[ResourceKey]) -> None:
        for i, key in enumerate(keys):
            if i and i % BATCH_SIZE == 0:
                await asyncio.sleep(0)  # let streams write and requests arrive
                if self._new_keys:  # connected meanwhile: served from this round's state
                    new, self._new_keys = self._new_keys, set()
                    for other in sorted(new):
                        self._regenerate(state, other)
            self._regenerate(state, key)

    async def _refresh_groups(self, state: MeshState, regenerated: set[ResourceKey]) -> None:
        """Each group once: a member is regenerated; if the content of its parts changed,
        the other members' snapshots are recomposed from their own resources."""
        for group in list(self._groups.values()):
            if self._groups.get(group.key) is not group:
                continue  # merged into another one meanwhile
            members = [k for k in group.members if k not in regenerated]
            representative = next((k for k in members if self._connected(k) is not None), None)
            if representative is None:
                continue
            old_interned = group.interned
            self._regenerate(state, representative)
            held = self._held.get(representative)
            if held is None or held.group is group:
                continue  # generation failed, or nothing was new
            new_group = held.group
            for key in members:
                if key == representative:
                    continue
                mine = self._held.get(key)
                if mine is None or mine.group is not group:
                    continue
                self._move(key, mine, new_group)
            types = changed_types(old_interned, new_group.interned)
            if types is not None and not types:
                continue  # same content: no member's snapshot changes
            delta = (
                changed_names(old_interned, new_group.interned, types)
                if types is not None
                else None
            )
            done = 0
            for key in list(new_group.members):
                if key in regenerated or key == representative:
                    continue
                mine = self._held.get(key)
                if mine is None or self._connected(key) is None:
                    continue
                base = self.cache.get(key)
                snapshot = compose(
                    mine.own,
                    mine.group.interned,
                    base=base,
                    types=types if base is not None else None,
                    delta=delta if base is not None else None,
                )
                mine.snapshot = snapshot
                self.cache.set(key, snapshot)
                self.recomposed += 1
                done += 1
                if done % RECOMPOSE_BATCH == 0:
                    await asyncio.sleep(0)

    # --- one proxy ----------------------------------------------------------------------

    def _regenerate(self, state: MeshState, key: ResourceKey) -> None:
        node_id = self._connected(key)
        if node_id is None:
            return
        resource = self.tracker.resource(key)  # the latest, even if newer than `state`
        if resource is None:
            self._forget(key)
            self.cache.set(key, Snapshot.of({}))  # its resource was deleted: serve nothing
            return
        proxy = proxy_of(key, resource, node_id)
        generated = self._generate(state, proxy)
        if generated is None:
            return  # keeps its previous snapshot
        own, parts, interned = generated
        group = self._group_of(parts, interned)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held(own, group)
            group.members.add(key)
            snapshot = compose(own, group.interned)
        else:
            snapshot = self._derived(key, held, own, group)
            held.own = own
            self._move(key, held, group)
        held.snapshot = snapshot
        held.via_parts = refreshed_through_parts(self.generator, proxy)  # its kind may change
        self.cache.set(key, snapshot)

    def _derived(self, key: ResourceKey, held: _Held, own: Interned, group: _Group) -> Snapshot:
        """The proxy's new snapshot, linked to the one it replaces when that one is in the
        cache: its Delta stream then compares only the names that differ, which within a
        group were found once (a full pass costs each stream what changed for it)."""
        previous = held.snapshot
        if previous is None or self.cache.get(key) is not previous:
            return compose(own, group.interned)
        pair = (held.group, group)
        shared = self._group_deltas.get(pair)
        if shared is None:
            types = {
                t for pieces in (held.group.interned, group.interned) for p in pieces for t in p
            }
            shared = self._group_deltas[pair] = changed_names(
                held.group.interned, group.interned, types
            )
        mine = changed_names([held.own], [own], held.own.keys() | own.keys())
        types = previous.resources.keys() | shared.keys() | mine.keys()
        delta = {t: shared.get(t, frozenset()) | mine.get(t, frozenset()) for t in types}
        return compose(own, group.interned, base=previous, types=None, delta=delta)

    def _generate(
        self, state: MeshState, proxy: Proxy
    ) -> tuple[Interned, tuple[ProxyResources, ...], list[Interned]] | None:
        started = time.perf_counter()
        try:
            resources = self.generator.generate(state, proxy)
            parts = tuple(resources.parts())
            interned = [self.interner.part(p) for p in parts]
            own = self.interner.own(resources)
        except Exception:
            log.exception(
                "generating resources for %s failed; keeping its previous ones", proxy.key
            )
            return None
        finally:
            self.generated += 1
            self._observe(time.perf_counter() - started)
        return own, parts, interned

    def _group_of(self, parts: tuple[ProxyResources, ...], interned: list[Interned]) -> _Group:
        key = tuple(id(p) for p in parts)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(parts, interned)
        return group

    def _move(self, key: ResourceKey, held: _Held, group: _Group) -> None:
        if held.group is group:
            return
        old = held.group
        old.members.discard(key)
        if not old.members and self._groups.get(old.key) is old:
            del self._groups[old.key]
        held.group = group
        group.members.add(key)

    def _forget(self, key: ResourceKey) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return
        group = held.group
        group.members.discard(key)
        if not group.members and self._groups.get(group.key) is group:
            del self._groups[group.key]

    # --- views --------------------------------------------------------------------------

    def snapshot_for(self, key: ResourceKey) -> Snapshot | None:
        """What a known proxy that is not connected would get from the current state."""
        resource = self.tracker.resource(key)
        if resource is None:
            return None
        state = self._state()
        try:
            return self.interner.snapshot(self.generator.generate(state, proxy_of(key, resource)))
        except Exception:
            log.exception("generating resources for %s failed", key)
            return None


def proxy_of(key: ResourceKey, resource: Resource, node_id: str = "") -> Proxy:
    return Proxy(key=key, proxy_type=PROXY_TYPE_OF[key.type], resource=resource, node_id=node_id)
