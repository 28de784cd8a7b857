"""KDS attacks against real control planes (`zonemesh cp run` as global, zone1, zone2): peers
without a zone token, with another zone's token, an expired or revoked one, a zone
publishing for another zone, a second CP claiming a connected zone. Each is refused with a
status naming the problem, sent nothing, keeps nothing, and is counted in global's /metrics;
the real zones keep syncing."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from federation_helpers import eventually, mesh_service, zone_ingress
from federation_procs import Api, Cluster

from zonemesh.federation.mapping import content_hash, encode
from zonemesh.federation.proto import kds_pb2 as pb
from zonemesh.federation.proto import kds_pb2_grpc as pb_grpc
from zonemesh.federation.protocol import PROTOCOL, PROTOCOL_VERSION

pytestmark = pytest.mark.timeout(150)

MS_PATH = "/meshes/default/meshservices"
TOKEN_PATH_ENV = "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH"


@dataclass
class PeerResult:
    """What a raw KDS peer got: every message global sent, and how the stream ended."""

    messages: list[pb.GlobalMessage] = field(default_factory=list)
    code: grpc.StatusCode | None = None
    details: str = ""
    attempts: int = 1  # streams opened (see `raw_peer`)


def wire(doc: dict[str, Any]) -> pb.Resource:
    data = encode(doc)
    return pb.Resource(
        type=str(doc["type"]),
        mesh=str(doc.get("mesh", "")),
        name=str(doc["name"]),
        json=data,
        hash=content_hash(data),
    )


def rogue_changes() -> pb.Changes:
    """A MeshService everyone would route to, and an ingress claiming to be zone2's."""
    hijack = zone_ingress("ingress-hijack", address="127.0.9.9")
    hijack["zone"] = "zone2"
    upserts = [wire(mesh_service("payments")), wire(zone_ingress("rogue-ingress")), wire(hijack)]
    return pb.Changes(batch=1, snapshot=True, snapshot_complete=True, upserts=upserts)


@dataclass(frozen=True)
class KdsTarget:
    port: int
    ca: bytes


async def raw_peer(
    kds_port: KdsTarget,
    zone: str,
    token: str | None,
    *,
    instance_id: str = "attacker",
    changes: pb.Changes | None = None,
    listen_s: float = 3.0,
) -> PeerResult:
    """Dial global's KDS as `zone`, send a Hello and `changes` at once, read until the stream
    ends or `listen_s` passes.

    A gRPC client still writing when the server ends the call sometimes reports INTERNAL
    ("Internal error from Core") instead of the server's status (any server, any status):
    such an attempt is repeated, up to 10 times, and counted in `attempts`."""
    for attempt in range(1, 11):
        result = await _raw_peer_once(kds_port, zone, token, instance_id, changes, listen_s)
        result.attempts = attempt
        lost = result.code == grpc.StatusCode.INTERNAL and "from Core" in result.details
        if not (lost and not result.messages):
            break
    return result


async def _raw_peer_once(
    kds_port: KdsTarget,
    zone: str,
    token: str | None,
    instance_id: str,
    changes: pb.Changes | None,
    listen_s: float,
) -> PeerResult:
    result = PeerResult()
    metadata = (("authorization", token),) if token is not None else None
    hello = pb.Hello(
        protocol=PROTOCOL,
        protocol_version=PROTOCOL_VERSION,
        zone=zone,
        instance_id=instance_id,
        cp_version="attacker",
    )
    first = [pb.ZoneMessage(hello=hello)]
    if changes is not None:
        first.append(pb.ZoneMessage(changes=changes))
    done = asyncio.Event()

    async def requests() -> AsyncIterator[pb.ZoneMessage]:
        for message in first:  # sent without waiting for global's answer, as an attacker would
            yield message
        await done.wait()  # then keep the stream open while listening

    credentials = grpc.ssl_channel_credentials(root_certificates=kds_port.ca)
    async with grpc.aio.secure_channel(f"127.0.0.1:{kds_port.port}", credentials) as channel:
        call = pb_grpc.KDSStub(channel).Sync(requests(), metadata=metadata)
        try:
            async with asyncio.timeout(listen_s):
                async for message in call:
                    result.messages.append(message)
        except TimeoutError:
            done.set()
            call.cancel()
            return result
        except grpc.aio.AioRpcError:
            pass
        done.set()
        result.code = await call.code()
        result.details = await call.details() or ""
    return result


def refusals(metrics_text: str) -> dict[str, float]:
    """reason -> count of `zonemesh_auth_refusals_total{interface="kds"}`."""
    pattern = r'zonemesh_auth_refusals_total\{interface="kds",reason="([^"]+)"\} ([0-9.e+]+)'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, metrics_text)}


