"""`zonemesh install transparent-proxy` and `zonemesh uninstall transparent-proxy`."""

from __future__ import annotations

import pwd

import click

from zonemesh.dp.dns import resolv_conf_servers
from zonemesh.tproxy.identity import DP_GROUP
from zonemesh.tproxy.iptables import TransparentProxyError, install, uninstall
from zonemesh.tproxy.rules import RedirectConfig, ipv4_servers


def _ports(value: str, what: str) -> tuple[int, ...]:
    out = []
    for item in filter(None, (p.strip() for p in value.split(","))):
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise click.BadParameter(f"{item!r} is not a port (1-65535)", param_hint=what)
        out.append(int(item))
    return tuple(out)


def _cidrs(value: str, what: str) -> tuple[str, ...]:
    import ipaddress

    out = []
    for item in filter(None, (p.strip() for p in value.split(","))):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is not an IPv4 address or CIDR", param_hint=what
            ) from None
        if network.version != 4:
            raise click.BadParameter(f"{item!r}: only IPv4 is redirected", param_hint=what)
        out.append(str(network))
    return tuple(out)


def _uid(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise click.BadParameter(f"no user {user!r}", param_hint="--kuma-dp-user") from None


@click.group("install")
def install_group() -> None:
    """Set up this host for the mesh."""


@click.group("uninstall")
def uninstall_group() -> None:
    """Undo `zonemesh install …`."""


@install_group.command("transparent-proxy")
@click.option(
    "--kuma-dp-user",
    help="The user `dp run` runs as (name or UID): its traffic is never redirected. "
    f"Without it, the traffic of processes in group {DP_GROUP} is let through, and `dp run` "
    "running as root joins that group itself",
)
@click.option("--redirect-inbound-port", type=int, default=15006, show_default=True)
@click.option("--redirect-outbound-port", type=int, default=15001, show_default=True)
@click.option("--redirect-dns-port", type=int, default=15053, show_default=True)
@click.option(
    "--redirect-inbound/--no-redirect-inbound",
    default=True,
    show_default=True,
    help="Redirect incoming TCP to the inbound port",
)
@click.option(
    "--redirect-dns",
    is_flag=True,
    help="Redirect DNS (UDP and TCP 53) to the nameservers of /etc/resolv.conf to the data "
    "plane's resolver",
)
@click.option(
    "--redirect-all-dns-traffic", is_flag=True, help="Redirect DNS to any address (port 53)"
)
@click.option("--exclude-inbound-ports", default="", help="P,… never redirected inbound")
@click.option("--exclude-outbound-ports", default="", help="P,… never redirected outbound")
@click.option("--exclude-inbound-ips", default="", help="CIDR,… of sources never redirected")
@click.option("--exclude-outbound-ips", default="", help="CIDR,… of destinations never redirected")
@click.option("--dry-run", is_flag=True, help="Print the rules instead of installing them")
def install_transparent_proxy(
    kuma_dp_user: str | None,
    redirect_inbound_port: int,
    redirect_outbound_port: int,
    redirect_dns_port: int,
    redirect_inbound: bool,
    redirect_dns: bool,
    redirect_all_dns_traffic: bool,
    exclude_inbound_ports: str,
    exclude_outbound_ports: str,
    exclude_inbound_ips: str,
    exclude_outbound_ips: str,
    dry_run: bool,
) -> None:
    """Redirect this network namespace's traffic through the data plane (iptables, nat).

    \b
    The app's outgoing TCP goes to --redirect-outbound-port (Envoy's virtual outbound, which
    serves every mesh VIP), incoming TCP to --redirect-inbound-port, and with --redirect-dns
    its DNS to `dp run`'s resolver. Idempotent: installing again replaces zonemesh's rules.
    Refuses if another tool's redirect rules are present.
    \b
    Example:
      zonemesh install transparent-proxy --redirect-dns --exclude-inbound-ports 22
    """
    if redirect_dns and redirect_all_dns_traffic:
        raise click.UsageError("--redirect-dns and --redirect-all-dns-traffic exclude each other")
    for name, port in (
        ("--redirect-inbound-port", redirect_inbound_port),
        ("--redirect-outbound-port", redirect_outbound_port),
        ("--redirect-dns-port", redirect_dns_port),
    ):
        if not 1 <= port <= 65535:
            raise click.BadParameter(f"{port} is not a port (1-65535)", param_hint=name)
    servers = ipv4_servers(resolv_conf_servers()) if redirect_dns else ()
    config = RedirectConfig(
        inbound_port=redirect_inbound_port,
        outbound_port=redirect_outbound_port,
        dns_port=redirect_dns_port,
        redirect_inbound=redirect_inbound,
        dp_uid=_uid(kuma_dp_user) if kuma_dp_user else None,
        redirect_dns=redirect_dns,
        redirect_all_dns=redirect_all_dns_traffic,
        dns_servers=servers,
        exclude_inbound_ports=_ports(exclude_inbound_ports, "--exclude-inbound-ports"),
        exclude_outbound_ports=_ports(exclude_outbound_ports, "--exclude-outbound-ports"),
        exclude_inbound_ips=_cidrs(exclude_inbound_ips, "--exclude-inbound-ips"),
        exclude_outbound_ips=_cidrs(exclude_outbound_ips, "--exclude-outbound-ips"),
    )
    try:
        script, replaced = install(config, dry_run=dry_run)
    except TransparentProxyError as e:
        raise click.ClickException(str(e)) from None
    if dry_run:
        click.echo(script, nl=False)
        return
    if redirect_dns and not servers:
        click.echo("warning: no IPv4 nameserver in /etc/resolv.conf: DNS is not redirected")
    who = f"user {config.dp_uid}" if config.dp_uid is not None else f"group {DP_GROUP}"
    click.echo(
        f"transparent proxy {'re' if replaced else ''}installed: outbound TCP -> "
        f"{redirect_outbound_port}"
        + (f", inbound TCP -> {redirect_inbound_port}" if redirect_inbound else "")
        + (f", DNS -> {redirect_dns_port}" if redirect_dns or redirect_all_dns_traffic else "")
        + f"; traffic of {who} is not redirected"
    )


@uninstall_group.command("transparent-proxy")
def uninstall_transparent_proxy() -> None:
    """Remove every rule and chain `zonemesh install transparent-proxy` created."""
    try:
        removed = uninstall()
    except TransparentProxyError as e:
        raise click.ClickException(str(e)) from None
    click.echo("transparent proxy uninstalled" if removed else "no transparent proxy installed")
