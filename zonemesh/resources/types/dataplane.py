"""Dataplane: one instance and its sidecar (legacy flat Universal form)."""

from __future__ import annotations

import marshal
from collections import OrderedDict
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any, Literal

from pydantic import ValidationInfo, ValidatorFunctionWrapHandler, field_validator

from zonemesh.resources import identifiers, labels
from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import validate_address, validate_port

BACKEND_REF_KINDS = ("MeshService", "MeshMultiZoneService", "MeshExternalService")


class InboundState(StrEnum):
    """`Inbound.state`'s values (Kuma's), spelled once for every reader."""

    READY = "Ready"
    NOT_READY = "NotReady"  # declared down by whoever applied it: not served, not counted healthy
    IGNORED = "Ignored"  # not part of the mesh: no inbound listener, no MeshService, no probes


# The field's type; the same three words (a test holds them equal). A Literal, not the enum:
# strict validation would take only enum instances from Python input.
InboundStateName = Literal["Ready", "NotReady", "Ignored"]


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
    state: InboundStateName | None = None

    @property
    def effective_service_port(self) -> int:
        return self.service_port or self.port

    @property
    def ignored(self) -> bool:
        return self.state == InboundState.IGNORED

    @property
    def declared_not_ready(self) -> bool:
        return self.state == InboundState.NOT_READY

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


IP_FAMILY_MODES = ("DualStack", "IPv4")
DEFAULT_ADMIN_PORT = 9901  # what `dp run` uses when networking.admin is absent


class ReachableBackendRef(Model):
    """One backend a transparently proxied Dataplane may reach (Kuma's `reachableBackends`):
    by name (and namespace), or by labels; `port` narrows it to one port."""

    kind: str
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    port: int | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if self.kind not in BACKEND_REF_KINDS:
            errors.add(f"{path}.kind", "must be one of: " + ", ".join(BACKEND_REF_KINDS))
        if not self.name and not self.labels:
            errors.add(f"{path}.name", "name or labels are required")
        if self.labels and (self.name or self.namespace):
            errors.add(f"{path}.labels", "labels cannot be combined with name or namespace")
        if self.name:
            identifiers.check_resource_name(self.name, f"{path}.name", errors)
        if self.labels:
            identifiers.check_labels(self.labels, f"{path}.labels", errors)
        if self.port is not None:
            validate_port(self.port, f"{path}.port", errors)


class ReachableBackends(Model):
    refs: list[ReachableBackendRef] = []

    def validate_semantics(self, path: str, errors: Violations) -> None:
        for i, ref in enumerate(self.refs):
            ref.validate_semantics(f"{path}.refs[{i}]", errors)


