"""The cluster delivery benchmark still works: tiny scale, every mode, correctness only.

Speed is never asserted (``make bench-cluster-delivery`` is where figures come from).
What must hold at any scale: every node receives every message of the rooms it has
members in, once and in each room's order, in every delivery mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_helpers import needs_redis

from bench.cluster_delivery import MODES

ROOT = Path(__file__).resolve().parent.parent

pytestmark = needs_redis


@pytest.mark.timeout(120)
def test_every_mode_delivers_every_message_to_every_node_that_should(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    args = ["--quick", "--nodes", "2", "4", "--rooms", "3", "50", "--rates", "300"]
    args += ["--seconds", "0.3", "--fraction", "0.5", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cluster_delivery", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    wanted = {(m, k, r) for m in MODES for k in (2, 4) for r in (3, 50)}
    assert {(row["mode"], row["nodes"], row["rooms"]) for row in rows} == wanted
    for row in rows:
        assert row["sent"] > 0, row
        assert row["expected"] > 0, row  # every node has at least one room
        assert row["received"] == row["expected"], row
        assert row["lost"] == 0 and row["disorder"] == 0, row
        assert row["p50_ms"] >= 0 and row["p99_ms"] >= row["p50_ms"], row
        assert row["redis_calls"] >= 2, row  # at least EVALSHA and XADD per message
    lines = proc.stdout.splitlines()
    for mode in MODES:  # the printed table has one line per run
        assert sum(line.split()[:1] == [mode] for line in lines) == 4, proc.stdout
