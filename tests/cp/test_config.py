"""Configuration precedence (flag > env > file > default) with Kuma's env names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zonemesh.config import ConfigError, load_config

ZONEMESH = str(Path(sys.executable).parent / "zonemesh")


def test_defaults_follow_kuma() -> None:
    config = load_config(env={})
    assert config.mode == "zone"
    assert (config.api_server.http.port, config.xds.port, config.multizone.global_.kds_port) == (
        5681,
        5678,
        5685,
    )
    assert config.ipam.mesh_service.cidr == "241.0.0.0/8"
    assert config.ipam.mesh_multi_zone_service.cidr == "243.0.0.0/8"
    assert config.store.type == "sqlite"
    assert not config.federated_zone


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    file = tmp_path / "cp.yaml"
    file.write_text(
        "mode: zone\nmultizone:\n  zone:\n    name: from-file\n"
        "ipam:\n  meshMultiZoneService:\n    cidr: 10.1.0.0/16\n  meshService:\n    cidr: 10.2.0.0/16\n"
    )
    env = {
        "KUMA_MULTIZONE_ZONE_NAME": "from-env",
        "KUMA_IPAM_MESH_MULTI_ZONE_SERVICE_CIDR": "10.3.0.0/16",
    }
    config = load_config(file, env=env, flags={"zone": "from-flag", "api_port": None})
    assert config.zone_name == "from-flag"
    assert config.ipam.mesh_multi_zone_service.cidr == "10.3.0.0/16"
    assert config.ipam.mesh_service.cidr == "10.2.0.0/16"
    assert config.api_server.http.port == 5681  # an unset flag does not override


def test_kuma_env_names_configure_a_federated_zone() -> None:
    config = load_config(
        env={
            "KUMA_MODE": "zone",
            "KUMA_MULTIZONE_ZONE_NAME": "zone1",
            "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS": "grpc://127.0.0.1:5685",
            "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH": "/etc/zonemesh/zone-token",
            "KUMA_STORE_TYPE": "memory",
        }
    )
    assert config.federated_zone and config.zone_name == "zone1" and config.store.type == "memory"
    assert config.multizone.zone.kds_auth.token_path == "/etc/zonemesh/zone-token"


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        (
            {"KUMA_IPAM_MESH_MULTI_ZONE_SERVICE_CIDR": "243.0.0.0/33"},
            {},
            "ipam.meshMultiZoneService.cidr: invalid CIDR",
        ),
        (
            {},
            {"mode": "global", "global_address": "grpc://g:5685"},
            "a global control plane takes no global address",
        ),
        ({}, {"global_address": "grpc://g:5685"}, "needs a zone name"),
        ({"KUMA_MODE": "region"}, {}, "mode"),
    ],
)
def test_invalid_settings_are_named(
    env: dict[str, str], flags: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        load_config(env=env, flags=flags)
    assert message in str(info.value)


def test_cp_run_stops_with_a_clear_message_on_an_invalid_cidr(tmp_path: Path) -> None:
    result = subprocess.run(
        [ZONEMESH, "cp", "run", "--store", "memory"],
        env={
            "KUMA_IPAM_MESH_SERVICE_CIDR": "not-a-cidr",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ipam.meshService.cidr: invalid CIDR 'not-a-cidr'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_config_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: [zone")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_config(bad, env={})
    bad.write_text("mode: zone\nbogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_config(bad, env={})
