"""Cluster benchmark: N members over 3 chatd nodes sharing Redis, against one plain node.

Run:  python -m bench.cluster [--clients 1000] [--rooms 10] [--senders 30] [--rate 300]

Both setups get the same load in the same run: N JSON clients (round-robin over the
nodes) in R rooms, S senders (spread over the nodes too) offering ``rate`` messages/s in
total for ``seconds``. Each message carries its send time; every member records the
delay. Reported per setup: deliveries/s, latency p50/p99 (in the cluster: same-node and
cross-node apart), loss, and from Redis ``INFO``: top-level commands, all commands
(scripts' inner calls included) and bytes in/out per message. Everything on 127.0.0.1,
bounded in time; redis-server and the nodes are killed on exit.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.chatd_process import ChatdProcess
from bench.cluster_nodes import node
from bench.redis_server import RedisServer, counters, have_redis


@dataclass
class Member:
    sock: socket.socket
    node: int
    room: str
    buf: bytes = b""
    ready: bool = False
    got: int = 0


@dataclass
class Result:
    deliveries: int = 0
    same: list[float] = field(default_factory=list)
    cross: list[float] = field(default_factory=list)
    sent: int = 0
    seconds: float = 0.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


def connect(ports: list[int], clients: int, rooms: int) -> list[Member]:
    members = []
    for i in range(clients):
        port_index = i % len(ports)
        sock = socket.create_connection(("127.0.0.1", ports[port_index]))
        sock.setblocking(False)
        room = f"#r{i % rooms}"
        hello = {"op": "hello", "nick": f"u{i}"}
        join = {"op": "join", "room": room}
        sock.sendall((json.dumps(hello) + "\n" + json.dumps(join) + "\n").encode())
        members.append(Member(sock, port_index, room))
    return members


def pump(sel: selectors.BaseSelector, result: Result | None, timeout: float) -> None:
    for key, _ in sel.select(timeout):
        member: Member = key.data
        try:
            data = member.sock.recv(1 << 16)
        except BlockingIOError:
            continue
        if not data:
            raise SystemExit("a node closed a member's connection")
        lines = (member.buf + data).split(b"\n")
        member.buf = lines.pop()
        now = time.time()
        for line in lines:
            if b'"history_end"' in line:
                member.ready = True
            elif result is not None and b'"msg"' in line:
                frame = json.loads(line)
                if frame.get("history"):
                    continue
                origin, stamp = frame["text"].split(" ", 1)
                result.deliveries += 1
                delay = now - float(stamp)
                (result.same if int(origin) == member.node else result.cross).append(delay)


def run(ports: list[int], args: argparse.Namespace, mark: Callable[[], None]) -> Result:
    members = connect(ports, args.clients, args.rooms)
    sel = selectors.DefaultSelector()
    for member in members:
        sel.register(member.sock, selectors.EVENT_READ, member)
    deadline = time.monotonic() + 60
    while not all(m.ready for m in members):
        if time.monotonic() > deadline:
            raise SystemExit("members did not all join in 60 s")
        pump(sel, None, 0.05)
    senders = members[: args.senders]
    result = Result()
    mark()
    interval = 1.0 / args.rate
    start = time.monotonic()
    next_send = start
    i = 0
    while time.monotonic() - start < args.seconds:
        now = time.monotonic()
        while next_send <= now:
            sender = senders[i % len(senders)]
            say = {"op": "say", "room": sender.room, "text": f"{sender.node} {time.time():.6f}"}
            sender.sock.send((json.dumps(say) + "\n").encode())
            result.sent += 1
            i += 1
            next_send += interval
        pump(sel, result, max(0.0, next_send - time.monotonic()))
    drain = time.monotonic() + 3
    while time.monotonic() < drain:
        pump(sel, result, 0.05)
    mark()
    result.seconds = args.seconds
    for member in members:
        member.sock.close()
    sel.close()
    return result


def report(name: str, result: Result, expected: float) -> None:
    both = result.same + result.cross
    print(
        f"{name}: {result.sent} msgs, {result.deliveries} deliveries "
        f"({result.deliveries / result.seconds:,.0f}/s; {result.deliveries / expected:.1%} of "
        f"expected), p50 {pct(both, 50):.1f} ms p99 {pct(both, 99):.1f} ms"
    )
    if result.cross:
        print(
            f"  same-node p50 {pct(result.same, 50):.1f} p99 {pct(result.same, 99):.1f} ms; "
            f"cross-node p50 {pct(result.cross, 50):.1f} p99 {pct(result.cross, 99):.1f} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--senders", type=int, default=30)
    parser.add_argument("--rate", type=float, default=300.0, help="messages/s in total")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    if not have_redis():
        print("redis-server is not installed: skipping the cluster benchmark")
        return 0
    expected_per_msg = args.clients / args.rooms
    common = ["--rate-limit", "0", "--max-clients", str(args.clients + 100)]
    common += ["--max-clients-per-ip", "0"]  # every client is on 127.0.0.1
    single = ChatdProcess(*common)
    try:
        result = run([single.port], args, lambda: None)
        report("one node (SQLite in memory)", result, result.sent * expected_per_msg)
    finally:
        single.stop()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp), aof="everysec")
        procs = []
        try:
            procs = [node(redis, *common) for _ in range(args.nodes)]
            marks: list[dict[str, float]] = []
            result = run([p.port for p in procs], args, lambda: marks.append(counters(redis.port)))
            before, after = marks
            name = f"{args.nodes} nodes + Redis"
            report(name, result, result.sent * expected_per_msg)
            per = {k: (after[k] - before.get(k, 0)) / max(1, result.sent) for k in after}
            inner = ", ".join(
                f"{k} {v:.2f}"
                for k, v in sorted(per.items())
                if k.islower()
                and k not in ("calls", "cpu")
                and not k.startswith("total")
                and v >= 0.01
            )
            print(
                f"  Redis per message (heartbeats included): {per['calls']:.2f} commands "
                f"counting scripts' inner calls ({inner}); {per['total_net_input_bytes']:.0f} B "
                f"in, {per['total_net_output_bytes']:.0f} B out; Redis CPU "
                f"{per['cpu'] * 1e6:.0f} us"
            )
        finally:
            for proc in procs:
                proc.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