class Fed:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.g = Api(cluster["global"])
        self.z1 = Api(cluster["zone1"])
        self.z2 = Api(cluster["zone2"])

    @property
    def kds_port(self) -> KdsTarget:
        """Global's KDS as an attacker reaches it: its port, over TLS with global's CA (the
        CA certificate is public; it proves nothing about the caller)."""
        port = self.cluster["global"].kds_port
        assert port is not None
        return KdsTarget(port, (self.cluster.tmp / "global" / "tls" / "ca.crt").read_bytes())

    async def refusals(self) -> dict[str, float]:
        return refusals((await self.g.get("/metrics")).text)

    async def zone_names(self) -> set[str]:
        return {z["name"] for z in (await self.g.json("/zones"))["items"]}

    async def close(self) -> None:
        for api in (self.g, self.z1, self.z2):
            await api.close()


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Fed]:
    """global, zone1 and zone2 (not started: each test starts them, some in its own way)."""
    cluster = Cluster(tmp_path)
    fed = Fed(cluster)
    try:
        yield fed
    finally:
        await fed.close()
        cluster.stop_all()
        print(cluster.logs())  # shown only when the test failed


async def both_zones_online(fed: Fed) -> None:
    overview = await fed.g.json("/zones/_overview")
    assert {z["name"]: z["status"] for z in overview["items"]} == {
        "zone1": "Online",
        "zone2": "Online",
    }


async def nothing_of_the_rogue_anywhere(fed: Fed) -> None:
    """No Zone, MeshService or ZoneIngress of a refused peer, on global or in zone1."""
    assert await fed.zone_names() <= {"zone1", "zone2"}
    for api in (fed.g, fed.z1):
        services = (await api.json(MS_PATH))["items"]
        assert [s for s in services if "payments" in s["name"]] == []
        ingresses = (await api.json("/zoneingresses"))["items"]
        assert [
            i for i in ingresses if i["labels"].get("kuma.io/zone") not in ("zone1", "zone2")
        ] == []
        assert [i for i in ingresses if "hijack" in i["name"]] == []


async def test_a_peer_without_a_valid_token_is_refused_sent_nothing_and_keeps_nothing(
    fed: Fed,
) -> None:
    await fed.cluster.start()
    await eventually(lambda: both_zones_online(fed), timeout=10)

    tries: dict[str, int] = {}
    for token, reason, says in (
        (None, "missing", "no zone token"),
        ("not-a-jwt", "malformed", "zone token: the token is not a valid JWT"),
        ("Bearer not-a-jwt", "malformed", "zone token: the token is not a valid JWT"),
    ):
        got = await raw_peer(fed.kds_port, "rogue", token, changes=rogue_changes())
        assert got.code == grpc.StatusCode.UNAUTHENTICATED, (token, got)
        assert says in got.details
        assert got.messages == [], "a refused peer is sent nothing (no Welcome, no snapshot)"
        tries[reason] = tries.get(reason, 0) + got.attempts

    # A token signed by another control plane's key (e.g. another global's) is refused too.
    foreign = jwt.encode(
        {"Zone": "rogue", "Scope": ["cp"], "jti": "x", "exp": 4102444800},
        _other_rsa_key(),
        algorithm="RS256",
        headers={"kid": "1"},
    )
    got = await raw_peer(fed.kds_port, "rogue", foreign, changes=rogue_changes())
    assert got.code == grpc.StatusCode.UNAUTHENTICATED and got.messages == []
    assert "zone token:" in got.details

    await nothing_of_the_rogue_anywhere(fed)
    counted = await fed.refusals()
    assert counted.get("missing") == tries["missing"]
    assert counted.get("malformed") == tries["malformed"]
    assert counted.get("unknown-key", 0) + counted.get("bad-signature", 0) == got.attempts
    await both_zones_online(fed)  # the real zones never noticed


def _other_rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_a_token_replayed_for_another_zone_is_permission_denied(fed: Fed) -> None:
    await fed.cluster.start()
    await eventually(lambda: both_zones_online(fed), timeout=10)
    zone2_instance = (await fed.z2.json("/"))["instanceId"]
    zone1_token = await fed.cluster.zone_token("zone1")

    # Even with zone2's own instance id (which would replace its session), zone1's token
    # does not speak for zone2.
    got = await raw_peer(
        fed.kds_port, "zone2", zone1_token, instance_id=zone2_instance, changes=rogue_changes()
    )
    assert got.code == grpc.StatusCode.PERMISSION_DENIED
    assert got.details == 'zone token: issued for zone "zone1", not for "zone2"'
    assert got.messages == []
    assert zone2_instance not in got.details
    denied = got.attempts
    # Nor does no token at all.
    got = await raw_peer(fed.kds_port, "zone2", None, instance_id=zone2_instance)
    assert got.code == grpc.StatusCode.UNAUTHENTICATED and got.messages == []

    await both_zones_online(fed)
    zone = await fed.g.json("/zones/zone2")
    assert zone["status"]["connected"] is True
    assert zone["status"]["instanceId"] == zone2_instance, "zone2's session was not replaced"
    await nothing_of_the_rogue_anywhere(fed)
    assert (await fed.refusals()).get("wrong-zone") == denied


