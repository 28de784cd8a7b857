"""One parser for the gRPC addresses clients are given: `grpc[s]://HOST:PORT[,HOST:PORT…]`.

`dp run --cp-address` and the zone's `--global-address` both use it, so both accept and
refuse the same things with the same words. The scheme is given once, for every address:
`grpcs://a:5678,b:5678`. The scheme is required: a bare `HOST:PORT` would have to mean
one or the other silently. `http://` is an old spelling of `grpc://` that `dp run` accepted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

_PLAINTEXT_SCHEMES = ("grpc", "http")
_TLS_SCHEMES = ("grpcs",)


class AddressError(ValueError):
    """An address that cannot be used; the message names the option and what is wrong."""


@dataclass(frozen=True)
class Endpoint:
    host: str  # a DNS name or an IP literal, without brackets
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def target(self) -> str:
        """`host:port` as gRPC and sockets want it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.target


@dataclass(frozen=True)
class GrpcAddress:
    """What a client dials: one or more endpoints, all over TLS or all plaintext."""

    text: str  # as given, for messages
    tls: bool
    endpoints: tuple[Endpoint, ...]

    @property
    def scheme(self) -> str:
        return "grpcs" if self.tls else "grpc"

    @property
    def first(self) -> Endpoint:
        return self.endpoints[0]

    def __str__(self) -> str:
        return self.text

    def rotated(self) -> GrpcAddress:
        """The same endpoints, the second one first: after a failure, try the next replica
        (its own certificate names its own host, so the first is what TLS verifies)."""
        if len(self.endpoints) < 2:
            return self
        return GrpcAddress(self.text, self.tls, (*self.endpoints[1:], self.endpoints[0]))


def parse_grpc_address(text: str, option: str = "address") -> GrpcAddress:
    """`grpcs://h1:5678,h2:5678` -> GrpcAddress; raises AddressError naming `option`."""
    raw = text.strip()
    if not raw:
        raise AddressError(f"{option}: cannot be empty; expected grpc[s]://HOST:PORT")
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme not in _PLAINTEXT_SCHEMES + _TLS_SCHEMES:
        got = f"{scheme}://" if scheme else "none"
        raise AddressError(f"{option} {text!r}: scheme must be grpc:// or grpcs:// (got {got})")
    endpoints = tuple(_endpoint(part, text, option) for part in rest.split(","))
    if len(set(endpoints)) != len(endpoints):
        raise AddressError(f"{option} {text!r}: an address is listed twice")
    return GrpcAddress(text=raw, tls=scheme in _TLS_SCHEMES, endpoints=endpoints)


def _endpoint(part: str, text: str, option: str) -> Endpoint:
    expected = f"{option} {text!r}: must be grpc[s]://HOST:PORT[,HOST:PORT...]"
    part = part.strip()
    if not part or "/" in part.rstrip("/"):
        raise AddressError(expected)
    parts = urlsplit("grpc://" + part.rstrip("/"))
    try:
        port = parts.port
    except ValueError:
        raise AddressError(f"{option} {text!r}: invalid port in {part!r}") from None
    if not parts.hostname or port is None or parts.username or parts.password:
        raise AddressError(expected)
    if port == 0:
        raise AddressError(f"{option} {text!r}: invalid port in {part!r}")
    return Endpoint(parts.hostname, port)
