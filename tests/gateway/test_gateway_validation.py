"""MeshGateway and BUILTIN gateway Dataplanes: bad input is refused with Kuma's messages on
the real API (uvicorn over a memory store), naming the field, and nothing is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from gateway.gateway_topologies import gateway_dataplane, https_listener, listener, mesh_gateway
from support.processes import ZONEMESH

from zonemesh.api.server import ApiServer
from zonemesh.config import CpConfig
from zonemesh.resources.codec import resource_from_wire
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.memory import MemoryStore

GATEWAYS = "/meshes/default/meshgateways"
DATAPLANES = "/meshes/default/dataplanes"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    config = CpConfig.model_validate(
        {"store": {"type": "memory"}, "apiServer": {"http": {"port": 0}}}
    )
    runtime = Runtime(config=config, store=MemoryStore())
    await runtime.store.create(resource_from_wire({"type": "Mesh", "name": "default"}))
    server = ApiServer(runtime)
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as c:
        yield c
    await server.stop()


def violations(response: httpx.Response) -> set[tuple[str, str]]:
    assert response.status_code == 400, response.text
    return {(p["field"], p["reason"]) for p in response.json()["invalid_parameters"]}


async def put(client: httpx.AsyncClient, base: str, doc: dict[str, Any]) -> httpx.Response:
    return await client.put(f"{base}/{doc['name']}", json=doc)


CERT = {"mode": "TERMINATE", "certificates": [{"secret": "gw-cert"}]}
BAD_GATEWAYS = {
    "no selectors": (
        {"selectors": []},
        ("selectors", "must have at least one element"),
    ),
    "selector without service": (
        {"selectors": [{"match": {"team": "edge"}}]},
        ("selectors[0].match", 'mandatory tag "kuma.io/service" is missing'),
    ),
    "service tag on the gateway": (
        {"tags": {"kuma.io/service": "x"}},
        ('tags["kuma.io/service"]', 'tag name must not be "kuma.io/service"'),
    ),
    "no conf": ({"conf": None}, ("conf", "cannot be empty")),
    "no listeners": ({"conf": {"listeners": []}}, ("conf.listeners", "cannot be empty")),
    "port out of range": (
        {"conf": {"listeners": [listener(70000)]}},
        ("conf.listeners[0].port", "port must be in the range [1, 65535]"),
    ),
    "no protocol": (
        {"conf": {"listeners": [{"port": 8080}]}},
        ("conf.listeners[0].protocol", "cannot be empty"),
    ),
    "UDP": (
        {"conf": {"listeners": [listener(8080, "UDP")]}},
        ("conf.listeners[0].protocol", "protocol type is not supported"),
    ),
    "bad hostname": (
        {"conf": {"listeners": [listener(8080, hostname="a.*.example.com")]}},
        ("conf.listeners[0].hostname", "invalid wildcard domain"),
    ),
    "HTTPS without tls": (
        {"conf": {"listeners": [listener(8443, "HTTPS")]}},
        ("conf.listeners[0].tls", "cannot be empty"),
    ),
    "HTTPS passthrough": (
        {"conf": {"listeners": [listener(8443, "HTTPS", tls={"mode": "PASSTHROUGH"})]}},
        ("conf.listeners[0].tls.mode", "mode is not supported on HTTPS listeners"),
    ),
    "HTTPS without certificates": (
        {"conf": {"listeners": [listener(8443, "HTTPS", tls={"mode": "TERMINATE"})]}},
        ("conf.listeners[0].tls.certificates", "cannot be empty in TLS termination mode"),
    ),
    "three certificates": (
        {
            "conf": {
                "listeners": [
                    listener(
                        8443,
                        "HTTPS",
                        tls={"mode": "TERMINATE", "certificates": [{"secret": "a"}] * 3},
                    )
                ]
            }
        },
        ("conf.listeners[0].tls.certificates", "cannot have more than 2 certificates"),
    ),
    "two protocols on one port": (
        {"conf": {"listeners": [listener(8080), listener(8080, "HTTPS", tls=CERT)]}},
        ("conf.listeners[1].protocol", "protocol conflicts with other listeners on this port"),
    ),
    "one hostname twice on one port": (
        {
            "conf": {
                "listeners": [listener(8080, hostname="a.com"), listener(8080, hostname="a.com")]
            }
        },
        ("conf.listeners[1].hostname", "multiple listeners for hostname on this port"),
    ),
    "two TCP listeners on one port": (
        {"conf": {"listeners": [listener(9000, "TCP"), listener(9000, "TCP", hostname="b.com")]}},
        ("conf.listeners[1].hostname", "multiple listeners for hostname on this port"),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_GATEWAYS))
async def test_bad_mesh_gateway_is_refused_with_kumas_message(
    client: httpx.AsyncClient, case: str
) -> None:
    change, expected = BAD_GATEWAYS[case]
    doc = {**mesh_gateway(), **change}
    if doc.get("conf") is None:
        doc.pop("conf")
    assert expected in violations(await put(client, GATEWAYS, doc))
    assert (await client.get(f"{GATEWAYS}/{doc['name']}")).status_code == 404


async def test_valid_mesh_gateway_round_trips_in_kumas_flat_form(client: httpx.AsyncClient) -> None:
    doc = mesh_gateway(listeners=[listener(8080), https_listener(8443, "gw-cert", "example.com")])
    assert (await put(client, GATEWAYS, doc)).status_code == 201
    got = (await client.get(f"{GATEWAYS}/{doc['name']}")).json()
    assert got["conf"] == doc["conf"] and got["selectors"] == doc["selectors"]
    listed = (await client.get(GATEWAYS)).json()
    assert [i["name"] for i in listed["items"]] == [doc["name"]]


@pytest.mark.parametrize("field", ["inbound", "outbound"])
async def test_builtin_gateway_dataplane_cannot_have_inbounds_or_outbounds(
    client: httpx.AsyncClient, field: str
) -> None:
    doc = gateway_dataplane()
    entry = {"port": 9000, "tags": {"kuma.io/service": "x"}}
    doc["networking"][field] = [entry]
    assert (f"networking.{field}", f"{field} cannot be defined for builtin gateways") in violations(
        await put(client, DATAPLANES, doc)
    )


async def test_delegated_gateway_keeps_its_outbounds(client: httpx.AsyncClient) -> None:
    doc = gateway_dataplane("delegated")
    doc["networking"]["gateway"]["type"] = "DELEGATED"
    doc["networking"]["outbound"] = [
        {
            "port": 10001,
            "backendRef": {"kind": "MeshMultiZoneService", "name": "echo", "port": 1027},
        }
    ]
    assert (await put(client, DATAPLANES, doc)).status_code == 201


async def test_two_gateways_claiming_one_port_of_a_gateway_dataplane(
    client: httpx.AsyncClient,
) -> None:
    assert (await put(client, DATAPLANES, gateway_dataplane())).status_code == 201
    assert (await put(client, GATEWAYS, mesh_gateway("first"))).status_code == 201
    second = mesh_gateway("second", listeners=[listener(9090), listener(8080)])
    assert (
        "conf.listeners[1].port",
        'port 8080 is already claimed by MeshGateway "first" on gateway Dataplane "edge-gateway-1"',
    ) in violations(await put(client, GATEWAYS, second))
    assert (await client.get(f"{GATEWAYS}/second")).status_code == 404
    # Another port on the same Dataplane is no conflict; the first gateway may be rewritten.
    assert (
        await put(client, GATEWAYS, mesh_gateway("second", [listener(9090)]))
    ).status_code == 201
    assert (await put(client, GATEWAYS, mesh_gateway("first"))).status_code == 200


async def test_a_dataplane_selected_by_two_gateways_on_one_port_is_refused(
    client: httpx.AsyncClient,
) -> None:
    """The other order: the gateways exist, the Dataplane that both would bind comes later."""
    first = mesh_gateway("first")
    second = mesh_gateway("second", selectors=[{"match": {"kuma.io/service": "*"}}])
    assert (await put(client, GATEWAYS, first)).status_code == 201
    assert (await put(client, GATEWAYS, second)).status_code == 201
    reasons = violations(await put(client, DATAPLANES, gateway_dataplane()))
    assert (
        "networking.gateway",
        'MeshGateway "second": conf.listeners[0].port: port 8080 is already claimed by '
        'MeshGateway "first" on gateway Dataplane "edge-gateway-1"',
    ) in reasons
    assert (await client.get(f"{DATAPLANES}/edge-gateway-1")).status_code == 404


async def test_listener_on_the_dataplanes_admin_port_is_refused(client: httpx.AsyncClient) -> None:
    dataplane = gateway_dataplane(address="127.0.0.1")
    dataplane["networking"]["admin"] = {"port": 9902}
    assert (await put(client, DATAPLANES, dataplane)).status_code == 201
    reasons = violations(await put(client, GATEWAYS, mesh_gateway(listeners=[listener(9902)])))
    assert (
        "conf.listeners[0].port",
        'port 9902 is already used: it is the Envoy admin port of Dataplane "edge-gateway-1"',
    ) in reasons


async def zonemesh(*args: str) -> tuple[int, str, str]:
    """The CLI as users run it (the API server answers on this test's event loop)."""
    proc = await asyncio.create_subprocess_exec(
        ZONEMESH, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_applies_and_lists_gateways(client: httpx.AsyncClient, tmp_path: Path) -> None:
    file = tmp_path / "gateway.yaml"
    docs = [
        gateway_dataplane(),
        mesh_gateway(listeners=[listener(8080), https_listener(8443, "gw-cert", "example.com")]),
    ]
    file.write_text(yaml.safe_dump_all(docs))
    cp = ("--cp", str(client.base_url))
    code, out, err = await zonemesh("apply", "-f", str(file), *cp)
    assert code == 0, err
    assert 'resource type="MeshGateway" mesh="default" name="edge-gateway" Created' in out
    code, out, err = await zonemesh("get", "meshgateways", *cp)
    assert code == 0, err
    assert out.split("\n")[0].split() == ["MESH", "NAME", "LISTENERS", "AGE"]
    assert "HTTP:8080,HTTPS:8443/example.com" in out
    code, out, err = await zonemesh("get", "dataplanes", *cp)
    assert "kuma.io/service=edge-gateway" in out
    # A conflicting gateway: `field: reason` lines and a non-zero exit.
    clash = tmp_path / "clash.yaml"
    clash.write_text(yaml.safe_dump(mesh_gateway("clash")))
    code, out, err = await zonemesh("apply", "-f", str(clash), *cp)
    assert code != 0
    assert (
        'conf.listeners[0].port: port 8080 is already claimed by MeshGateway "edge-gateway"'
        in out + err
    )
