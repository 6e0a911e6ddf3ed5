"""Web port benchmark: fan-out to WebSocket members against JSON-over-TCP members of the
same room, in the same run, on one chatd process (issue 16).

N members join one room, half over WebSocket (``--web-port``), half over the native port
in JSON mode. A few TCP senders offer a fixed total rate; every member receives every
message. Server frames are unmasked, so a WebSocket member counts deliveries the same way
a TCP member does: occurrences of the marker ``~b`` in the raw bytes (C speed, no
parsing). A few checkers of each kind also parse each message's send time (one-way
latency, p50/p99). Then the memory of an idle connection of each kind: the server's RSS
before and after ``--idle`` registered connections that join no room, divided by their
number.

    python -m bench.web [--n 1000] [--rate 100] [--duration 10] [--idle 1000] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LISTEN_RE = re.compile(r"listening on \S+:(\d+) \((\w+)\)")
TEXT_RE = re.compile(rb"~b(\d{4}):(\d{9}):(\d{19}):")
MARK = b"~b"
ROOM = "#bench"
CHECKERS = 8  # per kind


def ws_frame(payload: bytes) -> bytes:
    """A client text frame with the all-zero mask (valid, and free to apply)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\x00\x00\x00\x00" + payload


@dataclass
class Member:
    sock: socket.socket
    kind: str  # "ws" or "tcp"
    checker: bool = False
    buf: bytes = b""  # handshake phase, and a checker's tail
    ready: bool = False
    count: int = 0
    tail: int = 0  # last byte of the previous read (a marker split in two)
    latencies: list[int] = field(default_factory=list)

    def send_json(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj).encode()
        self.sock.sendall(ws_frame(line) if self.kind == "ws" else line + b"\n")


def start_server(extra: list[str]) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    out = Path(f"/tmp/chatd-bench-web-{os.getpid()}.log")
    cmd = [sys.executable, "-m", "chatd", "--host", "127.0.0.1", "--port", "0", "--web-port",
           "0", "--rate-limit", "0", "--db", ":memory:", "--log-level", "warning",
           "--max-clients", "20000", "--max-clients-per-ip", "0", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with out.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(ports) < 2:
        ports = {m.group(2): int(m.group(1)) for m in LISTEN_RE.finditer(out.read_text())}
        if proc.poll() is not None:
            raise RuntimeError(out.read_text())
        time.sleep(0.02)
    return proc, ports, out


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(ports: dict[str, int], kind: str, n: int, join: bool, tag: str) -> list[Member]:
    """Open ``n`` members of ``kind``, register them (and join), wait until all are in."""
    members = []
    sel = selectors.DefaultSelector()
    for i in range(n):
        port = ports["web" if kind == "ws" else "native"]
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        m = Member(s, kind)
        if kind == "ws":
            nonce = base64.b64encode(os.urandom(16))
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n" % (port, nonce))  # fmt: skip
        m.send_json({"op": "hello", "nick": f"{tag}{kind}{i}"})
        if join:
            m.send_json({"op": "join", "room": ROOM})
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, m)
        members.append(m)
    want = b'"history_end"' if join else b'"welcome"'
    waiting = len(members)
    deadline = time.monotonic() + 120
    while waiting and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            m = key.data
            m.buf += m.sock.recv(65536)
            if not m.ready and want in m.buf:
                m.ready = True
                m.buf = b""
                waiting -= 1
    sel.close()
    if waiting:
        raise RuntimeError(f"{waiting} {kind} members did not get in")
    return members


def _read(m: Member, buf: bytearray, got: int) -> None:
    """Count the deliveries in one read; a checker also takes their latencies."""
    m.count += buf.count(MARK, 0, got) + (m.tail == 0x7E and buf[0] == 0x62)
    m.tail = buf[got - 1] if got else 0
    if m.checker:
        data = m.buf + bytes(buf[:got])
        now_ns = time.monotonic_ns()
        for _s, _q, sent in TEXT_RE.findall(data):
            m.latencies.append(now_ns - int(sent))
        m.buf = data[-64:]


