"""A real redis-server for cluster tests (Debian's package), on 127.0.0.1, a free port,
a temporary directory; and chatd nodes pointed at it."""

from __future__ import annotations

import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from helpers import ChatdProcess, wait_until

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


def node(redis: RedisServer | Partition, *extra: str, irc: bool = False) -> ChatdProcess:
    """A chatd node, once it is in sync with the cluster (before, it refuses registration)."""
    proc = ChatdProcess(
        "--cluster", redis.url, "--cluster-ttl-seconds", "2", "--cluster-timeout-seconds", "1",
        *extra, irc=irc,
    )  # fmt: skip
    wait_until(lambda: "in sync" in proc.log(), 10, "the node to join the cluster")
    if "--accounts" not in extra:  # (and to know the cluster's accounts)
        wait_until(lambda: "accounts loaded" in proc.log(), 10, "the node's accounts")
    return proc


class Partition:
    """A TCP relay between one node and Redis that the test can cut (``frozen``: bytes
    stop flowing both ways, connections stay open - as a network partition looks)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.frozen = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        while not self._stop:
            for key, _ in sel.select(0.02):
                if key.data is None:
                    try:
                        down, _ = self.listener.accept()
                        up = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
                    except OSError:
                        continue
                    sel.register(down, selectors.EVENT_READ, up)
                    sel.register(up, selectors.EVENT_READ, down)
                    continue
                if self.frozen:
                    continue
                sock, peer = key.fileobj, key.data
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                    if data:
                        peer.sendall(data)
                        continue
                except OSError:
                    pass
                for s in (sock, peer):
                    try:
                        sel.unregister(s)
                    except (KeyError, ValueError):
                        pass
                    s.close()
            if self.frozen:
                time.sleep(0.02)  # readable sockets would spin the select
        sel.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.listener.close()
