"""What the load generator is asked to do (``Spec``), the benchmark text it sends, and
what it measured (``LoadResult``): shared by the coordinator (bench/loadgen.py) and its
worker processes (bench/load_worker.py).

Every text starts with the marker ``~b`` (``~`` cannot appear in a nick or in our room
name) followed by the sender id, a sequence number and the send time, padded to 64
characters.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field
from typing import Any

from chatd.fdlimit import raise_fd_limit

MARK = b"~b"  # starts every benchmark text; "~" is not a nick character


TILDE, LOWER_B = MARK[0], MARK[1]


TEXT_CHARS = 64


PAD = b"x" * TEXT_CHARS


TEXT_RE = re.compile(rb"~b(\d{4}):(\d{9}):(\d{19}):")


RECV_BYTES = 256 * 1024


CONNECT_CONCURRENCY = 64  # handshakes in flight per worker: stays far below the backlog


@dataclass
class Spec:
    """Everything a worker needs; picklable."""

    host: str = "127.0.0.1"
    port: int = 7777
    n: int = 100  # members of the room (senders included)
    senders: int = 10
    idle: int = 0  # registered, in no room, silent
    room: str = "#bench"
    rate: float = 0.0  # total msgs/s offered; 0 means saturation (closed loop)
    window: int = 16  # saturation: messages in flight per sender
    checkers: int = 8
    warmup: float = 1.0
    duration: float = 5.0
    drain_quiet: float = 0.5  # after the run: stop once nothing arrived for this long
    drain_max: float = 10.0
    connect_timeout: float = 60.0
    procs: int = 2
    cpus: list[int] | None = None  # pin workers to these CPUs
    nick_prefix: str = "u"
    nice: int = 0  # niceness increment for the workers (negative needs CAP_SYS_NICE)
    tls: bool = False  # every client speaks TLS (chatd.tls.TlsStream, client side)

    def sender_indices(self) -> list[int]:
        s = min(self.senders, self.n)
        return [k * self.n // s for k in range(s)] if s else []

    def checker_indices(self) -> list[int]:
        senders = set(self.sender_indices())
        rest = [i for i in range(self.n) if i not in senders]
        c = min(self.checkers, len(rest))
        if not c:
            return []
        # evenly spread over the join order, always including the last joiner
        return sorted(
            {rest[(len(rest) - 1) - k * (len(rest) - 1) // max(c - 1, 1)] for k in range(c)}
        )


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    return raise_fd_limit()


def text_for(sid: int, seq: int, t_ns: int) -> bytes:
    head = b"~b%04d:%09d:%019d:" % (sid, seq, t_ns)
    return head + PAD[len(head) :]


def percentiles(samples: array[int], points: tuple[float, ...] = (50, 99)) -> dict[str, float]:
    if not samples:
        return {}
    s = sorted(samples)
    out = {f"p{p:g}": s[min(len(s) - 1, int(len(s) * p / 100))] / 1000 for p in points}
    out["max"] = s[-1] / 1000
    out["samples"] = len(s)
    return out  # milliseconds


@dataclass
class LoadResult:
    deliveries_per_s: float = 0.0
    msgs_per_s: float = 0.0
    members: int = 0
    failed: int = 0
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    gaps: int = 0
    reorders: int = 0
    skipped: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)  # checkers, one-way
    rtt_ms: dict[str, float] = field(default_factory=dict)  # senders, own echo
    loadgen_cpu: float = 0.0  # CPU seconds of all workers per second of the window
    errors: list[Any] = field(default_factory=list)
    tls_clients: int = 0  # clients whose TLS handshake completed
