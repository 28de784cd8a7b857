"""MeshService: one service in one zone; generated from Dataplane inbounds in each zone."""

from __future__ import annotations

from typing import Literal

from zonemesh.resources import identifiers
from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import (
    VIP,
    Address,
    Condition,
    HostnameGeneratorStatus,
    validate_app_protocol,
    validate_port,
)

STATE_AVAILABLE = "Available"
STATE_UNAVAILABLE = "Unavailable"


class DataplaneRef(Model):
    name: str


class MeshServiceSelector(Model):
    dataplane_tags: dict[str, str] | None = None
    dataplane_ref: DataplaneRef | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if self.dataplane_tags:
            identifiers.check_tags(self.dataplane_tags, f"{path}.dataplaneTags", errors)
        if self.dataplane_ref is not None:
            identifiers.check_resource_name(
                self.dataplane_ref.name, f"{path}.dataplaneRef.name", errors
            )


class MeshServicePort(Model):
    port: int
    target_port: int | str | None = None
    app_protocol: str = "tcp"
    name: str | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        validate_port(self.port, f"{path}.port", errors)
        if isinstance(self.target_port, int):
            validate_port(self.target_port, f"{path}.targetPort", errors)
        validate_app_protocol(self.app_protocol, f"{path}.appProtocol", errors)
        if self.name is not None:
            identifiers.check_port_name(self.name, f"{path}.name", errors)


class Identity(Model):
    type: Literal["ServiceTag", "SpiffeID"]
    value: str

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if self.type == "ServiceTag":
            identifiers.check_service_name(self.value, f"{path}.value", errors)


class MeshServiceSpec(Model):
    selector: MeshServiceSelector = MeshServiceSelector()
    ports: list[MeshServicePort] = []
    identities: list[Identity] = []
    state: Literal["Available", "Unavailable"] = STATE_UNAVAILABLE

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if not self.ports:
            errors.add(f"{path}.ports", "cannot be empty")
        for i, port in enumerate(self.ports):
            port.validate_semantics(f"{path}.ports[{i}]", errors)
        self.selector.validate_semantics(f"{path}.selector", errors)
        for i, identity in enumerate(self.identities):
            identity.validate_semantics(f"{path}.identities[{i}]", errors)

    def port_by_name_or_number(self, ref: str | int) -> MeshServicePort | None:
        for port in self.ports:
            if port.port == ref or (port.name and port.name == ref) or str(port.port) == str(ref):
                return port
        return None


class DataplaneProxies(Model):
    connected: int = 0
    healthy: int = 0
    total: int = 0


class MeshServiceStatus(Model):
    addresses: list[Address] = []
    vips: list[VIP] = []
    dataplane_proxies: DataplaneProxies | None = None
    hostname_generators: list[HostnameGeneratorStatus] = []
    conditions: list[Condition] = []
