"""bench/web.py at toy scale: it runs, and every member got every message."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("wsproto")

from bench import web  # noqa: E402


def test_web_bench_runs_and_loses_nothing() -> None:
    opts = argparse.Namespace(n=20, senders=2, rate=20.0, duration=1.0, idle=10, server_args=[])
    r = web.run(opts)
    assert r["sent"] > 0
    for kind in ("tcp", "ws"):
        assert r[kind]["deliveries"] == r[kind]["expected"], r
        assert r[kind]["p99_ms"] is not None
