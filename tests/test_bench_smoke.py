"""The benchmark harness still works: tiny scale, both servers, correctness only.

Speed is never asserted here (it depends on the machine and on whatever else runs on
it); ``make bench`` is where figures come from. What must hold at any scale: messages
are delivered, none is lost, duplicated or reordered, every client registers, and the
harness cleans up after itself.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not installed
from bench import run as bench_run  # noqa: E402


def _check(row: dict[str, Any]) -> None:
    assert "failure" not in row, row.get("failure")
    assert row["failed"] == 0, row["errors"]
    assert row["deliveries_per_s"] > 0
    assert row["sent"] > 0
    assert row["lost"] == 0
    assert row["duplicated"] == 0
    assert row["reorders"] == 0
    assert row["gaps"] == 0
    assert row["rss_start"] > 0 and row["rss_connected"] > 0


@pytest.mark.timeout(60)
def test_saturation_both_servers() -> None:
    opts = bench_run.parse_args(
        [
            "--quick",
            "--scenario",
            "sat100",
            "--n",
            "5",
            "--senders",
            "1",
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ]
    )
    started = time.monotonic()
    report = bench_run.run(opts)
    (scenario,) = report["scenarios"]
    assert set(scenario["runs"]) == {"chatd", "asyncio"}
    for row in scenario["runs"].values():
        _check(row)
        assert row["members"] == 5
        assert row["latency_ms"]["samples"] > 0
    assert "ratio" in bench_run.table(report)
    assert time.monotonic() - started < 20


@pytest.mark.timeout(60)
def test_fixed_rate_with_idle_connections() -> None:
    opts = bench_run.parse_args(
        [
            "--quick",
            "--scenario",
            "idle10k",
            "--servers",
            "chatd",
            "--n",
            "3",
            "--senders",
            "2",
            "--idle",
            "20",
            "--rate",
            "40",
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ]
    )
    report = bench_run.run(opts)
    row = report["scenarios"][0]["runs"]["chatd"]
    _check(row)
    assert row["members"] == 3
    # 40 msgs/s for ~1.2 s, each to 3 members: loosely, because timing is the OS's
    assert 20 <= row["sent"] <= 80


@pytest.mark.timeout(60)
def test_tls_against_plain_in_one_run() -> None:
    pytest.importorskip("cryptography")
    opts = bench_run.parse_args(
        [
            "--quick",
            "--scenario",
            "tls1000",
            "--n",
            "5",
            "--senders",
            "2",
            "--idle",
            "5",
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ]
    )
    report = bench_run.run(opts)
    (scenario,) = report["scenarios"]
    assert set(scenario["runs"]) == {"chatd", "tls"}
    for row in scenario["runs"].values():
        _check(row)
        assert row["members"] == 5
    assert scenario["runs"]["tls"]["tls_clients"] == 10  # every client spoke TLS
    assert scenario["runs"]["chatd"]["tls_clients"] == 0
    assert "tls/pl" in bench_run.table(report)
