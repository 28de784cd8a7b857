"""Mesh: a tenant. Legacy (flat) Universal form, as in Kuma."""

from __future__ import annotations

from typing import Any, Literal

from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations


class CertificateAuthorityBackend(Model):
    name: str
    type: Literal["builtin"] = "builtin"
    dp_cert: dict[str, Any] | None = None
    conf: dict[str, Any] | None = None
    mode: Literal["STRICT", "PERMISSIVE"] | None = None


class MTLS(Model):
    enabled_backend: str | None = None
    backends: list[CertificateAuthorityBackend] = []
    skip_validation: bool | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        names = [b.name for b in self.backends]
        for i, name in enumerate(names):
            if not name:
                errors.add(f"{path}.backends[{i}].name", "cannot be empty")
            elif names.index(name) != i:
                errors.add(
                    f"{path}.backends[{i}].name",
                    f'"{name}" name is already used for another backend',
                )
        if self.enabled_backend and self.enabled_backend not in names:
            errors.add(f"{path}.enabledBackend", "has to be set to one of the backends in the mesh")


class Routing(Model):
    zone_egress: bool | None = None
    locality_aware_load_balancing: bool | None = None
    default_forbid_mesh_external_service_access: bool | None = None


class MeshServicesConfig(Model):
    mode: Literal["Disabled", "Everywhere", "ReachableBackends", "Exclusive"] = "Everywhere"


class MeshSpec(Model):
    mtls: MTLS | None = None
    routing: Routing | None = None
    mesh_services: MeshServicesConfig | None = None
    networking: dict[str, Any] | None = None
    skip_creating_initial_policies: list[str] | None = None
    constraints: dict[str, Any] | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if self.mtls is not None:
            self.mtls.validate_semantics("mtls", errors)

    @property
    def mtls_enabled(self) -> bool:
        return bool(self.mtls and self.mtls.enabled_backend)
