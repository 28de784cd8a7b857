"""The routes of a builtin gateway's listener: the MeshHTTPRoutes attached to its MeshGateway.

The one place `translate.gateway` asks for routes, so that where they come from can change
without touching the listeners.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoy.config.route.v3 import route_components_pb2

from zonemesh.resources.base import Resource
from zonemesh.translate.state import MeshState

ClusterFor = Callable[[Any], str | None]


def http_routes(
    state: MeshState, dataplane: Resource, hostname: str, cluster_for: ClusterFor
) -> list[route_components_pb2.Route]:
    """Envoy routes for one listener hostname; [] when no route attaches (the host gets 404)."""
    return []


def tcp_backends(state: MeshState, dataplane: Resource, hostname: str) -> list[tuple[Any, int]]:
    """(backendRef, weight) a TCP listener forwards to."""
    return []
