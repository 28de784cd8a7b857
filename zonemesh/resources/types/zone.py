"""Zone: a member of the federation, created on global when a zone control plane connects."""

from __future__ import annotations

from zonemesh.resources.base import Model


class ZoneSpec(Model):
    enabled: bool = True


class ZoneStatus(Model):
    """Written by global: whether the zone's control plane is connected, and since when."""

    connected: bool = False
    last_connected: str | None = None
    last_disconnected: str | None = None
    version: str | None = None
    instance_id: str | None = None
    total_updates: int = 0
    total_errors: int = 0
