"""Text and JSON codecs, pure: lines in, commands out; events in, bytes out."""

from __future__ import annotations

import json

import pytest

from chatd.codecs import JsonCodec, TextCodec, pick_codec
from chatd.model import (
    Away,
    AwayNotice,
    AwayReply,
    Echo,
    Error,
    Hello,
    History,
    HistoryEnd,
    HistoryReply,
    Join,
    Joined,
    JoinEvent,
    Message,
    Nick,
    NickEvent,
    Notice,
    Part,
    PartEvent,
    Ping,
    Pong,
    PrivateMessage,
    PrivMsg,
    Probe,
    ProtocolError,
    Quit,
    QuitEvent,
    RoomInfo,
    Rooms,
    RoomsReply,
    Say,
    Shutdown,
    Skipped,
    Topic,
    TopicEvent,
    Welcome,
    Who,
    Whois,
    WhoisReply,
    WhoReply,
)


def test_first_line_picks_the_mode() -> None:
    assert isinstance(pick_codec(b'{"op":"hello"}', False), JsonCodec)
    assert isinstance(pick_codec(b'  {"op"', False), JsonCodec)
    assert isinstance(pick_codec(b"alice", False), TextCodec)


# ---------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    "line, command",
    [
        (b'{"op":"hello","nick":"bob","id":1}', Hello("bob", rid=1)),
        (b'{"op":"hello","nick":"bob","password":"pw"}', Hello("bob", password="pw")),
        (b'{"op":"join","room":"#a"}', Join("#a")),
        (b'{"op":"part","room":"#a","reason":"bye"}', Part("#a", "bye")),
        (b'{"op":"say","room":"#a","text":"hi\\nthere","id":"x"}', Say("#a", "hi\nthere", rid="x")),
        (b'{"op":"me","room":"#a","text":"waves"}', Say("#a", "waves", action=True)),
        (b'{"op":"msg","to":"bob","text":"psst"}', PrivMsg("bob", "psst")),
        (
            b'{"op":"msg","to":"bob","text":"waves","action":true}',
            PrivMsg("bob", "waves", action=True),
        ),
        (b'{"op":"nick","nick":"bobby"}', Nick("bobby")),
        (b'{"op":"who","room":"#a"}', Who("#a")),
        (b'{"op":"rooms"}', Rooms()),
        (b'{"op":"topic","room":"#a","topic":"t"}', Topic("#a", "t")),
        (b'{"op":"topic","room":"#a"}', Topic("#a", None)),
        (b'{"op":"history","room":"#a","after":5,"limit":10}', History("#a", after=5, limit=10)),
        (b'{"op":"away","message":"lunch"}', Away("lunch")),
        (b'{"op":"whois","nick":"bob"}', Whois("bob")),
        (b'{"op":"ping","id":"' + b"x" * 64 + b'"}', Ping(rid="x" * 64)),
        (b'{"op":"ping","id":-9007199254740992}', Ping(rid=-(2**53))),
        (b'{"op":"quit","reason":"bye"}', Quit("bye")),
        (b'{"op":"quit"}', Quit("")),
        (
            b'{"op":"say","room":"#a","text":"x","extra":1}',
            Say("#a", "x"),
        ),  # unknown fields ignored
    ],
)
def test_json_requests(line: bytes, command: object) -> None:
    assert JsonCodec().decode(line) == [command]


