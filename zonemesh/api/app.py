"""The HTTP API (Kuma's paths on port 5681), built from a control plane's `Runtime`."""

from __future__ import annotations

import socket
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from zonemesh import __version__
from zonemesh.api import inspect, resources, tokens
from zonemesh.api.auth import AuthMiddleware
from zonemesh.api.errors import ApiError, install_error_handlers
from zonemesh.api.middleware import BodyLimitMiddleware, RequestCounterMiddleware, request_counter
from zonemesh.api.openapi import openapi_document
from zonemesh.resources.registry import MESH
from zonemesh.runtime.kernel import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    """One app per runtime. `app.state.serving` is set by the server once it listens."""
    app = FastAPI(
        title="zonemesh",
        version=__version__,
        description="Control plane API: Kuma's resource paths, inspect and diagnostics.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.runtime = runtime
    app.state.serving = False
    install_error_handlers(app)
    # Starlette runs the last-added middleware first: count every request (refused ones too),
    # then authenticate and authorize it before any handler or body read, then limit bodies.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=runtime.config.api_server.max_body_bytes)
    app.add_middleware(AuthMiddleware, runtime=runtime)
    app.add_middleware(RequestCounterMiddleware, counter=request_counter(runtime.metrics))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    _add_system_routes(app, runtime)
    # Fixed paths first: the generic resource routes would otherwise take them.
    app.include_router(inspect.router)
    app.include_router(tokens.router)
    app.include_router(resources.router)
    return app


def tls_in_use(runtime: Runtime) -> dict[str, Any]:
    grpc_tls, api_tls = runtime.server_tls, runtime.api_tls
    return {
        "grpc": grpc_tls.describe() if grpc_tls is not None else "plaintext",
        "https": api_tls.describe()
        if api_tls is not None and runtime.config.api_server.https.enabled
        else "off",
    }


def _add_system_routes(app: FastAPI, runtime: Runtime) -> None:
    config = runtime.config
    hostname = socket.gethostname()

    @app.get("/", tags=["system"])
    async def index() -> dict[str, Any]:
        """Who answers: product, version, mode, zone and instance."""
        return {
            "product": "zonemesh",
            "version": __version__,
            "hostname": hostname,
            "mode": config.mode,
            "federated": config.federated_zone,
            "zone": runtime.zone,
            "instanceId": runtime.instance_id,
            "leader": runtime.leadership.is_leader,
            "status": dict(runtime.status),
        }

    @app.get("/config", tags=["system"])
    async def effective_config() -> dict[str, Any]:
        """The configuration in effect after defaults, file, env vars and flags, and the TLS
        material in use (paths and names, never a key)."""
        return {**config.effective(), "tlsInUse": tls_in_use(runtime)}

    @app.get("/metrics", tags=["system"])
    async def metrics() -> Response:
        """Prometheus text of the control plane's metrics."""
        return Response(generate_latest(runtime.metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthy", tags=["system"])
    async def healthy() -> dict[str, str]:
        """The process answers HTTP."""
        return {"status": "healthy"}

    @app.get("/ready", tags=["system"])
    async def ready(request: Request) -> dict[str, str]:
        """Ready once the API listens and the store answers; 503 before and while stopping.

        A federated zone is ready once it holds what global gave it: Meshes only arrive
        through sync there, so none means it has never synced (writes would fail on them).
        """
        if not request.app.state.serving:
            raise ApiError(503, "the API server is not serving yet (or is stopping)")
        if (problem := runtime.store.problem) is not None:
            raise ApiError(503, f"the store is not available: {problem}")
        try:
            meshes = await runtime.store.list(MESH.name)
        except Exception as e:
            raise ApiError(503, f"the store does not answer: {e}") from None
        if runtime.config.federated_zone and not meshes:
            raise ApiError(503, "waiting for the first sync from the global control plane")
        return {"status": "ready"}
