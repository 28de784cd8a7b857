"""Zone tokens in-process (real gRPC on loopback) and at `cp run`'s start: the zone's settings,
scope, a token expiring under a live stream, KDS auth turned off on both sides, and what the
zones receive of the mesh CAs and of global's secrets."""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from federation_helpers import MESH_DEFAULT, Federation, eventually, free_port, mesh_service, put

from zonemesh.config import ConfigError, CpConfig, load_config
from zonemesh.federation.client import KdsClient
from zonemesh.federation.mapping import CA_ZONE_LABEL, global_name
from zonemesh.federation.proto import kds_pb2 as pb
from zonemesh.federation.proto import kds_pb2_grpc as pb_grpc
from zonemesh.federation.protocol import PROTOCOL, PROTOCOL_VERSION
from zonemesh.federation.zone_token import ZoneTokenError
from zonemesh.mtls.ca import create_mesh_ca, encode_ca_bundle
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.registry import GLOBAL_SECRET, SECRET
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.memory import MemoryStore

ZONE_ENV = {
    "KUMA_MODE": "zone",
    "KUMA_MULTIZONE_ZONE_NAME": "zone1",
    "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS": "grpc://127.0.0.1:5685",
}


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH", "token_path"),
        ("KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_INLINE", "token_inline"),
        ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH", "token_path"),  # Kong Mesh 2's names
        ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE", "token_inline"),
    ],
)
def test_kong_mesh_env_names_give_the_zone_its_token(name: str, field: str) -> None:
    config = load_config(env={**ZONE_ENV, name: "value"})
    assert getattr(config.multizone.zone.kds_auth, field) == "value"


def test_a_federated_zone_without_a_token_is_refused_naming_the_settings() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=ZONE_ENV)
    message = str(info.value)
    assert 'zone "zone1" connects to global but has no zone token' in message
    assert "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH" in message
    assert "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_INLINE" in message
    # The explicit opt-out, for a global that does not ask for tokens.
    config = load_config(env={**ZONE_ENV, "KUMA_MULTIZONE_ZONE_KDS_AUTH_TYPE": "none"})
    assert config.multizone.zone.kds_auth.type == "none"
    # Standalone zones and global need none.
    assert not load_config(env={"KUMA_MODE": "zone"}).federated_zone
    assert load_config(env={"KUMA_MODE": "global"}).multizone.global_.kds_auth.type == "cpToken"


def test_two_token_settings_at_once_are_refused() -> None:
    env = {
        **ZONE_ENV,
        "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH": "/a",
        "KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE": "b",
    }
    with pytest.raises(ConfigError, match="give the zone token once"):
        load_config(env=env)


