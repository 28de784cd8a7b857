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
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
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


class PostgresTlsConfig(_Section):
    """How the store's connections use TLS (Kuma's `store.postgres.tls`); the modes map onto
    libpq's sslmode: disable, verifyNone = require, verifyCa = verify-ca, verifyFull = verify-full."""

    mode: Literal["disable", "verifyNone", "verifyCa", "verifyFull"] = "disable"
    ca_path: str = ""  # the CA that signed the server's certificate (verifyCa, verifyFull)
    cert_path: str = ""  # a client certificate, for servers that authenticate by certificate
    key_path: str = ""
    disable_sslsni: bool = Field(False, alias="disableSSLSNI")

    @model_validator(mode="after")
    def _consistent(self) -> PostgresTlsConfig:
        if bool(self.cert_path) != bool(self.key_path):
            raise ValueError(
                "certPath and keyPath go together "
                "(KUMA_STORE_POSTGRES_TLS_CERT_PATH and KUMA_STORE_POSTGRES_TLS_KEY_PATH)"
            )
        if self.mode in ("verifyCa", "verifyFull") and not self.ca_path:
            raise ValueError(
                f"mode {self.mode} verifies the server's certificate: give "
                "the CA that signed it in caPath (KUMA_STORE_POSTGRES_TLS_CA_PATH)"
            )
        return self


class PostgresConfig(_Section):
    """Where the PostgreSQL store connects (Kuma's `store.postgres` names and defaults)."""

    host: str = "127.0.0.1"
    port: int = Field(15432, ge=1, le=65535)
    user: str = "kuma"
    password: SecretStr = SecretStr("kuma")  # shown as ********** by GET /config
    db_name: str = "kuma"
    connection_timeout: int = Field(5, ge=1)  # seconds, for connecting and for a free connection
    max_open_connections: int = Field(10, ge=2)  # the pool's size, per instance
    tls: PostgresTlsConfig = PostgresTlsConfig()


class StoreConfig(_Section):
    type: Literal["memory", "sqlite", "postgres"] = "sqlite"
    data_dir: str = ""  # "" = the per-user data directory
    postgres: PostgresConfig = PostgresConfig()


_POSTGRES_ENV_VARS: dict[str, tuple[str, ...]] = {
    f"KUMA_STORE_POSTGRES_{env}": ("store", "postgres", *path)
    for env, path in {
        "HOST": ("host",),
        "PORT": ("port",),
        "USER": ("user",),
        "PASSWORD": ("password",),
        "DB_NAME": ("dbName",),
        "CONNECTION_TIMEOUT": ("connectionTimeout",),
        "MAX_OPEN_CONNECTIONS": ("maxOpenConnections",),
        "TLS_MODE": ("tls", "mode"),
        "TLS_CA_PATH": ("tls", "caPath"),
        "TLS_CERT_PATH": ("tls", "certPath"),
        "TLS_KEY_PATH": ("tls", "keyPath"),
        "TLS_DISABLE_SSLSNI": ("tls", "disableSSLSNI"),
    }.items()
}


class HttpConfig(_Section):
    port: int = 5681


class HttpsConfig(_Section):
    """The API over TLS, with the certificate xDS and KDS serve (`general.tls`)."""

    enabled: bool = True
    port: int = 5682


class TokensAuthnConfig(_Section):
    # Kuma's `apiServer.authn.tokens.bootstrapAdminToken`: write an admin token on first start.
    bootstrap_admin_token: bool = True


class AuthnConfig(_Section):
    """Kuma's `apiServer.authn` (type `tokens`, the only one zonemesh has)."""

    # Loopback requests without a token are admin (see `zonemesh.api.auth` for the conditions).
    localhost_is_admin: bool = True
    tokens: TokensAuthnConfig = TokensAuthnConfig()


class ApiServerConfig(_Section):
    http: HttpConfig = HttpConfig()
    https: HttpsConfig = HttpsConfig()
    max_body_bytes: int = 1 << 20
    authn: AuthnConfig = AuthnConfig()


class XdsConfig(_Section):
    port: int = 5678
    # Push after this much quiet (the computed state's rule too: one burst, one pass). 30 ms
    # still joins the events of one API write or one registration burst, and cut the
    # change latency p50 by 50-100 ms against 100 ms (benchmarks/xds_fanout.py).
    debounce_quiet_s: float = 0.03
    debounce_max_s: float = 1.0  # ... or after this long in a stream of changes
    # Proxy certificates live this long and are re-issued after two thirds of it.
    cert_validity: str = "24h"
    # After a graceful stop (`dp run` said so), the proxy's registered resource is deleted
    # this long after its stream ended, unless it connected again (Kuma's name and default).
    dataplane_deregistration_delay: str = "10s"

    @field_validator("cert_validity", "dataplane_deregistration_delay")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


