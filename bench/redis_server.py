"""A real ``redis-server`` (Debian's package) for the cluster tests and the Redis
benchmarks, and connections to it: the one place that starts one.

:class:`RedisServer` runs it on 127.0.0.1, a free port, a given directory, no RDB
snapshots and AOF on request; :func:`redis_server` is one in a temporary directory for as
long as a ``with`` lasts. :func:`command` sends one command and parses the reply (setup,
``INFO``); :class:`Conn` is one non-blocking RESP3 socket (commands encoded by
:func:`chatd.redis_link.encode_command`, replies parsed by ``hiredis.Reader``) that counts
its bytes both ways, for a benchmark's own ``selectors`` loop.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hiredis

from bench.chatd_process import stop_process, wait_until
from chatd.redis_link import encode_command

__all__ = [
    "REDIS",
    "Conn",
    "RedisServer",
    "command",
    "counters",
    "free_port",
    "have_redis",
    "redis_server",
]

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


def have_redis() -> bool:
    return Path(REDIS).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` with no RDB snapshots; AOF on request (``appendfsync``)."""

    def __init__(self, workdir: Path, aof: str | None = None) -> None:
        self.dir = workdir
        self.port = free_port()
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [REDIS, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir)]
        args += ["--save", "", "--protected-mode", "no", "--loglevel", "warning"]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", self.aof]
        else:
            args += ["--appendonly", "no"]
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(self.ping, 10, "redis-server to answer")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """One command, raw reply bytes (for assertions on what is stored)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(encode_command(*args))
            return s.recv(1 << 20)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            stop_process(self.proc, 10)


@contextmanager
def redis_server() -> Iterator[int]:
    """A redis-server in a temporary directory (no AOF) for as long as the ``with``
    lasts; its port."""
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        try:
            yield server.port
        finally:
            server.stop()


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


def counters(port: int) -> dict[str, float]:
    """Redis CPU seconds (``cpu``: system + user), its ``total_*`` counters, and commands
    (``calls``, and per command name; scripts' inner calls included, INFO itself not)."""
    info = command(port, "INFO", "all").decode()
    values: dict[str, float] = {"cpu": 0.0, "calls": 0.0}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key in ("used_cpu_sys", "used_cpu_user"):
            values["cpu"] += float(value)
        elif key in ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes"):
            values[key] = float(value)
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
