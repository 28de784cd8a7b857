"""ZoneIngress and ZoneEgress: the proxies that carry traffic between zones (flat form)."""

from __future__ import annotations

from typing import Any

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
    available_services: list[dict[str, Any]] | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        self.networking.validate_semantics("networking", errors)


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