def _fan_out(opts: argparse.Namespace, members: list[Member], senders: list[Member]) -> int:
    """Offer ``opts.rate`` messages/s for ``opts.duration`` s and read every delivery;
    returns how many messages were sent."""
    sel = selectors.DefaultSelector()
    for m in members:
        sel.register(m.sock, selectors.EVENT_READ, m)
    buf = bytearray(256 * 1024)
    interval = opts.senders / opts.rate  # per sender
    start = time.monotonic()
    next_send = [start + i * interval / opts.senders for i in range(opts.senders)]
    seq = [0] * opts.senders
    end = start + opts.duration
    while True:
        now = time.monotonic()
        if now < end:
            for i, s in enumerate(senders):
                if now >= next_send[i]:
                    text = b"~b%04d:%09d:%019d:" % (i, seq[i], time.monotonic_ns())
                    seq[i] += 1
                    s.sock.sendall(b'{"op":"say","room":"%s","text":"%s%s"}\n'
                                   % (ROOM.encode(), text, b"x" * 20))  # fmt: skip
                    next_send[i] += interval
        elif sum(m.count for m in members) >= sum(seq) * len(members) or now > end + 30:
            break
        for key, _ in sel.select(0.002):
            _read(key.data, buf, key.data.sock.recv_into(buf))
    sel.close()
    return sum(seq)


def _summary(group: list[Member], sent: int, seconds: float) -> dict[str, Any]:
    lat = sorted(x for m in group if m.checker for x in m.latencies)
    got = sum(m.count for m in group)
    return {
        "members": len(group),
        "deliveries": got,
        "expected": sent * len(group),
        "deliveries_per_s": round(got / seconds),
        "p50_ms": round(lat[len(lat) // 2] / 1e6, 2) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99)] / 1e6, 2) if lat else None,
    }


def run(opts: argparse.Namespace) -> dict[str, Any]:
    proc, ports, log = start_server(opts.server_args)
    try:
        half = opts.n // 2
        tcp = connect(ports, "tcp", half, True, "t")
        ws = connect(ports, "ws", opts.n - half, True, "w")
        members = tcp + ws
        for group in (tcp, ws):  # checkers spread over the join order
            for i in range(CHECKERS):
                group[i * len(group) // CHECKERS].checker = True
        start, cpu0 = time.monotonic(), cpu(proc.pid)
        sent = _fan_out(opts, members, tcp[: opts.senders])
        result: dict[str, Any] = {
            "n": opts.n,
            "rate": opts.rate,
            "sent": sent,
            "seconds": round(time.monotonic() - start, 2),
            "server_cpu_s": round(cpu(proc.pid) - cpu0, 2),
            "tcp": _summary(tcp, sent, opts.duration),
            "ws": _summary(ws, sent, opts.duration),
        }
        for m in members:
            m.sock.close()
        time.sleep(1.0)
        for kind in ("tcp", "ws"):
            before = rss(proc.pid)
            idle = connect(ports, kind, opts.idle, False, "i" + kind[0])
            time.sleep(0.5)
            result[f"idle_{kind}_bytes"] = round((rss(proc.pid) - before) / opts.idle)
            for m in idle:
                m.sock.close()
            time.sleep(1.5)
        return result
    finally:
        proc.terminate()
        proc.wait(10)
        log.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="room members (half WebSocket)")
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--rate", type=float, default=50.0, help="messages/s offered in total")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--idle", type=int, default=1000, help="idle connections per kind")
    p.add_argument("--json", action="store_true")
    p.add_argument("server_args", nargs="*", help="extra chatd flags (after --)")
    opts = p.parse_args(argv)
    r = run(opts)
    if opts.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"web fan-out: N={r['n']} in one room, {r['rate']:g} msg/s offered, "
          f"{r['sent']} sent, server CPU {r['server_cpu_s']} s")  # fmt: skip
    print(f"{'kind':<6} {'members':>8} {'deliv/s':>9} {'lost':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in ("tcp", "ws"):
        g = r[kind]
        lost = g["expected"] - g["deliveries"]
        print(f"{kind:<6} {g['members']:>8} {g['deliveries_per_s']:>9} {lost:>6} "
              f"{g['p50_ms']!s:>8} {g['p99_ms']!s:>8}")  # fmt: skip
    print(f"idle connection: tcp {r['idle_tcp_bytes']} B, websocket {r['idle_ws_bytes']} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