@pytest.mark.parametrize(
    "line, code",
    [
        (b"not json", "bad_json"),
        (b"{", "bad_json"),
        (b"[1,2]", "bad_json"),
        (b"42", "bad_json"),
        (b'"op"', "bad_json"),
        (b"[" * 5000 + b"]" * 5000, "bad_json"),  # deep nesting: no RecursionError escapes
        (b'{"op":"dance"}', "unknown_op"),
        (b'{"nick":"bob"}', "unknown_op"),
        (b'{"op":7}', "unknown_op"),
        (b'{"op":"say","room":"#a"}', "bad_request"),
        (b'{"op":"say","room":"#a","text":5}', "bad_request"),
        (b'{"op":"join","room":["#a"]}', "bad_request"),
        (b'{"op":"hello","nick":null}', "bad_request"),
        (b'{"op":"history","room":"#a","after":"5"}', "bad_request"),
        (b'{"op":"history","room":"#a","after":1.5}', "bad_request"),
        (b'{"op":"history","room":"#a","limit":true}', "bad_request"),
        (b'{"op":"msg","to":"bob","text":"x","action":"yes"}', "bad_request"),
        (b'{"op":"say","room":"#a","text":"\xff"}', "bad_encoding"),
        # The id is echoed back, so only small flat values (docs/protocol.md).
        (b'{"op":"ping","id":[1,2]}', "bad_request"),
        (b'{"op":"ping","id":{"a":1}}', "bad_request"),
        (b'{"op":"ping","id":' + b"[" * 300 + b"]" * 300 + b"}", "bad_request"),
        (b'{"op":"ping","id":"' + b"x" * 65 + b'"}', "bad_request"),
        (b'{"op":"ping","id":9007199254740993}', "bad_request"),
        (b'{"op":"ping","id":1.5}', "bad_request"),
        (b'{"op":"ping","id":true}', "bad_request"),
        (b'{"op":"dance","id":[1]}', "bad_request"),
    ],
)
def test_json_refusals(line: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        JsonCodec().decode(line)
    assert info.value.code == code


def test_json_error_carries_the_request_id() -> None:
    with pytest.raises(ProtocolError) as info:
        JsonCodec().decode(b'{"op":"say","id":42}')
    assert info.value.rid == 42


@pytest.mark.parametrize(
    "event, obj",
    [
        (
            Message("#a", "bob", "hi", 1.5, 7),
            {"type": "msg", "room": "#a", "from": "bob", "text": "hi", "ts": 1.5, "mid": 7},
        ),
        (
            Message("#a", "bob", "w", 1.5, 8, action=True, history=True),
            {
                "type": "msg",
                "room": "#a",
                "from": "bob",
                "text": "w",
                "ts": 1.5,
                "mid": 8,
                "action": True,
                "history": True,
            },
        ),
        (Welcome("bob", "srv"), {"type": "welcome", "nick": "bob", "server": "srv", "motd": []}),
        (
            Joined("#a", "t", ("a", "b")),
            {"type": "joined", "room": "#a", "topic": "t", "members": ["a", "b"]},
        ),
        (JoinEvent("#a", "b"), {"type": "join", "room": "#a", "nick": "b"}),
        (PartEvent("#a", "b", "r"), {"type": "part", "room": "#a", "nick": "b", "reason": "r"}),
        (
            PrivateMessage("a", "b", "x", 2.0),
            {"type": "privmsg", "from": "a", "to": "b", "text": "x", "ts": 2.0},
        ),
        (NickEvent("a", "b"), {"type": "nick", "old": "a", "new": "b"}),
        (WhoReply("#a", ("x",)), {"type": "who", "room": "#a", "members": ["x"]}),
        (
            RoomsReply((RoomInfo("#a", 2, "t"),)),
            {"type": "rooms", "rooms": [{"room": "#a", "members": 2, "topic": "t"}]},
        ),
        (TopicEvent("#a", "t", "b"), {"type": "topic", "room": "#a", "topic": "t", "by": "b"}),
        (Pong(), {"type": "pong"}),
        (QuitEvent("a", "r"), {"type": "quit", "nick": "a", "reason": "r"}),
        (Error("bad_nick", "m"), {"type": "error", "code": "bad_nick", "message": "m"}),
        (Skipped(3), {"type": "skipped", "count": 3}),
        (Shutdown("bye"), {"type": "shutdown", "reason": "bye"}),
        (Notice("n"), {"type": "notice", "text": "n"}),
        (
            AwayNotice("bob", "lunch"),
            {"type": "notice", "text": "bob is away: lunch", "nick": "bob", "away": "lunch"},
        ),
        (Probe(), {"type": "ping"}),
        (HistoryEnd("#a", 3), {"type": "history_end", "room": "#a"}),
        (
            HistoryReply("#a", (Message("#a", "bob", "hi", 1.5, 7, history=True),)),
            {
                "type": "history",
                "room": "#a",
                "messages": [
                    {
                        "type": "msg",
                        "room": "#a",
                        "from": "bob",
                        "text": "hi",
                        "ts": 1.5,
                        "mid": 7,
                        "history": True,
                    }
                ],
            },
        ),
        (
            WhoisReply("bob", ("#a",), None, 5),
            {
                "type": "whois",
                "nick": "bob",
                "rooms": ["#a"],
                "away": None,
                "idle": 5,
                "account": None,
            },
        ),
        (AwayReply(True), {"type": "away", "away": True}),
        (
            PrivateMessage("a", "b", "w", 2.0, notice=True, action=True),
            {
                "type": "privmsg",
                "from": "a",
                "to": "b",
                "text": "w",
                "ts": 2.0,
                "notice": True,
                "action": True,
            },
        ),
    ],
)
def test_json_events(event: object, obj: dict[str, object]) -> None:
    data = JsonCodec().encode(event)  # type: ignore[arg-type]
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == obj


def test_json_reply_carries_id_and_newlines_stay_escaped() -> None:
    data = JsonCodec().encode(Message("#a", "b", "one\ntwo\u2028", 1.0, 1), rid="r1")
    assert data.count(b"\n") == 1
    assert json.loads(data)["id"] == "r1"


# ---------------------------------------------------------------- text


def registered_text_codec() -> TextCodec:
    codec = TextCodec()
    codec.observe(Welcome("alice", "srv"))
    return codec


def test_text_registration_with_and_without_password() -> None:
    codec = TextCodec()
    assert codec.decode(b"alice") == [Hello("alice", autojoin=("#lobby",))]
    assert codec.decode(b"/nick bob") == [Hello("bob", autojoin=("#lobby",))]
    with pytest.raises(ProtocolError):
        codec.decode(b"/join #a")
    locked = TextCodec(password_required=True)
    assert isinstance(locked.decode(b"alice")[0], Echo)
    assert locked.decode(b"sesame") == [Hello("alice", password="sesame", autojoin=("#lobby",))]
    locked.observe(Error("bad_password", "wrong"))
    # Still the password prompt (issue 10, finding 7): the next line is never a nick.
    assert locked.decode(b"open") == [Hello("alice", password="open", autojoin=("#lobby",))]
    locked.observe(Error("nick_taken", "in use"))
    assert isinstance(locked.decode(b"alice2")[0], Echo)  # the nick was refused: ask again


@pytest.mark.parametrize(
    "line, commands",
    [
        (b"hello there", [Say(None, "hello there")]),
        (b"//not a command", [Say(None, "/not a command")]),
        (b"/join #rust", [Join("#rust")]),
        (b"/part", [Part(None, "")]),
        (b"/part #a see you", [Part("#a", "see you")]),
        (b"/part off to lunch", [Part(None, "off to lunch")]),
        (b"/msg bob psst there", [PrivMsg("bob", "psst there")]),
        (b"/me waves", [Say(None, "waves", action=True)]),
        (b"/nick bobby", [Nick("bobby")]),
        (b"/who", [Who(None)]),
        (b"/who #a", [Who("#a")]),
        (b"/rooms", [Rooms()]),
        (b"/topic", [Topic(None, None)]),
        (b"/topic lunch at noon", [Topic(None, "lunch at noon")]),
        (b"/topic #a lunch", [Topic("#a", "lunch")]),
        (b"/history", [History(None, limit=20)]),
        (b"/history 5", [History(None, limit=5)]),
        (b"/away", [Away(None)]),
        (b"/quit", [Quit("")]),
        (b"/QUIT bye all", [Quit("bye all")]),
        (b"   ", []),
    ],
)
def test_text_commands(line: bytes, commands: list[object]) -> None:
    assert registered_text_codec().decode(line) == commands


@pytest.mark.parametrize(
    "line, code",
    [
        (b"/dance", "unknown_op"),
        (b"/join", "bad_request"),
        (b"/msg bob", "bad_request"),
        (b"/me", "bad_request"),
        (b"/nick", "bad_request"),
        (b"/history lots", "bad_request"),
        (b"caf\xe9", "bad_encoding"),
    ],
)
def test_text_refusals(line: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        registered_text_codec().decode(line)
    assert info.value.code == code


def test_text_help_is_answered_locally() -> None:
    [echo] = registered_text_codec().decode(b"/help")
    assert isinstance(echo, Echo) and "/join" in echo.event.text  # type: ignore[attr-defined]
    assert b"*** " in TextCodec().encode(echo.event)


@pytest.mark.parametrize(
    "event, needle",
    [
        (Message("#lobby", "bob", "hello", 0.0, 1), "#lobby <bob> hello"),
        (Message("#lobby", "bob", "waves", 0.0, 1, action=True), "#lobby * bob waves"),
        (Message("#lobby", "bob", "old", 0.0, 1, history=True), "#lobby (earlier) <bob> old"),
        (PrivateMessage("bob", "alice", "psst", 0.0), "[msg] <bob -> alice> psst"),
        (
            PrivateMessage("bob", "alice", "waves", 0.0, action=True),
            "[msg] bob -> alice: * bob waves",
        ),
        (JoinEvent("#a", "carol"), "#a -- carol joined"),
        (PartEvent("#a", "carol", "bye"), "#a -- carol left (bye)"),
        (QuitEvent("carol", "reset"), "-- carol quit (reset)"),
        (NickEvent("bob", "bobby"), "-- bob is now known as bobby"),
        (TopicEvent("#a", "lunch", "bob"), "#a -- bob set the topic: lunch"),
        (Joined("#a", "", ("alice", "bob")), "*** You joined #a (2 members: alice, bob)."),
        (Error("nick_taken", "taken"), "!!! nick_taken: taken"),
        (Skipped(4), "4 messages skipped"),
        (Shutdown("maintenance"), "*** Server shutting down: maintenance"),
        (AwayNotice("bob", "lunch"), "*** bob is away: lunch"),
        (HistoryReply("#a", ()), "*** No earlier messages in #a."),
        (
            HistoryReply("#a", (Message("#a", "bob", "old", 0.0, 1, history=True),)),
            "#a (earlier) <bob> old",
        ),
        (WhoisReply("bob", ("#a", "#b"), "lunch"), "*** bob is in #a, #b; away: lunch"),
        (AwayReply(False), "*** You are back."),
        (RoomsReply(()), "No rooms yet"),
        (RoomsReply((RoomInfo("#a", 2, "t"),)), "*** #a (2) t"),
        (WhoReply("#a", ("x", "y")), "*** #a (2): x, y"),
        (TopicEvent("#a", "", ""), "*** Topic of #a: (none)"),
        (Pong(), "*** pong"),
        (Welcome("bob", "srv", ("hello",)), "*** hello"),
    ],
)
def test_text_events(event: object, needle: str) -> None:
    text = TextCodec().encode(event).decode()  # type: ignore[arg-type]
    assert needle in text and text.endswith("\n")


@pytest.mark.parametrize("event", [HistoryEnd("#a"), Probe()])
def test_text_mode_shows_nothing_for_bookkeeping_events(event: object) -> None:
    assert TextCodec().encode(event) == b""  # type: ignore[arg-type]


def test_text_multiline_message_is_indented() -> None:
    text = TextCodec().encode(Message("#a", "bob", "one\ntwo", 0.0, 1)).decode()
    assert text.endswith("<bob> one\n    | two\n")


def test_text_password_server_checks_the_nick_before_asking_for_the_password() -> None:
    locked = TextCodec(password_required=True)
    with pytest.raises(ProtocolError) as refused:
        locked.decode(b"1bad")
    assert refused.value.code == "bad_nick"
    assert isinstance(locked.decode(b"good")[0], Echo)  # still asking for a nick
    tail = locked.encode(Error("bad_password", "wrong password")).decode()
    assert tail.endswith("*** Type the password for good on the next line.\n")


def test_every_event_is_in_the_union_the_codecs_render() -> None:
    # Each codec's render ends with assert_never over AnyEvent: mypy then fails on an
    # event a codec forgot, but only if the event is in the union.
    import typing

    from chatd import model

    events = {
        obj
        for obj in vars(model).values()
        if isinstance(obj, type) and issubclass(obj, model.Event) and obj is not model.Event
    }
    assert events == set(typing.get_args(model.AnyEvent))
    # (mypy does not know that a StrEnum member equals its str value: that is the point)
    assert model.ErrorCode.BAD_NICK == "bad_nick"  # type: ignore[comparison-overlap]
    assert f"{model.ErrorCode.BAD_NICK}" == "bad_nick"