async def test_an_expired_zone_token_is_refused(fed: Fed) -> None:
    await fed.cluster.start("global")
    short = await fed.cluster.zone_token("zone3", valid_for="1s")
    await asyncio.sleep(1.5)
    got = await raw_peer(fed.kds_port, "zone3", short, changes=rogue_changes())
    assert got.code == grpc.StatusCode.UNAUTHENTICATED
    assert got.details == "zone token: the token has expired"
    assert got.messages == []
    assert await fed.zone_names() == set()
    assert (await fed.refusals()).get("expired") == got.attempts


async def test_a_revoked_token_ends_the_live_session_and_a_rewritten_file_reconnects(
    fed: Fed, tmp_path: Path
) -> None:
    cluster = fed.cluster
    await cluster.start("global")
    token_file = tmp_path / "zone2.token"
    first = await cluster.zone_token("zone2")
    token_file.write_text(first + "\n")
    cluster["zone2"].env[TOKEN_PATH_ENV] = str(token_file)
    await cluster.start("zone1", "zone2")
    await eventually(lambda: both_zones_online(fed), timeout=10)
    r = await fed.z2.put("/zoneingresses/ingress-z2", zone_ingress("ingress-z2", "127.0.2.100"))
    assert r.status_code == 201, r.text

    async def ingress_in_zone1() -> None:
        ingresses = (await fed.z1.json("/zoneingresses"))["items"]
        assert [i["labels"]["kuma.io/zone"] for i in ingresses] == ["zone2"]

    await eventually(ingress_in_zone1)

    jti = jwt.decode(first, options={"verify_signature": False})["jti"]
    revocations = {
        "type": "GlobalSecret",
        "name": "zone-token-revocations",
        "data": base64.b64encode(jti.encode()).decode(),
    }
    r = await fed.g.put("/global-secrets/zone-token-revocations", revocations)
    assert r.status_code in (200, 201), r.text

    async def cut_off() -> None:
        zone = await fed.g.json("/zones/zone2")
        assert zone["status"]["connected"] is False
        status = (await fed.z2.json("/"))["status"]["global"]
        assert "global refused this zone's token: UNAUTHENTICATED" in status
        assert "the token has been revoked" in status
        assert TOKEN_PATH_ENV in status, "the zone says which setting to fix"

    await eventually(cut_off, timeout=5)

    async def reconnect_refused() -> None:
        assert (await fed.refusals()).get("revoked", 0) >= 2  # the live stream, a reconnect

    await eventually(reconnect_refused, timeout=10)
    zone2_log = cluster["zone2"].log()
    assert "ERROR" in zone2_log and "the token has been revoked" in zone2_log
    assert (await fed.z2.get("/healthy")).status_code == 200, "the zone keeps serving"

    # The operator writes a new token into the file: the next attempt reads it.
    token_file.write_text(await cluster.zone_token("zone2"))

    async def back() -> None:
        await both_zones_online(fed)
        assert (await fed.z2.json("/"))["status"]["global"].startswith("connected to grpcs://")
        await ingress_in_zone1()

    await eventually(back, timeout=15)


async def test_a_zone_cannot_publish_for_another_zones_locality(fed: Fed) -> None:
    await fed.cluster.start()
    await eventually(lambda: both_zones_online(fed), timeout=10)
    r = await fed.z2.put("/zoneingresses/ingress-z2", zone_ingress("ingress-z2", "127.0.2.100"))
    assert r.status_code == 201, r.text

    zone3_token = await fed.cluster.zone_token("zone3")
    got = await raw_peer(fed.kds_port, "zone3", zone3_token, changes=rogue_changes())
    assert got.code is None, f"an authenticated zone's stream stays up: {got}"
    acks = [m.ack for m in got.messages if m.WhichOneof("message") == "ack"]
    assert len(acks) == 1
    (rejection,) = acks[0].rejected
    assert rejection.ref.name == "ingress-hijack"
    assert rejection.reason.startswith("zone: 'zone2', but it comes from zone 'zone3'")

    async def zone2_locality_untouched() -> None:
        for api in (fed.g, fed.z1):
            ingresses = (await api.json("/zoneingresses"))["items"]
            zone2 = [i for i in ingresses if i["labels"]["kuma.io/zone"] == "zone2"]
            assert [i["labels"]["kuma.io/display-name"] for i in zone2] == ["ingress-z2"]
            assert [i for i in ingresses if "hijack" in i["name"]] == []

    await eventually(zone2_locality_untouched)
    assert (await fed.refusals()).get("foreign-zone") == 1


async def test_a_second_cp_for_a_connected_zone_learns_nothing_of_it(fed: Fed) -> None:
    await fed.cluster.start()
    await eventually(lambda: both_zones_online(fed), timeout=10)
    zone1_instance = (await fed.z1.json("/"))["instanceId"]
    token = await fed.cluster.zone_token("zone1")
    got = await raw_peer(fed.kds_port, "zone1", token, instance_id="another-cp")
    assert got.code == grpc.StatusCode.ALREADY_EXISTS
    assert got.details == 'zone "zone1" is already connected from another control plane'
    assert zone1_instance not in got.details
    assert got.messages == []
    zone = await fed.g.json("/zones/zone1")
    assert zone["status"]["connected"] is True
    assert (await fed.refusals()).get("already-connected") == got.attempts
