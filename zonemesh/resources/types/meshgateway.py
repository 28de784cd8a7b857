"""MeshGateway: Kuma's builtin gateway (v2.x), its listeners and where their certificates are.

Legacy flat Universal form, as Kuma's: `selectors`, `tags` and `conf` at the top level. Which
Dataplanes a gateway binds and what Envoy gets for it live in `zonemesh.translate.gateway*`;
here is only what one resource alone can get wrong, with Kuma's messages
(`pkg/core/resources/apis/mesh/gateway_validator.go`, v2.14). zonemesh serves HTTP, HTTPS
(TLS terminated) and TCP listeners; Kuma's TLS (SNI passthrough) and crossMesh are refused
rather than accepted and ignored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from zonemesh.resources import identifiers, labels
from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import is_dns_name

PROTOCOLS = ("HTTP", "HTTPS", "TCP")
KUMA_ONLY_PROTOCOLS = ("TLS", "UDP")  # Kuma's, not served by zonemesh
TLS_MODES = ("TERMINATE", "PASSTHROUGH")
ANY_HOST = "*"
MAX_CERTIFICATES = 2  # one RSA and/or one ECDSA, as Kuma
# Tags that are properties of a Dataplane, not of a gateway or a listener.
RESERVED_TAGS = (
    "kuma.io/external-service-name",
    labels.PROTOCOL_TAG,
    labels.SERVICE_TAG,
    "kuma.io/zone",
)


class Selector(Model):
    match: dict[str, str] = {}


class DataSource(Model):
    """Kuma's DataSource, as a gateway certificate takes it: a mesh Secret by name, or inline."""

    secret: str | None = None
    inline: str | None = None  # base64
    inline_string: str | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        given = [v for v in (self.secret, self.inline, self.inline_string) if v is not None]
        if len(given) != 1:
            errors.add(path, "exactly one of secret, inline or inlineString has to be defined")
            return
        if self.secret is not None:
            identifiers.check_resource_name(self.secret, f"{path}.secret", errors)
        if self.inline is not None:
            try:
                base64.b64decode(self.inline, validate=True)
            except (binascii.Error, ValueError):
                errors.add(f"{path}.inline", "must be valid base64")


class ListenerTls(Model):
    mode: str | None = None
    certificates: list[DataSource] = []
    options: dict[str, object] | None = None  # Kuma's is empty; kept for round trips

    def validate_semantics(self, path: str, protocol: str | None, errors: Violations) -> None:
        if self.mode is None:
            errors.add(f"{path}.mode", "cannot be empty")
        elif self.mode not in TLS_MODES:
            errors.add(f"{path}.mode", "must be one of: " + ", ".join(TLS_MODES))
        elif self.mode == "PASSTHROUGH":
            if protocol == "HTTPS":
                errors.add(f"{path}.mode", "mode is not supported on HTTPS listeners")
            if self.certificates:
                errors.add(f"{path}.certificates", "must be empty in TLS passthrough mode")
        elif not self.certificates:
            errors.add(f"{path}.certificates", "cannot be empty in TLS termination mode")
        elif len(self.certificates) > MAX_CERTIFICATES:
            errors.add(f"{path}.certificates", "cannot have more than 2 certificates")
        for i, source in enumerate(self.certificates):
            source.validate_semantics(f"{path}.certificates[{i}]", errors)
        if self.options:
            errors.add(f"{path}.options", "must be empty")


