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
