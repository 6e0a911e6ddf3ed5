"""The client's pure core: plain pytest, no sockets, no terminal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from client.core import (
    COMMANDS,
    GAP_PAGE,
    ChatState,
    Kind,
    Limits,
    Output,
    default_nick,
    encode,
    irc_fold,
    parse_address,
    sanitize,
)


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def msg(mid: int, text: str = "", sender: str = "bob", room: str = "#lobby", **kw: Any) -> str:
    return frame(
        type="msg", room=room, **{"from": sender}, text=text or f"m{mid}", ts=1.0, mid=mid, **kw
    )


def online(nick: str = "alice", rooms: tuple[str, ...] = ("#lobby",)) -> ChatState:
    """A state that has registered and joined ``rooms`` (the first is current)."""
    state = ChatState(nick, rooms[0], server="h:1")
    state.connected()
    feed(state, "chatd 0.1 ready", frame(type="welcome", nick=nick, server="chatd", motd=[]))
    for room in rooms:
        state.user_input(f"/join {room}")  # the client accepts only joins it asked for
        feed(state, frame(type="joined", room=room, topic="", members=[nick, "bob"]))
    state.current = irc_fold(rooms[0])
    return state


def feed(state: ChatState, *lines: str) -> Output:
    out = Output()
    for line in lines:
        out.extend(state.server_line(line))
    return out


def texts(out: Output) -> list[str]:
    return [line.text for line in out.lines]


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("plain", "plain"),
        ("a\x1b[31mred", "a\ufffd[31mred"),  # ESC
        ("bell\x07", "bell\ufffd"),
        ("nul\x00", "nul\ufffd"),
        ("del\x7f", "del\ufffd"),
        ("csi\x9b2J", "csi\ufffd2J"),  # C1 CSI
        ("cr\rover", "cr\ufffdover"),  # a carriage return could overwrite the line
        ("bidi\u202eevil", "bidi\ufffdevil"),
        ("iso\u2066x\u2069", "iso\ufffdx\ufffd"),
        ("tab\there", "tab    here"),
        ("two\nlines", "two\nlines"),
        ("<b>html</b> &amp;", "<b>html</b> &amp;"),  # markup is just text
        ("emoji 😀 ünï", "emoji 😀 ünï"),
    ],
)
def test_sanitize(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown


def test_sanitize_without_newlines() -> None:
    assert sanitize("a\nb", newlines=False) == "a\ufffdb"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("localhost", ("localhost", 7777)),
        ("example.org:1234", ("example.org", 1234)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:8000", ("::1", 8000)),
        ("[::1]", ("::1", 7777)),
        ("::1", ("::1", 7777)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["host:", "host:x", "host:0", "host:65536", ":80", "[::1", "[::1]x"]
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize(
    "login, nick",
    [
        ("alice", "alice"),
        ("j.doe", "j_doe"),
        ("9lives", "u9lives"),
        ("-x", "u-x"),
        ("", "u"),
        ("a" * 40, "a" * 24),
        ("émile", "_mile"),
    ],
)
def test_default_nick(login: str, nick: str) -> None:
    assert default_nick(login) == nick


def test_encode_is_one_compact_utf8_line() -> None:
    data = encode({"op": "say", "room": "#r", "text": "ü\nx"})
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == {"op": "say", "room": "#r", "text": "ü\nx"}
    assert "ü".encode() in data


def test_irc_fold() -> None:
    assert irc_fold("Bob[]\\^") == "bob{}|~"
    # Exactly the server's rule: only ASCII letters fold, so #Café and #café are two rooms
    # on the server, and must be two rooms here too.
    assert irc_fold("#Café") != irc_fold("#cafÉ")


def test_room_names_follow_the_server_rules() -> None:
    from client.core import normalize_room

    assert normalize_room("lobby") == "#lobby"
    assert normalize_room("#lob\u200bby") is None  # the server refuses look-alikes too
    assert normalize_room("#a b") is None
    assert normalize_room("#l\u043ebby") is None  # Cyrillic o among Latin letters
    assert normalize_room("\uff03\uff4c\uff4f\uff42\uff42\uff59") == "#lobby"  # fullwidth
    assert normalize_room("cafe\u0301") == "#caf\u00e9"  # NFD, as some keyboards type it


# --------------------------------------------------------------------------- registration


def test_connect_says_hello_and_skips_banner() -> None:
    state = ChatState("alice", "#lobby", server="h:1")
    assert state.connected().frames == [{"op": "hello", "nick": "alice"}]
    assert feed(state, "Welcome to chatd!", "", "type your nick").lines == []
    out = feed(state, frame(type="welcome", nick="alice", server="chatd", motd=["be nice\x1b"]))
    assert state.registered and state.link == "connected"
    assert out.frames == [{"op": "join", "room": "#lobby"}]
    assert "be nice\ufffd" in texts(out)


def test_nick_taken_falls_back_then_gives_up() -> None:
    state = ChatState("alice", "#lobby")
    state.connected()
    taken = frame(type="error", code="nick_taken", message="taken")
    out = feed(state, taken)
    assert out.frames == [{"op": "hello", "nick": "alice_"}]
    out = feed(state, taken)
    assert out.frames == [{"op": "hello", "nick": "alice__"}]
    for _ in range(3):
        feed(state, taken)
    out = feed(state, taken)
    assert out.fatal and "alice" in out.fatal and not out.frames


def test_fallback_nick_is_reported_after_welcome() -> None:
    state = ChatState("alice", "#lobby")
    state.connected()
    feed(state, frame(type="error", code="nick_taken", message="taken"))
    out = feed(state, frame(type="welcome", nick="alice_", server="s", motd=[]))
    assert state.nick == "alice_"
    assert any("alice was taken" in t for t in texts(out))


def test_fallback_nick_respects_length_limit() -> None:
    state = ChatState("a" * 24, "#lobby")
    state.connected()
    out = feed(state, frame(type="error", code="nick_taken", message="taken"))
    assert out.frames[0]["nick"] == "a" * 23 + "_"


@pytest.mark.parametrize(
    "code, words",
    [("bad_nick", "refused nick"), ("server_full", "full"), ("bad_password", "password")],
)
def test_registration_errors_are_fatal(code: str, words: str) -> None:
    state = ChatState("alice", "#lobby")
    state.connected()
    out = feed(state, frame(type="error", code=code, message="no"))
    assert out.fatal and words in out.fatal


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    "typed, frames",
    [
        ("hello", [{"op": "say", "room": "#lobby", "text": "hello"}]),
        ("  spaced  ", [{"op": "say", "room": "#lobby", "text": "  spaced"}]),
        ("line one\nline two\n", [{"op": "say", "room": "#lobby", "text": "line one\nline two"}]),
        ("//etc/passwd", [{"op": "say", "room": "#lobby", "text": "/etc/passwd"}]),
        ("/join #rust", [{"op": "join", "room": "#rust"}]),
        ("/join rust", [{"op": "join", "room": "#rust"}]),
        ("/j #rust", [{"op": "join", "room": "#rust"}]),
        ("/part", [{"op": "part", "room": "#lobby"}]),
        ("/part bye all", [{"op": "part", "room": "#lobby", "reason": "bye all"}]),
        ("/part #lobby later", [{"op": "part", "room": "#lobby", "reason": "later"}]),
        ("/msg bob psst", [{"op": "msg", "to": "bob", "text": "psst"}]),
        ("/me waves", [{"op": "me", "room": "#lobby", "text": "waves"}]),
        ("/me\nwaves", [{"op": "me", "room": "#lobby", "text": "waves"}]),
        ("/nick alicia", [{"op": "nick", "nick": "alicia"}]),
        ("/who", [{"op": "who", "room": "#lobby"}]),
        ("/who #other", [{"op": "who", "room": "#other"}]),
        ("/rooms", [{"op": "rooms"}]),
        ("/topic", [{"op": "topic", "room": "#lobby"}]),
        ("/topic lunch at noon", [{"op": "topic", "room": "#lobby", "topic": "lunch at noon"}]),
        ("/away gone fishing", [{"op": "away", "message": "gone fishing"}]),
        ("/away", [{"op": "away"}]),
        ("/whois bob", [{"op": "whois", "nick": "bob"}]),
        ("/quit", [{"op": "quit"}]),
        ("/quit see you", [{"op": "quit", "reason": "see you"}]),
        ("/QUIT", [{"op": "quit"}]),
        ("", []),
        ("   ", []),
        ("/help", []),
    ],
)
def test_command_frames(typed: str, frames: list[dict[str, Any]]) -> None:
    out = online().user_input(typed)
    assert out.frames == frames
    assert not any(line.kind is Kind.ERROR for line in out.lines)


@pytest.mark.parametrize(
    "typed, complaint",
    [
        ("/join", "usage: /join"),
        ("/join #has,comma", "usage: /join"),
        ("/join #" + "x" * 33, "usage: /join"),
        ("/msg", "usage: /msg"),
        ("/msg bob", "usage: /msg"),
        ("/msg 9bob hi", "not a valid nick"),
        ("/me", "usage: /me"),
        ("/nick", "usage: /nick"),
        ("/nick two words", "usage: /nick"),
        ("/nick 1abc", "not a valid nick"),
        ("/nick " + "a" * 25, "not a valid nick"),
        ("/who ##, x", "usage: /who"),
        ("/whois", "usage: /whois"),
        ("/history x", "usage: /history"),
        ("/history 0", "usage: /history"),
        ("/history 100000", "usage: /history"),
        ("/switch", "usage: /switch"),
        ("/switch #nowhere", "not in #nowhere"),
        ("/part #nowhere", "not in #nowhere"),
        ("/frobnicate", "unknown command /frobnicate"),
        ("/\x1b[2J", "unknown command /\ufffd[2j"),
        ("x" * (Limits().max_text_chars + 1), "too long"),
        ("€" * 1500, "too long"),  # under 2000 characters but over 4096 bytes
    ],
)
def test_bad_command_arguments(typed: str, complaint: str) -> None:
    out = online().user_input(typed)
    assert out.frames == []
    assert [line.kind for line in out.lines] == [Kind.ERROR]
    assert complaint in out.lines[0].text


def test_every_command_is_documented_in_help() -> None:
    shown = " ".join(texts(online().user_input("/help")))
    for command in COMMANDS:
        assert command.usage in shown


def test_quit_sets_quit_and_ctrl_d_is_the_same() -> None:
    state = online()
    assert state.user_input("/quit").quit
    assert state.quit().frames == [{"op": "quit"}]


def test_saying_without_a_room() -> None:
    state = online()
    feed(state, frame(type="part", room="#lobby", nick="alice", reason=""))
    out = state.user_input("anyone?")
    assert out.frames == [] and "no room" in out.lines[0].text


def test_history_asks_before_the_oldest_shown() -> None:
    state = online()
    feed(state, msg(10), msg(11))
    (req,) = state.user_input("/history 5").frames
    assert req["op"] == "history" and req["before"] == 10 and req["limit"] == 5
    state2 = online()
    (req2,) = state2.user_input("/history").frames
    assert req2["before"] is None and req2["limit"] == 20


def test_history_reply_shows_earlier_messages() -> None:
    state = online()
    feed(state, msg(10))
    (req,) = state.user_input("/history 2").frames
    reply = frame(
        type="history",
        room="#lobby",
        id=req["id"],
        messages=[json.loads(msg(8)), json.loads(msg(9))],
    )
    out = feed(state, reply)
    assert texts(out) == ["m8", "m9"]
    assert all(line.earlier for line in out.lines)
    (req,) = state.user_input("/history 2").frames
    assert req["before"] == 8
    out = feed(state, frame(type="history", room="#lobby", id=req["id"], messages=[]))
    assert "no earlier messages" in texts(out)[0]


def test_join_switch_and_cycle() -> None:
    state = online(rooms=("#a", "#b", "#c"))
    assert state.current_room and state.current_room.name == "#a"
    state.user_input("/switch #c")
    assert state.current_room.name == "#c"
    state.cycle_room(1)
    assert state.current_room.name == "#a"
    state.cycle_room(-1)
    assert state.current_room.name == "#c"
    state.user_input("/go b")
    assert state.current_room.name == "#b"
    # /join of a room already joined just switches to it
    assert state.user_input("/join #a").frames == []
    assert state.current_room.name == "#a"


def test_explicit_join_becomes_current() -> None:
    state = online()
    state.user_input("/join #Rust")
    feed(state, frame(type="joined", room="#Rust", topic="t", members=["alice"]))
    assert state.current_room and state.current_room.name == "#Rust"
    assert state.room_names() == ["#lobby", "#Rust"]


def test_part_of_current_falls_back_to_previous_room() -> None:
    state = online(rooms=("#a", "#b", "#c"))
    state.user_input("/switch #b")
    out = feed(state, frame(type="part", room="#b", nick="alice", reason="bye"))
    assert state.current_room and state.current_room.name == "#a"
    assert "you left #b (bye)" in texts(out)


# --------------------------------------------------------------------------- server events


def test_every_server_event_type() -> None:
    state = online()
    cases: list[tuple[str, Kind, str]] = [
        (msg(1, "hi"), Kind.MSG, "hi"),
        (msg(2, "mine", sender="alice"), Kind.OWN, "mine"),
        (msg(3, "waves", action=True), Kind.ACTION, "waves"),
        (
            frame(type="privmsg", **{"from": "bob"}, to="alice", text="psst", ts=1.0),
            Kind.PRIVATE,
            "psst",
        ),
        (frame(type="join", room="#lobby", nick="carol"), Kind.SYSTEM, "carol joined #lobby"),
        (
            frame(type="part", room="#lobby", nick="carol", reason="bye"),
            Kind.SYSTEM,
            "carol left #lobby (bye)",
        ),
        (frame(type="quit", nick="bob", reason="reset"), Kind.SYSTEM, "bob quit (reset)"),
        (frame(type="nick", old="dave", new="dan"), Kind.SYSTEM, "dave is now known as dan"),
        (
            frame(type="topic", room="#lobby", topic="lunch", by="bob"),
            Kind.SYSTEM,
            "bob set the topic of #lobby: lunch",
        ),
        (frame(type="topic", room="#lobby", topic="lunch", by=""), Kind.INFO, "topic of #lobby"),
        (frame(type="topic", room="#lobby", topic="", by=""), Kind.INFO, "has no topic"),
        (frame(type="who", room="#lobby", members=["alice", "x"]), Kind.INFO, "2 members"),
        (
            frame(type="rooms", rooms=[{"room": "#a", "members": 3, "topic": "t"}]),
            Kind.INFO,
            "#a  3 members  t",
        ),
        (frame(type="rooms", rooms=[]), Kind.INFO, "no rooms"),
        (frame(type="away", away=True), Kind.INFO, "away"),
        (frame(type="away", away=False), Kind.INFO, "back"),
        (frame(type="whois", nick="bob", rooms=["#a"], away=None), Kind.INFO, "bob is in #a"),
        (frame(type="notice", text="hello from the server"), Kind.INFO, "hello from the server"),
        (frame(type="shutdown", reason="maintenance"), Kind.ERROR, "shutting down: maintenance"),
        (frame(type="error", code="no_such_nick", message="nobody"), Kind.ERROR, "no_such_nick"),
        (frame(type="skipped", count=7), Kind.INFO, "7 messages were skipped"),
    ]
    for line, kind, text in cases:
        out = state.server_line(line)
        assert out.lines, line
        assert out.lines[0].kind is kind, line
        assert text in out.lines[0].text, (line, out.lines[0].text)


@pytest.mark.parametrize(
    "line",
    [
        frame(type="pong"),
        frame(type="brand_new_thing", x=1),  # unknown types are ignored
    ],
)
def test_quiet_frames(line: str) -> None:
    out = online().server_line(line)
    assert out.lines == [] and out.frames == []


@pytest.mark.parametrize(
    "line",
    [
        "{not json",
        "{}",
        "[1, 2]",
        '{"type": 5}',
        frame(type="msg", room="#lobby", text="no sender", ts=1, mid=1),
        frame(type="msg", room="#lobby", **{"from": "bob"}, text="x", ts=1, mid="1"),
        frame(type="msg", room="#lobby", **{"from": "bob"}, text="x", ts=1, mid=True),
        frame(type="msg", room=5, **{"from": "bob"}, text="x", ts=1, mid=1),
        frame(type="msg", room="#lobby", **{"from": "bob"}, text=None, ts=1, mid=1),
        frame(type="joined", room="#x", members="alice"),
        frame(type="history", room="#lobby", messages="nope"),
        frame(type="rooms", rooms={}),
        frame(type="nick", old="a"),
        '{"type":"msg"' + "x" * 10000,
        "\x00\x01\x02",
    ],
)
def test_garbled_frames_are_ignored(line: str) -> None:
    state = online()
    out = state.server_line(line)
    assert out.lines == [] and out.frames == [] and not out.quit
    assert state.registered  # and nothing else broke
    assert texts(state.server_line(msg(5, "still fine"))) == ["still fine"]


def test_control_characters_from_the_server_are_defused() -> None:
    state = online()
    out = feed(
        state,
        frame(type="msg", room="#lobby", **{"from": "bob"}, text="\x1b]0;pwned\x07", ts=1, mid=1),
    )
    (line,) = out.lines
    assert "\x1b" not in line.text and "\x07" not in line.text


def test_a_sender_that_is_not_a_valid_nick_is_refused() -> None:
    """Server-supplied names are checked with chatd.names, not merely sanitised."""
    state = online()
    for sender in ("ev\x1bil", "bob\u200b", "not a nick!", "\u3164"):
        out = feed(
            state, frame(type="msg", room="#lobby", **{"from": sender}, text="x", ts=1, mid=1)
        )
        assert out.lines == []


def test_msg_fields() -> None:
    state = online()
    (line,) = feed(state, msg(1, "hi", room="#lobby")).lines
    assert (line.ts, line.room, line.nick, line.own, line.mention) == (
        1.0,
        "#lobby",
        "bob",
        False,
        False,
    )


@pytest.mark.parametrize(
    "text, mention",
    [
        ("hi alice", True),
        ("ALICE: look", True),
        ("alice's", True),
        ("malice", False),
        ("alice_ is someone else", False),
        ("nothing here", False),
    ],
)
def test_mentions(text: str, mention: bool) -> None:
    (line,) = feed(online(), msg(1, text)).lines
    assert line.mention is mention


def test_own_messages_never_mention() -> None:
    (line,) = feed(online(), msg(1, "alice here", sender="alice")).lines
    assert line.kind is Kind.OWN and not line.mention


def test_private_messages_either_way() -> None:
    state = online()
    incoming = feed(state, frame(type="privmsg", **{"from": "bob"}, to="alice", text="x", ts=1))
    outgoing = feed(state, frame(type="privmsg", **{"from": "alice"}, to="bob", text="y", ts=1))
    assert incoming.lines[0].mention and not incoming.lines[0].own
    assert outgoing.lines[0].own and not outgoing.lines[0].mention
    assert outgoing.lines[0].target == "bob"
    action = feed(
        state, frame(type="privmsg", **{"from": "bob"}, to="alice", text="waves", ts=1, action=True)
    )
    assert action.lines[0].text == "* bob waves"


def test_members_follow_join_part_quit_nick() -> None:
    state = online()
    feed(state, frame(type="join", room="#lobby", nick="carol"))
    assert state.members() == ["alice", "bob", "carol"]
    feed(state, frame(type="nick", old="carol", new="caz"))
    assert state.members() == ["alice", "bob", "caz"]
    feed(state, frame(type="part", room="#lobby", nick="caz", reason=""))
    feed(state, frame(type="quit", nick="BOB", reason=""))
    assert state.members() == ["alice"]
    feed(state, frame(type="nick", old="alice", new="alicia"))
    assert state.nick == "alicia" and state.members() == ["alicia"]


def test_toolbar() -> None:
    state = online()
    assert dict(state.toolbar()) == {
        "state": "connected",
        "server": "h:1",
        "nick": "alice",
        "room": "#lobby",
        "members": "2 here",
    }


@pytest.mark.parametrize("width", [100, 60, 40, 30])
def test_toolbar_degrades_on_narrow_terminals(width: int) -> None:
    state = online(nick="alexandra_the_great", rooms=("#a-rather-long-room",))
    feed(state, frame(type="away", away=True))
    state.link = "reconnecting in 12 s (attempt 3; F5: now)"
    fields = dict(state.toolbar(width))
    shown = 1 + sum(len(v) for v in fields.values()) + 3 * (len(fields) - 1)
    assert shown <= width or width < 40, fields
    assert {"nick", "room", "members", "away", "state"} <= set(fields)
    assert fields["members"].startswith("2")
    if width <= 40:
        assert "server" not in fields and fields["state"] == "retry 12s"


def test_messages_for_other_rooms_keep_their_room() -> None:
    state = online(rooms=("#a", "#b"))
    (line,) = feed(state, msg(1, "x", room="#b")).lines
    assert line.room == "#b"


# --------------------------------------------------------------------------- gaps, dedupe


def test_duplicates_are_dropped() -> None:
    state = online()
    out = feed(state, msg(1), msg(2), msg(2), msg(1))
    assert texts(out) == ["m1", "m2"]


def test_replay_on_first_join_is_shown_as_earlier() -> None:
    state = ChatState("alice", "#lobby")
    state.connected()
    feed(state, frame(type="welcome", nick="alice", server="s", motd=[]))
    out = feed(
        state,
        frame(type="joined", room="#lobby", topic="", members=["alice"]),
        msg(1, history=True),
        msg(2, history=True),
        frame(type="history_end", room="#lobby"),
        msg(3),
    )
    shown = [line for line in out.lines if line.kind is Kind.MSG]
    assert [(line.text, line.earlier) for line in shown] == [
        ("m1", True),
        ("m2", True),
        ("m3", False),
    ]


def reconnect(state: ChatState) -> Output:
    out = state.disconnected("reset")
    out.extend(state.connected())
    out.extend(feed(state, "banner", frame(type="welcome", nick="alice", server="s", motd=[])))
    return out


def test_reconnect_rejoins_and_fetches_exactly_the_gap() -> None:
    state = online(rooms=("#lobby", "#dev"))
    state.user_input("/switch #dev")
    feed(state, msg(1), msg(2))
    out = reconnect(state)
    assert "disconnected" in out.lines[0].text and out.lines[0].kind is Kind.ERROR
    assert {"op": "join", "room": "#lobby"} in out.frames
    assert {"op": "join", "room": "#dev"} in out.frames
    assert state.current_room and state.current_room.name == "#dev"  # not moved
    out = feed(state, frame(type="joined", room="#lobby", topic="", members=["alice"]))
    (gap,) = [f for f in out.frames if f["op"] == "history"]
    assert gap["after"] == 2 and gap["room"] == "#lobby"
    # the replay and live messages arriving meanwhile are held, then merged in order
    out = feed(
        state,
        msg(3, history=True),
        msg(4, history=True),
        frame(type="history_end", room="#lobby"),
        msg(7),
    )
    assert [line for line in out.lines if line.kind is Kind.MSG] == []
    reply = frame(
        type="history",
        room="#lobby",
        id=gap["id"],
        messages=[json.loads(msg(n)) for n in (3, 4, 5, 6)],
    )
    out = feed(state, reply)
    assert texts(out) == ["m3", "m4", "m5", "m6", "m7"]
    assert not any(line.earlier for line in out.lines)
    assert texts(feed(state, msg(8))) == ["m8"]
    assert state.current_room.name == "#dev"


def test_gap_into_pruned_history_says_so() -> None:
    state = online()
    feed(state, msg(1), msg(2))
    reconnect(state)
    out = feed(state, frame(type="joined", room="#lobby", topic="", members=["alice"]))
    (gap,) = [f for f in out.frames if f["op"] == "history"]
    reply = frame(
        type="history",
        room="#lobby",
        id=gap["id"],
        start=9,  # messages 3..8 were pruned by the server's retention
        messages=[json.loads(msg(n)) for n in (9, 10)],
    )
    out = feed(state, reply)
    assert texts(out) == [
        "some messages you missed in #lobby are no longer kept by the server",
        "m9",
        "m10",
    ]
    # a reply without "start" says nothing of the kind
    out = feed(state, frame(type="history", room="#lobby", messages=[]))
    assert not any("no longer kept" in line.text for line in out.lines)


def test_long_gap_is_paged() -> None:
    state = online()
    feed(state, msg(1))
    reconnect(state)
    out = feed(state, frame(type="joined", room="#lobby", topic="", members=["alice"]))
    (gap,) = out.frames
    page = [json.loads(msg(n)) for n in range(2, 2 + GAP_PAGE)]
    out = feed(state, frame(type="history", room="#lobby", id=gap["id"], messages=page))
    (more,) = out.frames
    assert more["after"] == 1 + GAP_PAGE
    shown = texts(out)  # each page is shown as it comes; live messages wait
    assert texts(feed(state, msg(GAP_PAGE + 3))) == []
    out = feed(
        state,
        frame(
            type="history", room="#lobby", id=more["id"], messages=[json.loads(msg(GAP_PAGE + 2))]
        ),
    )
    shown += texts(out)
    assert shown == [f"m{n}" for n in range(2, GAP_PAGE + 4)]


def test_gap_fetch_on_server_without_history() -> None:
    state = online()
    feed(state, msg(40))
    reconnect(state)
    out = feed(state, frame(type="joined", room="#lobby", topic="", members=["alice"]))
    (gap,) = out.frames
    held = feed(state, msg(1, "fresh server"))
    assert held.lines == []
    out = feed(state, frame(type="error", code="history_off", message="off", id=gap["id"]))
    assert texts(out) == ["fresh server"]  # not a duplicate of anything: a restarted server
    assert texts(feed(state, msg(2, "next"))) == ["next"]


def test_skipped_fetches_the_gap_of_every_room() -> None:
    state = online(rooms=("#a", "#b"))
    feed(state, msg(1, room="#a"), msg(2, room="#b"))
    out = feed(state, frame(type="skipped", count=3))
    reqs = {f["room"]: f for f in out.frames}
    assert reqs["#a"]["after"] == 1 and reqs["#b"]["after"] == 2
    out = feed(state, msg(9, room="#a"))
    assert out.lines == []
    out = feed(
        state,
        frame(
            type="history",
            room="#a",
            id=reqs["#a"]["id"],
            messages=[json.loads(msg(n, room="#a")) for n in (3, 5, 9)],
        ),
    )
    assert texts(out) == ["m3", "m5", "m9"]


def test_history_end_is_quiet_and_asks_for_a_floor_only_when_nothing_was_shown() -> None:
    state = online()
    out = feed(state, frame(type="history_end", room="#lobby"))
    assert out.lines == []
    (floor,) = out.frames
    assert floor["op"] == "history" and floor["limit"] == 1
    assert floor["before"] is None and floor["after"] is None  # the room's newest
    shown = online()
    feed(shown, msg(3, history=True))
    assert feed(shown, frame(type="history_end", room="#lobby")) == Output()


@pytest.mark.parametrize("newest", [None, 7], ids=["empty room", "replay off"])
def test_gap_after_a_reconnect_when_nothing_was_shown(newest: int | None) -> None:
    """A quiet room (or a server replaying nothing): no mid was ever shown, yet the
    messages sent while we were away must come back whole, not as the replay's tail."""
    state = online()
    (floor,) = feed(state, frame(type="history_end", room="#lobby")).frames
    before = [json.loads(msg(newest))] if newest else []
    assert (
        feed(state, frame(type="history", room="#lobby", id=floor["id"], messages=before))
        == Output()
    )
    reconnect(state)
    out = feed(state, frame(type="joined", room="#lobby", topic="", members=["alice"]))
    (gap,) = out.frames
    assert gap["after"] == (newest or 0)
    base = newest or 0
    out = feed(
        state, msg(base + 4, history=True), frame(type="history_end", room="#lobby"), msg(base + 5)
    )
    assert out.lines == [] and out.frames == []  # held; no second floor request
    missed = [json.loads(msg(base + n)) for n in (1, 2, 3, 4, 5)]
    out = feed(state, frame(type="history", room="#lobby", id=gap["id"], messages=missed))
    assert texts(out) == [f"m{base + n}" for n in (1, 2, 3, 4, 5)]
    assert not any(line.earlier for line in out.lines)


