"""Control-plane configuration: defaults < YAML file < Kuma env vars < command-line flags.

The shape follows Kuma's `kuma-cp.defaults.yaml` so that a Kuma user's settings carry over.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`24h`, `1h30m`, `90s`, `500ms`, or plain seconds (`86400`); must be positive."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(
                f"invalid duration {text!r}: use e.g. 24h, 90m, 30s or a number of seconds"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return timedelta(seconds=seconds)


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class StoreConfig(_Section):
    type: Literal["memory", "sqlite"] = "sqlite"
    data_dir: str = ""  # "" = the per-user data directory


class HttpConfig(_Section):
    port: int = 5681


class ApiServerConfig(_Section):
    http: HttpConfig = HttpConfig()
    max_body_bytes: int = 1 << 20


class XdsConfig(_Section):
    port: int = 5678
    debounce_quiet_s: float = 0.1  # push after this much quiet ...
    debounce_max_s: float = 1.0  # ... or after this long, whichever comes first
    # Proxy certificates live this long and are re-issued after two thirds of it.
    cert_validity: str = "24h"

    @field_validator("cert_validity")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class DpProxyAuthn(_Section):
    # `dpToken`: every ADS stream, readiness report and CSR needs a dataplane token (Kuma's
    # default); `none`: anyone may claim any proxy (in-process tests, nothing else).
    type: Literal["dpToken", "none"] = "dpToken"


class DpServerAuthn(_Section):
    dp_proxy: DpProxyAuthn = DpProxyAuthn()


class DpServerConfig(_Section):
    authn: DpServerAuthn = DpServerAuthn()


class ZoneMultizone(_Section):
    name: str = ""
    global_address: str = ""


class GlobalMultizone(_Section):
    kds_port: int = 5685
    zone_offline_grace_s: float = 30.0  # after this, a disconnected zone's services go unavailable


class MultizoneConfig(_Section):
    zone: ZoneMultizone = ZoneMultizone()
    global_: GlobalMultizone = Field(GlobalMultizone(), alias="global")


class CidrConfig(_Section):
    cidr: str

    @field_validator("cidr")
    @classmethod
    def _valid_cidr(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value, strict=True)
        except ValueError as e:
            raise ValueError(f"invalid CIDR {value!r}: {e}") from None
        return value


class IpamConfig(_Section):
    mesh_service: CidrConfig = CidrConfig(cidr="241.0.0.0/8")
    mesh_multi_zone_service: CidrConfig = CidrConfig(cidr="243.0.0.0/8")


class CpConfig(_Section):
    mode: Literal["zone", "global"] = "zone"
    address: str = "127.0.0.1"  # bind host of every listener
    store: StoreConfig = StoreConfig()
    api_server: ApiServerConfig = ApiServerConfig()
    xds: XdsConfig = XdsConfig()
    dp_server: DpServerConfig = DpServerConfig()
    multizone: MultizoneConfig = MultizoneConfig()
    ipam: IpamConfig = IpamConfig()

    @model_validator(mode="after")
    def _mode_fits_zone(self) -> CpConfig:
        if self.mode == "global" and self.multizone.zone.global_address:
            raise ValueError("a global control plane takes no global address")
        if self.multizone.zone.global_address and not self.multizone.zone.name:
            raise ValueError("a zone connected to global needs a zone name (--zone)")
        return self

    @property
    def federated_zone(self) -> bool:
        return self.mode == "zone" and bool(self.multizone.zone.global_address)

    @property
    def is_global(self) -> bool:
        return self.mode == "global"

    @property
    def zone_name(self) -> str:
        """This CP's zone ("" on global; "default" for a standalone CP given no name)."""
        if self.is_global:
            return ""
        return self.multizone.zone.name or "default"

    @property
    def data_dir(self) -> Path:
        if self.store.data_dir:
            return Path(self.store.data_dir)
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "zonemesh"

    def effective(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


# Kuma's environment variable names (and a few of zonemesh's own) -> path in the config.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "KUMA_MODE": ("mode",),
    "KUMA_STORE_TYPE": ("store", "type"),
    "KUMA_GENERAL_WORK_DIR": ("store", "dataDir"),
    "KUMA_API_SERVER_HTTP_PORT": ("apiServer", "http", "port"),
    "KUMA_DP_SERVER_PORT": ("xds", "port"),
    "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": ("dpServer", "authn", "dpProxy", "type"),
    "KUMA_MULTIZONE_ZONE_NAME": ("multizone", "zone", "name"),
    "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS": ("multizone", "zone", "globalAddress"),
    "KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT": ("multizone", "global", "kdsPort"),
    "KUMA_IPAM_MESH_SERVICE_CIDR": ("ipam", "meshService", "cidr"),
    "KUMA_IPAM_MESH_MULTI_ZONE_SERVICE_CIDR": ("ipam", "meshMultiZoneService", "cidr"),
    "ZONEMESH_ZONE_OFFLINE_GRACE": ("multizone", "global", "zoneOfflineGraceS"),
    "ZONEMESH_XDS_DEBOUNCE_QUIET": ("xds", "debounceQuietS"),
    "ZONEMESH_XDS_DEBOUNCE_MAX": ("xds", "debounceMaxS"),
    "ZONEMESH_CERT_VALIDITY": ("xds", "certValidity"),
}

# `zonemesh cp run` flags -> path in the config.
FLAGS: dict[str, tuple[str, ...]] = {
    "mode": ("mode",),
    "zone": ("multizone", "zone", "name"),
    "global_address": ("multizone", "zone", "globalAddress"),
    "address": ("address",),
    "api_port": ("apiServer", "http", "port"),
    "xds_port": ("xds", "port"),
    "kds_port": ("multizone", "global", "kdsPort"),
    "store": ("store", "type"),
    "data_dir": ("store", "dataDir"),
}


class ConfigError(Exception):
    pass


def load_config(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> CpConfig:
    """Merge the layers (file < env < flags; unset flags are None) and validate."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    if file:
        try:
            loaded = yaml.safe_load(Path(file).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"config file {file}: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file}: must be a YAML object")
        merged = loaded
    for name, path in ENV_VARS.items():
        if env.get(name):
            _set(merged, path, env[name])
    for name, value in (flags or {}).items():
        if value is not None:
            _set(merged, FLAGS[name], value)
    try:
        return CpConfig.model_validate(merged)
    except ValueError as e:  # pydantic.ValidationError is a ValueError
        raise ConfigError(_describe(e)) from None


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _describe(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if errors is None:
        return str(error)
    lines = []
    for err in errors():
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {msg}" if field else msg)
    return "invalid configuration: " + "; ".join(lines)