def cp_run_zone(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "zonemesh", "cp", "run", "--mode", "zone", "--zone", "zone1"]
    args += ["--global-address", f"grpc://127.0.0.1:{free_port()}", "--store", "memory"]
    args += ["--api-port", str(free_port()), "--xds-port", str(free_port())]
    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith("KUMA_")}
    return subprocess.run(
        args, env={**clean, **env}, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def test_cp_run_stops_at_start_without_a_token_or_with_an_unreadable_file(
    tmp_path: Path,
) -> None:
    done = cp_run_zone(tmp_path, {})
    assert done.returncode != 0
    assert "has no zone token" in done.stderr
    assert "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH" in done.stderr

    missing = tmp_path / "nowhere" / "zone1.token"
    done = cp_run_zone(tmp_path, {"KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH": str(missing)})
    assert done.returncode != 0
    assert "control plane could not start" in done.stderr
    assert f"KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH={missing}): cannot read it" in done.stderr
    assert "Traceback" not in done.stderr

    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    done = cp_run_zone(tmp_path, {"KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH": str(empty)})
    assert done.returncode != 0 and f"={empty}): is empty" in done.stderr


async def test_a_kds_client_refuses_to_start_without_a_usable_token(tmp_path: Path) -> None:
    base = {"name": "zone1", "globalAddress": "grpc://127.0.0.1:1"}
    for kds_auth, says in (
        ({}, "has no zone token"),
        ({"tokenPath": str(tmp_path / "absent")}, "cannot read it"),
        ({"tokenInline": "two words"}, "not a token"),
    ):
        config = CpConfig.model_validate(
            {"mode": "zone", "multizone": {"zone": {**base, "kdsAuth": kds_auth}}}
        )
        with pytest.raises(ZoneTokenError, match=says):
            await KdsClient(Runtime(config=config, store=MemoryStore())).start()


# ------------------------------------------------------------------------------ global's checks


async def raw_refusal(federation: Federation, zone: str, token: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{federation.kds_port}") as channel:
        call = pb_grpc.KDSStub(channel).Sync(metadata=(("authorization", token),))
        hello = pb.Hello(
            protocol=PROTOCOL, protocol_version=PROTOCOL_VERSION, zone=zone, instance_id="x"
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.write(pb.ZoneMessage(hello=hello))
            await call.read()
        return info.value


async def test_a_token_without_the_cp_scope_is_permission_denied(federation: Federation) -> None:
    g = await federation.start_global()
    ingress_only = await federation.zone_token("zone1", scope=("ingress",))
    error = await raw_refusal(federation, "zone1", ingress_only)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == (
        'zone token: its scope (ingress) does not include "cp", which a zone control plane needs'
    )
    assert g.refusals.count("kds", "scope") == 1
    assert await g.store.list("Zone") == []


async def test_a_live_session_ends_when_its_token_expires_and_is_not_renewed(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zonemesh.kds")
    g = await federation.start_global()
    short = await federation.zone_token("zone1", valid_for=2)
    z1, client = await federation.start_zone("zone1", token=short)
    await asyncio.wait_for(client.connected.wait(), 5)

    async def cut_off() -> None:
        status = z1.status["global"]
        assert "global refused this zone's token: UNAUTHENTICATED" in status, status
        assert "the token has expired" in status
        assert "multizone.zone.kdsAuth.tokenInline" in status
        zone = await g.store.get(ResourceKey("Zone", "", "zone1"))
        assert zone.status.connected is False

    await eventually(cut_off, timeout=8)
    assert not client.connected.is_set()

    async def reconnect_refused() -> None:
        assert g.refusals.count("kds", "expired") >= 2  # the live stream, then a reconnect

    await eventually(reconnect_refused)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("the token has expired" in line for line in errors)


async def test_kds_auth_off_on_both_sides_syncs_without_tokens(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zonemesh.kds")
    federation_config = CpConfig.model_validate(
        {
            "mode": "global",
            "store": {"type": "memory"},
            "multizone": {"global": {"kdsPort": federation.kds_port, "kdsAuth": {"type": "none"}}},
        }
    )
    from zonemesh.federation.server import KdsServer

    g = Runtime(config=federation_config, store=federation.global_store)
    await g.tokens.start()
    server = KdsServer(g)
    await server.start()
    zone_cfg = CpConfig.model_validate(
        {
            "mode": "zone",
            "store": {"type": "memory"},
            "multizone": {
                "zone": {
                    "name": "zone1",
                    "globalAddress": federation.address,
                    "kdsAuth": {"type": "none"},
                }
            },
        }
    )
    z1 = Runtime(config=zone_cfg, store=MemoryStore())
    client = KdsClient(z1)
    try:
        await client.start()
        await put(z1, mesh_service("echo"))

        async def synced() -> None:
            assert await g.store.find(
                ResourceKey("MeshService", "default", global_name("echo", "zone1"))
            )

        await eventually(synced)
        assert any("KDS authentication is off" in r.getMessage() for r in caplog.records)
    finally:
        await client.stop()
        await server.stop()
        await g.tokens.stop()


# ------------------------------------------------------------------------------ what zones get


def secret(name: str, data: bytes, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "type": "Secret",
        "mesh": "default",
        "name": name,
        "labels": labels or {},
        "data": base64.b64encode(data).decode(),
    }


async def test_zones_get_the_root_ca_without_its_key_their_own_intermediate_only_and_no_global_secrets(
    federation: Federation,
) -> None:
    g = await federation.start_global()
    await put(g, MESH_DEFAULT)
    root = encode_ca_bundle(create_mesh_ca("default"))
    assert b"PRIVATE KEY" in root
    await put(g, secret("ca-builtin", root))
    for zone in ("zone1", "zone2"):
        bundle = encode_ca_bundle(create_mesh_ca(f"default-{zone}"))
        await put(g, secret(f"zone-ca-{zone}", bundle, {CA_ZONE_LABEL: zone}))
    await put(g, secret("dataplane-token-revocations-default", b"id-1,id-2"))
    await federation.zone_token("zone1")  # global now holds a zone token signing key
    assert await g.store.list(GLOBAL_SECRET.name), "global holds its signing keys"

    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")

    async def synced(runtime: Runtime, zone: str) -> dict[str, Resource]:
        got = {s.name: s for s in await runtime.store.list(SECRET.name)}
        assert set(got) == {"ca-builtin", f"zone-ca-{zone}", "dataplane-token-revocations-default"}
        return got

    for runtime, zone in ((z1, "zone1"), (z2, "zone2")):
        got = await eventually(lambda r=runtime, z=zone: synced(r, z))
        ca = got["ca-builtin"].spec
        assert isinstance(ca, SecretSpec)
        assert b"PRIVATE KEY" not in ca.value, "the root CA's key never leaves global"
        assert ca.value.count(b"-----BEGIN CERTIFICATE-----") == 1
        assert ca.value in root, "the root certificate itself"
        own = got[f"zone-ca-{zone}"].spec
        assert isinstance(own, SecretSpec) and b"PRIVATE KEY" in own.value
        revoked = got["dataplane-token-revocations-default"].spec
        assert isinstance(revoked, SecretSpec) and revoked.value == b"id-1,id-2"
        assert await runtime.store.list(GLOBAL_SECRET.name) == []

    # Relabelled for zone2: it leaves zone1 and reaches zone2.
    moved = secret("zone-ca-zone1", encode_ca_bundle(create_mesh_ca("x")), {CA_ZONE_LABEL: "zone2"})
    await put(g, moved)

    async def moved_over() -> None:
        assert await z1.store.find(ResourceKey(SECRET.name, "default", "zone-ca-zone1")) is None
        assert await z2.store.find(ResourceKey(SECRET.name, "default", "zone-ca-zone1"))

    await eventually(moved_over)

    # A peer without a token gets none of it: not one message.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{federation.kds_port}") as channel:
        call = pb_grpc.KDSStub(channel).Sync()
        hello = pb.Hello(
            protocol=PROTOCOL, protocol_version=PROTOCOL_VERSION, zone="zone3", instance_id="x"
        )
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.write(pb.ZoneMessage(hello=hello))
            while True:
                received.append(await call.read())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert received == []
