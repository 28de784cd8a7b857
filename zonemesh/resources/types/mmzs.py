"""MeshMultiZoneService: one logical service made of the MeshServices of several zones."""

from __future__ import annotations

from zonemesh.resources import identifiers
from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import (
    VIP,
    Address,
    Condition,
    HostnameGeneratorStatus,
    LabelSelector,
    validate_app_protocol,
    validate_port,
)

CONDITION_MESH_SERVICES_MATCHED = "MeshServicesMatched"


class MMZSSelector(Model):
    mesh_service: LabelSelector


class MMZSPort(Model):
    port: int
    app_protocol: str = "tcp"
    name: str | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        validate_port(self.port, f"{path}.port", errors)
        validate_app_protocol(self.app_protocol, f"{path}.appProtocol", errors)
        if self.name is not None:
            identifiers.check_port_name(self.name, f"{path}.name", errors)

    @property
    def section_name(self) -> str:
        return self.name or str(self.port)


class MeshMultiZoneServiceSpec(Model):
    selector: MMZSSelector
    ports: list[MMZSPort] = []

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if not self.selector.mesh_service.match_labels:
            errors.add(f"{path}.selector.meshService.matchLabels", "cannot be empty")
        self.selector.mesh_service.validate_semantics(f"{path}.selector.meshService", errors)
        if not self.ports:
            errors.add(f"{path}.ports", "cannot be empty")
        for i, port in enumerate(self.ports):
            port.validate_semantics(f"{path}.ports[{i}]", errors)


class MatchedMeshService(Model):
    name: str
    zone: str = ""
    mesh: str = ""
    namespace: str = ""


class MeshMultiZoneServiceStatus(Model):
    addresses: list[Address] = []
    vips: list[VIP] = []
    mesh_services: list[MatchedMeshService] = []
    hostname_generators: list[HostnameGeneratorStatus] = []
    conditions: list[Condition] = []
