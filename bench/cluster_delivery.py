"""Cluster delivery, measured at the Redis level: pub/sub against ``XREAD BLOCK``.

Run:  python -m bench.cluster_delivery [--quick] [--nodes 3 10 20] [--rooms 10 1000]
                                       [--rates 1000 10000] [--seconds 2] [--fraction 0.25]

Issue #18 left open how a room message reaches the other nodes; chatd publishes it from
the ``XADD`` script (docs/cluster.md). This runs, against one real ``redis-server`` on
127.0.0.1 (no AOF, no snapshots: the storage cost is the same in every mode):

- ``pubsub``: the producer runs chatd's own ``say`` script (``XADD`` + ``PUBLISH`` on one
  channel, :data:`chatd.cluster_scripts.SAY`); every node is subscribed to that channel
  and receives every message, of its rooms or not;
- ``xread``: the producer runs the same script without the ``PUBLISH``; each node loops
  ``XREAD BLOCK 0 STREAMS <its rooms' streams> <last ids>`` on its own connection;
- ``room-pubsub``: the same script publishing on one channel per room; each node is
  subscribed to its rooms' channels (the "next step" of docs/cluster.md).

Each simulated node is a forked process with one ``selectors`` loop and one non-blocking
socket, replies parsed by ``hiredis.Reader``. A node has members in each room with
probability ``--fraction`` (seeded; at least one room). The producer offers ``rate``
messages/s round-robin over the rooms for ``--seconds``; a message carries its room,
its sequence number in the room and the producer's monotonic clock when the command was
queued. Every node checks that it got every message of its rooms once and in order.

Reported per run: latency from the producer queueing the ``XADD`` to receipt at a node
(p50/p99 over every node x message), Redis CPU per message (``used_cpu_sys`` +
``used_cpu_user``), Redis commands per message (``INFO commandstats``, scripts' inner
calls included), bytes per message read by the nodes and sent by them, the nodes' own
CPU per message (summed), and the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import selectors
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import hiredis

from bench.redis_server import Conn, command, counters, have_redis, redis_server
from chatd.cluster_scripts import SAY, sha
from chatd.config import Config

MODES = ("pubsub", "xread", "room-pubsub")
PREFIX = "bench:"
CHANNEL = PREFIX + "ev"
MAXLEN = Config().cluster_stream_maxlen  # chatd's default
# About the size of chatd's message body ({"room","n","t","ts"}; ~100 bytes).
FILLER = "x" * 60
DRAIN_SECONDS = 10.0
READY_SECONDS = 20.0
_PUBLISH = "redis.call('PUBLISH', ARGV[3], 'say ' .. ARGV[4] .. ' ' .. id .. ' ' .. ARGV[2])\n"
if _PUBLISH not in SAY:  # pragma: no cover - chatd's script changed: update this bench
    raise ImportError("chatd.cluster_scripts.SAY no longer has the PUBLISH line this bench drops")
#: chatd's say script without its PUBLISH: what the xread mode runs.
STORE_ONLY = SAY.replace(_PUBLISH, "")


def stream_key(room: int) -> str:
    return f"{PREFIX}s:{room}"


def room_channel(room: int) -> str:
    return f"{PREFIX}c:{room}"


# ---------------------------------------------------------------------- one node


@dataclass
class NodeResult:
    expected: int = 0
    got: int = 0
    gaps: int = 0  # messages of its rooms never received
    disorder: int = 0  # received twice or out of room order
    other: int = 0  # messages of rooms it has no member in (pub/sub on one channel)
    bytes_in: int = 0
    bytes_out: int = 0
    cpu: float = 0.0
    latencies: bytes = b""  # array('d') of seconds


class Node:
    """One simulated chatd node: the rooms it has members in, one Redis connection."""

    def __init__(
        self, port: int, mode: str, rooms: list[int], n_rooms: int, ctl: Connection
    ) -> None:
        self.mode = mode
        self.n_rooms = n_rooms
        self.rooms = set(rooms)
        self.ctl = ctl
        self.conn = Conn(port)
        self.next_seq = dict.fromkeys(rooms, 0)
        self.last_ids = {stream_key(r): "0-0" for r in rooms}
        self.replies = 0
        self.latency = array("d")
        self.result = NodeResult()
        self.sent_total: int | None = None
        self.setup = (0, 0, 0.0)  # bytes in, out and CPU until ready: not counted
        if mode == "pubsub":
            self.conn.send("SUBSCRIBE", CHANNEL)
        elif mode == "room-pubsub":
            self.conn.send("SUBSCRIBE", *[room_channel(r) for r in rooms])
        self.conn.send("PING")  # its reply: subscribed (or connected), ready

    def xread(self) -> None:
        keys = list(self.last_ids)
        self.conn.send("XREAD", "BLOCK", 0, "STREAMS", *keys, *[self.last_ids[k] for k in keys])

    def deliver(self, data: bytes, now: float) -> None:
        room_text, seq_text, stamp, _ = data.split(b" ", 3)
        room = int(room_text)
        if room not in self.rooms:
            self.result.other += 1
            return
        seq = int(seq_text)
        expected = self.next_seq[room]
        if seq > expected:
            self.result.gaps += seq - expected
        elif seq < expected:
            self.result.disorder += 1
            return
        self.next_seq[room] = seq + 1
        self.result.got += 1
        self.latency.append(now - float(stamp))

    def on_reply(self, reply: Any, now: float) -> None:
        if isinstance(reply, hiredis.PushNotification):
            if reply[0] == b"message":  # not a (un)subscribe confirmation
                self.deliver(reply[2].split(b" ", 3)[3], now)  # say NODE ID DATA
            return
        self.replies += 1
        if self.replies == 2:  # HELLO, then PING: subscribed / connected
            self.ctl.send("ready")
            self.setup = (self.conn.bytes_in, self.conn.bytes_out, time.process_time())
            if self.mode == "xread":
                self.xread()
        elif self.replies > 2:  # an XREAD answered: {stream: [[id, [b"m", data]], ...]}
            streams = reply.items() if isinstance(reply, dict) else reply
            for key, entries in streams:
                for _id, fields in entries:
                    self.deliver(fields[1], now)
                self.last_ids[key.decode()] = entries[-1][0].decode()
            self.xread()

    def done(self) -> bool:
        return self.sent_total is not None and self.result.got >= self.result.expected

    def run(self) -> NodeResult:
        sel = selectors.DefaultSelector()
        sel.register(self.conn.sock, selectors.EVENT_READ, self.conn)
        sel.register(self.ctl.fileno(), selectors.EVENT_READ, None)
        deadline = float("inf")
        while not self.done() and time.monotonic() < deadline:
            for key, _ in sel.select(0.05):
                if key.data is None:
                    self.sent_total = int(self.ctl.recv())
                    self.result.expected = self.expected(self.sent_total)
                    deadline = time.monotonic() + DRAIN_SECONDS
                    continue
                now = time.monotonic()
                for reply in self.conn.read():
                    self.on_reply(reply, now)
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.conn.flush() else 0)
            sel.modify(self.conn.sock, mask, self.conn)
        result = self.result
        bytes_in, bytes_out, cpu = self.setup
        result.cpu = time.process_time() - cpu
        result.bytes_in = self.conn.bytes_in - bytes_in
        result.bytes_out = self.conn.bytes_out - bytes_out
        result.gaps += sum(self.expected_in(r) - self.next_seq[r] for r in self.rooms)
        result.latencies = self.latency.tobytes()
        return result

    def expected_in(self, room: int) -> int:
        """Messages sent to ``room``: they go round-robin over the rooms."""
        sent, n_rooms = self.sent_total or 0, self.n_rooms
        return sent // n_rooms + (1 if room < sent % n_rooms else 0)

    def expected(self, sent_total: int) -> int:
        return sum(self.expected_in(r) for r in self.rooms)


def node_process(port: int, mode: str, rooms: list[int], n_rooms: int, ctl: Connection) -> None:
    node = Node(port, mode, rooms, n_rooms, ctl)
    ctl.send(asdict(node.run()))


# ---------------------------------------------------------------------- the producer


def produce(port: int, mode: str, n_rooms: int, rate: float, seconds: float) -> int:
    """Offer ``rate`` messages/s for ``seconds``; wait for every reply; messages sent."""
    conn = Conn(port)
    script = sha(STORE_ONLY if mode == "xread" else SAY)
    sel = selectors.DefaultSelector()
    sel.register(conn.sock, selectors.EVENT_READ)
    interval = 1.0 / rate
    start = time.monotonic()
    next_send = start
    sent = replies = 0
    while True:
        now = time.monotonic()
        sending = now - start < seconds
        while sending and next_send <= now:
            room = sent % n_rooms
            channel = room_channel(room) if mode == "room-pubsub" else CHANNEL
            data = f"{room} {sent // n_rooms} {time.monotonic():.7f} {FILLER}"
            conn.send("EVALSHA", script, 1, stream_key(room), MAXLEN, data, channel, "p")
            sent += 1
            next_send += interval
        more = conn.flush()
        if not sending and replies >= sent and not more:
            break
        wait = max(0.0, next_send - time.monotonic()) if sending else 0.05
        sel.modify(conn.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if more else 0))
        if sel.select(wait):
            replies += sum(isinstance(r, bytes) for r in conn.read())  # stream ids, not HELLO
    sel.close()
    conn.sock.close()
    return sent


# ---------------------------------------------------------------------- one run


@dataclass
class Row:
    mode: str
    nodes: int
    rooms: int
    rate: float
    fraction: float
    sent: int = 0
    offered_rate: float = 0.0
    expected: int = 0
    received: int = 0
    lost: int = 0
    disorder: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    redis_cpu_us: float = 0.0
    redis_calls: float = 0.0
    calls_by_name: dict[str, float] = field(default_factory=dict)
    bytes_to_nodes: float = 0.0
    bytes_from_nodes: float = 0.0
    node_cpu_us: float = 0.0
    loadavg: float = 0.0


def assign_rooms(nodes: int, rooms: int, fraction: float, seed: int) -> list[list[int]]:
    """Which rooms each node has members in: each with probability ``fraction``."""
    rng = random.Random(seed)
    out = []
    for _ in range(nodes):
        mine = [r for r in range(rooms) if rng.random() < fraction]
        out.append(mine or [rng.randrange(rooms)])
    return out


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


def run_one(port: int, row: Row, seconds: float, seed: int) -> Row:
    command(port, "FLUSHALL")
    for script in (SAY, STORE_ONLY):
        command(port, "SCRIPT", "LOAD", script)
    ctx = multiprocessing.get_context("fork")
    plan = assign_rooms(row.nodes, row.rooms, row.fraction, seed)
    children = []
    for rooms in plan:
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(
            target=node_process, args=(port, row.mode, rooms, row.rooms, child_end), daemon=True
        )
        proc.start()
        child_end.close()
        children.append((proc, parent_end))
    try:
        for _, ctl in children:
            if not ctl.poll(READY_SECONDS) or ctl.recv() != "ready":
                raise RuntimeError(f"a {row.mode} node did not get ready")
        before = counters(port)
        load = os.getloadavg()[0]
        started = time.monotonic()
        row.sent = produce(port, row.mode, row.rooms, row.rate, seconds)
        row.offered_rate = row.sent / max(1e-9, time.monotonic() - started)
        for _, ctl in children:
            ctl.send(row.sent)
        results = []
        for _, ctl in children:
            if not ctl.poll(DRAIN_SECONDS + READY_SECONDS):
                raise RuntimeError(f"a {row.mode} node did not report")
            results.append(NodeResult(**ctl.recv()))
        after = counters(port)
        row.loadavg = max(load, os.getloadavg()[0])
    finally:
        for proc, ctl in children:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            ctl.close()
    return summarise(row, results, before, after)


def summarise(
    row: Row, results: list[NodeResult], before: dict[str, float], after: dict[str, float]
) -> Row:
    per = 1.0 / max(1, row.sent)
    latencies: list[float] = []
    for result in results:
        latencies.extend(array("d", result.latencies))
    latencies.sort()
    row.expected = sum(r.expected for r in results)
    row.received = sum(r.got for r in results)
    row.lost = sum(r.gaps for r in results)
    row.disorder = sum(r.disorder for r in results)
    row.p50_ms, row.p99_ms = percentile(latencies, 50), percentile(latencies, 99)
    row.redis_cpu_us = (after["cpu"] - before["cpu"]) * per * 1e6
    row.redis_calls = (after["calls"] - before["calls"]) * per
    row.calls_by_name = {
        k: round((v - before.get(k, 0)) * per, 3)
        for k, v in after.items()
        if k not in ("cpu", "calls") and v - before.get(k, 0) > 0
    }
    row.bytes_to_nodes = sum(r.bytes_in for r in results) * per
    row.bytes_from_nodes = sum(r.bytes_out for r in results) * per
    row.node_cpu_us = sum(r.cpu for r in results) * per * 1e6
    return row


# ---------------------------------------------------------------------- report


HEADER = (
    f"{'mode':<12}{'K':>3}{'R':>6}{'rate/s':>8}{'sent':>7}{'lost':>6}{'p50 ms':>8}"
    f"{'p99 ms':>8}{'Redis us':>9}{'cmds':>7}{'B->nodes':>10}{'B<-nodes':>10}"
    f"{'node us':>9}{'load':>6}"
)


def format_row(row: Row) -> str:
    return (
        f"{row.mode:<12}{row.nodes:>3}{row.rooms:>6}{row.offered_rate:>8.0f}{row.sent:>7}"
        f"{row.lost + row.disorder:>6}{row.p50_ms:>8.1f}{row.p99_ms:>8.1f}"
        f"{row.redis_cpu_us:>9.1f}{row.redis_calls:>7.2f}{row.bytes_to_nodes:>10.0f}"
        f"{row.bytes_from_nodes:>10.0f}{row.node_cpu_us:>9.1f}{row.loadavg:>6.1f}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small matrix, ~15 s")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--nodes", nargs="+", type=int, help="K values (default 3 10 20)")
    parser.add_argument("--rooms", nargs="+", type=int, help="R values (default 10 1000)")
    parser.add_argument("--rates", nargs="+", type=float, help="messages/s (default 1000 10000)")
    parser.add_argument("--seconds", type=float, help="offered load per run (default 2)")
    parser.add_argument("--fraction", type=float, default=0.25, help="rooms a node is in")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.nodes = args.nodes or ([3, 10] if quick else [3, 10, 20])
    args.rooms = args.rooms or [10, 1000]
    args.rates = args.rates or ([1000.0] if quick else [1000.0, 10000.0])
    args.seconds = args.seconds or (0.5 if quick else 2.0)
    if not 0 < args.fraction <= 1:
        parser.error("--fraction must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not have_redis():
        print("redis-server is not installed: skipping the cluster delivery benchmark")
        return 0
    rows = []
    print(
        "per message: Redis us = Redis CPU; cmds = Redis commands (scripts' inner calls "
        "included); B->nodes / B<-nodes = bytes the nodes read / sent; node us = the nodes' "
        f"CPU, summed; lost = missed + duplicated + reordered (fraction {args.fraction})"
    )
    print(HEADER)
    with redis_server() as port:
        for rate in args.rates:
            for rooms in args.rooms:
                for nodes in args.nodes:
                    for mode in args.modes:
                        row = Row(mode, nodes, rooms, rate, args.fraction)
                        rows.append(run_one(port, row, args.seconds, args.seed))
                        print(format_row(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 1 if any(r.lost or r.disorder or r.received != r.expected for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
