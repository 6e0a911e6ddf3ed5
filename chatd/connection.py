"""One client socket: its stream, framer, output buffer, flow control and lifecycle.

A :class:`Connection` moves bytes and knows nothing about chat. The loop asks it what it
needs (:attr:`~Connection.wants_read`, :attr:`~Connection.wants_write`) and tells it what
happened (:meth:`~Connection.on_ready`); the server decides what its lines mean and what
to queue. Lifecycle (:class:`State`): ``OPEN`` (reading and writing) -> ``CLOSING`` (no
more reading; queued output is still flushed, for goodbyes) -> ``CLOSED``.

Below the framer there may be a byte stream (TLS, WebSocket: :mod:`chatd.streams`);
plain TCP has none, and :meth:`~Connection.queue` then appends the caller's bytes object
itself, so one room blob is shared by every recipient's buffer.

I/O errors are reported, not handled: :meth:`recv` returns ``None`` for "nothing now"
and ``b""`` at end of stream, :meth:`flush` returns how much it sent, and both let other
``OSError``s (reset, broken pipe) propagate to the server, which closes this connection
alone. A stream's :class:`~chatd.streams.StreamError` propagates the same way.
"""

from __future__ import annotations

import enum
import selectors
import socket
from collections import deque
from typing import Protocol

from chatd.buffers import OutBuffer
from chatd.codecs import Codec
from chatd.framing import LineFramer, LineTooLong
from chatd.outpolicy import Flow
from chatd.ratelimit import TokenBucket
from chatd.streams import TLS_RECORD_HANDSHAKE, Stream, StreamSniffer

__all__ = ["Closer", "Connection", "Owner", "State"]

# Linux's IOV_MAX is 1024; sendmsg() with more buffers fails with EMSGSIZE.
_IOV_MAX = min(getattr(socket, "SC_IOV_MAX", 1024) or 1024, 1024)
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE

_TLS_HELLO = bytes((TLS_RECORD_HANDSHAKE,))


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Owner(Protocol):
    """Who a connection reports to: the server's read side (:class:`chatd.intake.Intake`)."""

    def on_readable(self, conn: Connection) -> None: ...


class Closer(Protocol):
    """How the server starts closing a connection (``Server._close``).

    ``flush``: its queued output (an error, a goodbye) still goes out; ``broken``: its
    stream failed, so no orderly stream close follows.
    """

    def __call__(
        self, conn: Connection, reason: str, *, flush: bool, broken: bool = False
    ) -> None: ...


