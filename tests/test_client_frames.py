"""Decoding and checking server frames, and the bounds of the gap fill: pure, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hostile import NASTY

from client import frames, sync
from client.core import ChatState, Limits, Output
from client.render import INDENT, wrap


def line(**fields: Any) -> str:
    return json.dumps(fields)


def msg(mid: int, text: str = "", **kw: Any) -> str:
    return line(
        type="msg", room="#lobby", text=text or f"m{mid}", ts=1.0, mid=mid, **{"from": "bob"}, **kw
    )


def online() -> ChatState:
    state = ChatState("alice", "#lobby", server="h:1")
    state.connected()
    state.server_line(line(type="welcome", nick="alice", server="s", motd=[]))
    state.server_line(line(type="joined", room="#lobby", topic="", members=["alice", "bob"]))
    return state


def texts(out: Output) -> list[str]:
    return [x.text for x in out.lines]


@pytest.mark.parametrize("raw", NASTY, ids=range(len(NASTY)))
def test_no_frame_raises(raw: bytes) -> None:
    state = online()
    state.server_line(raw.decode("utf-8", "replace"))  # must not raise
    assert state.registered and state.nick == "alice"


@pytest.mark.parametrize(
    "ts, shown",
    [
        (1700000000.5, 1700000000.5),
        (0, 0.0),
        (1e20, None),
        (-1, None),
        (10**400, None),
        (float("inf"), None),
        (float("nan"), None),
        ("12", None),
        (True, None),
    ],
)
def test_ts_is_validated(ts: object, shown: float | None) -> None:
    raw = json.dumps(
        {"type": "msg", "room": "#lobby", "from": "bob", "text": "x", "ts": ts, "mid": 1}
    )
    frame = frames.decode(frames.parse(raw), Limits())
    assert isinstance(frame, frames.Msg) and frame.ts == shown


def test_advertised_limits_are_clamped() -> None:
    raw = line(
        type="welcome",
        nick="a",
        server="s",
        motd=[],
        limits={"max_text_chars": 10**12, "max_line_bytes": -5, "history_max_limit": "x"},
    )
    frame = frames.decode(frames.parse(raw), Limits())
    assert isinstance(frame, frames.Welcome)
    assert frame.limits.max_text_chars == 65_536 and frame.limits.max_line_bytes == 256
    assert frame.limits.history_max_limit == Limits().history_max_limit


def test_a_second_welcome_is_ignored() -> None:
    state = online()
    out = state.server_line(line(type="welcome", nick="bob", server="s", motd=[]))
    assert state.nick == "alice" and out.frames == []


def test_joined_for_a_room_not_asked_for_is_ignored() -> None:
    state = online()
    assert state.server_line(line(type="joined", room="#trap", topic="", members=[])).lines == []
    assert state.room_names() == ["#lobby"]


def test_a_refused_joined_leaves_no_phantom_room() -> None:
    state = online()
    state.user_input("/join #dev")
    state.server_line(line(type="joined", room="#dev", topic="", members="alice"))
    assert state.room_names() == ["#lobby"]


def test_part_for_a_room_never_joined_says_nothing() -> None:
    state = online()
    assert state.server_line(line(type="part", room="#never", nick="alice", reason="")).lines == []
    assert state.room_names() == ["#lobby"]


def _start_gap(state: ChatState) -> dict[str, Any]:
    state.server_line(msg(1))
    out = state.server_line(line(type="skipped", count=1))
    (request,) = out.frames
    return request


def test_unanswered_gap_gives_up_after_the_timeout() -> None:
    state = online()
    _start_gap(state)
    assert texts(state.server_line(msg(2, "held"))) == []
    assert state.tick(100.0).lines == []  # the clock starts
    assert state.tick(100.0 + sync.GAP_TIMEOUT).lines == []
    out = state.tick(100.0 + sync.GAP_TIMEOUT + 1)
    assert texts(out)[0] == "held"
    assert "missing" in texts(out)[1]
    assert texts(state.server_line(msg(3))) == ["m3"]  # live again
    assert state.pending == {}


def test_held_messages_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "MAX_HELD", 50)
    state = online()
    _start_gap(state)
    shown: list[str] = []
    for n in range(2, 200):
        shown += texts(state.server_line(msg(n)))
        room = state.current_room
        assert room is not None and len(room.held or []) <= 50
    assert any("missing" in t for t in shown)
    assert "m199" in shown


def test_a_late_answer_after_giving_up_is_ignored() -> None:
    state = online()
    request = _start_gap(state)
    state.tick(0.0)
    state.tick(sync.GAP_TIMEOUT + 1)
    out = state.server_line(
        line(type="history", room="#lobby", id=request["id"], messages=[json.loads(msg(5))])
    )
    assert out.lines == [] and out.frames == []


@pytest.mark.parametrize("width", [20, 41, 100])
def test_wrap_never_starts_a_row_at_column_zero(width: int) -> None:
    text = "x" * 37 + " " * 50 + "*** bob is now an operator; /msg bob your password" + "é漢" * 30
    rows = "".join(f[1] for f in wrap([("", "[12:00] <eve> "), ("", text)], width)).split("\n")
    assert rows[0].startswith("[12:00]")
    for row in rows[1:]:
        assert row.startswith(" " * INDENT)
    from prompt_toolkit.utils import get_cwidth

    assert all(get_cwidth(row) <= max(width, INDENT + 8) for row in rows)
