"""The client's moderation commands and how it shows moderation events (client/moderation.py)."""

from __future__ import annotations

from typing import Any

import pytest
from test_client_core import feed, frame, online, texts

from client.core import irc_fold


@pytest.mark.parametrize(
    "typed, request_",
    [
        (
            "/kick bob spamming",
            {"op": "kick", "room": "#lobby", "nick": "bob", "reason": "spamming"},
        ),
        (
            "/ban #b bob 30m rude",
            {"op": "ban", "room": "#b", "mask": "bob", "duration": 1800, "reason": "rude"},
        ),
        ("/ban bob", {"op": "ban", "room": "#lobby", "mask": "bob", "reason": ""}),
        ("/unban bob", {"op": "unban", "room": "#lobby", "mask": "bob"}),
        ("/unban", {"op": "bans", "room": "#lobby"}),
        (
            "/mute bob 2h",
            {"op": "mute", "room": "#lobby", "mask": "bob", "duration": 7200, "reason": ""},
        ),
        ("/unmute bob", {"op": "unmute", "room": "#lobby", "mask": "bob"}),
        ("/op bob", {"op": "mode", "target": "#lobby", "modes": "+o", "args": ["bob"]}),
        ("/deop bob", {"op": "mode", "target": "#lobby", "modes": "-o", "args": ["bob"]}),
        ("/voice bob", {"op": "mode", "target": "#lobby", "modes": "+v", "args": ["bob"]}),
        ("/mode +k sesame", {"op": "mode", "target": "#lobby", "modes": "+k", "args": ["sesame"]}),
        ("/mode", {"op": "mode", "target": "#lobby", "modes": "", "args": []}),
        ("/invite bob #b", {"op": "invite", "nick": "bob", "room": "#b"}),
        ("/oper boss pw", {"op": "oper", "name": "boss", "password": "pw"}),
    ],
)
def test_commands_become_requests(typed: str, request_: dict[str, Any]) -> None:
    state = online()
    (sent,) = state.user_input(typed).frames
    assert sent == request_


def test_usage_errors_send_nothing() -> None:
    state = online()
    for typed in ("/kick", "/oper boss", "/op", "/invite"):
        out = state.user_input(typed)
        assert not out.frames and out.lines


def test_a_kick_of_me_leaves_the_room_and_others_are_told() -> None:
    state = online(rooms=("#lobby", "#b"))
    out = feed(state, frame(type="kick", room="#b", nick="bob", by="alice", reason="x"))
    assert "bob left #b (kicked by alice: x)" in texts(out)
    feed(state, frame(type="kick", room="#lobby", nick="alice", by="op", reason=""))
    assert irc_fold("#lobby") not in state.rooms
    out = feed(state, frame(type="mode", target="#b", by="ann", modes="+m", args=[]))
    assert any("ann set mode +m on #b" in t for t in texts(out))