# KDS authentication: `cpToken` = a zone token with scope `cp` (Kong Mesh's name), `none` =
# no token (open-source Kuma's behaviour; only for a global that also says `none`).
KdsAuthType = Literal["cpToken", "none"]
ZONE_TOKEN_PATH_ENV = "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH"
ZONE_TOKEN_INLINE_ENV = "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_INLINE"


class ZoneKdsAuth(_Section):
    """How this zone proves its name to global: its zone token, inline or in a file (the file
    is re-read on every connection attempt, so replacing it needs no restart)."""

    type: KdsAuthType = "cpToken"
    token_path: str = ""
    token_inline: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> ZoneKdsAuth:
        if self.token_path and self.token_inline:
            raise ValueError(
                f"give the zone token once: {ZONE_TOKEN_PATH_ENV} (a file) or "
                f"{ZONE_TOKEN_INLINE_ENV}, not both"
            )
        return self

    @property
    def setting(self) -> str:
        """Where the token comes from, as a user would look for it."""
        if self.token_inline:
            return f"multizone.zone.kdsAuth.tokenInline ({ZONE_TOKEN_INLINE_ENV})"
        return f"multizone.zone.kdsAuth.tokenPath ({ZONE_TOKEN_PATH_ENV}={self.token_path})"


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
    kds_root_ca_file: str = ""  # the CA that verifies global's KDS certificate (grpcs://)
    kds_auth: ZoneKdsAuth = ZoneKdsAuth()


class GlobalKdsAuth(_Section):
    """What global asks of a zone before it syncs anything with it."""

    type: KdsAuthType = "cpToken"


class GlobalMultizone(_Section):
    kds_port: int = 5685
    # After this, global logs (and shows in `GET /`) that a zone is offline. What the zone
    # synced is still passed on: the sidecars' health checks judge its data path.
    zone_offline_grace_s: float = 30.0
    kds_auth: GlobalKdsAuth = GlobalKdsAuth()


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


class GeneralTlsConfig(_Section):
    """The certificate xDS, KDS and the HTTPS API serve; none given: one is generated in
    `<data-dir>/tls/` (see zonemesh/tls/material.py). `plaintext_grpc` turns TLS off for
    xDS and KDS, and only on a loopback address."""

    cert_file: str = ""
    key_file: str = ""
    plaintext_grpc: bool = False

    @model_validator(mode="after")
    def _both_or_neither(self) -> GeneralTlsConfig:
        if bool(self.cert_file) != bool(self.key_file):
            given, missing = ("certFile", "keyFile") if self.cert_file else ("keyFile", "certFile")
            raise ValueError(
                f"general.tls.{given} is set but general.tls.{missing} is not: give both "
                "(KUMA_GENERAL_TLS_CERT_FILE and KUMA_GENERAL_TLS_KEY_FILE) or neither"
            )
        return self


class GeneralConfig(_Section):
    tls: GeneralTlsConfig = GeneralTlsConfig()


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class UniversalRuntimeConfig(_Section):
    # A proxy registered by its data plane and offline this long (stream gone without a
    # graceful stop) is deleted (Kuma's `runtime.universal.dataplaneCleanupAge`).
    dataplane_cleanup_age: str = "72h"

    @field_validator("dataplane_cleanup_age")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class RuntimeConfig(_Section):
    universal: UniversalRuntimeConfig = UniversalRuntimeConfig()


