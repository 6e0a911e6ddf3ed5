"""The full-screen client's buffers (client.views): pure state, no terminal."""

from __future__ import annotations

import json
from typing import Any

from client.core import ChatState
from client.values import Kind, Line
from client.views import SERVER, Views


def feed(state: ChatState, views: Views, **fields: Any) -> None:
    """What FullScreen.show does: the state changes first, then the views follow it."""
    out = state.server_line(json.dumps(fields))
    views.sync(state)
    for line in out.lines:
        views.route(line, state)


def setup() -> tuple[ChatState, Views]:
    state, views = ChatState("alice", "#lobby", server="h:1"), Views()
    state.connected()
    feed(state, views, type="welcome", nick="alice", server="s", motd=[])
    feed(state, views, type="joined", room="#lobby", topic="", members=["alice", "bob"])
    state.user_input("/join #dev")
    feed(state, views, type="joined", room="#dev", topic="", members=["alice", "carol"])
    return state, views


def msg(room: str, text: str, mid: int, sender: str = "bob") -> dict[str, Any]:
    return {"type": "msg", "room": room, "from": sender, "text": text, "ts": 1.0, "mid": mid}


def test_a_buffer_per_room_and_per_conversation() -> None:
    state, views = setup()
    assert list(views.buffers) == [SERVER, "#lobby", "#dev"]
    assert views.active == "#dev"  # /join makes it current
    feed(state, views, type="privmsg", to="alice", text="psst", ts=1.0, **{"from": "bob"})
    assert list(views.buffers)[-1] == "@bob" and views.buffers["@bob"].nick == "bob"
    assert [line.text for line in views.buffers["@bob"].lines] == ["psst"]


def test_unread_and_mention_counts() -> None:
    state, views = setup()
    feed(state, views, **msg("#lobby", "hello all", 1))
    feed(state, views, **msg("#lobby", "alice: you there?", 2))
    feed(state, views, **msg("#dev", "in the shown buffer", 3, "carol"))
    lobby, dev = views.buffers["#lobby"], views.buffers["#dev"]
    assert (lobby.unread, lobby.mentions) == (2, 1)
    assert (dev.unread, dev.mentions) == (0, 0)
    assert [text for _, text in views.bar(100) if text.strip()] == [
        "1:server",
        "2:#lobby(2!)",
        "3:#dev",
    ]
    views.switch("#lobby", state)
    assert (lobby.unread, lobby.mentions) == (0, 0) and state.current == "#lobby"


def test_alt_a_goes_to_mentions_first() -> None:
    state, views = setup()
    views.switch(SERVER, state)
    feed(state, views, **msg("#lobby", "plain", 1))
    feed(state, views, **msg("#dev", "alice!", 2, "carol"))
    views.next_active(state)
    assert views.active == "#dev"
    views.next_active(state)
    assert views.active == "#lobby"


def test_jump_and_cycle() -> None:
    state, views = setup()
    views.jump(2, state)
    assert views.active == "#lobby" and state.current == "#lobby"
    views.cycle(1, state)
    assert views.active == "#dev"
    views.cycle(1, state)
    assert views.active == SERVER
    views.jump(9, state)  # no such buffer
    assert views.active == SERVER


def test_parting_closes_the_buffer() -> None:
    state, views = setup()
    feed(state, views, type="part", room="#dev", nick="alice", reason="")
    assert "#dev" not in views.buffers and views.active == "#lobby"
    assert any("you left #dev" in line.text for line in views.buffers["#lobby"].lines)


def test_scrollback_is_bounded_and_scroll_offsets() -> None:
    state, views = setup()
    for n in range(1, 2600):
        feed(state, views, **msg("#dev", f"m{n}", n, "carol"))
    assert len(views.buffers["#dev"].lines) == 2000
    views.scroll(10)
    views.scroll(-3)
    assert views.current.scroll == 7
    views.scroll(-100)
    assert views.current.scroll == 0


def test_narrow_bar_keeps_the_active_and_busy_buffers() -> None:
    state, views = setup()
    for n in range(8):
        state.user_input(f"/join #room{n}")
        feed(state, views, type="joined", room=f"#room{n}", topic="", members=["alice"])
    views.switch("#lobby", state)
    feed(state, views, **msg("#dev", "news", 1, "carol"))
    texts = [text for _, text in views.bar(40) if text.strip()]
    assert texts == ["2:#lobby", "3:#dev(1)"]
    assert sum(len(text) for _, text in views.bar(20)) <= 20


def test_member_list_me_last() -> None:
    state, views = setup()
    views.switch("#lobby", state)
    feed(state, views, type="join", room="#lobby", nick="aaron")
    assert views.members(state) == ["aaron", "bob", "alice"]
    views.switch(SERVER, state)
    assert views.members(state) == []


def test_topic_and_day_change_separator() -> None:
    state, views = setup()
    views.switch("#lobby", state)
    feed(state, views, type="topic", room="#lobby", topic="release day", by="bob")
    assert views.topic(state) == "release day"
    day = 86400.0 * 20000 + 43200  # noon, far from any time zone's midnight
    feed(state, views, **{**msg("#lobby", "before", 1), "ts": day})
    feed(state, views, **{**msg("#lobby", "same day", 2), "ts": day + 60})
    feed(state, views, **{**msg("#lobby", "after", 3), "ts": day + 86400})
    texts = [line.text for line in views.buffers["#lobby"].lines][-4:]
    assert texts[:2] == ["before", "same day"] and texts[3] == "after"
    assert texts[2].startswith("day changed to ")


