"""API authentication and authorization against a real `zonemesh cp run`, over real HTTP.

The attacks of issue 9 on the API: reading the mesh CA's private key, replacing the CA,
deleting the mesh anonymously, and learning a zone's instance id from `GET /zones`. Each is
refused with an AIP-193 401/403 that changes nothing, and each refusal is counted.
"""

from __future__ import annotations

import base64
import re
import stat
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from api_helpers import MMZS_PATH, ApiFactory, assert_error, attacker_ca, dataplane, mmzs
from cryptography import x509
from support.processes import CpProcess, wait_for

from zonemesh.resources.base import Resource
from zonemesh.resources.types.zone import ZoneSpec, ZoneStatus

LOCKED = {"KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN": "false"}
CA_PATH = "/meshes/default/secrets/ca-builtin"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpProcess]:
    """A standalone CP where loopback is NOT admin: only tokens count."""
    process = CpProcess(tmp_path_factory.mktemp("auth"), env=LOCKED).start()
    try:
        wait_for(lambda: process.as_admin("GET", CA_PATH).status_code == 200, 15)
        yield process
    finally:
        process.terminate()


@pytest.fixture(scope="module")
def open_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpProcess]:
    """A standalone CP with the default: trusted loopback requests are admin."""
    process = CpProcess(tmp_path_factory.mktemp("open"), store="memory").start()
    try:
        yield process
    finally:
        process.terminate()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refusals(cp: CpProcess, reason: str) -> float:
    text = cp.api("GET", "/metrics").text
    match = re.search(
        rf'^zonemesh_auth_refusals_total\{{interface="api",reason="{reason}"\}} (\S+)$',
        text,
        re.MULTILINE,
    )
    return float(match.group(1)) if match else 0.0


def user_token(cp: CpProcess, name: str, groups: list[str], valid_for: str = "1h") -> str:
    return cp.issue_token("user", {"name": name, "groups": groups, "validFor": valid_for})


def secret_bytes(item: dict[str, Any]) -> bytes:
    return base64.b64decode(item["data"])


def ca_certificate(cp: CpProcess) -> bytes:
    return secret_bytes(cp.as_admin("GET", CA_PATH).json())


# --- the attacks -----------------------------------------------------------------------------