class CpConfig(_Section):
    mode: Literal["zone", "global"] = "zone"
    address: str = "127.0.0.1"  # bind host of every listener
    general: GeneralConfig = GeneralConfig()
    store: StoreConfig = StoreConfig()
    api_server: ApiServerConfig = ApiServerConfig()
    xds: XdsConfig = XdsConfig()
    dp_server: DpServerConfig = DpServerConfig()
    multizone: MultizoneConfig = MultizoneConfig()
    ipam: IpamConfig = IpamConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _mode_fits_zone(self) -> CpConfig:
        if self.mode == "global" and self.multizone.zone.global_address:
            raise ValueError("a global control plane takes no global address")
        if self.multizone.zone.global_address and not self.multizone.zone.name:
            raise ValueError("a zone connected to global needs a zone name (--zone)")
        return self

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> CpConfig:
        if self.general.tls.plaintext_grpc and not is_loopback_host(self.address):
            raise ValueError(
                "general.tls.plaintextGrpc (--grpc-plaintext, ZONEMESH_GRPC_PLAINTEXT): "
                f"plaintext gRPC is refused on {self.address}, which is not a loopback "
                "address; serve TLS (the default) or bind 127.0.0.1"
            )
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
    "KUMA_API_SERVER_HTTPS_ENABLED": ("apiServer", "https", "enabled"),
    "KUMA_API_SERVER_HTTPS_PORT": ("apiServer", "https", "port"),
    "KUMA_GENERAL_TLS_CERT_FILE": ("general", "tls", "certFile"),
    "KUMA_GENERAL_TLS_KEY_FILE": ("general", "tls", "keyFile"),
    "ZONEMESH_GRPC_PLAINTEXT": ("general", "tls", "plaintextGrpc"),
    "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE": ("multizone", "zone", "kdsRootCaFile"),
    "KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN": ("apiServer", "authn", "localhostIsAdmin"),
    "KUMA_API_SERVER_AUTHN_TOKENS_BOOTSTRAP_ADMIN_TOKEN": (
        "apiServer",
        "authn",
        "tokens",
        "bootstrapAdminToken",
    ),
    "KUMA_DP_SERVER_PORT": ("xds", "port"),
    "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": ("dpServer", "authn", "dpProxy", "type"),
    "KUMA_MULTIZONE_ZONE_NAME": ("multizone", "zone", "name"),
    "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS": ("multizone", "zone", "globalAddress"),
    "KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT": ("multizone", "global", "kdsPort"),
    "KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE": ("multizone", "global", "kdsAuth", "type"),
    "KUMA_MULTIZONE_ZONE_KDS_AUTH_TYPE": ("multizone", "zone", "kdsAuth", "type"),
    # Kong Mesh < 3 names first: the newer names, later in this table, win when both are set.
    "KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH": ("multizone", "zone", "kdsAuth", "tokenPath"),
    "KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE": ("multizone", "zone", "kdsAuth", "tokenInline"),
    ZONE_TOKEN_PATH_ENV: ("multizone", "zone", "kdsAuth", "tokenPath"),
    ZONE_TOKEN_INLINE_ENV: ("multizone", "zone", "kdsAuth", "tokenInline"),
    "KUMA_IPAM_MESH_SERVICE_CIDR": ("ipam", "meshService", "cidr"),
    "KUMA_IPAM_MESH_MULTI_ZONE_SERVICE_CIDR": ("ipam", "meshMultiZoneService", "cidr"),
    "ZONEMESH_ZONE_OFFLINE_GRACE": ("multizone", "global", "zoneOfflineGraceS"),
    "ZONEMESH_XDS_DEBOUNCE_QUIET": ("xds", "debounceQuietS"),
    "ZONEMESH_XDS_DEBOUNCE_MAX": ("xds", "debounceMaxS"),
    "ZONEMESH_CERT_VALIDITY": ("xds", "certValidity"),
    **_POSTGRES_ENV_VARS,
    "KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY": ("xds", "dataplaneDeregistrationDelay"),
    "KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE": (
        "runtime",
        "universal",
        "dataplaneCleanupAge",
    ),
}

# `zonemesh cp run` flags -> path in the config.
FLAGS: dict[str, tuple[str, ...]] = {
    "mode": ("mode",),
    "zone": ("multizone", "zone", "name"),
    "global_address": ("multizone", "zone", "globalAddress"),
    "address": ("address",),
    "api_port": ("apiServer", "http", "port"),
    "https_port": ("apiServer", "https", "port"),
    "grpc_plaintext": ("general", "tls", "plaintextGrpc"),
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
        config = CpConfig.model_validate(merged)
    except ValueError as e:  # pydantic.ValidationError is a ValueError
        raise ConfigError(_describe(e)) from None
    check_zone_kds_auth(config)
    return config


def check_zone_kds_auth(config: CpConfig) -> None:
    """A federated zone must be given its zone token (global refuses KDS without one), unless
    it says `kdsAuth.type: none`. Raises ConfigError naming the settings. Only whether one is
    given: the KDS client reads it (and reports an unreadable file) when it starts."""
    auth = config.multizone.zone.kds_auth
    if not config.federated_zone or auth.type == "none":
        return
    if not auth.token_path and not auth.token_inline:
        raise ConfigError(
            f'zone "{config.zone_name}" connects to global but has no zone token: set '
            f"{ZONE_TOKEN_PATH_ENV} (a file holding it) or {ZONE_TOKEN_INLINE_ENV} "
            "(multizone.zone.kdsAuth.tokenPath / tokenInline); global issues it "
            f'(POST /tokens/zone {{"zone": "{config.zone_name}"}} or '
            f"`zonemesh generate zone-token --zone {config.zone_name}`). Only for a global "
            "with KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE=none: KUMA_MULTIZONE_ZONE_KDS_AUTH_TYPE=none"
        )


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
