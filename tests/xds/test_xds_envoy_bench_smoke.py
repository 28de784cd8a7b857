"""The fan-out benchmark's smoke mode runs its whole path to completion: the multi-zone mesh,
zonemesh and the replay floor with the same simulated proxies, every change kind, the
reconnect storm, and prints every figure with its ratio to the floor.

Only completeness is checked here; the speed figures are the benchmark's to print.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = ROOT / "benchmarks" / "xds_fanout.py"
CHANGE_KINDS = ("address", "new-instance", "remove", "new-service", "mmzs-selector", "ingress-lost")


@pytest.mark.timeout(400)
@pytest.mark.parametrize("mode", ["delta", "sotw"])
def test_smoke_mode_measures_zonemesh_and_the_floor_for_every_change_kind(mode: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--smoke", "--mode", mode, "--json"],
        capture_output=True,
        text=True,
        timeout=380,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["complete"] is True
    (run,) = summary["runs"]
    assert "error" not in run, run["error"]
    for side in ("zonemesh", "floor"):
        figures = run[side]
        assert figures["configured"] == run["proxies"] == 20, side
        assert figures["client_errors"] == [], side
        assert sorted(figures["changes"]) == sorted(CHANGE_KINDS), side
        for kind, reps in figures["changes"].items():
            assert [c["reached"] for c in reps] == [20], (side, kind)
        assert figures["storm"]["configured"] == 20, side
        assert figures["storm"]["unconfigured"] == 0, side
    # The floor served the proxies zonemesh's own bytes: what they held is the same.
    assert run["replay_check"]["identical"] is True, run["replay_check"]
    compared = {row["figure"] for row in run["table"] if row["target"] is not None}
    assert {f"{kind}: p99 (worst rep)" for kind in CHANGE_KINDS} <= compared
    assert {"first config, all proxies", "CP memory per connected proxy"} <= compared
    assert "storm: all reconfigured" in compared
    # The human-readable table: each figure with its ratio to the floor and its target.
    assert "xDS fan-out: 20 proxies" in result.stdout
    assert "ratio" in result.stdout and "<= 2x" in result.stdout
