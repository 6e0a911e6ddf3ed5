"""LineFramer: every input fed whole, byte by byte, and split at every position (h11 habit)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.framing import LINE_TOO_LONG, LineFramer


def feed_chunks(chunks: list[bytes], limit: int = 16) -> list[object]:
    framer = LineFramer(limit)
    out: list[object] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


def every_way(data: bytes, limit: int = 16) -> list[object]:
    """Feed ``data`` whole, byte by byte and split at each position; all must agree."""
    whole = feed_chunks([data], limit)
    assert feed_chunks([data[i : i + 1] for i in range(len(data))], limit) == whole
    for cut in range(len(data) + 1):
        assert feed_chunks([data[:cut], data[cut:]], limit) == whole, cut
    return whole


@pytest.mark.parametrize(
    "data, frames",
    [
        (b"hello\n", [b"hello"]),
        (b"hello\r\n", [b"hello"]),
        (b"a\nb\r\nc\n", [b"a", b"b", b"c"]),
        (b"\n\r\n\n", []),  # empty lines are dropped
        (b"no newline yet", []),
        (b"inner\rcr\n", [b"inner\rcr"]),  # only a \r right before \n is dropped
        (b"two\r\r\n", [b"two\r"]),
        (b"x" * 16 + b"\n", [b"x" * 16]),  # exactly at the limit
        (b"x" * 16 + b"\r\n", [b"x" * 16]),  # the \r does not count
        (b"x" * 17 + b"\n", [LINE_TOO_LONG]),
        (b"x" * 17 + b"\nok\n", [LINE_TOO_LONG, b"ok"]),
        (b"x" * 40 + b"\nok\n", [LINE_TOO_LONG, b"ok"]),  # one marker per long line
        (b"a\n" + b"y" * 100, [b"a", LINE_TOO_LONG]),  # reported before its newline comes
    ],
)
def test_frames_every_way(data: bytes, frames: list[object]) -> None:
    assert every_way(data) == frames


def test_trailing_partial_line_is_kept_for_later() -> None:
    framer = LineFramer(16)
    assert framer.feed(b"one\ntw") == [b"one"]
    assert framer.buffered == 2
    assert framer.feed(b"o\n") == [b"two"]
    assert framer.buffered == 0


def test_endless_line_uses_bounded_memory() -> None:
    framer = LineFramer(4096)
    reports = []
    for _ in range(2000):  # 128 MB in 64 KiB chunks, never a newline
        reports += framer.feed(b"z" * 65536)
        assert framer.buffered <= 4097
    assert reports == [LINE_TOO_LONG]
    assert framer.feed(b"tail\nnext\n") == [b"next"]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineFramer(0)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(max_size=24), st.sampled_from([b"\n", b"\r\n", b"\r"])), max_size=12
    )
)
def test_any_input_splits_the_same_way(parts: list[bytes]) -> None:
    data = b"".join(parts)
    frames = every_way(data)
    # Reference model: split on \n, drop the last partial piece, strip one \r, drop empties.
    expected: list[object] = []
    pieces = data.split(b"\n")
    for piece in pieces[:-1]:
        piece = piece[:-1] if piece.endswith(b"\r") else piece
        if len(piece) > 16:
            expected.append(LINE_TOO_LONG)
        elif piece:
            expected.append(piece)
    if len(pieces[-1]) > 17:
        expected.append(LINE_TOO_LONG)
    assert frames == expected
