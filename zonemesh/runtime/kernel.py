"""What every control-plane component is given: configuration, store, and shared views."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry

from zonemesh.auth.refusals import Refusals
from zonemesh.auth.service import TokenService
from zonemesh.config import CpConfig
from zonemesh.runtime.health import InstanceHealth
from zonemesh.runtime.leadership import Leadership
from zonemesh.store.base import Store

if TYPE_CHECKING:
    from zonemesh.tls.material import ServerTls


class Component(Protocol):
    """A long-running part of the control plane, started and stopped in order."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Runtime:
    config: CpConfig
    store: Store
    health: InstanceHealth = field(default_factory=InstanceHealth)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # Components publish views for the API here by name (e.g. "xds" -> proxy registry),
    # so the API can show them without importing the component.
    views: dict[str, Any] = field(default_factory=dict)
    # Human-readable state of sub-systems for `GET /` (e.g. the KDS client's connection).
    status: dict[str, str] = field(default_factory=dict)
    # What xDS and KDS serve over TLS; None = plaintext gRPC (in-process tests build a
    # Runtime without it; `cp run` sets it unless --grpc-plaintext).
    server_tls: ServerTls | None = None
    # What the HTTPS API serves (`apiServer.https`); None = no HTTPS listener.
    api_tls: ServerTls | None = None
    # Issues and verifies this CP's tokens; `cp run` starts it before the other components.
    tokens: TokenService = field(init=False)
    refusals: Refusals = field(init=False)
    # Whether this instance runs what must run once (always, unless several share PostgreSQL).
    leadership: Leadership = field(default_factory=Leadership)

    def __post_init__(self) -> None:
        self.tokens = TokenService(self.store)
        self.refusals = Refusals(self.metrics)

    @property
    def zone(self) -> str:
        return self.config.zone_name