class TransparentProxying(Model):
    """Kuma's `networking.transparentProxying`: where the redirect rules send traffic
    (`zonemesh install transparent-proxy`), and which backends the app may reach by VIP."""

    redirect_port_inbound: int | None = None
    redirect_port_outbound: int | None = None
    redirect_port_inbound_v6: int | None = None  # deprecated in Kuma; accepted, unused
    ip_family_mode: str | None = None
    direct_access_services: list[str] | None = None  # accepted; zonemesh has no direct access
    reachable_services: list[str] | None = None  # Kuma's older form, by kuma.io/service
    reachable_backends: ReachableBackends | None = None

    @property
    def outbound_enabled(self) -> bool:
        return bool(self.redirect_port_outbound)

    @property
    def inbound_enabled(self) -> bool:
        return bool(self.redirect_port_inbound)

    @property
    def dual_stack(self) -> bool:
        """Kuma's default when unset."""
        return self.ip_family_mode != "IPv4"

    def validate_semantics(self, path: str, errors: Violations) -> None:
        for field, value in (
            ("redirectPortInbound", self.redirect_port_inbound),
            ("redirectPortOutbound", self.redirect_port_outbound),
            ("redirectPortInboundV6", self.redirect_port_inbound_v6),
        ):
            if value:  # 0 or absent: that direction is off
                validate_port(value, f"{path}.{field}", errors)
        if self.redirect_port_inbound and self.redirect_port_inbound == self.redirect_port_outbound:
            errors.add(f"{path}.redirectPortOutbound", "cannot be equal to redirectPortInbound")
        if self.ip_family_mode is not None and self.ip_family_mode not in IP_FAMILY_MODES:
            errors.add(f"{path}.ipFamilyMode", "must be one of: " + ", ".join(IP_FAMILY_MODES))
        for i, service in enumerate(self.reachable_services or []):
            identifiers.check_service_name(service, f"{path}.reachableServices[{i}]", errors)
        if self.reachable_backends is not None:
            self.reachable_backends.validate_semantics(f"{path}.reachableBackends", errors)

    def redirect_ports(self) -> list[tuple[str, int]]:
        """(field, port) of each enabled redirect listener (they bind every address)."""
        ports = [
            ("redirectPortInbound", self.redirect_port_inbound),
            ("redirectPortOutbound", self.redirect_port_outbound),
        ]
        return [(field, port) for field, port in ports if port]


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
    transparent_proxying: TransparentProxying | None = None
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
        if self.is_builtin_gateway:
            # Envoy is the gateway: its listeners come from the MeshGateway (Kuma's rule).
            for field, given in (
                ("inbound", self.inbound),
                ("outbound", self.outbound),
                ("transparentProxying", self.transparent_proxying),
            ):
                if given:
                    errors.add(f"{path}.{field}", f"{field} cannot be defined for builtin gateways")
        seen: dict[tuple[str, int], int] = {}
        for i, inbound in enumerate(self.inbound):
            inbound.validate_semantics(f"{path}.inbound[{i}]", errors)
            key = (inbound.address or self.address, inbound.port)
            if key in seen:
                errors.add(f"{path}.inbound[{i}].port", f"port collides with inbound[{seen[key]}]")
            seen[key] = i
        if not isinstance(self.outbound, CheckedOutbounds):  # else checked when memoized
            validate_outbounds(self.outbound, path, errors)
        if self.admin is not None:
            self.admin.validate_semantics(f"{path}.admin", errors)
        if self.transparent_proxying is not None:
            tp_path = f"{path}.transparentProxying"
            self.transparent_proxying.validate_semantics(tp_path, errors)
            self._validate_redirect_ports(tp_path, errors)

    @field_validator("outbound", mode="wrap")
    @classmethod
    def _memoized_outbounds(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> list[Outbound]:
        """With an `OutboundListMemo` in the validation context, a list it holds is not
        validated again (`resource_from_wire(..., context=memo.context())`)."""
        memo = info.context.get(OUTBOUND_MEMO) if isinstance(info.context, dict) else None
        if not isinstance(memo, OutboundListMemo):
            return handler(value)
        return memo.validated(value, handler)

    @property
    def gateway_type(self) -> str | None:
        """`BUILTIN` or `DELEGATED` (Kuma's default) for a gateway; None for a sidecar."""
        if self.gateway is None:
            return None
        return str(self.gateway.get("type", "DELEGATED"))

    @property
    def is_builtin_gateway(self) -> bool:
        return self.gateway_type == "BUILTIN"

    @property
    def gateway_tags(self) -> dict[str, str]:
        tags = (self.gateway or {}).get("tags")
        return dict(tags) if isinstance(tags, dict) else {}

    def _validate_redirect_ports(self, path: str, errors: Violations) -> None:
        """The redirect listeners bind 0.0.0.0 (and ::): no inbound, outbound or the admin
        port may take the same port, or Envoy could not bind one of them."""
        assert self.transparent_proxying is not None
        admin = self.admin.port if self.admin is not None else DEFAULT_ADMIN_PORT
        for field, port in self.transparent_proxying.redirect_ports():
            for i, inbound in enumerate(self.inbound):
                if port in (inbound.port, inbound.service_port):
                    errors.add(f"{path}.{field}", f"port {port} collides with inbound[{i}]")
            for i, outbound in enumerate(self.outbound):
                if outbound.port == port:
                    errors.add(f"{path}.{field}", f"port {port} collides with outbound[{i}]")
            if port == admin:
                errors.add(
                    f"{path}.{field}",
                    f"port {port} collides with the admin port (networking.admin.port)",
                )


def validate_outbounds(outbounds: Sequence[Outbound], path: str, errors: Violations) -> None:
    """The checks an outbound list passes on its own, whatever else the Dataplane holds: each
    outbound's, and no two listening on one address and port. `path` is the networking's."""
    listen: dict[tuple[str, int], int] = {}
    for i, outbound in enumerate(outbounds):
        outbound.validate_semantics(f"{path}.outbound[{i}]", errors)
        key = (outbound.address, outbound.port)
        if key in listen:
            errors.add(f"{path}.outbound[{i}].port", f"port collides with outbound[{listen[key]}]")
        listen[key] = i


class CheckedOutbounds(list[Outbound]):
    """Validated outbounds known to pass `validate_outbounds`: the semantic pass skips that
    part for them. Only `OutboundListMemo` makes one, after running the checks."""


# The key of an `OutboundListMemo` in a pydantic validation context.
OUTBOUND_MEMO = "zonemesh.outbound_memo"
MEMO_MAX_LISTS = 256
MEMO_MAX_OUTBOUNDS = 65_536
_KEY_FORMAT = 2  # marshal's last format without references (see OutboundListMemo)


class OutboundListMemo:
    """Outbound lists already validated, by their wire content.

    Sidecars of one service are started from one Dataplane template, so a registry sees the
    same outbound list (often a hundred entries) from every proxy of that service: validating
    it once, instead of once per proxy, is most of what registering a proxy costs. Only a list
    that passed both the model validation and `validate_outbounds` is kept, so a bad list is
    validated (and refused, with the same words) every time; the checks that involve other
    parts of the Dataplane (redirect ports, builtin gateways, inbounds) run for every
    document. The key is the list as `marshal` (format 2) writes it: bytes that read back as
    exactly that list, types and order included (`1`, `1.0`, `True` and `"1"`, a tuple and a
    list, all told apart), so equal keys mean equal input. Format 2 writes values only (later
    formats mark objects by their reference count, which differs between equal lists). Only
    plain JSON-shaped data (what the parsers and `MessageToDict` give) can be written; anything
    else is validated in full. Twice as cheap as `repr` or `json.dumps`. Bounded: the least
    recently used lists go first beyond `max_lists` lists or `max_outbounds` outbounds in all;
    `max_lists=0` turns it off. Owned by its user (the proxy registry), never shared globally.

    `intern`, if given, replaces a good list's models before it is returned and kept (the
    registry shares equal outbounds between Dataplanes with it), so a hit needs no more of it.
    """

    def __init__(
        self,
        max_lists: int = MEMO_MAX_LISTS,
        max_outbounds: int = MEMO_MAX_OUTBOUNDS,
        intern: Callable[[list[Outbound]], list[Outbound]] | None = None,
    ) -> None:
        self.max_lists = max_lists
        self.max_outbounds = max_outbounds
        self._intern = intern
        self._lists: OrderedDict[bytes, CheckedOutbounds] = OrderedDict()
        self._outbounds = 0
        self.hits = 0
        self.misses = 0

    def context(self) -> dict[str, Any]:
        """The pydantic validation context that makes a Dataplane validation use this memo."""
        return {OUTBOUND_MEMO: self}

    def __len__(self) -> int:
        return len(self._lists)

    def validated(self, raw: Any, handler: ValidatorFunctionWrapHandler) -> list[Outbound]:
        """`raw` validated by `handler` (the field's own validation), or the list kept for it."""
        if self.max_lists <= 0 or type(raw) is not list or not raw:
            return handler(raw)
        try:
            key = marshal.dumps(raw, _KEY_FORMAT)
        except ValueError:  # not plain data (a subclass, an object): no key for it
            return handler(raw)
        found = self._lists.get(key)
        if found is not None:
            self._lists.move_to_end(key)
            self.hits += 1
            return CheckedOutbounds(found)  # a list of its own: the models are shared
        self.misses += 1
        outbounds = handler(raw)  # raises for a malformed list: nothing is kept
        scratch = Violations()
        validate_outbounds(outbounds, "networking", scratch)
        if scratch.items:
            return outbounds  # the semantic pass reports them, as without a memo
        checked = CheckedOutbounds(self._intern(outbounds) if self._intern else outbounds)
        if len(checked) <= self.max_outbounds:
            self._keep(key, checked)
        return CheckedOutbounds(checked)  # the caller's own list, as on a hit

    def _keep(self, key: bytes, checked: CheckedOutbounds) -> None:
        self._lists[key] = checked
        self._outbounds += len(checked)
        while len(self._lists) > self.max_lists or self._outbounds > self.max_outbounds:
            _, evicted = self._lists.popitem(last=False)
            self._outbounds -= len(evicted)


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
