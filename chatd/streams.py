"""The byte-stream layer: between one socket and the line framer.

A stream turns wire bytes into application bytes and back (TLS records, WebSocket
frames). It is pure, sans-I/O in the h11 sense: no socket, no clock, no selector. The
connection feeds it what it read, asks it for what to write, and closes the connection
when it raises :class:`StreamError` or reports itself :attr:`~Stream.finished`.

Plain TCP has **no stream object** (``conn.stream is None``): the fan-out's fast path
appends shared blobs to the output buffer by reference, with no copy and no extra call per
recipient. A listener says which stream to build for a new connection (``make_stream``),
or decides from the first bytes the peer sends (``sniff_stream``: the native port takes a
TLS ClientHello, first byte 0x16, when TLS is on; anything else stays plain).

The contract is agreed with the TLS and WebSocket layers (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = [
    "LayeredStream",
    "Stream",
    "StreamError",
    "StreamFactory",
    "StreamSniffer",
    "TLS_RECORD_HANDSHAKE",
]

#: The first byte of a TLS record carrying a handshake (a ClientHello starts with it).
TLS_RECORD_HANDSHAKE = 0x16


class StreamError(Exception):
    """The peer broke the stream's protocol (bad TLS record, bad WebSocket frame...).

    ``reason`` is a short sentence for the log; the connection is closed (no traceback).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Stream(Protocol):
    """Between one socket and the line framer: wire bytes <-> application bytes. Pure:
    no socket, no clock, no selector. One instance per connection."""

    def receive(self, wire: bytes) -> bytes:
        """Feed bytes just read from the socket (b"" means the peer closed).

        Returns application bytes now available for the line framer (often b"").
        May produce wire bytes to send (a handshake reply, a pong) - see data_to_send().
        Raises StreamError when the peer broke the protocol.
        """
        ...

    def send(self, app: bytes) -> None:
        """Application bytes (whole lines, each ending in b"\\n") to transmit.

        A stream may hold them until a handshake completes (bounded: the connection's
        output limits count what it holds via buffered_bytes).
        """
        ...

    def data_to_send(self) -> bytes:
        """Wire bytes the stream wants written now; b"" if none.

        The connection appends them to its output buffer after every
        receive()/send()/close().
        """
        ...

    def close(self) -> None:
        """Begin an orderly close (TLS close_notify, WebSocket close frame). Idempotent."""
        ...

    @property
    def buffered_bytes(self) -> int:
        """Application bytes held inside the stream that are not yet in data_to_send()."""
        ...

    @property
    def ready(self) -> bool:
        """True once the handshake (if any) is done and application data flows.

        The registration timeout keeps running either way (a stalled handshake is cut
        like a slowloris).
        """
        ...

    @property
    def finished(self) -> bool:
        """True when the stream will never yield application bytes again (closed by the
        peer or by protocol) - the connection then closes after flushing."""
        ...


#: Builds the stream of every connection a listener accepts (a WebSocket or TLS-only port).
StreamFactory = Callable[[], Stream]
#: Chooses a connection's stream from the first bytes its peer sent (b"": it said nothing
#: within the sniffing window); None means plain.
StreamSniffer = Callable[[bytes], Stream | None]


class LayeredStream:
    """One stream inside another: ``inner``'s wire bytes are ``outer``'s application bytes
    (HTTP and WebSocket inside TLS: ``LayeredStream(TlsStream(ctx), WebStream(...))``).

    ``receive`` feeds what the outer yields into the inner; ``send`` goes to the inner and
    whatever the inner wants written goes through the outer (``data_to_send`` is the
    outer's). ``ready`` is the outer's: its handshake is the one a deadline waits for (the
    inner's own phases, HTTP before a WebSocket, are not a handshake). When the inner is
    finished the outer is closed after the inner's last bytes (a TLS close_notify follows
    the last HTTP response).
    """

    __slots__ = ("outer", "inner", "_closed")

    def __init__(self, outer: Stream, inner: Stream) -> None:
        self.outer = outer
        self.inner = inner
        self._closed = False

    def receive(self, wire: bytes) -> bytes:
        outer, inner = self.outer, self.inner
        app = outer.receive(wire)  # (a StreamError here: the outer's alert is queued)
        data = b""
        try:
            if app:
                data = inner.receive(app)
            if (not wire or outer.finished) and not inner.finished:
                data += inner.receive(b"")  # the outer ended: so does the inner's input
        finally:
            self._pump()  # the inner's answers (or its last words) go out, wrapped
        return data

    def send(self, app: bytes) -> None:
        self.inner.send(app)
        self._pump()

    def data_to_send(self) -> bytes:
        return self.outer.data_to_send()

    def close(self) -> None:
        if self._closed:
            return
        self.inner.close()
        self._pump()
        if not self._closed:
            self._closed = True
            self.outer.close()

    @property
    def buffered_bytes(self) -> int:
        return self.outer.buffered_bytes + self.inner.buffered_bytes

    @property
    def ready(self) -> bool:
        return self.outer.ready

    @property
    def finished(self) -> bool:
        return self.outer.finished or self.inner.finished

    def _pump(self) -> None:
        wire = self.inner.data_to_send()
        if wire:
            self.outer.send(wire)
        if self.inner.finished and not self._closed:
            self._closed = True
            self.outer.close()
