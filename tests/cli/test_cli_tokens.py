"""`zonemesh generate|rotate|revoke` and `--token` against real `cp run` processes.

Loopback is not admin on these control planes, so every command works only with a token.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cli_helpers import zonemesh
from support.processes import CpProcess, wait_for

LOCKED = {"KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN": "false"}
HOURS = 3600


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpProcess]:
    process = CpProcess(tmp_path_factory.mktemp("cli-zone"), store="memory", env=LOCKED).start()
    try:
        yield process
    finally:
        process.terminate()


@pytest.fixture(scope="module")
def global_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpProcess]:
    process = CpProcess(
        tmp_path_factory.mktemp("cli-global"), "--mode", "global", store="memory", env=LOCKED
    ).start()
    try:
        yield process
    finally:
        process.terminate()


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def validity(token: str) -> float:
    c = claims(token)
    return float(c["exp"] - c["iat"])


def as_admin(cp: CpProcess, *args: str) -> Any:
    result = zonemesh(*args, "--cp", cp.url, "--token", cp.admin_token)
    assert result.returncode == 0, result.stderr
    return result


def only_a_token(stdout: str) -> str:
    """The command printed one JWT and nothing else."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, repr(stdout)
    token = stdout.strip()
    assert token.count(".") == 2
    return token


def revocation_list(cp: CpProcess, path: str) -> list[str]:
    found = cp.as_admin("GET", path)
    assert found.status_code == 200, found.text
    return base64.b64decode(found.json()["data"]).decode().split(",")


# --- generate --------------------------------------------------------------------------------


def test_generate_dataplane_token(cp: CpProcess) -> None:
    result = as_admin(
        cp,
        *("generate", "dataplane-token", "--mesh", "default", "--name", "echo-1"),
        *("--tag", "kuma.io/service=echo", "--tag", "kuma.io/service=web,api"),
        *("--tag", "version=v1", "--proxy-type", "dataplane"),
    )
    token = only_a_token(result.stdout)
    assert result.stderr == ""
    c = claims(token)
    assert (c["Mesh"], c["Name"], c["Type"]) == ("default", "echo-1", "dataplane")
    assert c["Tags"] == {"kuma.io/service": ["echo", "web", "api"], "version": ["v1"]}
    assert abs(validity(token) - 8760 * HOURS) < 60
    ingress = only_a_token(
        as_admin(
            cp, "generate", "dataplane-token", "--proxy-type", "ingress", "--valid-for", "2h"
        ).stdout
    )
    assert claims(ingress)["Type"] == "ingress"
    assert abs(validity(ingress) - 2 * HOURS) < 60


def test_generate_zone_token_on_global(global_cp: CpProcess) -> None:
    token = only_a_token(as_admin(global_cp, "generate", "zone-token", "--zone", "zone1").stdout)
    c = claims(token)
    assert (c["Zone"], c["Scope"]) == ("zone1", ["cp"])
    assert abs(validity(token) - 8760 * HOURS) < 60


def test_generate_user_token_with_the_env_var(cp: CpProcess) -> None:
    result = zonemesh(
        *("generate", "user-token", "--name", "alice", "--group", "team-a", "--group", "ops"),
        cp_url=cp.url,
        env={"ZONEMESH_CP_TOKEN": cp.admin_token},
    )
    assert result.returncode == 0, result.stderr
    token = only_a_token(result.stdout)
    assert claims(token)["Groups"] == ["team-a", "ops"]
    assert abs(validity(token) - 24 * HOURS) < 60
    # Alice's token works for reads; writes need the admin group (403, the detail printed).
    assert zonemesh("get", "meshes", "--cp", cp.url, "--token", token).returncode == 0
    denied = zonemesh("delete", "mesh", "default", "--cp", cp.url, "--token", token)
    assert denied.returncode != 0
    assert 'access denied: user "alice" is not in group mesh-system:admin' in denied.stderr


def test_without_a_token_the_command_fails_with_the_detail(cp: CpProcess) -> None:
    result = zonemesh("generate", "user-token", "--name", "x", cp_url=cp.url)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Error: this needs an admin user token: managing tokens" in result.stderr
    assert "--token" in result.stderr
    expired = zonemesh("get", "meshes", "--cp", cp.url, "--token", "not-a-token")
    assert expired.returncode != 0
    assert "the user token is refused: the token is not a valid JWT" in expired.stderr


