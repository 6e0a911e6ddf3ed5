"""Tools the abuse scenarios share: crowds of raw sockets, an RSS sampler, frames, round
trips and the server's health check.

The scenarios (bench/abuse_crowds.py, bench/abuse_traffic.py, bench/abuse_server.py,
bench/abuse_text.py) run at the tests' size under pytest and at a larger size under
``make stress`` (bench/stress.py); the tests assert on the figures they return.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.chatd_process import ChatdProcess, JsonClient
from chatd.fdlimit import raise_fd_limit

MiB = 1024  # figures are in KiB


def raise_nofile_or_exit(count: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to ``count`` for a stress scenario, or
    stop with the reason."""
    got = raise_fd_limit(count)
    if got < count:
        raise SystemExit(f"bench.stress: need RLIMIT_NOFILE {count}, could raise it to {got}")


# The crowds of these scenarios all connect from 127.0.0.1 but stand for many hosts:
# per-address limits (tests/test_abuse_server.py proves them) are off for them.
MANY_HOSTS = ("--max-clients-per-ip", "0")


def strict_loads(line: str | bytes) -> Any:
    """json.loads that refuses NaN/Infinity: what a non-Python client would accept."""

    def refuse(name: str) -> Any:
        raise ValueError(f"server sent {name}, which is not JSON")

    return json.loads(line, parse_constant=refuse)


class RssSampler:
    """Samples a process's RSS every few milliseconds in a thread; keeps the peak."""

    def __init__(self, server: ChatdProcess, interval: float = 0.02) -> None:
        self.server = server
        self.interval = interval
        self.start_kib = server.rss_kib()
        self.peak_kib = self.start_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, self.server.rss_kib())
            except (OSError, AssertionError):
                return  # the process is gone; the test will say so
            self._stop.wait(self.interval)

    def stop(self) -> int:
        """Stop sampling; return the peak growth over the start, in KiB (the kernel's
        high-water mark counts too, so a spike between two samples is not missed)."""
        self._stop.set()
        self._thread.join()
        with open(f"/proc/{self.server.pid}/status") as fh:
            hwm = next(int(x.split()[1]) for x in fh if x.startswith("VmHWM:"))
        return max(self.peak_kib, hwm) - self.start_kib


class Swarm:
    """Many non-blocking client sockets driven from one selector: the test's side of a
    crowd. Lines received are handed to ``on_line(index, line)`` (default: kept in
    ``lines[index]``); a socket that reaches EOF or a reset is noted in ``closed``."""

    def __init__(
        self,
        socks: list[socket.socket],
        on_line: Callable[[int, bytes], None] | None = None,
        on_data: Callable[[int, bytes], None] | None = None,
    ) -> None:
        self.socks = socks
        self.on_data = on_data  # if set: raw chunks instead of lines (cheap, for crowds)
        self.sel = selectors.DefaultSelector()
        self.bufs = [b""] * len(socks)
        self.lines: list[list[bytes]] = [[] for _ in socks]
        self.closed: dict[int, float] = {}  # index -> when EOF/reset was seen
        self.on_line = on_line or (lambda i, line: self.lines[i].append(line))
        for i, s in enumerate(socks):
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, i)

    def send_all(self, data: bytes | Callable[[int], bytes]) -> None:
        """Send a small payload to every open socket (it must fit the kernel buffer)."""
        for i, s in enumerate(self.socks):
            if i in self.closed:
                continue
            payload = data(i) if callable(data) else data
            try:
                sent = s.send(payload)
            except (BrokenPipeError, ConnectionResetError):
                self._mark_closed(i)
                continue
            assert sent == len(payload), "payload did not fit the socket buffer"

    def send_pumping(self, i: int, data: bytes, timeout: float = 10) -> None:
        """Send all of ``data`` on socket ``i``, reading every socket while it waits (the
        server stops reading a client whose replies pile up unread)."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                view = view[self.socks[i].send(view) :]
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AssertionError(f"socket {i} stayed unwritable") from None
                self.pump(0.01)

    def _mark_closed(self, i: int) -> None:
        if i not in self.closed:
            self.closed[i] = time.monotonic()
            self.sel.unregister(self.socks[i])

    def pump(self, timeout: float = 0.05) -> int:
        """Read whatever is ready once; return the number of lines delivered."""
        count = 0
        for key, _ in self.sel.select(timeout):
            i = key.data
            try:
                chunk = self.socks[i].recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self._mark_closed(i)
                continue
            if self.on_data is not None:
                self.on_data(i, chunk)
                continue
            data = self.bufs[i] + chunk
            *complete, self.bufs[i] = data.split(b"\n")
            for line in complete:
                self.on_line(i, line)
            count += len(complete)
        return count

    def pump_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            self.pump(0.05)

    def close(self) -> None:
        self.sel.close()
        for s in self.socks:
            s.close()


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def frame(**obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def chat_round_trip(
    clients: list[JsonClient], speaker: int, room: str, tag: str, timeout: float = 5.0
) -> float:
    """``speaker`` says ``tag`` in ``room``; seconds until every client has it (an upper
    bound: clients are read one after the other)."""
    start = time.monotonic()
    clients[speaker].say(room, tag)
    for client in clients:
        client.expect_frame(timeout=timeout, type="msg", text=tag)
    return time.monotonic() - start


def server_healthy(server: ChatdProcess) -> None:
    """The process is alive and never hit the loop's 'this is a bug' handler."""
    assert server.proc is not None and server.proc.poll() is None, server.log()[-3000:]
    log = server.log()
    assert "bug while serving" not in log and "Traceback" not in log, log[-5000:]


def _low_nofile(limit: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child before exec: soft and hard, so the
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # server cannot lift it

    return preexec
