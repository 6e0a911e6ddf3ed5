"""The output buffer of one connection. It never opens, polls or closes a socket.

Chunks are kept as they were queued (``bytes`` objects, usually shared between every
recipient of one fan-out), with a running byte count. After a partial send the first
chunk is replaced by a ``memoryview`` of its unsent tail, so nothing is copied per
partial write (contrast ``buf = buf[n:]``, which is quadratic on big queues).

The usual buffer holds one chunk (a loop turn's room messages are one blob) and is
emptied by one send: that chunk is kept in a slot of its own, and a deque exists only
while two or more chunks wait (an empty deque costs 760 bytes, and most connections of a
big server are idle).

:meth:`OutBuffer.write_to` hands the chunks to a :class:`Writer`'s ``send``/``sendmsg``
(a gather write, as asyncio's ``_write_sendmsg`` does) and forgets what they took;
:meth:`peek` and :meth:`consume` do the same in two steps.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Protocol

__all__ = ["OutBuffer", "Writer"]

Chunk = bytes | memoryview


class Writer(Protocol):
    """Where bytes go (a non-blocking socket; a list in a test)."""

    def send(self, data: Chunk, /) -> int: ...
    def sendmsg(self, buffers: list[Chunk], /) -> int: ...


class OutBuffer:
    """A FIFO of byte chunks with a byte count."""

    __slots__ = ("_one", "_chunks", "size")

    def __init__(self) -> None:
        self._one: Chunk | None = None  # the only chunk, when there is exactly one
        self._chunks: deque[Chunk] | None = None  # two or more chunks
        self.size = 0  # bytes queued and not yet sent

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, data: bytes) -> None:
        """Queue ``data`` (the object itself is kept; callers must not mutate it)."""
        if data:
            if not self.size:
                self._one = data
            elif self._chunks is None:
                assert self._one is not None
                self._chunks = deque((self._one, data))
                self._one = None
            else:
                self._chunks.append(data)
            self.size += len(data)

    def peek(self, max_chunks: int) -> list[Chunk]:
        """The first ``max_chunks`` chunks, for one gather write."""
        if self._one is not None:
            return [self._one]
        chunks = self._chunks
        return list(islice(chunks, max_chunks)) if chunks else []

    def consume(self, nbytes: int) -> None:
        """Forget the first ``nbytes`` bytes: the kernel has taken them."""
        if nbytes > self.size:
            raise ValueError(f"consume({nbytes}) but only {self.size} bytes are queued")
        self.size -= nbytes
        if not self.size:  # all sent, the usual case
            self._one = self._chunks = None
            return
        one = self._one
        if one is not None:
            self._one = memoryview(one)[nbytes:]
            return
        chunks = self._chunks
        assert chunks is not None
        while nbytes:
            head = chunks[0]
            if len(head) <= nbytes:
                nbytes -= len(head)
                chunks.popleft()
            else:
                chunks[0] = memoryview(head)[nbytes:]
                nbytes = 0

    def write_to(self, writer: Writer, max_bytes: int, max_chunks: int) -> int:
        """Write until ``writer`` takes less than offered (or raises BlockingIOError) or
        ``max_bytes`` have gone; returns the bytes written. Other errors propagate."""
        one = self._one
        if one is not None:  # the usual case: one chunk, one send
            try:
                sent = writer.send(one)
            except (BlockingIOError, InterruptedError):
                return 0
            if sent == self.size:
                self._one = None
                self.size = 0
            else:
                self.consume(sent)
            return sent
        total = 0
        while self.size and total < max_bytes:
            chunks = self.peek(max_chunks)
            try:
                sent = writer.send(chunks[0]) if len(chunks) == 1 else writer.sendmsg(chunks)
            except (BlockingIOError, InterruptedError):
                break
            self.consume(sent)
            total += sent
            if self.size and (len(chunks) < max_chunks or sent < sum(map(len, chunks))):
                break  # the kernel took less than offered: wait for EVENT_WRITE
        return total

    def clear(self) -> None:
        """Drop everything (the connection is being aborted)."""
        self._one = self._chunks = None
        self.size = 0