class Connection:
    """Per-client transport state. ``cid`` is what every other layer calls it."""

    __slots__ = (
        "cid",
        "sock",
        "fd",
        "peer",
        "host",
        "framer",
        "codec",
        "out",
        "stream",
        "sniffer",
        "greeting",
        "handshaking",
        "state",
        "mask",
        "pending",
        "dirty",
        "owner",
        "backlog",
        "unframed",
        "unframed_pos",
        "bucket",
        "paused_until",
        "flow",
        "at_eof",
        "close_reason",
        "bytes_in",
        "bytes_out",
        "lines_in",
        "last_heard",
        "probed",
    )

    def __init__(
        self,
        cid: int,
        sock: socket.socket,
        peer: str,
        framer: LineFramer,
        codec: Codec | None,
        bucket: TokenBucket | None,
        dirty: list[Connection] | None = None,
        owner: Owner | None = None,
    ) -> None:
        self.cid = cid
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.host = peer  # the address key per-address limits count (chatd.throttle)
        self.framer = framer
        self.codec = codec  # None until the first line picks the mode (native port)
        self.out = OutBuffer()
        # Below the framer: None for plain TCP (the fast path), else TLS/WebSocket/...
        self.stream: Stream | None = None
        # Set while the listener waits for the first bytes to choose the stream; the
        # greeting (banner) waits with it.
        self.sniffer: StreamSniffer | None = None
        self.greeting = b""
        # Whether the handshake deadline applies: a sniffing listener's connection only
        # if its first byte opened a TLS handshake (plain HTTP on the web port has none).
        self.handshaking = True
        self.state = State.OPEN
        self.mask = 0  # the events currently registered with the selector
        self.pending = False  # on the ``dirty`` list: output to flush this loop turn
        self.dirty: list[Connection] = [] if dirty is None else dirty
        self.owner = owner
        # Frames read but not yet executed: None unless the rate limit holds frames back
        # (an empty deque is 760 bytes).
        self.backlog: deque[bytes | LineTooLong] | None = None
        # Bytes read but not framed yet, from unframed_pos on: input held back by the
        # rate limit stays raw (a 2-byte line framed costs ~40 bytes), framed a line at
        # a time as tokens come (see frame_next, run by chatd.intake).
        self.unframed = b""
        self.unframed_pos = 0
        self.bucket = bucket
        self.paused_until = 0.0  # rate limit: no reading before this (monotonic)
        self.flow = Flow()
        self.at_eof = False  # the peer closed (or its stream finished)
        self.close_reason = ""
        self.bytes_in = 0
        self.bytes_out = 0
        self.lines_in = 0
        self.last_heard = 0.0  # monotonic time of the last bytes received
        self.probed = False  # a Probe (IRC PING) is out and unanswered

    def __repr__(self) -> str:
        mode = self.codec.name if self.codec else "?"
        events = ("r" if self.mask & 1 else "") + ("w" if self.mask & 2 else "")
        return (
            f"<Connection #{self.cid} {self.peer} {self.state.value} {mode} "
            f"events={events or '-'} out={self.out.size}B>"
        )

    # ------------------------------------------------------------------ asked by the loop

    @property
    def wants_read(self) -> bool:
        """Open, its own output below the high-water mark, not held by the rate limit."""
        return self.state is State.OPEN and not self.flow.paused and not self.paused_until

    @property
    def wants_write(self) -> bool:
        return self.out.size > 0 and self.state is not State.CLOSED

    def on_ready(self, mask: int) -> None:
        """The selector says the socket is readable and/or writable."""
        if mask & _READ and self.state is State.OPEN and self.owner is not None:
            self.owner.on_readable(self)
        if mask & _WRITE and not self.pending and self.state is not State.CLOSED:
            self.pending = True
            self.dirty.append(self)

    # ------------------------------------------------------------------ output

    @property
    def queued(self) -> int:
        """Output bytes not yet sent: the buffer plus what the stream holds back."""
        stream = self.stream
        return self.out.size if stream is None else self.out.size + stream.buffered_bytes

    def admits(self, count: int) -> bool:
        """May ``count`` room messages be queued (see :meth:`chatd.outpolicy.Flow.admits`)?"""
        return self.flow.admits(count)

    def queue(self, data: bytes) -> None:
        """Queue application bytes; they are flushed at the end of this loop turn."""
        stream = self.stream
        if stream is None:  # plain TCP: the shared bytes object itself, by reference
            self.out.append(data)
        else:
            stream.send(data)
            self.out.append(stream.data_to_send())
        if not self.pending:
            self.pending = True
            self.dirty.append(self)

    def pump(self) -> None:
        """Move the wire bytes the stream produced into the output buffer."""
        if self.stream is not None:
            wire = self.stream.data_to_send()
            if wire:
                self.out.append(wire)
                if not self.pending:
                    self.pending = True
                    self.dirty.append(self)

    def flush(self, max_bytes: int) -> int:
        """Send queued output until the kernel is full or ``max_bytes`` have gone."""
        sent = self.out.write_to(self.sock, max_bytes, _IOV_MAX)
        self.bytes_out += sent
        return sent

    # ------------------------------------------------------------------ input

    def recv(self, nbytes: int) -> bytes | None:
        """Read what is there: ``None`` if nothing yet, ``b""`` at end of stream."""
        try:
            data = self.sock.recv(nbytes)
        except (BlockingIOError, InterruptedError):
            return None
        self.bytes_in += len(data)
        return data

    def read(self, nbytes: int) -> bytes | None:
        """Read and unwrap: application bytes for the framer (maybe ``b""``), or ``None``
        if the socket had nothing. Sets :attr:`at_eof` when the peer is done."""
        data = self.recv(nbytes)
        if data is None:
            return None
        if self.sniffer is not None:
            self.settle_stream(data)
        stream = self.stream
        if stream is None:
            if not data:
                self.at_eof = True
            return data
        wire = data
        try:
            data = stream.receive(wire)
        finally:
            self.pump()  # a handshake reply, a pong, an alert
        if not wire or stream.finished:
            self.at_eof = True
        return data

    def take_input(self, data: bytes) -> bool:
        """Frame what was read (rate-limited: keep it raw, framed a line per token, so
        input held back costs its bytes only); True if there is input to run."""
        if self.bucket is not None:
            if self.unframed_pos < len(self.unframed):
                data = self.unframed[self.unframed_pos :] + data
            self.unframed, self.unframed_pos = data, 0
            return True
        frames = self.framer.feed(data)
        if not frames:
            return False
        if self.backlog is None:
            self.backlog = deque(frames)
        else:
            self.backlog.extend(frames)
        return True

    def frame_next(self) -> deque[bytes | LineTooLong] | None:
        """Frame the next line of :attr:`unframed` (None when nothing is left)."""
        data, pos = self.unframed, self.unframed_pos
        while pos < len(data):
            end = data.find(b"\n", pos) + 1 or len(data)
            frames = self.framer.feed(data[pos:end])
            pos = end
            if frames:
                self.unframed_pos = pos
                self.backlog = deque(frames)
                return self.backlog
        self.unframed, self.unframed_pos = b"", 0
        return None

    @property
    def has_input(self) -> bool:
        """Lines read and not run yet (held by the rate limit or the output mark)."""
        return bool(self.backlog) or self.unframed_pos < len(self.unframed)

    def settle_stream(self, first: bytes) -> None:
        """A sniffing listener's connection: choose its stream from ``first`` (no bytes:
        the peer said nothing in time; the sniffer may still refuse plain text), then
        greet it."""
        sniffer, self.sniffer = self.sniffer, None
        if sniffer is not None:
            self.stream = sniffer(first)
            self.handshaking = first[:1] == _TLS_HELLO
        greeting, self.greeting = self.greeting, b""
        if greeting:
            self.queue(greeting)
        if self.stream is not None and self.stream.finished:
            self.pump()  # it refused this peer (chatd.tls.PlainRefused): its words,
            self.at_eof = True  # then the end

    # ------------------------------------------------------------------ lifecycle

    def begin_close(self, reason: str, *, flush: bool, broken: bool = False) -> bool:
        """OPEN -> CLOSING (False if it was not open). Without ``flush`` its queued output
        is dropped; with it, an orderly stream close follows it (not after ``broken``)."""
        if self.state is State.CLOSED:
            return False
        if not flush:
            self.out.clear()
        if self.state is State.CLOSING:
            return False
        self.state = State.CLOSING
        self.close_reason = reason
        self.backlog, self.unframed = None, b""
        if self.stream is not None and flush and not broken:
            self.stream.close()  # its close_notify / close frame goes out with the rest
            self.pump()
        return True

    def finish(self) -> None:
        """-> CLOSED: the socket is closed (the loop has unregistered it)."""
        self.state = State.CLOSED
        self.sock.close()
