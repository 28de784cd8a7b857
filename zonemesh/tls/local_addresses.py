"""The names and addresses this host is known by, for the SANs of a generated certificate.

No extra dependency: on Linux the kernel lists every local IPv4 address as a `/32 host
LOCAL` route in `/proc/net/fib_trie` (secondary addresses included, which per-interface
ioctls miss) and every IPv6 address in `/proc/net/if_inet6`; on any system,
`getaddrinfo(gethostname())` adds what the resolver maps the host name to. IPv6 link-local
addresses are left out: a certificate cannot name their zone, so no client can use them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from pathlib import Path

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_FIB_TRIE = Path("/proc/net/fib_trie")
_IF_INET6 = Path("/proc/net/if_inet6")


def host_name() -> str:
    return socket.gethostname()


def local_addresses() -> set[IpAddress]:
    """Every address a client on this host or beyond could reach a wildcard listener at."""
    found = _fib_trie_locals() | _if_inet6_addresses() | _resolved(host_name())
    return {a for a in found if not (a.version == 6 and a.is_link_local)}


def _fib_trie_locals() -> set[IpAddress]:
    try:
        lines = _FIB_TRIE.read_text().splitlines()
    except OSError:
        return set()
    found: set[IpAddress] = set()
    last: str | None = None
    for line in lines:
        text = line.strip()
        if text.startswith("|--"):
            last = text[3:].strip()
        elif text.startswith("/32 host LOCAL") and last is not None:
            with contextlib.suppress(ValueError):
                found.add(ipaddress.ip_address(last))
    return found


def _if_inet6_addresses() -> set[IpAddress]:
    try:
        lines = _IF_INET6.read_text().splitlines()
    except OSError:
        return set()
    found: set[IpAddress] = set()
    for line in lines:
        fields = line.split()
        if fields and len(fields[0]) == 32:
            with contextlib.suppress(ValueError):
                found.add(ipaddress.IPv6Address(int(fields[0], 16)))
    return found


def _resolved(name: str) -> set[IpAddress]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return set()
    found: set[IpAddress] = set()
    for info in infos:
        with contextlib.suppress(ValueError):
            found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
    return found
