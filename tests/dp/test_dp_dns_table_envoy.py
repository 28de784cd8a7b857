"""The DNS table travels as the CP generates it: a real Envoy serves the `_zonemesh:dns`
listener on its abstract unix socket, and `dp run`'s table source reads it, then gets 304s
while it is unchanged."""

from __future__ import annotations

import json
import uuid

import pytest
from google.protobuf.json_format import MessageToJson

from zonemesh.cpdp.dns_table import DnsTable
from zonemesh.cpdp.names import dns_table_socket
from zonemesh.dp.dns_source import DnsTableSource
from zonemesh.dp.envoy import EnvoyProcess
from zonemesh.translate.transparent import dns_table_listener

pytestmark = pytest.mark.timeout(60)


def bootstrap(mesh: str, name: str, table: DnsTable) -> dict:
    listener = dns_table_listener(dns_table_socket(mesh, name), table)
    return {
        "node": {"id": f"{mesh}.{name}", "cluster": name},
        "admin": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 0}}},
        "staticResources": {"listeners": [json.loads(MessageToJson(listener))]},
    }


async def test_the_table_envoy_serves_is_read_and_then_not_modified() -> None:
    name = f"dns-{uuid.uuid4().hex[:8]}"  # its own socket: tests may run side by side
    table = DnsTable.from_pairs(
        [("echo.mzsvc.mesh.local", "243.0.0.1"), ("Echo.Svc.Mesh.Local", "241.0.0.2")]
    )
    async with EnvoyProcess(bootstrap("default", name, table), concurrency=1):
        source = DnsTableSource("default", name)
        assert await source.poll_once() is True
        assert source.table is not None
        assert source.table.lookup("ECHO.mzsvc.mesh.local.") == ("243.0.0.1",)
        assert source.table.lookup("echo.svc.mesh.local") == ("241.0.0.2",)
        assert source.table.lookup("other.example") is None
        assert await source.poll_once() is False  # 304: the ETag matched
        assert source.first.is_set()


async def test_a_proxy_without_the_listener_is_an_error_the_poller_retries() -> None:
    source = DnsTableSource("default", f"absent-{uuid.uuid4().hex[:8]}")
    with pytest.raises(OSError):
        await source.poll_once()
    assert source.table is None
