"""No private key in any API response, whatever form it is stored in (in-process API, real HTTP).

The admin here is the trusted loopback client: redaction applies to admins too.
"""

from __future__ import annotations

import base64
from typing import Any

from api_helpers import Api, ApiFactory, attacker_ca
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from test_api_system import FakeXdsView

from zonemesh.resources.base import ResourceKey


def _keys() -> dict[str, bytes]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    pkcs8, traditional = (
        serialization.PrivateFormat.PKCS8,
        serialization.PrivateFormat.TraditionalOpenSSL,
    )
    plain = serialization.NoEncryption()
    return {
        "pkcs8": ec_key.private_bytes(pem, pkcs8, plain),
        "rsa": rsa_key.private_bytes(pem, traditional, plain),
        "ec": ec_key.private_bytes(pem, traditional, plain),
        "encrypted": ec_key.private_bytes(
            pem, pkcs8, serialization.BestAvailableEncryption(b"pass")
        ),
        "openssh": ec_key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, plain),
    }


async def _put_secret(api: Api, name: str, data: bytes, *, global_: bool = False) -> None:
    doc: dict[str, Any] = {"type": "Secret", "mesh": "default", "name": name}
    path = f"/meshes/default/secrets/{name}"
    if global_:
        doc = {"type": "GlobalSecret", "name": name}
        path = f"/global-secrets/{name}"
    doc["data"] = base64.b64encode(data).decode()
    response = await api.client.put(path, json=doc)
    assert response.status_code == 201, response.text


async def test_every_kind_of_private_key_is_removed(api: Api) -> None:
    cert, _ = attacker_ca()
    for name, key in _keys().items():
        await _put_secret(api, f"k-{name}", cert + key)
        await _put_secret(api, f"g-{name}", key + cert, global_=True)
    for path in ("/meshes/default/secrets", "/secrets", "/global-secrets"):
        page = (await api.client.get(path, params={"size": 100})).json()
        assert page["total"] == 5
        for item in page["items"]:
            shown = base64.b64decode(item["data"])
            assert b"PRIVATE KEY" not in shown, item["name"]
            assert shown.strip() == cert.strip(), item["name"]
    one = (await api.client.get("/meshes/default/secrets/k-rsa")).json()
    assert base64.b64decode(one["data"]) == cert
    # What is stored is untouched: the control plane still has the key.
    stored = await api.runtime.store.find(ResourceKey("Secret", "default", "k-rsa"))
    assert stored is not None and b"RSA PRIVATE KEY" in stored.spec.value


async def test_a_key_alone_shows_as_empty_data(api: Api) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    await _put_secret(api, "only-key", _keys()["pkcs8"])
    await _put_secret(api, "der-key", der)
    for name in ("only-key", "der-key"):
        shown = (await api.client.get(f"/meshes/default/secrets/{name}")).json()
        assert shown["data"] == ""


async def test_opaque_secrets_are_shown_as_stored(api: Api) -> None:
    await _put_secret(api, "opaque", b"a,b,c")
    shown = (await api.client.get("/meshes/default/secrets/opaque")).json()
    assert base64.b64decode(shown["data"]) == b"a,b,c"


async def test_an_xds_dump_never_carries_a_key(api_factory: ApiFactory) -> None:
    key_pem = _keys()["pkcs8"]
    key = ResourceKey("Dataplane", "default", "dp-1")
    secret = {
        "name": "identity",
        "tlsCertificate": {
            "certificateChain": {"inlineBytes": base64.b64encode(attacker_ca()[0]).decode()},
            "privateKey": {"inlineBytes": base64.b64encode(key_pem).decode()},
        },
        "note": key_pem.decode(),
        "other": {"inlineBytes": base64.b64encode(key_pem).decode()},
    }
    dump = {"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret": [secret]}
    api = await api_factory(views={"xds": FakeXdsView([], {key: dump})})
    response = await api.client.get("/meshes/default/dataplanes/dp-1/xds")
    assert response.status_code == 200
    shown = response.json()["type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"][
        0
    ]
    assert shown["tlsCertificate"]["privateKey"] == "[redacted]"
    assert "PRIVATE KEY" not in response.text
    assert b"PRIVATE KEY" not in base64.b64decode(shown["other"]["inlineBytes"])
    assert (
        shown["tlsCertificate"]["certificateChain"] == secret["tlsCertificate"]["certificateChain"]
    )
