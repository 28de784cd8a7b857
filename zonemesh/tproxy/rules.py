"""The redirect rules, as `iptables-restore` input, and what is already in the nat table.

Kuma's layout, in chains of zonemesh's own name so that uninstall removes exactly them:

    PREROUTING -p tcp -> ZONEMESH_INBOUND: excluded ports and sources RETURN,
                         the rest -> ZONEMESH_INBOUND_REDIRECT -> REDIRECT 15006
    OUTPUT            -> ZONEMESH_OUTPUT, in order:
        1. the data plane (its user, or the group `identity.DP_GROUP`) -> RETURN
        2. with DNS redirection: UDP and TCP to port 53 of the resolv.conf nameservers
           (or of any address) -> REDIRECT 15053, the data plane's resolver
        3. out of `lo` (the host's own addresses, explicit outbounds on 127.x) -> RETURN
        4. excluded ports and destinations -> RETURN
        5. the rest of TCP -> ZONEMESH_OUTBOUND_REDIRECT -> REDIRECT 15001

Every rule carries the comment `COMMENT`. IPv4 only (the mesh's VIPs are IPv4).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from zonemesh.tproxy.identity import DP_GROUP

COMMENT = "zonemesh/transparent-proxy"
PREFIX = "ZONEMESH_"
INBOUND = "ZONEMESH_INBOUND"
INBOUND_REDIRECT = "ZONEMESH_INBOUND_REDIRECT"
OUTPUT = "ZONEMESH_OUTPUT"
OUTBOUND_REDIRECT = "ZONEMESH_OUTBOUND_REDIRECT"
CHAINS = (INBOUND, INBOUND_REDIRECT, OUTPUT, OUTBOUND_REDIRECT)
BUILTIN_HOOKS = ("PREROUTING", "OUTPUT")

# Chains other tools install for the same job: their rules would fight ours.
FOREIGN_CHAINS = {"KUMA_": "Kuma (kumactl install transparent-proxy)", "ISTIO_": "Istio"}
_REDIRECTING_TARGETS = ("REDIRECT", "DNAT", "TPROXY")
MULTIPORT_MAX = 15  # ports per `-m multiport` rule


@dataclass(frozen=True)
class RedirectConfig:
    inbound_port: int = 15006
    outbound_port: int = 15001
    dns_port: int = 15053
    redirect_inbound: bool = True
    dp_uid: int | None = None
    redirect_dns: bool = False
    redirect_all_dns: bool = False
    dns_servers: tuple[str, ...] = ()  # IPv4 nameservers to capture (redirect_dns)
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_inbound_ips: tuple[str, ...] = ()
    exclude_outbound_ips: tuple[str, ...] = ()
    group: int = DP_GROUP


@dataclass
class NatTable:
    """`iptables-save -t nat`, split into what is ours and what could conflict."""

    ours_jumps: list[str] = field(default_factory=list)  # "-A PREROUTING ..." lines
    ours_chains: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # why another tool's rules are in the way

    @property
    def installed(self) -> bool:
        return bool(self.ours_jumps or self.ours_chains)


def parse_nat(save: str, config: RedirectConfig | None = None) -> NatTable:
    """Read `iptables-save -t nat` output. Foreign: chains of other transparent proxies, and
    redirecting rules in PREROUTING/OUTPUT that are not ours."""
    table = NatTable()
    in_nat = False
    seen_tools: set[str] = set()
    for raw in save.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            in_nat = line == "*nat"
            continue
        if not in_nat or not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            chain = line[1:].split()[0]
            if chain.startswith(PREFIX):
                table.ours_chains.append(chain)
            for prefix, tool in FOREIGN_CHAINS.items():
                if chain.startswith(prefix) and tool not in seen_tools:
                    seen_tools.add(tool)
                    table.foreign.append(f"{tool}: chain {chain}")
            continue
        if not line.startswith("-A "):
            continue
        chain = line.split()[1]
        if chain not in BUILTIN_HOOKS:
            continue
        if COMMENT in line or re.search(rf"-j {PREFIX}\w+", line):
            table.ours_jumps.append(line)
            continue
        target = _target(line)
        if target in _REDIRECTING_TARGETS:
            table.foreign.append(f"a {target} rule not installed by zonemesh: {line}")
    return table


def _target(line: str) -> str:
    parts = shlex.split(line)
    for i, part in enumerate(parts):
        if part == "-j" and i + 1 < len(parts):
            return parts[i + 1]
    return ""


def _rule(chain: str, *spec: str) -> str:
    return " ".join(["-A", chain, *spec, "-m", "comment", "--comment", f'"{COMMENT}"'])


def _port_groups(ports: tuple[int, ...]) -> list[str]:
    ordered = sorted(set(ports))
    return [
        ",".join(str(p) for p in ordered[i : i + MULTIPORT_MAX])
        for i in range(0, len(ordered), MULTIPORT_MAX)
    ]


def _removal(table: NatTable) -> list[str]:
    """Delete our jumps from the built-in chains, then flush and delete our chains."""
    lines = ["-D" + jump[2:] for jump in table.ours_jumps]
    lines += [f"-F {chain}" for chain in table.ours_chains]
    lines += [f"-X {chain}" for chain in table.ours_chains]
    return lines


def uninstall_script(table: NatTable) -> str:
    return "\n".join(["*nat", *_removal(table), "COMMIT", ""])


def install_script(config: RedirectConfig, existing: NatTable | None = None) -> str:
    """One transaction: ours removed (if present), then installed afresh."""
    lines = ["*nat", *(_removal(existing) if existing is not None else [])]
    lines += [f":{chain} - [0:0]" for chain in CHAINS]
    # Inbound.
    if config.redirect_inbound:
        lines.append(
            _rule(INBOUND_REDIRECT, "-p tcp", f"-j REDIRECT --to-ports {config.inbound_port}")
        )
        for group in _port_groups(config.exclude_inbound_ports):
            lines.append(_rule(INBOUND, "-p tcp -m multiport", f"--dports {group}", "-j RETURN"))
        for cidr in config.exclude_inbound_ips:
            lines.append(_rule(INBOUND, f"-s {cidr}", "-j RETURN"))
        lines.append(_rule(INBOUND, "-p tcp", f"-j {INBOUND_REDIRECT}"))
    # Outbound, in the order of the module docstring.
    lines.append(_rule(OUTPUT, f"-m owner --gid-owner {config.group} --suppl-groups", "-j RETURN"))
    if config.dp_uid is not None:
        lines.append(_rule(OUTPUT, f"-m owner --uid-owner {config.dp_uid}", "-j RETURN"))
    if config.redirect_dns or config.redirect_all_dns:
        targets = [None] if config.redirect_all_dns else list(config.dns_servers)
        for server in targets:
            where = [f"-d {server}/32"] if server else []
            for proto in ("udp", "tcp"):
                lines.append(
                    _rule(
                        OUTPUT,
                        *where,
                        f"-p {proto} --dport 53",
                        f"-j REDIRECT --to-ports {config.dns_port}",
                    )
                )
    lines.append(_rule(OUTPUT, "-o lo", "-j RETURN"))
    for group in _port_groups(config.exclude_outbound_ports):
        lines.append(_rule(OUTPUT, "-p tcp -m multiport", f"--dports {group}", "-j RETURN"))
    for cidr in config.exclude_outbound_ips:
        lines.append(_rule(OUTPUT, f"-d {cidr}", "-j RETURN"))
    lines.append(
        _rule(OUTBOUND_REDIRECT, "-p tcp", f"-j REDIRECT --to-ports {config.outbound_port}")
    )
    lines.append(_rule(OUTPUT, "-p tcp", f"-j {OUTBOUND_REDIRECT}"))
    # The hooks.
    if config.redirect_inbound:
        lines.append(_rule("PREROUTING", "-p tcp", f"-j {INBOUND}"))
    lines.append(_rule("OUTPUT", f"-j {OUTPUT}"))
    return "\n".join([*lines, "COMMIT", ""])


def ipv4_servers(servers: list[str]) -> tuple[str, ...]:
    """The IPv4 nameservers among `servers` (the rules are IPv4 only)."""
    out = []
    for server in servers:
        try:
            if ipaddress.ip_address(server).version == 4:
                out.append(server)
        except ValueError:
            continue
    return tuple(out)