def test_search_in_the_shown_buffer() -> None:
    state, views = setup()
    feed(state, views, **msg("#dev", "the Build is green", 1, "carol"))
    feed(state, views, **msg("#dev", "lunch?", 2, "carol"))
    feed(state, views, **msg("#lobby", "build elsewhere", 3))
    assert [line.text for line in views.search("build")] == ["the Build is green"]


def test_info_lines_go_to_the_shown_buffer() -> None:
    state, views = setup()
    views.route(Line(Kind.INFO, "hello"), state)
    assert views.buffers["#dev"].lines[-1].text == "hello"


def test_full_screen_drawing_at_100_and_40_columns() -> None:
    """The message area is bottom-aligned, wrapped with the hanging indent, and loses the
    member list below 60 columns (the drawing functions, without a terminal)."""
    import asyncio

    from prompt_toolkit.data_structures import Size
    from prompt_toolkit.output import DummyOutput

    from client import app, fullscreen

    class Sized(DummyOutput):
        columns = 100

        def get_size(self) -> Size:
            return Size(rows=12, columns=self.columns)

    async def scenario() -> None:
        opts = app.Options(host="h", port=1, nick="alice", room="#lobby", history_file=None)
        chat = app.ChatApp(opts)
        output = Sized()
        screen = fullscreen.FullScreen(chat, None, output)
        state = chat.state
        state.connected()
        state.server_line(json.dumps({"type": "welcome", "nick": "alice", "server": "s"}))
        out = state.server_line(
            json.dumps(
                {"type": "joined", "room": "#lobby", "topic": "", "members": ["alice", "bob"]}
            )
        )
        screen.show(out.lines)
        long = "word " * 30
        screen.show(state.server_line(json.dumps(msg("#lobby", long, 1))).lines)
        assert screen._members_shown()
        rows = "".join(t for _, t, *_ in screen._messages()).split("\n")
        assert len(rows) == 12 - 3 and rows[-1].startswith("    ")  # bottom-aligned, indented
        assert all(len(row) <= 100 - 1 - fullscreen.MEMBERS_WIDTH for row in rows)
        output.columns = 40
        assert not screen._members_shown()
        rows = "".join(t for _, t, *_ in screen._messages()).split("\n")
        assert all(len(row) <= 39 for row in rows)
        assert [r for r in rows if r.strip()][-1].startswith("    ")

    asyncio.run(scenario())


def test_member_list_marks_away_operators_and_voiced() -> None:
    """Away from the protocol's away lists and away_change; @/+ from ops/voiced lists."""
    from client import fullscreen

    state, views = setup()
    feed(
        state,
        views,
        type="who",
        room="#dev",
        members=["alice", "carol", "dave", "erin"],
        away=["dave", "nobody"],
        ops=["erin"],
        voiced=["carol"],
    )
    rows = views.member_rows(state)
    assert [(r.rank, r.nick, r.away) for r in rows] == [
        ("@", "erin", False),
        ("+", "carol", False),
        ("", "dave", True),
        ("", "alice", False),
    ]
    assert "nobody" not in state.away_nicks  # only members are remembered
    feed(state, views, type="away_change", nick="carol", away=True)
    feed(state, views, type="away_change", nick="dave", away=False)
    feed(state, views, type="away_change", nick="stranger", away=True)
    assert state.away_nicks == {"carol"}
    drawn = "".join(t for _, t, *_ in fullscreen.member_fragments(views.member_rows(state), 17))
    assert drawn.split("\n") == ["@erin", "+carol (away)", " dave", " alice"]
    feed(state, views, type="nick", old="carol", new="caro")
    assert state.away_nicks == {"caro"} and views.member_rows(state)[1].rank == "+"
    feed(state, views, type="quit", nick="caro")
    assert state.away_nicks == set()
    feed(state, views, type="away", away=True)  # my own, as the reply tells it
    assert [r.nick for r in views.member_rows(state) if r.away] == ["alice"]
    feed(state, views, type="away", away=False)
    assert state.away_nicks == set()


def test_closing_a_conversation_shows_the_buffer_before_it_properly() -> None:
    """The buffer shown after /close is switched to: its unread count cleared, and as a
    room it becomes the current one (where /who and plain text go)."""
    state, views = setup()
    feed(state, views, type="privmsg", to="alice", text="psst", ts=1.0, **{"from": "bob"})
    views.switch(SERVER, state)
    feed(state, views, **msg("#dev", "news", 1, "carol"))
    views.switch("@bob", state)
    state.current = "#lobby"
    assert views.buffers["#dev"].unread == 1
    views.close("@bob", state)
    assert views.active == "#dev" and views.buffers["#dev"].unread == 0
    assert state.current == "#dev"


def test_the_status_bar_names_the_conversation_shown() -> None:
    state, views = setup()
    feed(state, views, type="privmsg", to="alice", text="psst", ts=1.0, **{"from": "bob"})
    views.switch("@bob", state)
    fields = dict(state.toolbar(100, views.current.nick))
    assert fields["room"] == "private: bob" and "members" not in fields
    assert dict(state.toolbar(100))["room"] == "#dev"
