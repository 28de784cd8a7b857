"""Applying and removing the redirect rules in the current network namespace.

Through `iptables-save` / `iptables-restore --noflush`, as Kuma does: whichever backend the
system's `iptables` is (nf_tables on current distributions, legacy otherwise), and each
change is one atomic transaction, so a failure leaves the table as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from zonemesh.tproxy.rules import (
    NatTable,
    RedirectConfig,
    install_script,
    parse_nat,
    uninstall_script,
)

TIMEOUT_S = 30
CAP_NET_ADMIN = 12


class TransparentProxyError(Exception):
    """Something the user must fix; printed as is."""


@dataclass(frozen=True)
class Tools:
    save: str
    restore: str


def find_tools() -> Tools:
    save, restore = shutil.which("iptables-save"), shutil.which("iptables-restore")
    if save is None or restore is None:
        raise TransparentProxyError(
            "iptables-save and iptables-restore are needed and were not found on PATH "
            "(Debian/Ubuntu: apt-get install iptables)"
        )
    return Tools(save, restore)


def require_net_admin() -> None:
    """Root, or at least CAP_NET_ADMIN: without it the kernel refuses every change."""
    if os.geteuid() == 0:
        return
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:") and int(line.split()[1], 16) >> CAP_NET_ADMIN & 1:
                    return
    except OSError:
        pass
    raise TransparentProxyError(
        "changing the network namespace's iptables rules needs root (CAP_NET_ADMIN); "
        "run it with sudo"
    )


def _run(args: list[str], stdin: str | None = None) -> str:
    try:
        result = subprocess.run(
            args, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TransparentProxyError(f"{args[0]}: {e}") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise TransparentProxyError(f"{' '.join(args)} failed: {detail}")
    return result.stdout


def read_nat(tools: Tools) -> NatTable:
    return parse_nat(_run([tools.save, "-t", "nat"]))


def install(config: RedirectConfig, *, dry_run: bool = False) -> tuple[str, bool]:
    """Install (replacing ours if present); (the rules applied, whether ours were there).

    Refuses, changing nothing, when another tool's redirect rules are present."""
    tools = find_tools()
    if not dry_run:
        require_net_admin()
    existing = read_nat(tools) if not dry_run or os.geteuid() == 0 else NatTable()
    if existing.foreign:
        raise TransparentProxyError(
            "refusing to install: the nat table has redirect rules from another tool, "
            "which would conflict with zonemesh's:\n  "
            + "\n  ".join(existing.foreign)
            + "\nremove them first (e.g. kumactl uninstall transparent-proxy)"
        )
    script = install_script(config, existing)
    if not dry_run:
        _run([tools.restore, "--noflush"], script)
    return script, existing.installed


def uninstall() -> bool:
    """Remove zonemesh's rules and chains; False if there were none (nothing changed)."""
    tools = find_tools()
    require_net_admin()
    existing = read_nat(tools)
    if not existing.installed:
        return False
    _run([tools.restore, "--noflush"], uninstall_script(existing))
    return True


def saved_rules() -> str:
    """`iptables-save -t nat`: what is installed now."""
    return _run([find_tools().save, "-t", "nat"])
