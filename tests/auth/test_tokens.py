"""Tokens as their users meet them: issued, verified, refused for each reason, rotated, revoked."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta

import jwt
import pytest

from zonemesh.auth.proxies import NotAllowed, authorize_proxy, bearer
from zonemesh.auth.service import TokenService, revocations_secret
from zonemesh.auth.tokens import TokenError, TokenKind
from zonemesh.resources.base import Resource
from zonemesh.resources.registry import GLOBAL_SECRET, SECRET
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.store.memory import MemoryStore

DAY = timedelta(days=1)


@pytest.fixture
async def tokens():
    service = TokenService(MemoryStore())
    await service.start()
    yield service
    await service.stop()


async def test_dataplane_token_round_trip(tokens: TokenService) -> None:
    raw = await tokens.issue_dataplane(
        mesh="default", tags={"kuma.io/service": ["echo"]}, valid_for=DAY
    )
    token = tokens.verify_dataplane(raw)
    assert (token.mesh, token.name, token.proxy_type) == ("default", None, "dataplane")
    assert token.tags == {"kuma.io/service": ("echo",)}
    assert token.token_id
    claims = jwt.decode(raw, options={"verify_signature": False})
    assert {"Mesh", "Name", "Tags", "Type", "jti", "exp", "iat", "nbf"} <= set(claims)


async def test_kinds_never_verify_as_each_other(tokens: TokenService) -> None:
    user = await tokens.issue_user(name="alice", groups=["team"], valid_for=DAY)
    with pytest.raises(TokenError) as e:
        tokens.verify_dataplane(user)
    assert e.value.reason == "unknown-key"
    zone = await tokens.issue_zone(zone="zone1", scope=["cp"], valid_for=DAY)
    with pytest.raises(TokenError):
        tokens.verify_user(zone)


async def test_mesh_keys_are_separate(tokens: TokenService) -> None:
    raw = await tokens.issue_dataplane(mesh="other", valid_for=DAY)
    claims = jwt.decode(raw, options={"verify_signature": False})
    header = jwt.get_unverified_header(raw)
    # Re-sign the same claims for mesh "default" with other's key: the kid is not default's.
    await tokens.issue_dataplane(mesh="default", valid_for=DAY)
    key = tokens._keys.newest((TokenKind.DATAPLANE, "other"))
    assert key is not None
    forged = jwt.encode({**claims, "Mesh": "default"}, key.private_key, "RS256", headers=header)
    with pytest.raises(TokenError) as e:
        tokens.verify_dataplane(forged)
    assert e.value.reason == "unknown-key"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: "", "missing"),
        (lambda t: "not-a-jwt", "malformed"),
        (lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"), "bad-signature"),
    ],
)
async def test_refusal_reasons(tokens: TokenService, mangle, reason: str) -> None:
    raw = await tokens.issue_user(name="bob", groups=[], valid_for=DAY)
    with pytest.raises(TokenError) as e:
        tokens.verify_user(mangle(raw))
    assert e.value.reason == reason


async def test_expired(tokens: TokenService) -> None:
    raw = await tokens.issue_user(name="bob", groups=[], valid_for=timedelta(seconds=0.01))
    await asyncio.sleep(5.2)  # past the 5 s leeway
    with pytest.raises(TokenError) as e:
        tokens.verify_user(raw)
    assert e.value.reason == "expired"


async def test_unsigned_and_non_string_kid_refused(tokens: TokenService) -> None:
    await tokens.issue_user(name="x", groups=[], valid_for=DAY)
    none_alg = jwt.encode({"Name": "x", "exp": 9999999999, "jti": "1"}, None, algorithm="none")
    with pytest.raises(TokenError) as e:
        tokens.verify_user(none_alg)
    assert e.value.reason == "malformed"
    valid = await tokens.issue_user(name="x", groups=[], valid_for=DAY)
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":7}').rstrip(b"=").decode()
    bad_kid = ".".join([header, *valid.split(".")[1:]])
    with pytest.raises(TokenError) as e:
        tokens.verify_user(bad_kid)
    assert e.value.reason == "malformed"


async def test_rotation_keeps_old_tokens_valid(tokens: TokenService) -> None:
    old = await tokens.issue_zone(zone="zone1", scope=["cp"], valid_for=DAY)
    new_kid = await tokens.rotate(TokenKind.ZONE)
    new = await tokens.issue_zone(zone="zone1", scope=["cp"], valid_for=DAY)
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert jwt.get_unverified_header(old)["kid"] != new_kid
    assert tokens.verify_zone(old).zone == tokens.verify_zone(new).zone == "zone1"


async def test_revocation_through_the_store_reaches_listeners() -> None:
    store = MemoryStore()
    tokens = TokenService(store)
    await tokens.start()
    try:
        raw = await tokens.issue_dataplane(mesh="default", valid_for=DAY)
        token_id = tokens.verify_dataplane(raw).token_id
        heard: list[frozenset[str]] = []
        tokens.on_revocation(lambda kind, mesh, ids: heard.append(ids))
        rtype, mesh, name = revocations_secret(TokenKind.DATAPLANE, "default")
        assert rtype == SECRET.name
        data = base64.b64encode(f"other,{token_id}".encode()).decode()
        await store.create(Resource(type=rtype, mesh=mesh, name=name, spec=SecretSpec(data=data)))
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.01)
        assert heard == [frozenset({"other", token_id})]
        with pytest.raises(TokenError) as e:
            tokens.verify_dataplane(raw)
        assert e.value.reason == "revoked"
    finally:
        await tokens.stop()


async def test_a_second_instance_verifies_with_the_stored_keys() -> None:
    store = MemoryStore()
    first, second = TokenService(store), TokenService(store)
    await first.start()
    raw = await first.issue_user(name="a", groups=["mesh-system:admin"], valid_for=DAY)
    await second.start()
    try:
        assert second.verify_user(raw).is_admin
        keys = await store.list(GLOBAL_SECRET.name)
        assert [k.name for k in keys] == ["user-token-signing-key-1"]
    finally:
        await first.stop()
        await second.stop()


async def test_authorize_proxy(tokens: TokenService) -> None:
    raw = await tokens.issue_dataplane(
        mesh="default", tags={"kuma.io/service": ["echo"]}, valid_for=DAY
    )
    token = tokens.verify_dataplane(raw)
    ok = {"mesh": "default", "name": "echo-1", "proxy_type": "dataplane"}
    authorize_proxy(token, **ok, tag_values={"kuma.io/service": {"echo"}})
    authorize_proxy(token, **{**ok, "name": "echo-2"}, tag_values={"kuma.io/service": {"echo"}})
    for change, values, words in [
        ({}, {"echo", "payments"}, "not payments"),
        ({"mesh": "other"}, {"echo"}, 'mesh "default", not "other"'),
        ({"proxy_type": "ingress", "mesh": ""}, set(), "dataplane proxy, not a ingress"),
    ]:
        with pytest.raises(NotAllowed, match=words):
            authorize_proxy(token, **{**ok, **change}, tag_values={"kuma.io/service": values})


def test_bearer() -> None:
    assert bearer("Bearer abc") == bearer("abc") == bearer(" bearer  abc ") == "abc"
    assert bearer(None) == ""


def test_token_endpoints_on_a_real_cp(tmp_path) -> None:
    """Issued over HTTP by `cp run`, and refused where that kind is not issued."""
    import httpx
    from support.processes import CpProcess

    standalone = CpProcess(tmp_path, name="standalone").start()
    global_cp = CpProcess(tmp_path, "--mode", "global", name="global").start()
    try:
        body = {"mesh": "default", "tags": {"kuma.io/service": ["echo"]}, "validFor": "1h"}
        answer = httpx.post(f"{standalone.url}/tokens/dataplane", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        assert jwt.decode(answer.text, options={"verify_signature": False})["Tags"] == {
            "kuma.io/service": ["echo"]
        }
        bad = httpx.post(f"{standalone.url}/tokens/dataplane", json={**body, "mesh": "nope"})
        assert bad.status_code == 400
        assert bad.json()["invalid_parameters"] == [
            {"field": "mesh", "reason": 'mesh "nope" not found'}
        ]
        no_validity = httpx.post(f"{standalone.url}/tokens/user", json={"name": "a"})
        assert no_validity.json()["invalid_parameters"][0]["field"] == "validFor"
        zone = httpx.post(f"{standalone.url}/tokens/zone", json={"zone": "z", "validFor": "1h"})
        assert zone.status_code == 405
        zone = httpx.post(f"{global_cp.url}/tokens/zone", json={"zone": "z", "validFor": "1h"})
        assert zone.status_code == 200
        assert jwt.decode(zone.text, options={"verify_signature": False})["Scope"] == ["cp"]
        assert httpx.post(f"{global_cp.url}/tokens/dataplane", json=body).status_code == 405
    finally:
        standalone.terminate()
        global_cp.terminate()
