"""Newline framing: bytes in, complete lines out. Pure: no sockets, no clocks.

Invariants:

- A frame is the bytes before a ``\\n``; one ``\\r`` right before it is dropped, and empty
  frames are dropped (a bare Enter in ``nc`` means nothing).
- A frame longer than ``max_line_bytes`` is never returned. The caller gets one
  :data:`LINE_TOO_LONG` marker in its place, and everything up to the next ``\\n`` is
  discarded as it arrives, so memory stays bounded even if that newline never comes
  (the h11 ``max_incomplete_event_size`` idea; Redis closes instead, we keep the peer).
- Work is linear in the input: each byte is searched for ``\\n`` once (h11's
  ``ReceiveBuffer`` argues the denial-of-service reason), and a partial line is kept in
  a ``bytearray`` that only ever grows at the end.

Feeding data whole, byte by byte or split anywhere yields the same frames; the tests
check exactly that.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LineFramer", "LineTooLong", "LINE_TOO_LONG"]


class LineTooLong:
    """Marker returned in place of a frame that was longer than the limit."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LINE_TOO_LONG"


LINE_TOO_LONG: Final = LineTooLong()


class LineFramer:
    """Split a byte stream into lines of at most ``max_line_bytes`` bytes.

    Args:
        max_line_bytes: the longest frame accepted, not counting ``\\r\\n``.
    """

    __slots__ = ("_max", "_partial", "_discarding")

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self._max = max_line_bytes
        self._partial = bytearray()
        # True while we are throwing away the tail of a line already reported too long.
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line (never more than ``max_line_bytes + 1``)."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        """Take received bytes; return the frames they completed, in order.

        Returns:
            A list of ``bytes`` frames (without line ending) and :data:`LINE_TOO_LONG`
            markers. Often empty.
        """
        out: list[bytes | LineTooLong] = []
        first = data.find(b"\n")
        if first < 0:
            self._keep_partial(data, out)
            return out
        # The first newline ends whatever was pending from earlier reads.
        if self._discarding:
            self._discarding = False
        elif self._partial:
            self._partial += data[:first]
            self._emit(bytes(self._partial), out)
            self._partial.clear()
        else:
            self._emit(data[:first], out)
        frames = data[first + 1 :].split(b"\n")
        tail = frames.pop()
        for frame in frames:
            self._emit(frame, out)
        self._keep_partial(tail, out)
        return out

    def _emit(self, frame: bytes, out: list[bytes | LineTooLong]) -> None:
        if frame.endswith(b"\r"):
            frame = frame[:-1]
        if len(frame) > self._max:
            out.append(LINE_TOO_LONG)
        elif frame:
            out.append(frame)

    def _keep_partial(self, data: bytes, out: list[bytes | LineTooLong]) -> None:
        if self._discarding or not data:
            return
        self._partial += data
        # One byte of slack: the line may yet end in "\r\n", and "\r" is not counted.
        if len(self._partial) > self._max + 1:
            self._partial.clear()
            self._discarding = True
            out.append(LINE_TOO_LONG)
