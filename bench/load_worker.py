"""One load-generator worker process: its share of the clients, in one selectors loop
over raw non-blocking sockets (see bench/loadgen.py for the design and the coordinator).

It reads with ``recv_into`` a shared 256 KiB buffer and JSON-decodes no frame once the
handshake is over: most clients count deliveries with one ``bytearray.count`` of the
marker per ``recv``; a sender finds its own echoes with a regex over complete lines; a
checker parses every message's sender, sequence number and send time.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import time
from array import array
from typing import Any

from bench.load_client import CONNECTING, DEAD, HELLO, JOINING, READY, Client
from bench.load_spec import (
    CONNECT_CONCURRENCY,
    LOWER_B,
    MARK,
    RECV_BYTES,
    TEXT_RE,
    TILDE,
    Spec,
    raise_nofile,
    text_for,
)
from chatd.streams import StreamError
from chatd.tls import TlsStream, client_context


class Worker:
    """One load-generator process: a selectors loop over its share of the clients."""

    def __init__(self, spec: Spec, wid: int, pipe: Any) -> None:
        self.spec = spec
        self.wid = wid
        self.pipe = pipe
        self.sel = selectors.DefaultSelector()
        self.buf = bytearray(RECV_BYTES)
        self.view = memoryview(self.buf)
        senders = spec.sender_indices()
        checkers = set(spec.checker_indices())
        total = spec.n + spec.idle
        self.clients: list[Client] = []
        for idx in range(wid, total, spec.procs):
            c = Client(idx, member=idx < spec.n)
            if idx in senders:
                c.sender = True
                c.sid = senders.index(idx)
                c.own_re = re.compile(rb"~b%04d:(\d{9}):(\d{19}):" % c.sid)
            elif idx in checkers:
                c.checker = True
                c.last_seq = [0] * len(senders)
            self.clients.append(c)
        self.n_senders = len(senders)
        self.say_head = b'{"op":"say","room":"%s","text":"' % spec.room.encode()
        self.t_start = self.m0 = self.m1 = 0  # monotonic ns
        self.win0 = self.win1 = 0
        self.cpu0 = self.cpu1 = 0.0
        self.running = False
        self.window_open = False
        self.last_rx = 0
        self.tls_context = client_context() if spec.tls else None

    # ---- plumbing ---------------------------------------------------------------------

    def set_mask(self, c: Client, mask: int) -> None:
        if mask == c.mask:
            return
        if c.mask == 0:
            self.sel.register(c.sock, mask, c)  # type: ignore[arg-type]
        elif mask == 0:
            self.sel.unregister(c.sock)  # type: ignore[arg-type]
        else:
            self.sel.modify(c.sock, mask, c)  # type: ignore[arg-type]
        c.mask = mask

    def flush(self, c: Client) -> None:
        out = c.out
        tls = c.tls
        if tls is not None:  # encrypt what is queued; send the records
            if out:
                tls.send(bytes(out))
                out.clear()
            c.wire += tls.data_to_send()
            out = c.wire
        if out:
            try:
                n = c.sock.send(out)  # type: ignore[union-attr]
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self.kill(c, f"send: {exc}")
                return
            del out[:n]
        self.set_mask(c, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))

    def kill(self, c: Client, why: str) -> None:
        if c.state == DEAD:
            return
        c.error = c.error or why
        c.state = DEAD
        self.set_mask(c, 0)
        c.sock.close()  # type: ignore[union-attr]

    def send_say(self, c: Client, now: int) -> None:
        c.seq += 1
        c.out += self.say_head + text_for(c.sid, c.seq, now) + b'"}\n'
        c.sent += 1
        c.inflight += 1

    # ---- connect and register -----------------------------------------------------------

    def open(self, c: Client) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock, c.fd = s, s.fileno()
        err = s.connect_ex((self.spec.host, self.spec.port))
        if err not in (0, 115):  # 115: EINPROGRESS
            c.state = DEAD
            c.error = os.strerror(err)
            s.close()
            return
        c.state = CONNECTING
        self.set_mask(c, selectors.EVENT_WRITE)

    def on_connected(self, c: Client) -> None:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
        if err:
            self.kill(c, "connect: " + os.strerror(err))
            return
        c.state = HELLO
        if self.tls_context is not None:  # the hello is held until the handshake is done
            c.tls = TlsStream(self.tls_context, server_side=False)
        nick = f"{self.spec.nick_prefix}{c.idx}"
        c.out += json.dumps({"op": "hello", "nick": nick}).encode() + b"\n"
        self.flush(c)

    def on_handshake(self, c: Client, data: bytes) -> None:
        c.hbuf += data
        *lines, c.hbuf = c.hbuf.split(b"\n")
        for line in lines:
            if not line.startswith(b"{"):
                continue  # banner
            try:
                frame = json.loads(line)
            except ValueError:
                self.kill(c, f"bad frame {line[:80]!r}")
                return
            kind = frame.get("type")
            if kind == "error":
                self.kill(c, f"error {frame.get('code')}: {frame.get('message')}")
                return
            if c.state == HELLO and kind == "welcome":
                if c.member:
                    c.state = JOINING
                    c.out += json.dumps({"op": "join", "room": self.spec.room}).encode() + b"\n"
                    self.flush(c)
                else:
                    c.state = READY
            elif c.state == JOINING and kind == "joined":
                c.state = READY
            if c.state == READY:
                c.hbuf = b""
                return

    def connect_all(self) -> None:
        deadline = time.monotonic() + self.spec.connect_timeout
        todo = list(reversed(self.clients))
        pending = 0
        while True:
            while todo and pending < CONNECT_CONCURRENCY:
                c = todo.pop()
                self.open(c)
                if c.state != DEAD:
                    pending += 1
            if not todo and pending == 0:
                return
            if time.monotonic() > deadline:
                for c in self.clients:
                    if c.state not in (READY, DEAD):
                        self.kill(c, "handshake timeout")
                for c in todo:
                    c.state, c.error = DEAD, "not started: connect timeout"
                return
            for key, mask in self.sel.select(0.5):
                c = key.data
                before = c.state
                if c.state == CONNECTING:
                    if mask & selectors.EVENT_WRITE:
                        self.on_connected(c)
                elif mask & selectors.EVENT_READ:
                    self.read_one(c)
                elif mask & selectors.EVENT_WRITE:
                    self.flush(c)
                if before not in (READY, DEAD) and c.state in (READY, DEAD):
                    pending -= 1

    # ---- the hot path -----------------------------------------------------------------

    def read_one(self, c: Client) -> None:
        try:
            n = c.sock.recv_into(self.buf)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError as exc:
            self.kill(c, f"recv: {exc}")
            return
        if n == 0:
            self.kill(c, "closed by server")
            return
        if c.tls is not None:
            self.read_tls(c, n)
            return
        if c.state != READY:
            self.on_handshake(c, bytes(self.view[:n]))
            return
        self.on_data(c, self.buf, n, None)

    def read_tls(self, c: Client, n: int) -> None:
        tls = c.tls
        assert tls is not None
        try:
            plain = tls.receive(bytes(self.view[:n]))
        except StreamError as exc:
            self.kill(c, f"tls: {exc.reason}")
            return
        if c.state != READY:
            self.flush(c)  # handshake replies, the held hello
        if not plain:
            return
        if c.state != READY:
            self.on_handshake(c, plain)
            return
        self.on_data(c, plain, len(plain), plain)

    def on_data(self, c: Client, buf: bytes | bytearray, n: int, raw: bytes | None) -> None:
        """Count (and for senders and checkers, parse) ``n`` received bytes in ``buf``."""
        self.last_rx = 1
        c.count += buf.count(MARK, 0, n) + (c.prev_tilde and buf[0] == LOWER_B)
        c.prev_tilde = buf[n - 1] == TILDE
        if c.sender or c.checker:
            chunk = raw if raw is not None else self.view[:n].tobytes()
            data = c.tail + chunk if c.tail else chunk
            end = data.rfind(b"\n") + 1
            c.tail = data[end:]
            if not end:
                return
            now = time.monotonic_ns()
            if c.sender:
                self.on_own(c, data, end, now)
            else:
                self.on_check(c, data, end, now)
            if b"skipped" in data:
                for m in re.finditer(rb'"skipped"\s*,\s*"count"\s*:\s*(\d+)', data):
                    c.skipped += int(m.group(1))

    def on_own(self, c: Client, data: bytes, end: int, now: int) -> None:
        own = c.own_re.findall(data, 0, end)  # type: ignore[union-attr]
        if not own:
            return
        m0, m1 = self.m0, self.m1
        rtt = c.rtt
        for _seq, t in own:
            t_ns = int(t)
            if m0 <= t_ns < m1:
                rtt.append((now - t_ns) // 1000)
        c.acked += len(own)
        c.inflight -= len(own)
        if self.spec.rate == 0 and self.running and now < m1:
            for _ in range(self.spec.window - c.inflight):
                self.send_say(c, now)
            self.flush(c)

    def on_check(self, c: Client, data: bytes, end: int, now: int) -> None:
        last = c.last_seq
        m0, m1 = self.m0, self.m1
        lat = c.lat
        for sid_b, seq_b, t in TEXT_RE.findall(data, 0, end):
            sid = int(sid_b)
            seq = int(seq_b)
            prev = last[sid]
            if seq != prev + 1:
                if seq > prev:
                    c.gaps += seq - prev - 1
                else:
                    c.reorders += 1
            if seq > prev:
                last[sid] = seq
            t_ns = int(t)
            if m0 <= t_ns < m1:
                lat.append((now - t_ns) // 1000)

    def loop(self) -> None:  # noqa: C901 (the hot loop stays inline: a call per event costs)
        """Wait for "go", run, drain; the same loop keeps reading throughout."""
        sel = self.sel
        pipe_fd = self.pipe.fileno()
        sel.register(pipe_fd, selectors.EVENT_READ, None)
        senders = [c for c in self.clients if c.sender and c.state == READY]
        rate = self.spec.rate
        phase = "wait"
        drain_until = 0
        EVENT_READ, EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
        while True:
            now = time.monotonic_ns()
            timeout = 0.05
            if phase == "wait":
                pass
            elif phase == "run":
                if not self.running and now >= self.t_start:
                    # No counter is reset here: nothing carries the marker before the
                    # first say, and a reset could race with a read already under way.
                    self.running = True
                    if rate == 0:
                        for c in senders:
                            for _ in range(self.spec.window):
                                self.send_say(c, now)
                            self.flush(c)
                if not self.window_open and now >= self.m0:
                    self.window_open = True
                    for c in self.clients:
                        c.snap0 = c.count
                        c.acked0 = c.acked
                    self.win0 = now
                    self.cpu0 = sum(os.times()[:2])
                if now >= self.m1:
                    for c in self.clients:
                        c.snap1 = c.count
                        c.acked1 = c.acked
                    self.win1 = now
                    self.cpu1 = sum(os.times()[:2])
                    self.running = False
                    phase = "drain"
                    self.last_rx = 0
                    quiet_since = now
                    drain_until = now + int(self.spec.drain_max * 1e9)
                elif self.running and rate:
                    for c in senders:
                        if c.next_due <= now:
                            while c.next_due <= now:
                                self.send_say(c, now)
                                c.next_due += c.interval
                            self.flush(c)
                        timeout = min(timeout, max(c.next_due - now, 0) / 1e9)
                elif not self.running:
                    timeout = min(timeout, max(self.t_start - now, 0) / 1e9)
            if phase == "drain":
                if self.last_rx:
                    self.last_rx = 0
                    quiet_since = now
                if (
                    now - quiet_since >= self.spec.drain_quiet * 1e9
                    and all(c.inflight <= 0 for c in senders)
                ) or now >= drain_until:
                    return
            for key, mask in sel.select(timeout):
                c = key.data
                if c is None:
                    msg = self.pipe.recv()
                    if msg[0] == "go":
                        self.t_start, self.m0, self.m1 = msg[1:]
                        phase = "run"
                        if rate:
                            interval = int(1e9 * len(self.spec.sender_indices()) / rate)
                            for c2 in senders:
                                c2.interval = interval
                                # stagger the senders over one interval
                                c2.next_due = self.t_start + interval * c2.sid // max(
                                    self.n_senders, 1
                                )
                    elif msg[0] == "exit":
                        raise SystemExit(0)
                    continue
                if mask & EVENT_READ:
                    self.read_one(c)
                if mask & EVENT_WRITE and c.state != DEAD:
                    self.flush(c)

    def results(self) -> dict[str, Any]:
        members = [c for c in self.clients if c.member]
        win = (self.win1 - self.win0) / 1e9 if self.window_open else 0.0
        lat = array("q")
        rtt = array("q")
        for c in self.clients:
            lat.extend(c.lat)
            rtt.extend(c.rtt)
        return {
            "wid": self.wid,
            "window_s": win,
            "window_deliveries": sum(c.snap1 - c.snap0 for c in self.clients),
            "member_counts": [c.count for c in members if c.state == READY],
            "dead": [(c.idx, c.error) for c in self.clients if c.state == DEAD],
            "sent": {c.sid: c.sent for c in self.clients if c.sender},
            "acked_window": sum(c.acked1 - c.acked0 for c in self.clients if c.sender),
            "last_seq_seen": [c.last_seq for c in self.clients if c.checker],
            "gaps": sum(c.gaps for c in self.clients),
            "reorders": sum(c.reorders for c in self.clients),
            "skipped": sum(c.skipped for c in self.clients),
            "lat_us": lat.tobytes(),
            "rtt_us": rtt.tobytes(),
            "cpu_s": self.cpu1 - self.cpu0,
            "tls": sum(1 for c in self.clients if c.tls is not None and c.tls.ready),
        }


def worker_main(spec: Spec, wid: int, pipe: Any) -> None:
    try:
        if spec.cpus:
            os.sched_setaffinity(0, spec.cpus)
        if spec.nice:
            try:
                os.nice(spec.nice)
            except OSError:
                pass
        raise_nofile()
        w = Worker(spec, wid, pipe)
        w.connect_all()
        ready = [c for c in w.clients if c.state == READY]
        pipe.send(
            ("ready", len(ready), [(c.idx, c.error) for c in w.clients if c.state == DEAD][:20])
        )
        w.loop()
        res = w.results()
        pipe.send(("result", res))
        while True:  # keep the connections open until the coordinator has measured RSS
            msg = pipe.recv()
            if msg[0] == "exit":
                return
    except (KeyboardInterrupt, SystemExit, EOFError, BrokenPipeError):
        return
