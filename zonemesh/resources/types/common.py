"""Pieces shared by several types: conditions, VIPs, addresses, selectors, checks."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Literal

from zonemesh.resources import identifiers
from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations

APP_PROTOCOLS = ("grpc", "http", "http2", "tcp")
AppProtocol = str  # validated in validate_app_protocol so the message matches Kuma's

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def validate_port(value: int, path: str, errors: Violations) -> None:
    if not 1 <= value <= 65535:
        errors.add(path, "must be in inclusive range [1, 65535]")


def validate_app_protocol(value: str, path: str, errors: Violations) -> None:
    if value not in APP_PROTOCOLS:
        errors.add(path, "appProtocol must be one of: " + ", ".join(APP_PROTOCOLS))


def validate_address(value: str, path: str, errors: Violations, *, allow_hostname: bool) -> None:
    """An IP address, or (where Kuma allows it) a DNS name."""
    if not value:
        errors.add(path, "cannot be empty")
        return
    if is_ip_address(value):
        return
    if allow_hostname and is_dns_name(value):
        return
    errors.add(path, "must be a valid IP address" + (" or hostname" if allow_hostname else ""))


@functools.lru_cache(maxsize=1 << 16)
def is_ip_address(value: str) -> bool:
    """`ipaddress.ip_address` accepts it (cached: the same addresses are checked repeatedly)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_dns_name(value: str) -> bool:
    """RFC 1123 hostname: dot-separated labels, each 1-63 of [a-z0-9-], 253 characters at most."""
    if not value or len(value) > 253:
        return False
    return all(_DNS_LABEL.match(label) for label in value.split("."))


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


class VIP(Model):
    ip: str


class HostnameGeneratorRef(Model):
    core_name: str


class Address(Model):
    hostname: str
    origin: str = "HostnameGenerator"
    hostname_generator_ref: HostnameGeneratorRef | None = None


class HostnameGeneratorStatus(Model):
    hostname_generator_ref: HostnameGeneratorRef
    conditions: list[Condition] = []


class LabelSelector(Model):
    match_labels: dict[str, str] | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if self.match_labels:
            identifiers.check_labels(self.match_labels, f"{path}.matchLabels", errors)


class TargetRef(Model):
    kind: str
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    section_name: str | None = None
    mesh: str | None = None
    tags: dict[str, str] | None = None
    proxy_types: list[str] | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        """The identifiers it carries; which kinds fit where is the policy's to check."""
        if self.name:
            identifiers.check_resource_name(self.name, f"{path}.name", errors)
        if self.mesh:
            identifiers.check_resource_name(self.mesh, f"{path}.mesh", errors)
        if self.section_name and not self.section_name.isdigit():
            identifiers.check_port_name(self.section_name, f"{path}.sectionName", errors)
        if self.labels:
            identifiers.check_labels(self.labels, f"{path}.labels", errors)
        if self.tags:
            identifiers.check_tags(self.tags, f"{path}.tags", errors, selector=True)