def test_skipped_when_nothing_was_shown_fetches_after_the_floor() -> None:
    state = online()
    (floor,) = feed(state, frame(type="history_end", room="#lobby")).frames
    feed(state, frame(type="history", room="#lobby", id=floor["id"], messages=[]))
    (gap,) = feed(state, frame(type="skipped", count=2)).frames
    assert gap["after"] == 0
    out = feed(
        state,
        frame(
            type="history",
            room="#lobby",
            id=gap["id"],
            messages=[json.loads(msg(1)), json.loads(msg(2))],
        ),
    )
    assert texts(out) == ["m1", "m2"]


def test_floor_request_on_a_server_without_history_is_silent() -> None:
    state = online()
    (floor,) = feed(state, frame(type="history_end", room="#lobby")).frames
    out = feed(state, frame(type="error", code="history_off", message="off", id=floor["id"]))
    assert out == Output()
    out = reconnect(state)
    out = feed(state, frame(type="joined", room="#lobby", topic="", members=["alice"]))
    assert out.frames == []  # no floor, no gap to fetch


def test_history_reply_without_id_is_matched_by_room() -> None:
    state = online()
    feed(state, msg(1))
    reconnect(state)
    feed(state, frame(type="joined", room="#lobby", topic="", members=["alice"]))
    out = feed(state, frame(type="history", room="#lobby", messages=[json.loads(msg(2))]))
    assert texts(out) == ["m2"]


def test_typed_while_disconnected_is_sent_after_rejoin() -> None:
    state = online()
    state.disconnected("reset")
    out = state.user_input("are you there?")
    assert out.frames == [] and "will be sent" in out.lines[0].text
    out = state.user_input("/msg bob later")
    assert out.frames == []
    assert state.user_input("/who").frames == []  # not worth queueing: says so
    state.connected()
    out = feed(state, frame(type="welcome", nick="alice", server="s", motd=[]))
    assert {"op": "msg", "to": "bob", "text": "later"} in out.frames
    assert {"op": "say", "room": "#lobby", "text": "are you there?"} not in out.frames
    out = feed(state, frame(type="joined", room="#lobby", topic="", members=["alice"]))
    assert {"op": "say", "room": "#lobby", "text": "are you there?"} in out.frames


def test_disconnect_before_registration_is_quiet() -> None:
    state = ChatState("alice", "#lobby")
    state.connected()
    assert state.disconnected().lines == []
    assert state.link == "disconnected"


def test_quit_while_disconnected_sends_nothing() -> None:
    state = online()
    state.disconnected()
    out = state.user_input("/quit")
    assert out.quit and out.frames == []
