"""`TokenService`: issues and verifies this control plane's tokens; owns keys and revocations.

Verification is synchronous and reads only memory (keys and revocation lists are loaded at
start and kept current from store events), so the xDS and KDS handshakes and every API request
can afford it. Revocation lists (Kuma's format: comma-separated token ids) live in:
- `dataplane-token-revocations-<mesh>`: a mesh Secret, so one written on global reaches every
  zone (a token id is unique, wherever it was issued);
- `zone-token-revocations`, `user-token-revocations`: GlobalSecrets of the CP that issued them.
Listeners registered with `on_revocation` hear about every change, so live streams holding a
revoked token can be closed within moments rather than at their next reconnect (Kuma checks
only when a stream starts, kumahq/kuma#3379).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta

from zonemesh.auth.keys import KeyRings, RingId, SigningKey, key_from_secret, new_key
from zonemesh.auth.tokens import (
    DataplaneToken,
    TokenError,
    TokenKind,
    UserToken,
    ZoneToken,
    as_dataplane,
    as_user,
    as_zone,
    dataplane_claims,
    encode,
    peek,
    user_claims,
    verify,
    zone_claims,
)
from zonemesh.resources.base import Resource
from zonemesh.resources.registry import GLOBAL_SECRET, SECRET
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.store.base import AlreadyExistsError, EventKind, Store, Subscription

log = logging.getLogger("zonemesh.auth")

MAX_VALIDITY = timedelta(days=3650)
RevocationListener = Callable[[TokenKind, str, frozenset[str]], None]


def revocations_secret(kind: TokenKind, mesh: str = "") -> tuple[str, str, str]:
    """(type, mesh, name) of the Secret listing the revoked ids of `kind` (in `mesh`)."""
    if kind is TokenKind.DATAPLANE:
        return SECRET.name, mesh, f"dataplane-token-revocations-{mesh}"
    return GLOBAL_SECRET.name, "", f"{kind.value}-token-revocations"


def _revocation_ring(resource: Resource) -> RingId | None:
    if (
        resource.type == SECRET.name
        and resource.name == f"dataplane-token-revocations-{resource.mesh}"
    ):
        return TokenKind.DATAPLANE, resource.mesh
    if resource.type == GLOBAL_SECRET.name:
        for kind in (TokenKind.ZONE, TokenKind.USER):
            if resource.name == f"{kind.value}-token-revocations":
                return kind, ""
    return None


def parse_revocations(data: bytes) -> frozenset[str]:
    text = data.decode("utf-8", errors="replace")
    return frozenset(t.strip() for t in text.replace("\n", ",").split(",") if t.strip())


class TokenService:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._keys = KeyRings()
        self._revoked: dict[RingId, frozenset[str]] = {}
        self._listeners: list[RevocationListener] = []
        self._subscription: Subscription | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load keys and revocations, then follow the store (subscribe first: miss nothing)."""
        self._subscription = self._store.subscribe()
        for rtype in (GLOBAL_SECRET, SECRET):
            for resource in await self._store.list(rtype.name):
                self._apply(resource, deleted=False)
        self._watcher = asyncio.create_task(self._watch(self._subscription), name="auth-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    async def _watch(self, subscription: Subscription) -> None:
        async for event in subscription:
            if event.resource.type in (GLOBAL_SECRET.name, SECRET.name):
                self._apply(event.resource, deleted=event.kind is EventKind.DELETED)

    def _apply(self, resource: Resource, *, deleted: bool) -> None:
        if resource.type == GLOBAL_SECRET.name:
            key = None if deleted else key_from_secret(resource)
            if key is not None:
                self._keys.put(resource.name, key)
            else:
                self._keys.remove(resource.name)
        ring = _revocation_ring(resource)
        if ring is None:
            return
        spec = resource.spec
        revoked = (
            frozenset()
            if deleted or not isinstance(spec, SecretSpec)
            else parse_revocations(spec.value)
        )
        if revoked == self._revoked.get(ring, frozenset()):
            return
        self._revoked[ring] = revoked
        log.info(
            "%s token revocations%s: %d ids",
            ring[0].value,
            f" ({ring[1]})" * bool(ring[1]),
            len(revoked),
        )
        for listener in list(self._listeners):
            try:
                listener(ring[0], ring[1], revoked)
            except Exception:
                log.exception("revocation listener failed")

    def on_revocation(self, listener: RevocationListener) -> Callable[[], None]:
        """Call `listener(kind, mesh, revoked_ids)` whenever a revocation list changes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # --- issuing -------------------------------------------------------------------------

    async def _signing_key(self, ring: RingId) -> SigningKey:
        key = self._keys.newest(ring)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.newest(ring)
            if key is None:
                key = await self._add_key(ring, 1)
        return key

    async def _add_key(self, ring: RingId, serial: int) -> SigningKey:
        key, resource = new_key(ring, serial)
        try:
            await self._store.create(resource)
        except AlreadyExistsError:
            # Another instance (or a concurrent request) made it first: use theirs.
            await self._store.catch_up()
            stored = await self._store.find(resource.key)
            found = key_from_secret(stored) if stored is not None else None
            if found is None:
                raise
            key, resource = found, stored
        self._keys.put(resource.name, key)
        log.info("new %s token signing key %s (kid %s)", ring[0].value, resource.name, key.kid)
        return key

    async def rotate(self, kind: TokenKind, mesh: str = "") -> str:
        """Add the ring's next key, which signs from now on; returns its key id. Tokens signed
        with older keys keep verifying until those keys are deleted."""
        ring: RingId = (kind, mesh if kind is TokenKind.DATAPLANE else "")
        async with self._lock:
            newest = self._keys.newest(ring)
            key = await self._add_key(ring, (newest.serial if newest else 0) + 1)
        return key.kid

    async def _issue(self, ring: RingId, claims: Mapping[str, object], valid_for: timedelta) -> str:
        if not timedelta(0) < valid_for <= MAX_VALIDITY:
            raise ValueError(f"validFor: must be positive and at most {MAX_VALIDITY.days} days")
        key = await self._signing_key(ring)
        return encode(claims, private_key=key.private_key, kid=key.kid, valid_for=valid_for)

    async def issue_dataplane(
        self,
        *,
        mesh: str,
        name: str | None = None,
        tags: Mapping[str, list[str]] | None = None,
        proxy_type: str = "dataplane",
        valid_for: timedelta,
    ) -> str:
        claims = dataplane_claims(mesh, name, tags or {}, proxy_type)
        return await self._issue((TokenKind.DATAPLANE, mesh), claims, valid_for)

    async def issue_zone(self, *, zone: str, scope: list[str], valid_for: timedelta) -> str:
        return await self._issue((TokenKind.ZONE, ""), zone_claims(zone, scope), valid_for)

    async def issue_user(self, *, name: str, groups: list[str], valid_for: timedelta) -> str:
        return await self._issue((TokenKind.USER, ""), user_claims(name, groups), valid_for)

    # --- verifying -----------------------------------------------------------------------

    def _verified_claims(self, kind: TokenKind, token: str) -> tuple[RingId, dict[str, object]]:
        unverified = peek(token)
        ring: RingId = (kind, unverified.mesh if kind is TokenKind.DATAPLANE else "")
        key = self._keys.find(ring, unverified.kid)
        if key is None:
            raise TokenError(
                "unknown-key",
                f"the token was not signed by a {kind.value} token signing key of this control "
                "plane (unknown key id)",
            )
        claims = verify(token, key.public_key)
        if str(claims.get("jti", "")) in self._revoked.get(ring, frozenset()):
            raise TokenError("revoked", "the token has been revoked")
        return ring, claims

    def verify_dataplane(self, token: str) -> DataplaneToken:
        return as_dataplane(self._verified_claims(TokenKind.DATAPLANE, token)[1])

    def verify_zone(self, token: str) -> ZoneToken:
        return as_zone(self._verified_claims(TokenKind.ZONE, token)[1])

    def verify_user(self, token: str) -> UserToken:
        return as_user(self._verified_claims(TokenKind.USER, token)[1])

    def is_revoked(self, kind: TokenKind, token_id: str, mesh: str = "") -> bool:
        ring: RingId = (kind, mesh if kind is TokenKind.DATAPLANE else "")
        return token_id in self._revoked.get(ring, frozenset())
