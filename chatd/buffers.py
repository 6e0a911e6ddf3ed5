"""The output buffer of one connection. Pure: it never sees a socket.

Chunks are kept as they were queued (``bytes`` objects, usually shared between every
recipient of one fan-out) in a deque, with a running byte count. After a partial send
the first chunk is replaced by a ``memoryview`` of its unsent tail, so nothing is copied
per partial write (contrast ``buf = buf[n:]``, which is quadratic on big queues).

The transport asks for up to ``max_chunks`` chunks to hand to ``socket.sendmsg`` (a
gather write, as asyncio's ``_write_sendmsg`` does), then reports how many bytes the
kernel took with :meth:`OutBuffer.consume`.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

__all__ = ["OutBuffer"]

Chunk = bytes | memoryview


class OutBuffer:
    """A FIFO of byte chunks with a byte count."""

    __slots__ = ("_chunks", "size")

    def __init__(self) -> None:
        # None while empty: an empty deque costs 760 bytes, and most connections of a
        # big server are idle, so it exists only while something is queued.
        self._chunks: deque[Chunk] | None = None
        self.size = 0  # bytes queued and not yet sent

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, data: bytes) -> None:
        """Queue ``data`` (the object itself is kept; callers must not mutate it)."""
        if data:
            if self._chunks is None:
                self._chunks = deque((data,))
            else:
                self._chunks.append(data)
            self.size += len(data)

    def peek(self, max_chunks: int) -> list[Chunk]:
        """The first ``max_chunks`` chunks, for one gather write."""
        chunks = self._chunks
        if not chunks:
            return []
        if len(chunks) == 1:  # the usual case: one blob per loop turn
            return [chunks[0]]
        return list(islice(chunks, max_chunks))

    def consume(self, nbytes: int) -> None:
        """Forget the first ``nbytes`` bytes: the kernel has taken them."""
        if nbytes > self.size:
            raise ValueError(f"consume({nbytes}) but only {self.size} bytes are queued")
        self.size -= nbytes
        chunks = self._chunks
        if not self.size:  # all sent, the usual case: drop the deque at once
            self._chunks = None
            return
        assert chunks is not None
        while nbytes:
            head = chunks[0]
            if len(head) <= nbytes:
                nbytes -= len(head)
                chunks.popleft()
            else:
                chunks[0] = memoryview(head)[nbytes:]
                nbytes = 0

    def clear(self) -> None:
        """Drop everything (the connection is being aborted)."""
        self._chunks = None
        self.size = 0
