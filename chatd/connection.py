"""One client socket: non-blocking reads into a framer, gather writes from an OutBuffer.

A :class:`Connection` knows how to move bytes and nothing about chat: the server decides
what its lines mean and what to queue. Lifecycle: ``OPEN`` (reading and writing) →
``CLOSING`` (no more reading; queued output is still flushed, for goodbyes) → ``CLOSED``.

I/O errors are reported, not handled: :meth:`recv` returns ``None`` for "nothing now"
and ``b""`` at end of stream, :meth:`flush` returns how much it sent, and both let other
``OSError``s (reset, broken pipe) propagate to the server, which closes this connection
alone.
"""

from __future__ import annotations

import enum
import socket
from collections import deque

from chatd.buffers import OutBuffer
from chatd.codecs import Codec
from chatd.framing import LineFramer, LineTooLong
from chatd.ratelimit import TokenBucket
from chatd.streams import Stream, StreamSniffer

__all__ = ["Connection", "State"]

# Linux's IOV_MAX is 1024; sendmsg() with more buffers fails with EMSGSIZE.
_IOV_MAX = min(getattr(socket, "SC_IOV_MAX", 1024) or 1024, 1024)


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Connection:
    """Per-client transport state. ``cid`` is what every other layer calls it."""

    __slots__ = (
        "cid",
        "sock",
        "fd",
        "peer",
        "framer",
        "codec",
        "out",
        "state",
        "mask",
        "pending",
        "backlog",
        "bucket",
        "paused_until",
        "backpressured",
        "over_soft_since",
        "skipped",
        "close_reason",
        "close_deadline",
        "register_deadline",
        "bytes_in",
        "bytes_out",
        "lines_in",
        "last_heard",
        "probed",
        "stream",
        "sniffer",
    )

    def __init__(
        self,
        cid: int,
        sock: socket.socket,
        peer: str,
        framer: LineFramer,
        codec: Codec | None,
        bucket: TokenBucket | None,
    ) -> None:
        self.cid = cid
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.framer = framer
        self.codec = codec  # None until the first line picks the mode (native port)
        self.out = OutBuffer()
        self.state = State.OPEN
        self.mask = 0  # the events currently registered with the selector
        self.pending = False  # on the server's list of connections to flush this tick
        # Frames read but not yet executed (only while the rate limit holds us back).
        # None unless the rate limit holds frames back (an empty deque is 760 bytes).
        self.backlog: deque[bytes | LineTooLong] | None = None
        self.bucket = bucket
        self.paused_until = 0.0  # rate limit: no reading before this (monotonic)
        self.backpressured = False  # own output above the high-water mark: no reading
        self.over_soft_since: float | None = None  # output over the soft limit since then
        self.skipped = 0  # room messages not queued while over the soft limit
        self.close_reason = ""
        self.close_deadline = 0.0
        self.register_deadline = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.lines_in = 0
        self.last_heard = 0.0  # monotonic time of the last bytes received
        self.probed = False  # a Probe (IRC PING) is out and unanswered
        # Below the framer: None for plain TCP (the fast path), else TLS/WebSocket/...
        self.stream: Stream | None = None
        # Set while the listener waits for the first bytes to choose the stream.
        self.sniffer: StreamSniffer | None = None

    def __repr__(self) -> str:
        mode = self.codec.name if self.codec else "?"
        events = ("r" if self.mask & 1 else "") + ("w" if self.mask & 2 else "")
        return (
            f"<Connection #{self.cid} {self.peer} {self.state.value} {mode} "
            f"events={events or '-'} out={self.out.size}B>"
        )

    @property
    def queued(self) -> int:
        """Output bytes not yet sent: the buffer plus what the stream holds back."""
        stream = self.stream
        return self.out.size if stream is None else self.out.size + stream.buffered_bytes

    def recv(self, nbytes: int) -> bytes | None:
        """Read what is there: ``None`` if nothing yet, ``b""`` at end of stream."""
        try:
            data = self.sock.recv(nbytes)
        except (BlockingIOError, InterruptedError):
            return None
        self.bytes_in += len(data)
        return data

    def flush(self, max_bytes: int) -> int:
        """Send queued output until the kernel is full or ``max_bytes`` have gone."""
        out = self.out
        sock = self.sock
        sent_total = 0
        while out.size and sent_total < max_bytes:
            chunks = out.peek(_IOV_MAX)
            try:
                # One chunk is the usual case (a tick's room messages are one blob).
                sent = sock.send(chunks[0]) if len(chunks) == 1 else sock.sendmsg(chunks)
            except (BlockingIOError, InterruptedError):
                break
            out.consume(sent)
            sent_total += sent
            if out.size and (len(chunks) < _IOV_MAX or sent < sum(map(len, chunks))):
                break  # the kernel took less than offered: wait for EVENT_WRITE
        self.bytes_out += sent_total
        return sent_total
