"""A real ``redis-server`` for the Redis benchmarks, and non-blocking connections to it.

Debian's ``redis-server`` on 127.0.0.1, a free port, a temporary directory, no AOF and no
snapshots; :class:`Conn` is one non-blocking RESP3 socket (commands encoded by
:func:`chatd.redis_link.encode_command`, replies parsed by ``hiredis.Reader``) that
counts its bytes both ways, for a benchmark's own ``selectors`` loop.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hiredis

from chatd.redis_link import encode_command

__all__ = ["Conn", "command", "counters", "free_port", "redis_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(port: int, *args: str | int) -> Any:
    """One command on a short-lived connection (setup and INFO, outside the measured
    path); the reply parsed by hiredis."""
    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(encode_command(*args))
        while True:
            data = s.recv(1 << 16)
            if not data:
                raise ConnectionError("redis-server closed the connection")
            reader.feed(data)
            reply = reader.gets()
            if reply is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(f"Redis: {reply}")
                return reply


@contextmanager
def redis_server() -> Iterator[int]:
    """A redis-server on 127.0.0.1, a free port, a temporary directory; its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (Debian package redis-server)")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", tmp]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    command(port, "PING")
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.02)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def counters(port: int) -> dict[str, float]:
    """Redis CPU seconds and commands (per command name, inner calls included)."""
    info = command(port, "INFO", "all").decode()
    values: dict[str, float] = {"cpu": 0.0, "calls": 0.0}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key in ("used_cpu_sys", "used_cpu_user"):
            values["cpu"] += float(value)
        elif key.startswith("cmdstat_") and not key.startswith("cmdstat_info"):
            calls = float(value.split("calls=")[1].split(",")[0])
            values["calls"] += calls
            values[key[len("cmdstat_") :]] = calls
    return values


# ---------------------------------------------------------------------- connections


class Conn:
    """A non-blocking RESP3 connection: pipelined commands out, hiredis replies in,
    bytes counted both ways."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.reader = hiredis.Reader()
        self.out = bytearray(encode_command("HELLO", 3))
        self.bytes_in = 0
        self.bytes_out = 0

    def send(self, *args: str | int) -> None:
        self.out += encode_command(*args)

    def flush(self) -> bool:
        """Send what the socket takes; True if something is left."""
        if self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                sent = 0
            del self.out[:sent]
            self.bytes_out += sent
        return bool(self.out)

    def read(self) -> list[Any]:
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionError("redis-server closed the connection")
        self.bytes_in += len(data)
        self.reader.feed(data)
        replies = []
        while (reply := self.reader.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                raise RuntimeError(f"Redis: {reply}")
            replies.append(reply)
        return replies