class Listener(Model):
    port: int | None = None
    protocol: str | None = None
    hostname: str | None = None
    tls: ListenerTls | None = None
    tags: dict[str, str] | None = None
    cross_mesh: bool | None = None

    @property
    def host(self) -> str:
        """`*` when no hostname is given (any host)."""
        return self.hostname or ANY_HOST

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if self.hostname:
            validate_hostname(self.hostname, f"{path}.hostname", errors)
        if self.port is None or not 1 <= self.port <= 65535:
            errors.add(f"{path}.port", "port must be in the range [1, 65535]")
        if not self.protocol:
            errors.add(f"{path}.protocol", "cannot be empty")
        elif self.protocol in KUMA_ONLY_PROTOCOLS:
            errors.add(f"{path}.protocol", "protocol type is not supported")
        elif self.protocol not in PROTOCOLS:
            errors.add(f"{path}.protocol", "must be one of: " + ", ".join(PROTOCOLS))
        if self.protocol == "HTTPS" and self.tls is None:
            errors.add(f"{path}.tls", "cannot be empty")
        if self.tls is not None:
            if self.protocol in ("HTTP", "TCP"):
                errors.add(f"{path}.tls", f"must be empty on {self.protocol} listeners")
            self.tls.validate_semantics(f"{path}.tls", self.protocol, errors)
        if self.cross_mesh:
            errors.add(f"{path}.crossMesh", "is not supported by zonemesh")
        check_unreserved_tags(self.tags or {}, f"{path}.tags", errors)


class Conf(Model):
    listeners: list[Listener] = []

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if not self.listeners:
            errors.add(f"{path}.listeners", "cannot be empty")
        for i, listener in enumerate(self.listeners):
            listener.validate_semantics(f"{path}.listeners[{i}]", errors)
        self._validate_ports(f"{path}.listeners", errors)

    def _validate_ports(self, path: str, errors: Violations) -> None:
        """Listeners sharing a port share one Envoy listener: one protocol, distinct hosts."""
        protocols: dict[int, str] = {}
        hosts: dict[tuple[int, str], int] = {}
        for i, listener in enumerate(self.listeners):
            if listener.port is None or not listener.protocol:
                continue
            first = protocols.setdefault(listener.port, listener.protocol)
            if first != listener.protocol:
                errors.add(
                    f"{path}[{i}].protocol", "protocol conflicts with other listeners on this port"
                )
                continue
            # A TCP listener takes every connection of its port: hostnames cannot split it.
            host = ANY_HOST if listener.protocol == "TCP" else listener.host
            if (listener.port, host) in hosts:
                errors.add(f"{path}[{i}].hostname", "multiple listeners for hostname on this port")
            hosts.setdefault((listener.port, host), i)


class MeshGatewaySpec(Model):
    selectors: list[Selector] = []
    tags: dict[str, str] | None = None
    conf: Conf | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if not self.selectors:
            errors.add("selectors", "must have at least one element")
        for i, selector in enumerate(self.selectors):
            at = f"selectors[{i}].match"
            if not selector.match:
                errors.add(at, "must have at least one tag")
                continue
            if labels.SERVICE_TAG not in selector.match:
                errors.add(at, f'mandatory tag "{labels.SERVICE_TAG}" is missing')
            identifiers.check_tags(selector.match, at, errors, selector=True)
        check_unreserved_tags(self.tags or {}, "tags", errors)
        if self.conf is None:
            errors.add("conf", "cannot be empty")
        else:
            self.conf.validate_semantics("conf", errors)

    def secret_names(self) -> set[str]:
        """The mesh Secrets its listeners' certificates name."""
        return {
            source.secret
            for listener in (self.conf.listeners if self.conf else [])
            if listener.tls is not None
            for source in listener.tls.certificates
            if source.secret
        }


def check_unreserved_tags(tags: Mapping[str, str], path: str, errors: Violations) -> None:
    for key in sorted(tags):
        if key in RESERVED_TAGS:
            errors.add(identifiers.key_path(path, key), f'tag name must not be "{key}"')
    identifiers.check_tags(dict(tags), path, errors)


def validate_hostname(value: str, path: str, errors: Violations) -> None:
    """`*`, a DNS name, or a wildcard domain `*.example.com` (the wildcard leftmost only)."""
    if value == ANY_HOST:
        return
    name = value[2:] if value.startswith("*.") else value
    if not is_dns_name(name.lower()):
        errors.add(path, "invalid wildcard domain" if "*" in value else "invalid hostname")