def test_anonymous_delete_of_the_mesh_is_refused_and_nothing_goes(cp: CpProcess) -> None:
    assert cp.as_admin(
        "PUT", "/meshes/default/dataplanes/victim", json=dataplane("victim")
    ).is_success
    before = refusals(cp, "missing")

    response = httpx.delete(f"{cp.url}/meshes/default", timeout=10)

    body = assert_error(response, 401)
    assert body["detail"].startswith("this needs an admin user token: ")
    assert "DELETE /meshes/default" in body["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert cp.as_admin("GET", "/meshes/default").status_code == 200
    assert cp.as_admin("GET", "/meshes/default/dataplanes/victim").status_code == 200
    assert cp.as_admin("GET", CA_PATH).status_code == 200
    assert refusals(cp, "missing") == before + 1
    assert "WARNING zonemesh.auth: refused api credential from 127.0.0.1:" in cp.log.read_text()


def test_every_write_and_unknown_path_needs_a_token(cp: CpProcess) -> None:
    for method, path in [
        ("PUT", f"{MMZS_PATH}/echo"),
        ("DELETE", "/meshes/default/dataplanes/victim"),
        ("POST", "/tokens/user"),
        ("POST", "/nowhere/at/all"),
        ("PATCH", "/meshes/default"),
        ("GET", "/tokens/anything"),
        ("GET", "/meshes/default//secrets"),
    ]:
        assert_error(cp.api(method, path, json=mmzs()), 401)
    assert_error(cp.as_admin("GET", f"{MMZS_PATH}/echo"), 404)  # the PUT changed nothing


def test_a_user_without_the_admin_group_is_forbidden(cp: CpProcess) -> None:
    alice = bearer(user_token(cp, "alice", ["team-a"]))
    before = refusals(cp, "forbidden")

    response = cp.api("DELETE", "/meshes/default", headers=alice)

    body = assert_error(response, 403)
    assert body["detail"].startswith(
        'access denied: user "alice" is not in group mesh-system:admin'
    )
    assert_error(cp.api("GET", "/meshes/default/secrets", headers=alice), 403)
    assert_error(cp.api("POST", "/tokens/user", headers=alice, json={"name": "x"}), 403)
    assert refusals(cp, "forbidden") == before + 3
    assert cp.as_admin("GET", "/meshes/default").status_code == 200
    # Reads stay open to her, as to anyone.
    assert cp.api("GET", "/meshes", headers=alice).json()["total"] >= 1


def test_the_admin_token_from_the_data_dir_works(cp: CpProcess) -> None:
    path = cp.data_dir / "admin-user-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    claims = jwt.decode(cp.admin_token, options={"verify_signature": False})
    assert claims["Name"] == "mesh-system:admin"
    assert claims["Groups"] == ["mesh-system:admin"]
    assert claims["exp"] - claims["iat"] > 9 * 365 * 86400
    assert f"admin user token: {path}" in cp.log.read_text()

    assert cp.as_admin("PUT", f"{MMZS_PATH}/by-admin", json=mmzs("by-admin")).status_code == 201
    assert cp.as_admin("DELETE", f"{MMZS_PATH}/by-admin").status_code == 200
    # The same token through Kuma's GlobalSecret, for admins only.
    stored = cp.as_admin("GET", "/global-secrets/admin-user-token").json()
    assert secret_bytes(stored).decode().strip() == cp.admin_token
    assert_error(cp.api("GET", "/global-secrets/admin-user-token"), 401)


def test_no_private_key_in_any_response(cp: CpProcess) -> None:
    # A signing key exists once a token has been issued.
    user_token(cp, "reader", [])
    bodies: list[str] = []
    for path in [
        CA_PATH,
        "/meshes/default/secrets",
        "/secrets",
        "/secrets?filter[labels.kuma.io/mesh]=default",
        "/global-secrets",
        "/global-secrets/user-token-signing-key-1",
    ]:
        response = cp.as_admin("GET", path)
        assert response.status_code == 200, (path, response.text)
        bodies.append(response.text)
    decoded = b""
    for text in bodies:
        assert "PRIVATE KEY" not in text
        doc = httpx.Response(200, text=text).json()
        for item in doc.get("items", [doc]):
            decoded += secret_bytes(item) + b"\n"
    assert b"PRIVATE KEY" not in decoded
    ca = ca_certificate(cp)
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
    x509.load_pem_x509_certificate(ca)  # the certificate stays whole
    signing_key = secret_bytes(
        cp.as_admin("GET", "/global-secrets/user-token-signing-key-1").json()
    )
    assert b"-----BEGIN PUBLIC KEY-----" in signing_key


def test_an_admin_can_still_put_a_secret_and_never_reads_its_key_back(cp: CpProcess) -> None:
    cert_pem, key_pem = attacker_ca()
    doc = {
        "type": "Secret",
        "mesh": "default",
        "name": "my-tls",
        "data": base64.b64encode(cert_pem + key_pem).decode(),
    }
    assert cp.as_admin("PUT", "/meshes/default/secrets/my-tls", json=doc).status_code == 201
    shown = secret_bytes(cp.as_admin("GET", "/meshes/default/secrets/my-tls").json())
    assert shown == cert_pem


def test_an_attackers_ca_is_refused_and_the_ca_is_unchanged(cp: CpProcess) -> None:
    original = ca_certificate(cp)
    cert_pem, key_pem = attacker_ca()
    doc = {
        "type": "Secret",
        "mesh": "default",
        "name": "ca-builtin",
        "data": base64.b64encode(cert_pem + key_pem).decode(),
    }
    assert_error(cp.api("PUT", CA_PATH, json=doc), 401)
    mallory = bearer(user_token(cp, "mallory", ["mesh-system:authenticated"]))
    assert_error(cp.api("PUT", CA_PATH, json=doc, headers=mallory), 403)
    assert_error(cp.api("DELETE", CA_PATH, headers=mallory), 403)
    assert ca_certificate(cp) == original
    # Anonymous readers do not even get the certificate's Secret.
    assert_error(cp.api("GET", CA_PATH), 401)
    assert_error(cp.api("GET", "/secrets"), 401)


def test_an_expired_user_token_is_refused_not_anonymous(cp: CpProcess) -> None:
    token = user_token(cp, "brief", ["mesh-system:admin"], valid_for="1s")
    before = refusals(cp, "expired")
    time.sleep(6.2)  # past its expiry and the 5 s clock leeway
    for response in (
        cp.api("GET", "/meshes", headers=bearer(token)),  # even an open read: never anonymous
        cp.api("DELETE", f"{MMZS_PATH}/x", headers=bearer(token)),
    ):
        body = assert_error(response, 401)
        assert body["detail"] == "the user token is refused: the token has expired"
    assert refusals(cp, "expired") == before + 2


def test_a_revoked_user_token_is_refused(cp: CpProcess) -> None:
    token = user_token(cp, "leaked", ["mesh-system:admin"])
    assert cp.api("GET", "/meshes/default/secrets", headers=bearer(token)).status_code == 200
    token_id = jwt.decode(token, options={"verify_signature": False})["jti"]
    revocations = {
        "type": "GlobalSecret",
        "name": "user-token-revocations",
        "data": base64.b64encode(token_id.encode()).decode(),
    }
    put = cp.as_admin("PUT", "/global-secrets/user-token-revocations", json=revocations)
    assert put.status_code in (200, 201), put.text

    response = wait_for(
        lambda: (r := cp.api("GET", "/meshes", headers=bearer(token))).status_code == 401 and r,
        5,
    )
    assert response.json()["detail"] == "the user token is refused: the token has been revoked"
    assert refusals(cp, "revoked") >= 1


def test_bad_authorization_headers_are_refused(cp: CpProcess) -> None:
    for value, detail in [
        ("Basic YWRtaW46YWRtaW4=", "the Authorization header must be `Bearer <user token>`"),
        ("Bearer", "the Authorization header holds no token"),
        ("Bearer not-a-jwt", "the user token is refused: the token is not a valid JWT"),
    ]:
        body = assert_error(cp.api("GET", "/meshes", headers={"Authorization": value}), 401)
        assert body["detail"].startswith(detail)
    dataplane_token = cp.issue_token("dataplane", {"mesh": "default", "validFor": "1h"})
    body = assert_error(cp.api("GET", "/meshes", headers=bearer(dataplane_token)), 401)
    assert "unknown key id" in body["detail"]  # a dataplane token is no user token


# --- trusted loopback --------------------------------------------------------------------------


def test_loopback_is_admin_only_when_nothing_says_otherwise(open_cp: CpProcess) -> None:
    path = f"{MMZS_PATH}/loopback"
    assert open_cp.api("PUT", path, json=mmzs("loopback")).status_code == 201
    assert open_cp.api("GET", CA_PATH).status_code == 200
    same_origin = {"Sec-Fetch-Site": "same-origin"}
    assert open_cp.api("PUT", path, json=mmzs("loopback"), headers=same_origin).status_code == 200
    localhost = {"Host": f"localhost:{open_cp.api_port}"}
    assert open_cp.api("GET", CA_PATH, headers=localhost).status_code == 200

    for headers in [
        {"X-Forwarded-For": "203.0.113.7"},
        {"Forwarded": "for=203.0.113.7"},
        {"X-Real-IP": "203.0.113.7"},
        {"Host": f"attacker.example:{open_cp.api_port}"},  # DNS rebinding
        {"Sec-Fetch-Site": "cross-site"},  # a web page in the operator's browser
        {"Sec-Fetch-Site": "same-site"},  # ... served from another local port
    ]:
        assert_error(open_cp.api("DELETE", path, headers=headers), 401)
        assert_error(open_cp.api("GET", CA_PATH, headers=headers), 401)
    assert open_cp.api("GET", path).status_code == 200
    # A token, when given, is what counts, also from loopback: a bad one is refused.
    assert_error(open_cp.api("GET", "/meshes", headers=bearer("x.y.z")), 401)


# --- admin token bootstrap ------------------------------------------------------------------------


def test_the_admin_token_file_is_rewritten_from_the_secret(tmp_path) -> None:
    cp = CpProcess(tmp_path, env=LOCKED).start()
    try:
        first = cp.admin_token
    finally:
        cp.terminate()
    (cp.data_dir / "admin-user-token").unlink()
    cp.start()
    try:
        assert cp.admin_token == first  # the same token, from GlobalSecret admin-user-token
        assert stat.S_IMODE((cp.data_dir / "admin-user-token").stat().st_mode) == 0o600
        assert cp.as_admin("GET", "/global-secrets").status_code == 200
    finally:
        cp.terminate()


def test_a_memory_store_cp_creates_its_data_dir_for_the_token(tmp_path) -> None:
    cp = CpProcess(tmp_path, store="memory", env=LOCKED)
    assert not cp.data_dir.exists()
    cp.start()
    try:
        assert cp.as_admin("GET", "/meshes/default/secrets").status_code == 200
    finally:
        cp.terminate()


def test_the_bootstrap_can_be_turned_off(tmp_path) -> None:
    env = {"KUMA_API_SERVER_AUTHN_TOKENS_BOOTSTRAP_ADMIN_TOKEN": "false"}
    cp = CpProcess(tmp_path, store="memory", env=env).start()
    try:
        assert not (cp.data_dir / "admin-user-token").exists()
        assert_error(cp.api("GET", "/global-secrets/admin-user-token"), 404)  # loopback admin
    finally:
        cp.terminate()


# --- zones: the instance id is for admins ---------------------------------------------------------


def test_zone_instance_ids_are_for_admins_only(tmp_path) -> None:
    global_cp = CpProcess(tmp_path, "--mode", "global", name="global", env=LOCKED).start()
    zone_cp = None
    try:
        token_file = tmp_path / "zone1.token"
        token_file.write_text(global_cp.issue_token("zone", {"zone": "zone1", "validFor": "1h"}))
        zone_cp = CpProcess(
            tmp_path,
            *("--mode", "zone", "--zone", "zone1", "--global-address", global_cp.kds_address),
            name="zone1",
            env={
                "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH": str(token_file),
                "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE": str(global_cp.ca_file),
            },
        ).start()
        instance_id = zone_cp.api("GET", "/").json()["instanceId"]

        def zone_status() -> dict[str, Any] | None:
            found = global_cp.as_admin("GET", "/zones/zone1")
            status = found.json().get("status") if found.status_code == 200 else None
            return status if status and status.get("instanceId") else None

        assert wait_for(zone_status, 20)["instanceId"] == instance_id
        for path in ("/zones", "/zones/zone1", "/zones/_overview"):
            anonymous = global_cp.api("GET", path)
            assert anonymous.status_code == 200, anonymous.text
            assert instance_id not in anonymous.text
            assert "instanceId" not in anonymous.text
        viewer = bearer(user_token(global_cp, "viewer", []))
        assert instance_id not in global_cp.api("GET", "/zones", headers=viewer).text
        overview = global_cp.as_admin("GET", "/zones/_overview").json()
        assert overview["items"][0]["zoneInsight"]["instanceId"] == instance_id
    finally:
        if zone_cp is not None:
            zone_cp.terminate()
        global_cp.terminate()


async def test_zone_views_hide_the_instance_id_in_process(api_factory: ApiFactory) -> None:
    """The same rule on every path that shows a Zone, with a status written as KDS writes it."""
    api = await api_factory(
        {"mode": "global", "apiServer": {"http": {"port": 0}, "authn": {"localhostIsAdmin": False}}}
    )
    await api.runtime.tokens.start()
    try:
        zone = Resource(
            type="Zone",
            name="zone-a",
            mesh="",
            spec=ZoneSpec(),
            status=ZoneStatus(connected=True, instance_id="secret-instance"),
        )
        await api.runtime.store.create(zone)
        for path in ("/zones", "/zones/zone-a", "/zones/_overview"):
            response = await api.client.get(path)
            assert response.status_code == 200
            assert "secret-instance" not in response.text
        admin = await api.runtime.tokens.issue_user(
            name="root", groups=["mesh-system:admin"], valid_for=timedelta(hours=1)
        )
        shown = await api.client.get("/zones/zone-a", headers=bearer(admin))
        assert shown.json()["status"]["instanceId"] == "secret-instance"
    finally:
        await api.runtime.tokens.stop()
