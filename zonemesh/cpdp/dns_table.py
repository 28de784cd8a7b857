"""The DNS table a sidecar's resolver answers from: mesh hostname -> VIPs.

One format on both sides: the control plane encodes it (`translate.transparent` serves it
from the proxy's own Envoy), `dp run` decodes it (`dp.dns_source`) and answers from it
(`dp.dns`). Names are stored lowercased and without the trailing dot: DNS names compare
case-insensitively (RFC 4343), and HostnameGenerator output is lowercase already.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TTL_S = 30  # Kuma's answer TTL: short enough that a changed VIP is picked up quickly
MAX_NAME = 253
MAX_RECORDS = 100_000  # far above any real mesh; a table past it is refused whole


class DnsTableError(ValueError):
    """A table that cannot be used (not JSON, wrong shape, bad name or address)."""


def normalize(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass(frozen=True)
class DnsTable:
    """Immutable: the resolver swaps whole tables, so a query never sees half an update."""

    records: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> IPs
    ttl: int = TTL_S

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], ttl: int = TTL_S) -> DnsTable:
        by_name: dict[str, list[str]] = {}
        for name, ip in pairs:
            ips = by_name.setdefault(normalize(name), [])
            if ip not in ips:
                ips.append(ip)
        return cls({n: tuple(sorted(ips)) for n, ips in sorted(by_name.items())}, ttl)

    def lookup(self, name: str) -> tuple[str, ...] | None:
        """The IPs of a mesh name, or None if the name is not the mesh's."""
        return self.records.get(normalize(name))

    def encode(self) -> bytes:
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:
        body = {
            "ttl": self.ttl,
            "records": [{"name": n, "ips": list(ips)} for n, ips in sorted(self.records.items())],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def etag(self) -> str:
        return self._etag

    @functools.cached_property
    def _etag(self) -> str:
        return '"' + hashlib.sha256(self.encode()).hexdigest()[:32] + '"'

    def __len__(self) -> int:
        return len(self.records)


def decode(data: bytes) -> DnsTable:
    """The table served by Envoy; raises DnsTableError naming what is wrong."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise DnsTableError(f"not JSON: {e}") from None
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise DnsTableError("expected an object with a records list")
    ttl = body.get("ttl", TTL_S)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 86400:
        raise DnsTableError("ttl: must be an integer in [0, 86400]")
    records = body["records"]
    if len(records) > MAX_RECORDS:
        raise DnsTableError(f"more than {MAX_RECORDS} records")
    pairs: list[tuple[str, str]] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DnsTableError(f"records[{i}]: must be an object")
        name, ips = record.get("name"), record.get("ips")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise DnsTableError(f"records[{i}].name: must be a name of 1-{MAX_NAME} characters")
        if not isinstance(ips, list):
            raise DnsTableError(f"records[{i}].ips: must be a list")
        for ip in ips:
            try:
                ipaddress.ip_address(ip)
            except (TypeError, ValueError):
                raise DnsTableError(f"records[{i}].ips: {ip!r} is not an IP address") from None
            pairs.append((name, ip))
    return DnsTable.from_pairs(pairs, ttl)
