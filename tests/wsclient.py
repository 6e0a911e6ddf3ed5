"""A small blocking WebSocket client for tests (wsproto over a socket), and raw frames."""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import time
from typing import Any

from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One client frame, built by hand so tests can also break the rules."""
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


class WsClient:
    """Connects, upgrades at /ws, and exchanges text messages (JSON helpers too)."""

    def __init__(
        self,
        port: int,
        *,
        origin: str | None = "same",
        host: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if tls is not None:  # wss: the handshake is done here
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.ws = WSConnection(ConnectionType.CLIENT)
        host = host or f"127.0.0.1:{port}"
        extra: list[tuple[bytes, bytes]] = []
        if origin == "same":
            scheme = "https" if tls is not None else "http"
            extra.append((b"Origin", f"{scheme}://{host}".encode()))
        elif origin is not None:
            extra.append((b"Origin", origin.encode()))
        self.sock.sendall(self.ws.send(Request(host=host, target="/ws", extra_headers=extra)))
        self.events: list[Event] = []
        self.closed: CloseConnection | None = None
        self.rejected: int | None = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for event in self._pump():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    self.rejected = event.status_code
                    return
        raise AssertionError("no handshake answer")

    def _pump(self, timeout: float = 5.0) -> list[Event]:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        self.ws.receive_data(data or None)
        events = list(self.ws.events())
        for event in events:
            if isinstance(event, CloseConnection):
                self.closed = event
        return [e for e in events if not isinstance(e, RejectData)]

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, **obj: Any) -> None:
        self.send_text(json.dumps(obj))

    def read_text(self, timeout: float = 5.0) -> str | None:
        """The next text message; None when the connection closed or time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if isinstance(event, Message):
                    del self.events[i]
                    assert isinstance(event.data, str)
                    return event.data
            if self.closed is not None or time.monotonic() > deadline:
                return None
            try:
                got = self._pump(max(0.01, deadline - time.monotonic()))
            except OSError:
                return None
            self.events.extend(got)

    def expect_frame(self, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.read_text(max(0.01, deadline - time.monotonic()))
            if text is None:
                break
            frame: dict[str, Any] = json.loads(text)
            if all(frame.get(k) == v for k, v in match.items()):
                return frame
        raise AssertionError(f"no frame matching {match} (closed: {self.closed})")

    def wait_closed(self, timeout: float = 5.0) -> CloseConnection:
        deadline = time.monotonic() + timeout
        while self.closed is None and time.monotonic() < deadline:
            try:
                self.events.extend(self._pump(max(0.01, deadline - time.monotonic())))
            except OSError:
                self.closed = CloseConnection(code=1006)
        assert self.closed is not None, "still open"
        return self.closed

    def close(self) -> None:
        self.sock.close()
