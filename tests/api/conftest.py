"""In-process API servers: a real uvicorn on a free port over a MemoryStore-backed runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from api_helpers import Api, ApiFactory, make_config

from zonemesh.api.server import ApiServer
from zonemesh.resources.codec import resource_from_wire
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.memory import MemoryStore


@pytest.fixture
async def api_factory() -> AsyncIterator[ApiFactory]:
    started: list[Api] = []

    async def start(
        overrides: dict[str, Any] | None = None, views: dict[str, Any] | None = None
    ) -> Api:
        runtime = Runtime(config=make_config(overrides or {}), store=MemoryStore())
        runtime.views.update(views or {})
        # The default mesh exists from the start (the control plane's defaults create it).
        await runtime.store.create(resource_from_wire({"type": "Mesh", "name": "default"}))
        server = ApiServer(runtime)
        await server.start()
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30)
        api = Api(runtime, server, client)
        started.append(api)
        return api

    yield start
    for api in started:
        await api.client.aclose()
        await api.server.stop()


@pytest.fixture
async def api(api_factory: ApiFactory) -> Api:
    return await api_factory()
