"""MeshMultiZoneService: one logical service made of the MeshServices of several zones."""

from __future__ import annotations

from collections.abc import Mapping

from zonemesh.resources import identifiers
from zonemesh.resources.base import Model, Resource
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


def wanted_labels(mmzs: Resource) -> Mapping[str, str]:
    """The labels a MeshService must carry to be selected; empty selects nothing."""
    spec = mmzs.spec
    assert isinstance(spec, MeshMultiZoneServiceSpec)
    return spec.selector.mesh_service.match_labels or {}


def selects_mesh_service(mmzs: Resource, mesh_service: Resource) -> bool:
    """The MMZS selection rule, in one place: a MeshService (local or synced from another
    zone) of the MMZS's mesh whose labels carry every `matchLabels` pair. Kuma refuses an
    empty selector; one that slipped in (older store) matches nothing, not everything."""
    wanted = wanted_labels(mmzs)
    if not wanted or mesh_service.mesh != mmzs.mesh:
        return False
    have = mesh_service.labels
    return all(have.get(k) == v for k, v in wanted.items())


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
