"""Dataplane: one instance and its sidecar (legacy flat Universal form)."""

from __future__ import annotations

from typing import Any, Literal

from zonemesh.resources import identifiers, labels
from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import validate_address, validate_port

BACKEND_REF_KINDS = ("MeshService", "MeshMultiZoneService", "MeshExternalService")


class ServiceProbe(Model):
    interval: str | None = None
    timeout: str | None = None
    unhealthy_threshold: int | None = None
    healthy_threshold: int | None = None
    tcp: dict[str, Any] | None = None


class Inbound(Model):
    port: int
    service_port: int | None = None
    service_address: str | None = None
    address: str | None = None
    name: str | None = None
    tags: dict[str, str] = {}
    service_probe: ServiceProbe | None = None
    state: Literal["Ready", "NotReady", "Ignored"] | None = None

    @property
    def effective_service_port(self) -> int:
        return self.service_port or self.port

    @property
    def service(self) -> str:
        return self.tags.get(labels.SERVICE_TAG, "")

    @property
    def protocol(self) -> str:
        return self.tags.get(labels.PROTOCOL_TAG, "tcp")

    def validate_semantics(self, path: str, errors: Violations) -> None:
        validate_port(self.port, f"{path}.port", errors)
        if self.service_port is not None:
            validate_port(self.service_port, f"{path}.servicePort", errors)
        if self.service_address is not None:
            validate_address(
                self.service_address, f"{path}.serviceAddress", errors, allow_hostname=True
            )
        if self.address is not None:
            validate_address(self.address, f"{path}.address", errors, allow_hostname=False)
        if self.name is not None:
            identifiers.check_port_name(self.name, f"{path}.name", errors)
        if labels.SERVICE_TAG not in self.tags:
            errors.add(f'{path}.tags["{labels.SERVICE_TAG}"]', "tag has to exist")
        identifiers.check_tags(self.tags, f"{path}.tags", errors)
        proto = self.tags.get(labels.PROTOCOL_TAG)
        if proto is not None and proto not in ("http", "http2", "grpc", "tcp", "kafka"):
            errors.add(
                f'{path}.tags["{labels.PROTOCOL_TAG}"]',
                "tag has to be one of: grpc, http, http2, kafka, tcp",
            )


class BackendRef(Model):
    kind: str
    name: str = ""
    port: int | None = None
    labels: dict[str, str] | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if self.kind not in BACKEND_REF_KINDS:
            errors.add(f"{path}.kind", "must be one of: " + ", ".join(BACKEND_REF_KINDS))
        if not self.name and not self.labels:
            errors.add(f"{path}.name", "cannot be empty")
        if self.name:
            identifiers.check_resource_name(self.name, f"{path}.name", errors)
        if self.labels:
            identifiers.check_labels(self.labels, f"{path}.labels", errors)
        if self.port is None:
            errors.add(f"{path}.port", "must be defined")
        else:
            validate_port(self.port, f"{path}.port", errors)


class Outbound(Model):
    port: int
    address: str = "127.0.0.1"
    tags: dict[str, str] | None = None
    backend_ref: BackendRef | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        validate_port(self.port, f"{path}.port", errors)
        validate_address(self.address, f"{path}.address", errors, allow_hostname=False)
        if self.backend_ref is None and not self.tags:
            errors.add(path, "either backendRef or tags has to be defined")
        if self.tags:
            identifiers.check_tags(self.tags, f"{path}.tags", errors)
        if self.backend_ref is not None:
            self.backend_ref.validate_semantics(f"{path}.backendRef", errors)


class Admin(Model):
    port: int

    def validate_semantics(self, path: str, errors: Violations) -> None:
        validate_port(self.port, f"{path}.port", errors)


class DataplaneNetworking(Model):
    address: str
    advertised_address: str | None = None
    inbound: list[Inbound] = []
    outbound: list[Outbound] = []
    admin: Admin | None = None
    transparent_proxying: dict[str, Any] | None = None
    gateway: dict[str, Any] | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        validate_address(self.address, f"{path}.address", errors, allow_hostname=True)
        if self.advertised_address is not None:
            validate_address(
                self.advertised_address, f"{path}.advertisedAddress", errors, allow_hostname=True
            )
        if not self.inbound and self.gateway is None:
            errors.add(f"{path}", "has to contain at least one inbound interface or gateway")
        if self.gateway is not None:
            _validate_gateway(self.gateway, f"{path}.gateway", errors)
        seen: dict[tuple[str, int], int] = {}
        for i, inbound in enumerate(self.inbound):
            inbound.validate_semantics(f"{path}.inbound[{i}]", errors)
            key = (inbound.address or self.address, inbound.port)
            if key in seen:
                errors.add(f"{path}.inbound[{i}].port", f"port collides with inbound[{seen[key]}]")
            seen[key] = i
        listen: dict[tuple[str, int], int] = {}
        for i, outbound in enumerate(self.outbound):
            outbound.validate_semantics(f"{path}.outbound[{i}]", errors)
            key = (outbound.address, outbound.port)
            if key in listen:
                errors.add(
                    f"{path}.outbound[{i}].port", f"port collides with outbound[{listen[key]}]"
                )
            listen[key] = i
        if self.admin is not None:
            self.admin.validate_semantics(f"{path}.admin", errors)


GATEWAY_TYPES = ("BUILTIN", "DELEGATED")


def _validate_gateway(gateway: dict[str, Any], path: str, errors: Violations) -> None:
    """`{type, tags}` as in Kuma; its `kuma.io/service` names the gateway's identity."""
    kind = gateway.get("type", "DELEGATED")
    if kind not in GATEWAY_TYPES:
        errors.add(f"{path}.type", "must be one of: " + ", ".join(GATEWAY_TYPES))
    tags = identifiers.check_string_map(gateway.get("tags"), f"{path}.tags", errors)
    if labels.SERVICE_TAG not in tags:
        errors.add(f'{path}.tags["{labels.SERVICE_TAG}"]', "tag has to exist")
    identifiers.check_tags(tags, f"{path}.tags", errors)


class DataplaneSpec(Model):
    networking: DataplaneNetworking

    def validate_semantics(self, path: str, errors: Violations) -> None:
        self.networking.validate_semantics("networking", errors)
