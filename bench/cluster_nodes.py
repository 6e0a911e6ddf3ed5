"""A real redis-server (Debian's package) on 127.0.0.1, a free port, a temporary
directory; and chatd nodes pointed at it. Shared by the cluster tests (through
tests/cluster_helpers.py) and bench/cluster.py.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Protocol

from bench.chatd_process import ChatdProcess, wait_until


class RedisAddress(Protocol):
    """Where a node finds Redis: a ``RedisServer`` or a relay in front of one."""

    @property
    def url(self) -> str: ...


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
            payload = b"*%d\r\n" % len(args) + b"".join(
                b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
            )
            s.sendall(payload)
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
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def node(redis: RedisAddress, *extra: str, irc: bool = False) -> ChatdProcess:
    """A chatd node, once it is in sync with the cluster (before, it refuses registration)."""
    proc = ChatdProcess(
        "--cluster", redis.url, "--cluster-ttl-seconds", "2", "--cluster-timeout-seconds", "1",
        *extra, irc=irc,
    )  # fmt: skip
    wait_until(lambda: "in sync" in proc.log(), 10, "the node to join the cluster")
    if "--accounts" not in extra:  # (and to know the cluster's accounts)
        wait_until(lambda: "accounts loaded" in proc.log(), 10, "the node's accounts")
    return proc
