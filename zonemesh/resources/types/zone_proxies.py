"""ZoneIngress and ZoneEgress: the proxies that carry traffic between zones (flat form)."""

from __future__ import annotations

from typing import Any

from zonemesh.resources import identifiers
from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import validate_address, validate_port
from zonemesh.resources.types.dataplane import Admin


class ZoneIngressNetworking(Model):
    address: str
    port: int
    advertised_address: str | None = None
    advertised_port: int | None = None
    admin: Admin | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        validate_address(self.address, f"{path}.address", errors, allow_hostname=True)
        validate_port(self.port, f"{path}.port", errors)
        if (self.advertised_address is None) != (self.advertised_port is None):
            errors.add(
                f"{path}.advertisedAddress",
                "advertisedAddress and advertisedPort have to be set together",
            )
        if self.advertised_address is not None:
            validate_address(
                self.advertised_address, f"{path}.advertisedAddress", errors, allow_hostname=True
            )
        if self.advertised_port is not None:
            validate_port(self.advertised_port, f"{path}.advertisedPort", errors)

    @property
    def has_public_address(self) -> bool:
        return bool(self.advertised_address and self.advertised_port)


class ZoneIngressSpec(Model):
    zone: str | None = None  # set by the control plane that registered it
    networking: ZoneIngressNetworking
    # `[{mesh, tags, instances}]`, written by the zone's control plane (state/).
    available_services: list[dict[str, Any]] | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        self.networking.validate_semantics("networking", errors)
        if self.zone:
            identifiers.check_resource_name(self.zone, "zone", errors)
        for i, entry in enumerate(self.available_services or []):
            _validate_available_service(entry, f"availableServices[{i}]", errors)


def _validate_available_service(entry: dict[str, Any], path: str, errors: Violations) -> None:
    """Other zones build endpoints from these tags: the same rules as a Dataplane's."""
    mesh = entry.get("mesh")
    if not isinstance(mesh, str) or not mesh:
        errors.add(f"{path}.mesh", "must be a mesh name")
    else:
        identifiers.check_resource_name(mesh, f"{path}.mesh", errors)
    tags = identifiers.check_string_map(entry.get("tags"), f"{path}.tags", errors)
    identifiers.check_tags(tags, f"{path}.tags", errors)
    instances = entry.get("instances", 0)
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 0:
        errors.add(f"{path}.instances", "must be an integer of 0 or more")


class ZoneEgressNetworking(Model):
    address: str
    port: int
    admin: Admin | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        validate_address(self.address, f"{path}.address", errors, allow_hostname=True)
        validate_port(self.port, f"{path}.port", errors)


class ZoneEgressSpec(Model):
    zone: str | None = None
    networking: ZoneEgressNetworking

    def validate_semantics(self, path: str, errors: Violations) -> None:
        self.networking.validate_semantics("networking", errors)
        if self.zone:
            identifiers.check_resource_name(self.zone, "zone", errors)
