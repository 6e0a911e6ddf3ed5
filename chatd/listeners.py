"""Listening sockets: accepting (capped per loop turn, backing off when out of
descriptors), the socket options of a new connection, and refusing when full.

A :class:`Listener` is a loop :class:`~chatd.loop.Handler`. It says what its connections
speak: a fixed codec (IRC) or None (the native port picks text or JSON by the first
line), and which byte stream they run over (:mod:`chatd.streams`): one built for every
connection (``make_stream``), one chosen by sniffing the first bytes (``sniff_stream``),
or none (plain TCP).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from typing import Protocol

from chatd.codecs import Codec, JsonCodec
from chatd.config import Config
from chatd.loop import Loop
from chatd.model import Error
from chatd.streams import StreamFactory, StreamSniffer

__all__ = [
    "Acceptor",
    "Listener",
    "configure_socket",
    "format_peer",
    "native_banner",
    "open_socket",
    "refuse",
]

logger = logging.getLogger(__name__)

# accept() errors that mean "out of resources": back off instead of spinning.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Acceptor(Protocol):
    """What a listener hands its new sockets to (the server)."""

    def adopt(self, sock: socket.socket, addr: object, listener: Listener) -> None: ...


class Listener:
    """A listening socket, what its connections speak, and its accept loop."""

    def __init__(
        self,
        sock: socket.socket,
        name: str,
        make_codec: Callable[[], Codec] | None,
        banner: bytes,
        make_stream: StreamFactory | None = None,
        sniff_stream: StreamSniffer | None = None,
        turn_away: bytes | None = None,
        handshake_seconds: float | None = None,
        refuse_with: Callable[[socket.socket, str], None] | None = None,
    ) -> None:
        if make_stream is not None and sniff_stream is not None:
            raise ValueError("a listener has make_stream or sniff_stream, not both")
        self.sock = sock
        self.name = name
        self.make_codec = make_codec
        self.banner = banner
        self.make_stream = make_stream
        self.sniff_stream = sniff_stream
        # Every newcomer is told this and closed at accept, like a full server's (the
        # plain IRC port when TLS is required).
        self.turn_away = turn_away
        # A connection whose stream is not ready this long after accept is cut without a
        # word (a TLS handshake that stalls); None: no such deadline.
        self.handshake_seconds = handshake_seconds
        # Takes over a newcomer refused when full, with the reason, to answer it in its
        # own time (the web port's 503: chatd.web.refusal); None: one send, then close.
        self.refuse_with = refuse_with
        self.mask = 0
        self.paused = False  # after EMFILE: not watched for a while
        self.loop: Loop | None = None
        self.acceptor: Acceptor | None = None
        self.max_accepts = 1
        self.retry_seconds = 1.0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def refusal(self, error: Error, fallback: Codec) -> bytes:
        """``error`` in this listener's protocol, for a newcomer it turns away."""
        if self.make_stream is not None:  # no words before its handshake: just close
            return b""
        if self.make_codec is not None:  # a fixed protocol (IRC): its own ERROR line
            return self.make_codec().encode(error)
        # The native port, mode not picked yet: a line for people, a frame for programs.
        return fallback.encode(error) + JsonCodec().encode(error)

    def turn_down(self, sock: socket.socket, error: Error, fallback: Codec) -> None:
        """Tell a newcomer refused when full why, in this listener's protocol; close it."""
        if self.refuse_with is not None:
            self.refuse_with(sock, error.message)
        else:
            refuse(sock, self.refusal(error, fallback))

    def start(self, loop: Loop, acceptor: Acceptor, config: Config) -> None:
        self.loop, self.acceptor = loop, acceptor
        self.max_accepts = config.max_accepts_per_tick
        self.retry_seconds = config.accept_retry_seconds
        loop.update(self)

    @property
    def wants_read(self) -> bool:
        return not self.paused and self.sock.fileno() >= 0

    @property
    def wants_write(self) -> bool:
        return False

    def on_ready(self, mask: int) -> None:
        assert self.loop is not None and self.acceptor is not None
        for _ in range(self.max_accepts):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    self._back_off(exc)
                    return
                logger.debug("accept failed: %s", exc)  # e.g. ECONNABORTED: try the next
                continue
            self.acceptor.adopt(sock, addr, self)

    def _back_off(self, exc: OSError) -> None:
        # Out of descriptors: the listening socket stays readable, so watching it would
        # spin the CPU. Stop watching for a while (asyncio's pattern).
        assert self.loop is not None
        logger.warning(
            "accept failed (%s); not accepting for %.1fs", exc.strerror, self.retry_seconds
        )
        self.paused = True
        self.loop.update(self)
        self.loop.call_at(self.loop.now + self.retry_seconds, self._resume)

    def _resume(self) -> None:
        self.paused = False
        if self.loop is not None and self.sock.fileno() >= 0:
            self.loop.update(self)
            logger.info("accepting again on %s:%d", *self.address)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.remove(self)
        self.sock.close()


def native_banner(server_name: str) -> bytes:
    """What a newcomer on the native port reads first."""
    lines = [
        f"*** chatd on {server_name}. Type the nickname you want and press Enter.",
        "*** (Programs: send JSON lines, see docs/protocol.md.)",
    ]
    return "".join(line + "\n" for line in lines).encode()


def open_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (IPv6 if ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def configure_socket(sock: socket.socket, peer: str, config: Config) -> None:
    """Non-blocking, no Nagle, the configured send buffer and keepalive."""
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if config.send_buffer_bytes:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config.send_buffer_bytes)
        if config.keepalive_idle_seconds:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):
                sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, config.keepalive_idle_seconds
                )
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
    except OSError as exc:  # the peer may already be gone
        logger.debug("setsockopt on %s failed: %s", peer, exc)


def refuse(sock: socket.socket, data: bytes) -> None:
    """Tell a newcomer why (best effort, one send) and close it."""
    try:
        sock.setblocking(False)
        if data:
            sock.send(data)
    except OSError:
        pass
    sock.close()


def format_peer(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
