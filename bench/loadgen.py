"""Load generator for the chatd benchmark (issue 5).

N clients connect to 127.0.0.1, register (``hello``) and join one room; S of them send
``say`` requests whose 64-character text carries the sender id, a sequence number and the
send time; every member (the sender included) receives each message. Optionally, extra
*idle* clients only register (they join no room: 10,000 members of one room would turn
"idle" into a fan-out test, and their 50 million join notices into the whole run).

Two ways to offer load:

* saturation (closed loop): each sender keeps at most ``window`` messages in flight and
  counts its own echoed ``msg`` as completion;
* fixed rate (open loop): the senders together offer ``rate`` messages per second.

Cheap enough per received line not to be the bottleneck
--------------------------------------------------------
Clients are spread round-robin over several worker processes, each one selectors loop
over raw non-blocking sockets, reading with ``recv_into`` a shared 256 KiB buffer. No
frame is JSON-decoded once the handshake is over. Every text starts with the marker
``~b`` (``~`` cannot appear in a nick or in our room name), so for most clients counting
deliveries is one ``bytearray.count`` per ``recv`` -- C speed, no copy -- plus a one-byte
check for a marker split across two reads. Three roles look closer:

* a *sender* finds its own echoes with a compiled regex over complete lines (its window
  and its round-trip time);
* a few *checkers* (spread over the join order, so over the server's fan-out order)
  parse every message's sender, sequence number and send time with one ``findall`` per
  read: one-way latency, sequence gaps and reordering per sender;
* every member counts deliveries, so loss (and duplication) is checked for *all*
  members: after the run each must have received exactly what the senders sent.

Timing uses ``time.monotonic_ns()``, which on Linux is one clock for every process.

The coordinator side is :class:`LoadGen` (here); a worker process is
bench/load_worker.py, one client's state bench/load_client.py, the spec, the text format
and the result bench/load_spec.py. ``bench/run.py`` drives it around a server
subprocess. It can also be pointed at a running server::

    python -m bench.loadgen --port 7777 --n 100 --senders 10 --duration 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from array import array
from dataclasses import asdict
from typing import Any

from bench.load_spec import LoadResult, Spec, percentiles, raise_nofile
from bench.load_worker import worker_main

__all__ = ["LoadGen", "LoadResult", "Spec", "raise_nofile", "run_load"]


class LoadGen:
    """The coordinator's handle on the worker processes."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.ctx = mp.get_context("fork")
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        self.ready = 0
        self.errors: list[Any] = []

    def start(self) -> None:
        for wid in range(self.spec.procs):
            ours, theirs = self.ctx.Pipe()
            p = self.ctx.Process(
                target=worker_main,
                args=(self.spec, wid, theirs),
                name=f"loadgen-{wid}",
                daemon=True,
            )
            p.start()
            theirs.close()
            self.procs.append(p)
            self.pipes.append(ours)

    def _recv(self, pipe: Any, deadline: float) -> Any:
        if not pipe.poll(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("load generator worker did not answer")
        return pipe.recv()

    def wait_ready(self) -> int:
        deadline = time.monotonic() + self.spec.connect_timeout + 10
        for pipe in self.pipes:
            _, n, errors = self._recv(pipe, deadline)
            self.ready += n
            self.errors.extend(errors)
        return self.ready

    def go(self, lead: float = 0.2) -> tuple[float, float, float]:
        """Start sending; returns (start, window start, window end) in monotonic seconds."""
        t0 = time.monotonic_ns() + int(lead * 1e9)
        m0 = t0 + int(self.spec.warmup * 1e9)
        m1 = m0 + int(self.spec.duration * 1e9)
        for pipe in self.pipes:
            pipe.send(("go", t0, m0, m1))
        return t0 / 1e9, m0 / 1e9, m1 / 1e9

    def collect(self) -> LoadResult:
        deadline = (
            time.monotonic() + self.spec.warmup + self.spec.duration + self.spec.drain_max + 15
        )
        parts = [self._recv(pipe, deadline)[1] for pipe in self.pipes]
        r = LoadResult()
        sent_total = sum(v for p in parts for v in p["sent"].values())
        r.sent = sent_total
        counts = [n for p in parts for n in p["member_counts"]]
        r.members = len(counts)
        r.failed = self.spec.n + self.spec.idle - self.ready
        r.lost = sum(max(0, sent_total - n) for n in counts)
        r.duplicated = sum(max(0, n - sent_total) for n in counts)
        r.deliveries_per_s = sum(
            p["window_deliveries"] / p["window_s"] for p in parts if p["window_s"]
        )
        r.msgs_per_s = sum(p["acked_window"] / p["window_s"] for p in parts if p["window_s"])
        r.gaps = sum(p["gaps"] for p in parts)
        r.reorders = sum(p["reorders"] for p in parts)
        r.skipped = sum(p["skipped"] for p in parts)
        lat, rtt = array("q"), array("q")
        for p in parts:
            lat.frombytes(p["lat_us"])
            rtt.frombytes(p["rtt_us"])
        r.rtt_ms = percentiles(rtt)
        # A sender receiving its own echo is a delivery like any other: with no checker
        # (every member sends, as in the idle scenario) its timings are the latency.
        r.latency_ms = percentiles(lat) if lat else r.rtt_ms
        r.loadgen_cpu = sum(p["cpu_s"] / p["window_s"] for p in parts if p["window_s"])
        r.errors = self.errors + [d for p in parts for d in p["dead"]][:20]
        r.tls_clients = sum(p["tls"] for p in parts)
        return r

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("exit",))
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(1)
        for pipe in self.pipes:
            pipe.close()

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_load(spec: Spec) -> LoadResult:
    with LoadGen(spec) as lg:
        lg.start()
        lg.wait_ready()
        lg.go()
        return lg.collect()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="drive a running chat server (see bench/run.py)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    for name in ("n", "senders", "idle", "window", "checkers", "procs"):
        p.add_argument(f"--{name}", type=int, default=getattr(Spec, name))
    for name in ("rate", "warmup", "duration"):
        p.add_argument(f"--{name}", type=float, default=getattr(Spec, name))
    a = p.parse_args(argv)
    spec = Spec(
        host=a.host,
        port=a.port,
        n=a.n,
        senders=a.senders,
        idle=a.idle,
        window=a.window,
        checkers=a.checkers,
        procs=a.procs,
        rate=a.rate,
        warmup=a.warmup,
        duration=a.duration,
    )
    print(json.dumps(asdict(run_load(spec)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
