"""The hub, pure: commands in, actions out, compared by value. Time is a number we pass."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from chatd.config import Config
from chatd.hub import MID_SEQUENCE_BITS, Hub
from chatd.model import (
    Away,
    AwayEvent,
    AwayNotice,
    AwayReply,
    Close,
    Deliver,
    Disconnected,
    Error,
    FetchHistory,
    Hello,
    History,
    Join,
    Joined,
    JoinEvent,
    MemberInfo,
    Message,
    Nick,
    NickEvent,
    Part,
    PartEvent,
    Ping,
    Pong,
    PrivateMessage,
    PrivMsg,
    Quit,
    QuitEvent,
    Replay,
    RoomInfo,
    Rooms,
    RoomsReply,
    Say,
    Stats,
    StatsReply,
    Store,
    Topic,
    TopicEvent,
    Users,
    Welcome,
    Who,
    Whois,
    WhoisReply,
    WhoReply,
)

NOW = 1000.0


def make_hub(**overrides: object) -> Hub:
    return Hub(Config(server_name="test", history_replay=0, **overrides))  # type: ignore[arg-type]


def register(hub: Hub, cid: int, nick: str, *rooms: str) -> None:
    hub.connect(cid, NOW)
    assert isinstance(hub.handle(cid, Hello(nick), NOW)[0].event, Welcome)  # type: ignore[attr-defined]
    for room in rooms:
        hub.handle(cid, Join(room), NOW)


def errors(actions: Sequence[object]) -> list[str]:
    return [a.event.code for a in actions if isinstance(a, Deliver) and isinstance(a.event, Error)]


# What welcome advertises, so clients need not copy the server's configuration.
LIMITS = (
    ("max_text_chars", 2000),
    ("max_line_bytes", 4096),
    ("history_max_limit", 500),
    ("max_rooms_per_client", 50),
)


def test_hello_welcomes_and_autojoins() -> None:
    hub = make_hub()
    hub.connect(1, NOW)
    actions = hub.handle(1, Hello("alice", autojoin=("#lobby",), rid=7), NOW)
    assert actions == [
        Deliver((1,), Welcome("alice", "test", stats=StatsReply(1, 0, 0, 1), limits=LIMITS), rid=7),
        Deliver((1,), Joined("#lobby", "", ("alice",))),
        Replay(1, "#lobby", 0),  # even with replay off: history_end must follow joined
    ]


def test_join_tells_others_and_replays_history() -> None:
    hub = Hub(Config(server_name="test", history_replay=5))
    register(hub, 1, "alice", "#a")
    hub.connect(2, NOW)
    hub.handle(2, Hello("bob"), NOW)
    assert hub.handle(2, Join("#A", rid=1), NOW) == [
        Deliver((2,), Joined("#a", "", ("alice", "bob")), rid=1),
        Deliver((1,), JoinEvent("#a", "bob")),
        Replay(2, "#a", 5),
    ]


def test_say_is_stored_then_delivered_to_every_member_sender_included() -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#a")
    register(hub, 2, "bob", "#a")
    register(hub, 3, "carol", "#b")
    first = int(NOW * 1000) << MID_SEQUENCE_BITS  # time-based (see test_mids_*)
    message = Message("#a", "alice", "hi", NOW, first)
    assert hub.handle(1, Say("#a", "hi"), NOW) == [
        Store(message, 1),
        Deliver((1, 2), message, droppable=True, group="#a"),
    ]
    # With a request id the sender's copy is its own direct reply.
    second = Message("#a", "alice", "again", NOW, first + 1, action=True)
    assert hub.handle(1, Say("#a", "again", action=True, rid="x"), NOW) == [
        Store(second, 1, "x"),
        Deliver((1, 2), second, rid="x", droppable=True, reply_to=1, group="#a"),
    ]


def test_mids_increase_across_rooms() -> None:
    start = (int(NOW * 1000) << MID_SEQUENCE_BITS) + 41  # above the clock: a sequence
    hub = Hub(Config(history_replay=0), next_mid=start)
    register(hub, 1, "alice", "#a", "#b")
    mids = [
        a.message.mid
        for cmd in (Say("#a", "1"), Say("#b", "2"), Say("#a", "3"))
        for a in hub.handle(1, cmd, NOW)
        if isinstance(a, Store)
    ]
    assert mids == [start, start + 1, start + 2]
    assert hub.next_mid == start + 3


def test_mids_are_time_based_and_never_go_back() -> None:
    """mid = ms since the epoch << 10, or the last + 1: increasing even if the history
    file was lost (next_mid 1) or the clock steps back; below 2**53 for JavaScript."""
    hub = Hub(Config(history_replay=0), next_mid=1)
    register(hub, 1, "alice", "#a")

    def say(now: float) -> int:
        store = hub.handle(1, Say("#a", "x"), now)[0]
        assert isinstance(store, Store)
        return store.message.mid

    now = 1_795_000_000.5  # 2026
    first = say(now)
    assert first == 1_795_000_000_500 << MID_SEQUENCE_BITS
    assert first >> MID_SEQUENCE_BITS == int(now * 1000)  # the mid carries its millisecond
    assert say(now) == first + 1  # same millisecond: the sequence
    assert say(now - 3600) == first + 2  # the clock stepped back: still increasing
    later = say(now + 1)
    assert later == (1_795_000_001_500 << MID_SEQUENCE_BITS)
    assert say(7_000_000_000.0) < 2**53  # the year 2191: JavaScript still reads it exactly


def test_text_is_cleaned_of_control_characters() -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#a")
    store = hub.handle(1, Say("#a", "red\x1b[31m\x07bell\nline2\ttab\x9b"), NOW)[0]
    assert isinstance(store, Store)
    assert store.message.text == "red\ufffd[31m\ufffdbell\nline2\ttab\ufffd"


def test_current_room_is_the_last_joined() -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#a", "#b")
    assert hub.handle(1, Say(None, "x"), NOW)[0].message.room == "#b"  # type: ignore[attr-defined]
    hub.handle(1, Part(None), NOW)
    assert hub.handle(1, Say(None, "y"), NOW)[0].message.room == "#a"  # type: ignore[attr-defined]
    hub.handle(1, Part(None), NOW)
    assert errors(hub.handle(1, Say(None, "z"), NOW)) == ["not_in_room"]


@pytest.mark.parametrize(
    "command, code",
    [
        (Join("lobby"), "bad_room"),
        (Join("#"), "bad_room"),
        (Join("#a b"), "bad_room"),
        (Join("#a,b"), "bad_room"),
        (Join("#" + "x" * 33), "bad_room"),
        (Join("#bell\x07"), "bad_room"),
        (Join("#lob\u200bby"), "bad_room"),  # zero-width space: a look-alike of #lobby
        (Join("#\u202eybbol"), "bad_room"),  # right-to-left override
        (Say("#nowhere", "hi"), "not_in_room"),
        (Say("nowhere", "hi"), "bad_room"),
        (Who("no hash"), "bad_room"),
        (Topic("#a", "t" * 301), "text_too_long"),
        (Say("#a", ""), "bad_request"),
        (Say("#a", "   "), "bad_request"),
        (Say("#a", "x" * 2001), "text_too_long"),
        (PrivMsg("nobody", "hi"), "no_such_nick"),
        (Nick("9lives"), "bad_nick"),
        (Nick("-dash"), "bad_nick"),
        (Nick("x" * 25), "bad_nick"),
        (Nick("esc\x1bape"), "bad_nick"),
        (Nick("BOB"), "nick_taken"),  # case-insensitive
        (Who("#nowhere"), "no_such_room"),
        (Topic("#b", "t"), "not_in_room"),
        (Part("#b"), "not_in_room"),
        (History("#a", limit=0), "bad_request"),
        (History("#a", limit=10**9), "bad_request"),
        (History("#a", before=-1), "bad_request"),
        (Hello("again"), "already_registered"),
        (Whois("ghost"), "no_such_nick"),
    ],
)
def test_refusals(command: object, code: str) -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#a")
    register(hub, 2, "bob", "#b")
    actions = hub.handle(1, command, NOW)  # type: ignore[arg-type]
    assert errors(actions) == [code]
    assert len(actions) == 1


def test_everything_but_hello_needs_registration() -> None:
    hub = make_hub()
    hub.connect(1, NOW)
    assert errors(hub.handle(1, Join("#a"), NOW)) == ["not_registered"]
    assert hub.handle(1, Ping(rid=3), NOW) == [Deliver((1,), Pong(), rid=3)]
    assert not hub.is_registered(1)


def test_nick_taken_and_freed() -> None:
    hub = make_hub(nick_hold_seconds=0)  # with a hold: tests/test_hub_accounts.py
    register(hub, 1, "alice")
    hub.connect(2, NOW)
    assert errors(hub.handle(2, Hello("ALICE"), NOW)) == ["nick_taken"]
    hub.handle(1, Disconnected("reset"), NOW)
    assert isinstance(hub.handle(2, Hello("ALICE"), NOW)[0].event, Welcome)  # type: ignore[attr-defined]


def test_nick_change_reaches_room_neighbours_once() -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#a", "#b")
    register(hub, 2, "bob", "#a", "#b")
    register(hub, 3, "carol", "#c")
    assert hub.handle(1, Nick("Alicia"), NOW) == [
        Deliver((2,), NickEvent("alice", "Alicia")),
        Deliver((1,), NickEvent("alice", "Alicia")),
    ]
    assert hub.nick_of(1) == "Alicia"
    assert hub.handle(1, Nick("alicia"), NOW)[0].event == NickEvent("Alicia", "alicia")  # type: ignore[attr-defined]
    assert hub.handle(1, Nick("alicia"), NOW) == []  # no change, no noise


def test_private_message_to_both_and_away_notice() -> None:
    hub = make_hub()
    register(hub, 1, "alice")
    register(hub, 2, "bob")
    pm = PrivateMessage("alice", "bob", "psst", NOW)
    assert hub.handle(1, PrivMsg("BOB", "psst"), NOW) == [Deliver((2,), pm), Deliver((1,), pm)]
    assert hub.handle(2, Away("lunch"), NOW) == [Deliver((2,), AwayReply(True))]
    actions = hub.handle(1, PrivMsg("bob", "back?"), NOW)
    assert actions[-1] == Deliver((1,), AwayNotice("bob", "lunch"))
    whois = WhoisReply("bob", (), "lunch", 0, user="bob", realname="bob")
    assert hub.handle(1, Whois("bob"), NOW) == [Deliver((1,), whois)]


def test_who_rooms_topic() -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#b", "#a")
    register(hub, 2, "bob", "#a")
    details = (MemberInfo("alice", "alice", "alice"), MemberInfo("bob", "bob", "bob"))
    who = WhoReply("#a", ("alice", "bob"), details)
    assert hub.handle(2, Who("#A"), NOW) == [Deliver((2,), who)]
    assert hub.handle(2, Topic("#a", "lunch\nat noon"), NOW) == [
        Deliver((1, 2), TopicEvent("#a", "lunch at noon", "bob"))
    ]
    assert hub.handle(1, Topic("#a", None), NOW) == [
        Deliver((1,), TopicEvent("#a", "lunch at noon", ""))
    ]
    assert hub.handle(2, Rooms(), NOW) == [
        Deliver((2,), RoomsReply((RoomInfo("#a", 2, "lunch at noon"), RoomInfo("#b", 1, ""))))
    ]


def test_part_goes_to_room_and_empty_room_disappears() -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#a")
    register(hub, 2, "bob", "#a")
    assert hub.handle(2, Part("#a", "bye"), NOW) == [Deliver((1, 2), PartEvent("#a", "bob", "bye"))]
    hub.handle(1, Part("#a"), NOW)
    assert hub.stats()["rooms"] == 0


def test_quit_announces_once_and_closes_after_flush() -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#a", "#b")
    register(hub, 2, "bob", "#a", "#b")
    register(hub, 3, "carol", "#c")
    assert hub.handle(1, Quit("gone\x1b"), NOW) == [
        Deliver((2,), QuitEvent("alice", "gone\ufffd")),
        Close(1, "quit: gone\ufffd", flush=True),
    ]
    assert hub.handle(1, Disconnected("closed"), NOW) == []  # the server's notice: harmless
    assert hub.stats() == {"clients": 2, "registered": 2, "rooms": 3}  # bob keeps #a, #b


def test_disconnect_cleans_every_room_and_nick() -> None:
    hub = make_hub()
    for cid in range(1, 51):
        register(hub, cid, f"user{cid}", "#a", f"#r{cid}")
    for cid in range(1, 51):
        hub.handle(cid, Disconnected("reset"), NOW)
    assert hub.stats() == {"clients": 0, "registered": 50, "rooms": 51}  # nicks held
    hub.expire(NOW + 59)
    assert hub.stats()["registered"] == 50
    hub.expire(NOW + 60)
    assert hub.stats() == {"clients": 0, "registered": 0, "rooms": 0}


def test_password_checked_and_limited() -> None:
    hub = Hub(Config(password="sesame", max_password_failures=3, history_replay=0))
    hub.connect(1, NOW)
    assert errors(hub.handle(1, Hello("alice"), NOW)) == ["bad_password"]
    assert errors(hub.handle(1, Hello("alice", password="wrong"), NOW)) == ["bad_password"]
    last = hub.handle(1, Hello("alice", password="nope"), NOW)
    assert errors(last) == ["bad_password"] and last[-1] == Close(1, "too many wrong passwords")
    hub.connect(2, NOW)
    assert isinstance(hub.handle(2, Hello("bob", password="sesame"), NOW)[0].event, Welcome)  # type: ignore[attr-defined]


def test_history_request_becomes_a_fetch_for_members_only() -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#a")
    assert hub.handle(1, History("#a", after=3, rid=9), NOW) == [
        FetchHistory(1, "#a", None, 3, 50, rid=9)
    ]
    assert errors(hub.handle(1, History("#other"), NOW)) == ["not_in_room"]


def test_room_limit_per_client() -> None:
    hub = Hub(Config(max_rooms_per_client=2, history_replay=0))
    register(hub, 1, "alice", "#a", "#b")
    assert errors(hub.handle(1, Join("#c"), NOW)) == ["bad_request"]
    rejoin = hub.handle(1, Join("#a"), NOW)  # already a member: state repeated, no error
    assert rejoin == [Deliver((1,), Joined("#a", "", ("alice",)))]


def test_unknown_command_type_is_a_bug_not_a_refusal() -> None:
    hub = make_hub()
    register(hub, 1, "alice")
    with pytest.raises(TypeError):
        hub.handle(1, object(), NOW)  # type: ignore[arg-type]


def test_user_and_realname_are_kept_and_who_sees_only_neighbours() -> None:
    hub = make_hub(nick_hold_seconds=0)  # (a held session still counts as a user)
    hub.connect(1, NOW)
    hub.handle(1, Hello("ann", user="annie", realname="Ann\x1b[31m Example"), NOW)
    hub.handle(1, Join("#a"), NOW)
    register(hub, 2, "bob", "#a")
    register(hub, 3, "cid")  # shares no room with ann
    hub.connect(4, NOW)  # not registered
    hub.handle(2, Away("out"), NOW)
    ann = MemberInfo("ann", "annie", "Ann\ufffd[31m Example")
    (reply,) = hub.handle(1, Users(), NOW)
    assert reply == Deliver(
        (1,), WhoReply("*", ("ann", "bob"), (ann, MemberInfo("bob", "bob", "bob", away=True)))
    )
    (whois,) = hub.handle(3, Whois("ann"), NOW)
    assert isinstance(whois, Deliver) and isinstance(whois.event, WhoisReply)
    assert (whois.event.user, whois.event.realname) == ("annie", "Ann\ufffd[31m Example")
    assert hub.handle(3, Stats(), NOW) == [Deliver((3,), StatsReply(3, 1, 1, 3))]
    hub.handle(3, Disconnected(), NOW)
    assert hub.handle(1, Stats(), NOW) == [Deliver((1,), StatsReply(2, 1, 1, 3))]


def test_away_is_news_to_room_neighbours_and_in_member_lists() -> None:
    hub = make_hub()
    register(hub, 1, "alice", "#a", "#b")
    register(hub, 2, "bob", "#a", "#b")
    register(hub, 3, "carol", "#c")  # shares no room with alice
    assert hub.handle(1, Away("lunch"), NOW) == [
        Deliver((1,), AwayReply(True)),
        Deliver((2,), AwayEvent("alice", True)),  # once, though they share two rooms
    ]
    assert hub.handle(1, Away("still lunch"), NOW) == [Deliver((1,), AwayReply(True))]
    joined = hub.handle(3, Join("#a"), NOW)[0].event  # type: ignore[attr-defined]
    assert joined == Joined("#a", "", ("alice", "bob", "carol"), away=("alice",))
    who = hub.handle(2, Who("#a"), NOW)[0].event  # type: ignore[attr-defined]
    assert [info.nick for info in who.details if info.away] == ["alice"]
    assert hub.handle(1, Away(None), NOW) == [
        Deliver((1,), AwayReply(False)),
        Deliver((2, 3), AwayEvent("alice", False)),
    ]
    assert hub.handle(1, Away(None), NOW) == [Deliver((1,), AwayReply(False))]  # no change
