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


def rows(views: Any, state: Any) -> list[tuple[str, str]]:
    return [(m.nick, m.rank) for m in views.member_rows(state)]


def test_mode_events_change_ranks_in_the_member_list_as_they_arrive() -> None:
    """An op/voice given or taken shows in the member list at once, not at the next
    joined/who; a mode event about nobody here, or one that does not parse, changes
    nothing (and costs nothing)."""
    from test_client_views import feed as show
    from test_client_views import setup

    state, views = setup()
    views.switch("#lobby", state)
    show(state, views, type="join", room="#lobby", nick="carol")
    assert rows(views, state) == [("bob", ""), ("carol", ""), ("alice", "")]
    show(state, views, type="mode", target="#lobby", by="alice", modes="+o", args=["Bob"])
    assert rows(views, state)[0] == ("bob", "@")
    show(state, views, type="mode", target="#lobby", by="bob", modes="+vv", args=["carol", "bob"])
    assert rows(views, state) == [("bob", "@+"), ("carol", "+"), ("alice", "")]
    show(state, views, type="mode", target="#lobby", by="bob", modes="-o+o", args=["bob", "alice"])
    assert rows(views, state) == [("alice", "@"), ("bob", "+"), ("carol", "+")]
    show(state, views, type="mode", target="#lobby", by="x", modes="-v-v", args=["bob", "carol"])
    assert sorted(rows(views, state)) == [("alice", "@"), ("bob", ""), ("carol", "")]
    # Bans and mutes take their argument without touching a rank.
    show(state, views, type="mode", target="#lobby", by="x", modes="+bo", args=["c*!*@*", "carol"])
    assert sorted(rows(views, state)) == [("alice", "@"), ("bob", ""), ("carol", "@")]
    before = sorted(rows(views, state))
    for bad in (
        {"modes": "+o", "args": []},  # an argument missing
        {"modes": "+o", "args": [7]},
        {"modes": "+o", "args": "bob"},
        {"modes": "+\x1b", "args": []},
        {"modes": 5, "args": ["bob"]},
        {"modes": "-o", "args": ["nobody"]},  # not a member
        {"target": "#elsewhere", "modes": "-o", "args": ["alice"]},  # not our room
        {"target": "alice", "modes": "-o", "args": ["alice"]},  # a user mode
    ):
        show(state, views, **{"type": "mode", "target": "#lobby", "by": "x", **bad})
    assert sorted(rows(views, state)) == before
    assert state.rooms[irc_fold("#lobby")].modes is None  # no query answer yet


def test_room_modes_show_after_a_query_and_follow_each_change() -> None:
    from test_client_views import feed as show
    from test_client_views import setup

    state, views = setup()
    views.switch("#lobby", state)
    show(state, views, type="topic", room="#lobby", topic="release day", by="bob")
    show(state, views, type="mode", target="#lobby", by="bob", modes="+m", args=[])
    assert views.topic(state) == "release day"  # the rest of its modes are not known yet
    show(state, views, type="mode", target="#lobby", by="", modes="+mntk", args=["sesame"])
    assert views.topic(state) == "[+kmnt] release day"
    show(state, views, type="mode", target="#lobby", by="bob", modes="-m+i", args=[])
    assert views.topic(state) == "[+iknt] release day"
    show(state, views, type="mode", target="#lobby", by="bob", modes="-k", args=[])
    show(state, views, type="mode", target="#lobby", by="bob", modes="+k-i", args=["x"])
    assert views.topic(state) == "[+knt] release day"
    show(state, views, type="mode", target="#dev", by="carol", modes="+m", args=[])
    assert views.topic(state) == "[+knt] release day"  # another room's change
    # A rejoin after a reconnect: they may have changed meanwhile; not shown until asked.
    state.disconnected("reset")
    state.connected()
    show(state, views, type="welcome", nick="alice", server="s", motd=[])
    show(state, views, type="joined", room="#lobby", topic="t", members=["alice", "bob"])
    assert views.topic(state) == "t"
