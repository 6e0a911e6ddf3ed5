"""A real redis-server for cluster tests (Debian's package), on 127.0.0.1, a free port,
a temporary directory (bench/redis_server.py); chatd nodes pointed at it
(bench/cluster_nodes.py; bench/cluster.py uses both); the skip mark and the ``nodes``
fixtures' body the cluster tests share (their ``redis`` fixture is in tests/conftest.py);
a partition relay between a node and Redis."""

from __future__ import annotations

import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bench.chatd_process import ChatdProcess
from bench.cluster_nodes import node
from bench.redis_server import REDIS, RedisServer, free_port, have_redis

__all__ = [
    "REDIS",
    "Partition",
    "RedisServer",
    "free_port",
    "have_redis",
    "needs_redis",
    "node",
    "stopped_after",
]

needs_redis = pytest.mark.skipif(
    not have_redis(), reason="redis-server is not installed (Debian package redis-server)"
)


def stopped_after(started: list[ChatdProcess]) -> Iterator[list[ChatdProcess]]:
    """A ``nodes`` fixture's body: the nodes; after the test, each one's log printed (shown
    when it failed) and each one stopped (killed if it still runs)."""
    try:
        yield started
    finally:
        for proc in started:
            print(f"--- node on {proc.port} ---\n{proc.log()[-4000:]}")
            proc.stop(signal.SIGKILL if proc.proc and proc.proc.poll() is None else 0)


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
