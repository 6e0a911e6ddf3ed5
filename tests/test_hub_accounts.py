"""The hub's account and nick-hold rules, pure: commands in, actions out.

Tokens come from an injected counter; "verified" is what the server's account gate would
have filled in (the hub never sees a password). See docs/accounts.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from chatd.config import Config
from chatd.hub import Hub
from chatd.hub_accounts import MAX_KEPT
from chatd.model import (
    AccountEvent,
    AwayNotice,
    Close,
    DeleteAccount,
    Deliver,
    Disconnected,
    DropAccount,
    Error,
    Hello,
    Identify,
    Join,
    Joined,
    JoinEvent,
    Nick,
    PrivateMessage,
    PrivMsg,
    Quit,
    QuitEvent,
    Register,
    Replay,
    SaveAccount,
    Say,
    SetPassword,
    Stats,
    StatsReply,
    Store,
    Users,
    Verified,
    Welcome,
    Whois,
    WhoisReply,
)

NOW = 1000.0
SECRET = b"scrypt$hash-record"


def make_hub(**overrides: object) -> Hub:
    counter = itertools.count(1)
    config = Config(server_name="test", history_replay=0, **overrides)  # type: ignore[arg-type]
    return Hub(config, new_token=lambda: f"token{next(counter)}")


def hello(hub: Hub, cid: int, nick: str, *rooms: str, **fields: object) -> list[object]:
    hub.connect(cid, NOW)
    actions: list[object] = list(hub.handle(cid, Hello(nick, **fields), NOW))  # type: ignore[arg-type]
    for room in rooms:
        actions += hub.handle(cid, Join(room), NOW)
    return actions


def welcome(actions: Sequence[object]) -> Welcome:
    found = [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, Welcome)]
    assert found, actions
    return found[0]


def errors(actions: Sequence[object]) -> list[str]:
    return [a.event.code for a in actions if isinstance(a, Deliver) and isinstance(a.event, Error)]


def events_for(actions: Sequence[object], cid: int) -> list[object]:
    return [a.event for a in actions if isinstance(a, Deliver) and cid in a.cids]


# --------------------------------------------------------------------------- nick hold


def test_welcome_carries_a_fresh_resume_token_per_session() -> None:
    hub = make_hub()
    assert welcome(hello(hub, 1, "alice")).resume == "token1"
    assert welcome(hello(hub, 2, "bob")).resume == "token2"


def test_dropped_nick_is_held_silently_and_only_the_token_takes_it_back() -> None:
    hub = make_hub()
    hello(hub, 1, "alice", "#a", "#b")
    hello(hub, 2, "bob", "#a")
    assert hub.handle(1, Disconnected("connection reset"), NOW) == []  # nobody is told
    # mallory, within the grace: refused, with or without a wrong token
    assert errors(hello(hub, 3, "alice")) == ["nick_taken"]
    assert errors(hub.handle(3, Hello("alice", resume="token2"), NOW)) == ["nick_taken"]
    assert errors(hub.handle(3, Hello("alice", resume="tökén\ud800"), NOW)) == ["nick_taken"]
    assert errors(hub.handle(3, Nick("ALICE"), NOW)) == ["not_registered"]
    hello(hub, 4, "carol")
    assert errors(hub.handle(4, Nick("Alice"), NOW)) == ["nick_taken"]
    # alice, with her token: her rooms back, and bob sees nothing at all
    actions = hello(hub, 5, "alice", resume="token1")
    back = welcome(actions)
    assert back.resumed and back.resume not in ("", "token1")  # a new token per session
    assert events_for(actions, 2) == []
    assert [e for e in events_for(actions, 5) if isinstance(e, Joined)] == [
        Joined("#a", "", ("bob", "alice")),
        Joined("#b", "", ("alice",)),
    ]
    assert Replay(5, "#a", 0) in actions
    assert hub.rooms_of(5) == ["#a", "#b"]
    # and she is alice again, for everybody
    said = hub.handle(2, Say("#a", "welcome back"), NOW)
    assert any(isinstance(a, Deliver) and 5 in a.cids for a in said)
    assert not any(isinstance(a, Deliver) and 1 in a.cids for a in said)


def test_hold_runs_out_then_the_others_see_the_quit_and_the_nick_is_free() -> None:
    hub = make_hub(nick_hold_seconds=30)
    hello(hub, 1, "alice", "#a")
    hello(hub, 2, "bob", "#a")
    hub.handle(1, Disconnected("ping timeout"), NOW)
    assert hub.expire(NOW + 29.9) == []
    assert hub.expire(NOW + 30) == [Deliver((2,), QuitEvent("alice", "ping timeout"))]
    assert hub.expire(NOW + 31) == []
    assert isinstance(welcome(hello(hub, 3, "alice")), Welcome)
    # the old token means nothing now
    assert errors(hello(hub, 4, "x", resume="token1")) == []
    assert welcome(hello(hub, 5, "alice2", resume="token1")).resumed is False


def test_held_sessions_are_bounded_the_oldest_goes_first() -> None:
    hub = make_hub(max_clients=3)
    hello(hub, 100, "watcher", "#a")
    for cid in range(1, 6):
        hello(hub, cid, f"user{cid}", "#a")
    gone = []
    for cid in range(1, 6):
        gone += [a.event.nick for a in hub.handle(cid, Disconnected("reset"), NOW)]  # type: ignore[attr-defined]
    assert gone == ["user1", "user2"]  # quits seen by the watcher as holds overflow
    assert hub.held_nicks() == ["user3", "user4", "user5"]


def test_hold_and_resume_work_with_accounts_off() -> None:
    hub = make_hub(accounts="off")
    hello(hub, 1, "alice", "#a")
    hub.handle(1, Disconnected("reset"), NOW)
    assert errors(hello(hub, 2, "alice")) == ["nick_taken"]
    assert welcome(hello(hub, 3, "alice", resume="token1")).resumed


def test_quit_is_not_held() -> None:
    hub = make_hub()
    hello(hub, 1, "alice", "#a")
    hello(hub, 2, "bob", "#a")
    actions = hub.handle(1, Quit("bye"), NOW)
    assert Deliver((2,), QuitEvent("alice", "bye")) in actions
    assert welcome(hello(hub, 3, "alice")).resumed is False


def test_no_hold_when_configured_off() -> None:
    hub = make_hub(nick_hold_seconds=0)
    hello(hub, 1, "alice", "#a")
    hello(hub, 2, "bob", "#a")
    assert hub.handle(1, Disconnected("reset"), NOW) == [Deliver((2,), QuitEvent("alice", "reset"))]


def test_token_takes_over_a_session_whose_connection_is_not_known_dead_yet() -> None:
    hub = make_hub()
    hello(hub, 1, "alice", "#a")
    actions = hello(hub, 2, "alice", resume="token1")
    assert Close(1, "resumed from another connection", flush=True) in actions
    assert welcome(actions).resumed
    assert hub.handle(1, Disconnected("closed"), NOW) == []  # the old connection: forgotten
    assert hub.nick_of(2) == "alice" and hub.rooms_of(2) == ["#a"]


def test_private_messages_to_a_held_nick_are_kept_for_the_owner_only() -> None:
    hub = make_hub()
    hello(hub, 1, "alice")
    hello(hub, 2, "bob")
    hub.handle(1, Disconnected("reset"), NOW)
    actions = hub.handle(2, PrivMsg("alice", "the door code is 1234", rid=9), NOW)
    sent = PrivateMessage("bob", "alice", "the door code is 1234", NOW)
    assert actions[0] == Deliver((2,), sent, rid=9)  # the sender's echo
    assert isinstance(actions[1].event, AwayNotice)  # type: ignore[attr-defined]
    assert all(a.cids == (2,) for a in actions)  # type: ignore[attr-defined]
    # mallory cannot get it: the nick is refused to her
    assert errors(hello(hub, 3, "alice")) == ["nick_taken"]
    # alice gets it on resume
    back = hello(hub, 4, "alice", resume="token1")
    assert sent in events_for(back, 4)


def test_messages_kept_for_a_held_nick_are_bounded() -> None:
    hub = make_hub()
    hello(hub, 1, "alice")
    hello(hub, 2, "bob")
    hub.handle(1, Disconnected("reset"), NOW)
    for i in range(MAX_KEPT):
        assert errors(hub.handle(2, PrivMsg("alice", f"m{i}"), NOW)) == []
    assert errors(hub.handle(2, PrivMsg("alice", "one too many"), NOW)) == ["nick_held"]
    back = hello(hub, 3, "alice", resume="token1")
    assert len([e for e in events_for(back, 3) if isinstance(e, PrivateMessage)]) == MAX_KEPT


def test_whois_of_a_held_nick_says_so() -> None:
    hub = make_hub()
    hello(hub, 1, "alice")
    hello(hub, 2, "bob")
    hub.handle(1, Disconnected("reset"), NOW)
    [reply] = hub.handle(2, Whois("alice"), NOW)
    assert isinstance(reply.event, WhoisReply) and "held" in (reply.event.away or "")  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- accounts


def test_registered_nick_refused_without_its_account_at_hello_and_nick() -> None:
    hub = make_hub()
    assert errors(hello(hub, 1, "alice", verified=Verified(owner="alice"))) == ["nick_registered"]
    actions = hub.handle(1, Hello("alice", verified=Verified(owner="alice", account="alice")), NOW)
    assert welcome(actions).account == "alice"
    hello(hub, 2, "bob")
    assert errors(hub.handle(2, Nick("Alice2", verified=Verified(owner="alice2")), NOW)) == [
        "nick_registered"
    ]
    # another account does not open it either
    hello(hub, 3, "carol", verified=Verified(account="carol"))
    assert errors(hub.handle(3, Nick("dave", verified=Verified(owner="dave")), NOW)) == [
        "nick_registered"
    ]
    assert errors(hub.handle(3, Nick("carol2", verified=Verified(owner="carol")), NOW)) == []


def test_failed_login_is_refused_counted_and_closes_after_the_limit() -> None:
    hub = make_hub(max_password_failures=2)
    bad = Verified(owner="alice", error="bad_login", message="wrong account or password")
    assert errors(hello(hub, 1, "alice", verified=bad)) == ["bad_login"]
    actions = hub.handle(1, Hello("alice", verified=bad), NOW)
    assert Close(1, "too many wrong passwords") in actions
    throttled = Verified(error="throttled", message="try again in 1.0s")
    assert errors(hello(hub, 2, "alice", verified=throttled)) == ["throttled"]


def test_logged_in_senders_carry_their_account() -> None:
    hub = make_hub()
    hello(hub, 1, "alice", "#a", verified=Verified(account="alice"))
    hello(hub, 2, "bob", "#a")
    [store, *_] = hub.handle(1, Say("#a", "hi"), NOW)
    assert isinstance(store, Store) and store.message.account == "alice"
    actions = hub.handle(2, Say("#a", "hello"), NOW)
    assert isinstance(actions[0], Store) and actions[0].message.account is None
    [to_bob, _] = hub.handle(1, PrivMsg("bob", "psst"), NOW)
    assert isinstance(to_bob.event, PrivateMessage) and to_bob.event.account == "alice"  # type: ignore[attr-defined]
    [reply] = hub.handle(2, Whois("alice"), NOW)
    assert reply.event.account == "alice"  # type: ignore[attr-defined]


def test_register_the_nick_you_hold() -> None:
    hub = make_hub()
    hello(hub, 1, "alice")
    actions = hub.handle(1, Register(None, verified=Verified(secret=SECRET), rid=4), NOW)
    assert actions == [
        SaveAccount("alice", SECRET, True, 1, rid=4),
        Deliver((1,), AccountEvent("alice", "registered"), rid=4),
    ]
    assert hub.account_of(1) == "alice"
    again = hub.handle(1, Register(None, verified=Verified(secret=SECRET)), NOW)
    assert errors(again) == ["already_registered"]


def test_register_refusals() -> None:
    hub = make_hub()
    hello(hub, 1, "alice")
    taken = Register(None, verified=Verified(owner="alice"))
    assert errors(hub.handle(1, taken, NOW)) == ["account_exists"]
    weak = Register(None, verified=Verified(error="bad_request", message="8 to 200"))
    assert errors(hub.handle(1, weak, NOW)) == ["bad_request"]
    closed = make_hub(registration="closed")
    hello(closed, 1, "alice")
    assert errors(closed.handle(1, Register(None, verified=Verified(secret=SECRET)), NOW)) == [
        "registration_closed"
    ]
    off = make_hub(accounts="off")
    hello(off, 1, "alice")
    assert errors(off.handle(1, Register(None, verified=Verified(secret=SECRET)), NOW)) == [
        "accounts_off"
    ]
    assert errors(off.handle(1, Identify(None, None, verified=Verified()), NOW)) == ["accounts_off"]


def test_identify_before_and_after_registration() -> None:
    hub = make_hub()
    hub.connect(1, NOW)  # IRC SASL: identify first, then the hello
    ok = hub.handle(1, Identify("alice", None, verified=Verified(account="alice")), NOW)
    assert ok == [Deliver((1,), AccountEvent("alice", "identified"))]
    assert welcome(hub.handle(1, Hello("alice", verified=Verified(owner="alice")), NOW))
    hello(hub, 2, "bob")
    bad = Identify(None, None, verified=Verified(error="bad_login", message="no"))
    assert errors(hub.handle(2, bad, NOW)) == ["bad_login"]
    assert hub.account_of(2) is None


def test_logging_in_to_the_account_of_a_held_session_resumes_it() -> None:
    hub = make_hub()
    hello(hub, 1, "alice", "#a", verified=Verified(account="alice"))
    hello(hub, 2, "bob", "#a")
    hub.handle(1, Disconnected("reset"), NOW)
    actions = hello(hub, 3, "alice", verified=Verified(owner="alice", account="alice"))
    assert welcome(actions).resumed and hub.rooms_of(3) == ["#a"]
    assert events_for(actions, 2) == []


def test_change_and_drop_own_account() -> None:
    hub = make_hub()
    hello(hub, 1, "alice", verified=Verified(account="alice"))
    change = SetPassword(None, None, verified=Verified(account="alice", secret=b"new"))
    assert hub.handle(1, change, NOW) == [
        SaveAccount("alice", b"new", False, 1),
        Deliver((1,), AccountEvent("alice", "password_changed")),
    ]
    wrong = SetPassword(None, None, verified=Verified(error="bad_login", message="no"))
    assert errors(hub.handle(1, wrong, NOW)) == ["bad_login"]
    assert errors(hub.handle(1, DropAccount(None, verified=Verified(error="bad_login")), NOW)) == [
        "bad_login"
    ]
    drop = hub.handle(1, DropAccount(None, verified=Verified(account="alice")), NOW)
    assert drop == [DeleteAccount("alice"), Deliver((1,), AccountEvent(None, "dropped"))]
    assert hub.account_of(1) is None
    assert errors(hub.handle(1, DropAccount(None, verified=Verified(account="alice")), NOW)) == [
        "not_logged_in"
    ]
    assert errors(hub.handle(1, change, NOW)) == ["not_logged_in"]


def test_accounts_required_admits_only_logged_in_users() -> None:
    hub = make_hub(accounts="required")
    assert errors(hello(hub, 1, "alice")) == ["account_required"]
    assert welcome(hub.handle(1, Hello("alice", verified=Verified(account="alice")), NOW))
    hub.handle(1, Disconnected("reset"), NOW)
    assert welcome(hello(hub, 2, "alice", resume="token1")).resumed  # the token suffices


def test_join_of_resumed_user_is_not_announced_and_later_joins_are() -> None:
    hub = make_hub()
    hello(hub, 1, "alice", "#a")
    hello(hub, 2, "bob", "#a", "#b")
    hub.handle(1, Disconnected("reset"), NOW)
    hello(hub, 3, "alice", resume="token1")
    assert Deliver((2,), JoinEvent("#b", "alice")) in hub.handle(3, Join("#b"), NOW)


def test_nick_refused_when_the_store_could_not_say_who_owns_it() -> None:
    hub = make_hub()
    hello(hub, 1, "bob")
    busy = Verified(error="accounts_busy", message="accounts are busy; try again")
    assert errors(hub.handle(1, Nick("alice", verified=busy), NOW)) == ["accounts_busy"]
    assert errors(hello(hub, 2, "carol", verified=busy)) == ["accounts_busy"]


def test_look_alikes_of_a_held_nick_are_refused_and_the_owner_keeps_hers() -> None:
    hub = make_hub()
    hello(hub, 1, "alice")
    hub.handle(1, Disconnected("reset"), NOW)
    assert errors(hello(hub, 2, "aIice")) == ["nick_taken"]  # capital i for l
    hello(hub, 3, "alice", resume="token1")
    assert errors(hub.handle(3, Nick("aIice"), NOW)) == []  # her own look-alike: fine
    hub.handle(3, Quit("bye"), NOW)
    assert welcome(hello(hub, 4, "alice"))


def test_held_sessions_count_as_users_and_stay_in_users_lists() -> None:
    hub = make_hub()
    hello(hub, 1, "alice", "#a")
    hello(hub, 2, "bob", "#a")
    hub.handle(1, Disconnected("reset"), NOW)
    [stats] = hub.handle(2, Stats(), NOW)
    assert stats.event == StatsReply(2, 0, 1, 2)  # type: ignore[attr-defined]
    [users] = hub.handle(2, Users(), NOW)
    assert users.event.members == ("bob", "alice")  # type: ignore[attr-defined]