def test_client_commands_take_the_token(cp: CpProcess, tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text("type: Mesh\nname: cli-tokens\n")
    assert zonemesh("apply", "-f", str(manifest), "--cp", cp.url).returncode != 0
    as_admin(cp, "apply", "-f", str(manifest))
    assert "cli-tokens" in as_admin(cp, "get", "meshes").stdout
    as_admin(cp, "inspect", "dataplanes")
    as_admin(cp, "delete", "mesh", "cli-tokens")


# --- rotate and revoke -------------------------------------------------------------------------


def test_rotate_a_signing_key(cp: CpProcess) -> None:
    old = only_a_token(as_admin(cp, "generate", "user-token", "--name", "old").stdout)
    result = as_admin(cp, "rotate", "signing-key", "--kind", "user")
    kid = result.stdout.strip()
    assert kid and "\n" not in kid
    assert kid in result.stderr
    new = only_a_token(as_admin(cp, "generate", "user-token", "--name", "new").stdout)
    assert jwt.get_unverified_header(new)["kid"] == kid
    assert jwt.get_unverified_header(old)["kid"] != kid
    for token in (old, new):  # tokens of the previous key keep working
        assert zonemesh("get", "meshes", "--cp", cp.url, "--token", token).returncode == 0
    dataplane = as_admin(cp, "rotate", "signing-key", "--kind", "dataplane", "--mesh", "default")
    assert dataplane.stdout.strip()
    wrong_place = zonemesh(
        "rotate", "signing-key", "--kind", "zone", "--cp", cp.url, "--token", cp.admin_token
    )
    assert wrong_place.returncode != 0
    assert "zone tokens are issued by the global control plane" in wrong_place.stderr


def test_a_revoked_user_token_is_refused_right_after(cp: CpProcess, tmp_path: Path) -> None:
    token = only_a_token(
        as_admin(
            cp, "generate", "user-token", "--name", "bob", "--group", "mesh-system:admin"
        ).stdout
    )
    token_file = tmp_path / "bob.token"
    token_file.write_text(token + "\n")
    assert zonemesh("get", "secrets", "--cp", cp.url, "--token", token).returncode == 0

    result = as_admin(cp, "revoke", "user-token", "--token-file", str(token_file))

    token_id = claims(token)["jti"]
    assert result.stdout.strip() == f"revoked user token {token_id}"

    def refused() -> Any:
        attempt = zonemesh("get", "meshes", "--cp", cp.url, "--token", token)
        return attempt.returncode != 0 and attempt

    assert "the token has been revoked" in wait_for(refused, 5).stderr
    again = as_admin(cp, "revoke", "user-token", "--id", token_id)
    assert again.stdout.strip() == f"already revoked user token {token_id}"


def test_revoke_dataplane_tokens_appends_to_the_mesh_list(cp: CpProcess, tmp_path: Path) -> None:
    first = only_a_token(as_admin(cp, "generate", "dataplane-token").stdout)
    second = only_a_token(as_admin(cp, "generate", "dataplane-token").stdout)
    token_file = tmp_path / "dp.token"
    token_file.write_text(first)

    as_admin(cp, "revoke", "dataplane-token", "--token-file", str(token_file))
    as_admin(cp, "revoke", "dataplane-token", "--mesh", "default", "--id", claims(second)["jti"])

    path = "/meshes/default/secrets/dataplane-token-revocations-default"
    assert revocation_list(cp, path) == [claims(first)["jti"], claims(second)["jti"]]
    user = tmp_path / "user.token"
    user.write_text(only_a_token(as_admin(cp, "generate", "user-token", "--name", "u").stdout))
    wrong_kind = zonemesh(
        "revoke",
        "dataplane-token",
        "--token-file",
        str(user),
        "--cp",
        cp.url,
        "--token",
        cp.admin_token,
    )
    assert wrong_kind.returncode != 0
    assert "this is not a dataplane token" in wrong_kind.stderr


def test_revoke_zone_token_on_global(global_cp: CpProcess) -> None:
    token = only_a_token(as_admin(global_cp, "generate", "zone-token", "--zone", "zone9").stdout)
    as_admin(global_cp, "revoke", "zone-token", "--id", claims(token)["jti"])
    assert revocation_list(global_cp, "/global-secrets/zone-token-revocations") == [
        claims(token)["jti"]
    ]
