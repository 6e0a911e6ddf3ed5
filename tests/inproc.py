"""An in-process server on 127.0.0.1 (port 0), its loop in a thread, for tests that need to
reach inside the server (its listeners' streams, its stats) while talking real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from chatd.config import Config
from chatd.server import Server


class InProcessServer:
    """``with InProcessServer(config) as srv:`` runs ``srv.server`` until the block ends.

    Add listeners with :meth:`listen` before entering (the loop thread starts in
    ``__enter__``)."""

    def __init__(self, config: Config | None = None, **server_kwargs: Any) -> None:
        self.config = config or Config(host="127.0.0.1", port=0, rate_limit=0)
        self.server = Server(self.config, **server_kwargs)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def listen(self, **kwargs: Any) -> int:
        """Open a listener on 127.0.0.1 port 0 (``Server.listen`` arguments); its port."""
        return self.server.listen("127.0.0.1", 0, **kwargs)[1]

    def connect(self, port: int, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        return sock

    def __enter__(self) -> InProcessServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.request_stop("test over")
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the server loop did not stop"


def read_until(
    sock: socket.socket, done: Callable[[bytes], bool], decode: Callable[[bytes], bytes] = bytes
) -> bytes:
    """Read (through ``decode``) until ``done(data so far)``; the socket's timeout bounds it."""
    data = b""
    while not done(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += decode(chunk)
    return data


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SteppedServer:
    """A server the test drives turn by turn (no thread), on a :class:`FakeClock`.

    Timers fire only when the test moves the clock; waits are bounded by turns, not time.
    """

    def __init__(self, **config: Any) -> None:
        config.setdefault("host", "127.0.0.1")
        config.setdefault("port", 0)
        config.setdefault("rate_limit", 0)
        self.clock = FakeClock()
        self.server = Server(Config(**config), clock=self.clock)
        self.port = self.server.listen("127.0.0.1", 0)[1]
        self.socks: list[socket.socket] = []

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", self.port))
        sock.setblocking(False)
        self.socks.append(sock)
        before = self.server.stats["accepted"]
        self.until(lambda: self.server.stats["accepted"] > before)
        return sock

    def turn(self, count: int = 1) -> None:
        for _ in range(count):
            self.server.run_once(0.005)

    def until(self, condition: Callable[[], bool], turns: int = 2000) -> None:
        for _ in range(turns):
            if condition():
                return
            self.server.run_once(0.005)
        raise AssertionError(f"not reached in {turns} turns")

    def advance(self, seconds: float) -> None:
        """Move the clock and run a turn, so the timers now due fire."""
        self.clock.advance(seconds)
        self.turn(2)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.server.close()


def drain(sock: socket.socket) -> bytes:
    """Everything the (non-blocking) socket has now; b"" if nothing."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return data
        if not chunk:
            return data
        data += chunk


def is_closed(sock: socket.socket) -> bool:
    """True once the peer has closed (EOF or reset), after reading what was there."""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except (BlockingIOError, InterruptedError):
        return False
    except ConnectionResetError:
        return True
