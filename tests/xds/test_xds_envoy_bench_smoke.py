"""The fan-out benchmark's smoke mode runs to completion: every simulated proxy configured.

Only completeness is checked here; the speed figures are the benchmark's to print.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "xds_fanout.py"


@pytest.mark.timeout(110)
@pytest.mark.parametrize("mode", ["delta", "sotw"])
def test_smoke_mode_configures_every_proxy_and_delivers_every_change(mode: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--smoke", "--mode", mode, "--json"],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert "error" not in summary, summary["error"]
    assert summary["configured"] == summary["proxies"] == 20
    assert summary["client_errors"] == []
    assert len(summary["changes"]) == 2
    assert all(change["reached"] == 20 for change in summary["changes"])
    assert "xDS fan-out: 20 proxies" in result.stdout  # the human-readable table
