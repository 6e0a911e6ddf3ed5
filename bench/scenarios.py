"""The scenarios of ``make bench`` (bench/run.py): their full and ``--quick`` sizes,
which ones compare chatd with itself over TLS or with the bare selectors loop too, and
the load-generator ``Spec`` for one of them.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.load_spec import Spec

SCENARIOS: dict[str, dict[str, Any]] = {
    "sat100": dict(n=100, senders=10, rate=0.0, idle=0, label="N=100 S=10 saturation"),
    "sat1000": dict(n=1000, senders=10, rate=0.0, idle=0, label="N=1000 S=10 saturation"),
    "rate1000": dict(n=1000, senders=10, rate=100.0, idle=0, label="N=1000 S=10 100 msg/s offered"),
    "idle10k": dict(
        n=10, senders=10, rate=100.0, idle=10000, label="10k idle + 10 active, 100 msg/s"
    ),
    "history": dict(
        n=1000, senders=10, rate=0.0, idle=0, label="N=1000 S=10 saturation, history off vs on"
    ),
    "tls1000": dict(n=1000, senders=10, rate=0.0, idle=0, label="N=1000 S=10 sat., TLS vs plain"),
    "tlsrate": dict(
        n=1000, senders=10, rate=100.0, idle=0, label="N=1000 S=10 100 msg/s, TLS vs plain"
    ),
    "tlsidle": dict(
        n=10, senders=10, rate=100.0, idle=2000, label="2k idle + 10 active, TLS vs plain"
    ),
    "unbatched": dict(n=1000, senders=10, rate=100.0, idle=0, label="N=1000 100 msg/s, unbatched"),
}


#: Scenarios that compare chatd with itself over TLS (whatever --servers says).
TLS_SCENARIOS = ("tls1000", "tlsrate", "tlsidle")


# Scenarios that also run the bare selectors loop (bench/baseline_selectors.py).
WITH_FLOOR = {"unbatched"}


QUICK: dict[str, dict[str, Any]] = {
    "sat100": dict(n=20, senders=4),
    "sat1000": dict(n=60, senders=5),
    "rate1000": dict(n=60, senders=5, rate=50.0),
    "idle10k": dict(n=5, senders=5, rate=50.0, idle=200),
    "history": dict(n=60, senders=5),
    "tls1000": dict(n=60, senders=5),
    "tlsrate": dict(n=60, senders=5, rate=50.0),
    "tlsidle": dict(n=5, senders=5, rate=50.0, idle=200),
    "unbatched": dict(n=60, senders=5, rate=50.0),
}


def spec_for(name: str, opts: argparse.Namespace, loadgen_cpus: list[int] | None) -> Spec:
    params = dict(SCENARIOS[name])
    params.pop("label")
    if opts.quick:
        params.update(QUICK[name])
    for key in ("n", "senders", "rate", "idle"):
        value = getattr(opts, key)
        if value is not None:
            params[key] = value
    total = params["n"] + params["idle"]
    procs = opts.procs or max(2, len(loadgen_cpus or [0, 0]))
    procs = min(procs, max(1, total))
    return Spec(
        nice=opts.nice,
        n=params["n"],
        senders=params["senders"],
        rate=params["rate"],
        idle=params["idle"],
        window=opts.window,
        checkers=opts.checkers,
        warmup=opts.warmup,
        duration=opts.duration,
        procs=procs,
        cpus=loadgen_cpus,
        drain_max=10.0 if not opts.quick else 3.0,
        connect_timeout=120.0 if total > 2000 else 30.0,
    )
