"""What a `zonemesh` process imports: only what its command needs.

`zonemesh --help` must not load the demo (the lab mesh, its topology, translation), and
`zonemesh dp run`, which runs next to every workload, must not load the control plane's
translation or computed state: it shares names with the CP through `zonemesh.cpdp`. Checked
in a fresh interpreter with `python -X importtime`, which lists every module imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from zonemesh.cli.lazy import LazyCommand
from zonemesh.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


# Runs the console script's entry point in a fresh interpreter and reports `sys.modules` at
# exit (exact, unlike `-X importtime`, which does not log `importlib.import_module`).
PROBE = """
import atexit, json, sys
atexit.register(lambda: print("\\nMODULES " + json.dumps(sorted(sys.modules))))
sys.argv = ["zonemesh", *json.loads(sys.argv[1])]
from zonemesh.cli.main import main
main()
"""


def imported(*args: str) -> tuple[set[str], str]:
    """Modules a fresh `zonemesh <args>` has imported when it exits, and its output."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    out, _, modules = done.stdout.rpartition("\nMODULES ")
    assert done.returncode == 0 and modules, done.stderr[-2000:]
    return set(json.loads(modules)), out


def under(modules: set[str], *packages: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_help_lists_demo_without_importing_it() -> None:
    modules, out = imported("--help")
    assert "demo" in out and "MMZS failover" in out
    assert under(modules, "zonemesh.demo", "zonemesh.lab", "zonemesh.translate") == []


def test_demo_help_loads_the_real_command() -> None:
    modules, out = imported("demo", "--help")
    assert "--ci" in out  # an option only the real command has
    assert "zonemesh.demo.cli" in modules


def test_the_listed_short_help_is_the_commands_own() -> None:
    placeholder = cli.commands["demo"]
    assert isinstance(placeholder, LazyCommand)
    real = placeholder.load()
    assert placeholder.get_short_help_str(200) == real.get_short_help_str(200)
    assert CliRunner().invoke(cli, ["demo", "--help"]).exit_code == 0


def test_the_data_plane_does_not_load_translation_or_computed_state() -> None:
    """`dp run --help` parses like `dp run`, then stops; import its module as the run does."""
    modules, _ = imported("dp", "run", "--help")
    assert under(modules, "zonemesh.demo", "zonemesh.translate") == []
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, zonemesh.dp.run; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=True,
    )
    modules = set(json.loads(done.stdout))
    assert "zonemesh.dp.run" in modules
    assert under(modules, "zonemesh.translate", "zonemesh.state", "zonemesh.xds") == []
