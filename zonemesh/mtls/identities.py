"""`IdentityProvider`: issues each proxy identity once and re-issues it before it expires.

Generation runs for every proxy after every change. If each run issued a new certificate,
every pass would push new secrets to every proxy; so certificates are cached by
(mesh, SPIFFE IDs, CA fingerprint) and the same inputs get the same bytes until the
certificate has lived `rotate_fraction` of its lifetime. A new CA (another fingerprint) gets
new certificates at once. The xDS server asks `next_rotation()` when to run the next pass, and
sweeps entries no proxy asked for during a full pass (`begin_sweep` / `end_sweep`).

Validity defaults to 24 h; `ZONEMESH_CERT_VALIDITY` (e.g. `12h`, `90m`, `3s`, or seconds)
overrides the default when the caller gives none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from zonemesh.mtls.ca import IssuedCert, MeshCA, issue_leaf

log = logging.getLogger("zonemesh.mtls")

DEFAULT_CERT_VALIDITY = timedelta(hours=24)
DEFAULT_ROTATE_FRACTION = 2 / 3
IdentityKey = tuple[str, tuple[str, ...], str]  # mesh, sorted SPIFFE IDs, CA fingerprint


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Entry:
    cert: IssuedCert
    rotate_at: datetime
    round: int


class IdentityProvider:
    """Issues and caches proxy certificates; see the module docstring."""

    def __init__(
        self,
        validity: timedelta = DEFAULT_CERT_VALIDITY,
        *,
        rotate_fraction: float = DEFAULT_ROTATE_FRACTION,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if validity <= timedelta(0):
            raise ValueError("certificate validity must be positive")
        if not 0 < rotate_fraction < 1:
            raise ValueError("rotate_fraction must be between 0 and 1")
        self.validity = validity
        self.rotate_fraction = rotate_fraction
        self.clock = clock
        self.issued = 0  # certificates issued so far (tests, metrics)
        self._entries: dict[IdentityKey, _Entry] = {}
        self._round = 0

    def identity(self, ca: MeshCA, spiffe_ids: Iterable[str]) -> IssuedCert:
        """The certificate for these identities: cached, or newly issued when due or new."""
        key: IdentityKey = (ca.mesh, tuple(sorted(set(spiffe_ids))), ca.fingerprint)
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or now >= entry.rotate_at:
            cert = issue_leaf(ca, key[1], validity=self.validity, now=now)
            lifetime = cert.not_after - now
            entry = _Entry(cert, now + lifetime * self.rotate_fraction, self._round)
            self._entries[key] = entry
            self.issued += 1
            log.debug(
                "issued a certificate for %s in mesh %s, valid until %s",
                ", ".join(key[1]) or "(no service)",
                ca.mesh,
                cert.not_after.isoformat(),
            )
        entry.round = self._round
        return entry.cert

    def next_rotation(self) -> datetime | None:
        """When the earliest cached certificate is due for re-issuing (None: nothing cached)."""
        return min((e.rotate_at for e in self._entries.values()), default=None)

    def begin_sweep(self) -> None:
        """Start a full pass: entries not asked for until `end_sweep` will be forgotten."""
        self._round += 1

    def end_sweep(self) -> None:
        """Forget certificates no proxy asked for since `begin_sweep` (gone proxies, old CAs)."""
        stale = [k for k, e in self._entries.items() if e.round < self._round]
        for key in stale:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
