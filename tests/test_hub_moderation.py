"""The hub's moderation rules, pure: commands in, actions out (docs/moderation.md).

Every power is tried by an operator (it works, the room is told) and by a member who is
not one (refused with a clear error, nothing changes).
"""

from __future__ import annotations

from typing import Any

import pytest

from chatd.config import Config
from chatd.hub import Hub
from chatd.model import (
    Action,
    Announce,
    Ban,
    BanList,
    BanListReply,
    Close,
    Command,
    Deliver,
    Error,
    Event,
    FetchModLog,
    Hello,
    Identify,
    Invite,
    InviteEvent,
    Join,
    Joined,
    Kick,
    KickEvent,
    Kill,
    LogModeration,
    Message,
    Mode,
    ModeEvent,
    ModLog,
    Nick,
    Notice,
    Oper,
    OperEvent,
    QuitEvent,
    SaveRoom,
    SaveServerBans,
    Say,
    Topic,
    TopicEvent,
    Unban,
    Verified,
    Who,
    Whois,
    WhoisReply,
    WhoReply,
)

NOW = 1000.0


class Net:
    """A hub and its clients: ``n.do(cid, command)`` returns the actions."""

    def __init__(self, **overrides: Any) -> None:
        config = Config(server_name="test", history_replay=0, **overrides)
        self.hub = Hub(config)
        self.now = NOW

    def hello(self, cid: int, nick: str, account: str | None = None, address: str = "") -> None:
        self.hub.connect(cid, self.now, address or f"10.0.0.{cid}")
        verified = Verified(owner=account, account=account) if account else None
        actions = self.hub.handle(cid, Hello(nick, verified=verified), self.now)
        assert not errors(actions), actions

    def do(self, cid: int, command: Command) -> list[Action]:
        return self.hub.handle(cid, command, self.now)

    def ok(self, cid: int, command: Command) -> list[Action]:
        actions = self.do(cid, command)
        assert not errors(actions, cid), actions
        return actions


def errors(actions: list[Action], cid: int | None = None) -> list[Error]:
    return [
        a.event
        for a in actions
        if isinstance(a, Deliver) and isinstance(a.event, Error) and (cid is None or cid in a.cids)
    ]


def refused(actions: list[Action], code: str) -> str:
    (error,) = errors(actions)
    assert error.code == code, error
    return error.message


def events_for(actions: list[Action], cid: int) -> list[Event]:
    return [a.event for a in actions if isinstance(a, Deliver) and cid in a.cids]


def logged(actions: list[Action]) -> list[str]:
    return [f"{a.entry.action} {a.entry.target}" for a in actions if isinstance(a, LogModeration)]


@pytest.fixture
def net() -> Net:
    """ada (account ada) founded #r; bob (no account) and carol (account carol) joined."""
    n = Net()
    n.hello(1, "ada", account="ada")
    n.hello(2, "bob")
    n.hello(3, "carol", account="carol")
    for cid in (1, 2, 3):
        n.ok(cid, Join("#r"))
    return n


# ------------------------------------------------------------------ founders and rooms


def test_the_registered_creator_is_founder_and_operator(net: Net) -> None:
    (who,) = events_for(net.ok(2, Who("#r")), 2)
    assert isinstance(who, WhoReply)
    assert who.prefixes == ("@", "", "")
    assert [d.prefix for d in who.details] == ["@", "", ""]


def test_a_new_registered_room_is_saved_topic_locked(net: Net) -> None:
    actions = net.ok(1, Join("#new"))
    (save,) = [a for a in actions if isinstance(a, SaveRoom)]
    assert save.state.founder == "ada" and save.state.modes == "nt"
    (joined,) = [e for e in events_for(actions, 1) if isinstance(e, Joined)]
    assert joined.prefixes == ("@",)


def test_an_unregistered_room_behaves_as_before() -> None:
    n = Net()
    n.hello(1, "bob")
    n.hello(2, "dan")
    actions = n.ok(1, Join("#plain")) + n.ok(2, Join("#plain"))
    assert not [a for a in actions if isinstance(a, SaveRoom)]
    n.ok(2, Topic("#plain", "anyone may set it"))  # no +t, no operators
    refused(n.do(1, Kick("#plain", "dan")), "not_operator")


def test_topic_lock_refuses_a_member_and_lets_the_operator(net: Net) -> None:
    message = refused(net.do(2, Topic("#r", "mine now")), "not_operator")
    assert "+t" in message
    actions = net.ok(1, Topic("#r", "the plan"))
    assert TopicEvent("#r", "the plan", "ada") in events_for(actions, 2)
    assert any(isinstance(a, SaveRoom) and a.state.topic == "the plan" for a in actions)


def test_the_founder_regains_operator_status_on_rejoin_and_state_survives_restart(
    net: Net,
) -> None:
    net.ok(1, Ban("#r", "bob", reason="spam"))
    saved = [a for a in net.ok(1, Mode("#r", "+i")) if isinstance(a, SaveRoom)][-1].state
    # a new hub (a restart) loads the saved state
    n = Net()
    n.hub.load_moderation([saved], [])
    n.hello(1, "ada", account="ada")
    n.hello(2, "bob", address="10.0.0.2")
    joined = [e for e in events_for(n.ok(1, Join("#r")), 1) if isinstance(e, Joined)]
    assert joined[0].prefixes == ("@",)
    assert "banned" in refused(n.do(2, Join("#r")), "banned")


# ------------------------------------------------------------------ each power, and its refusal


def test_kick_tells_everyone_and_removes_the_member(net: Net) -> None:
    actions = net.ok(1, Kick("#r", "bob", "flooding"))
    event = KickEvent("#r", "bob", "ada", "flooding")
    assert event in events_for(actions, 2) and event in events_for(actions, 3)
    assert logged(actions) == ["kick bob"]
    refused(net.do(2, Say("#r", "still here?")), "not_in_room")


def test_a_member_may_not_kick(net: Net) -> None:
    assert "operators" in refused(net.do(2, Kick("#r", "carol")), "not_operator")
    net.ok(3, Say("#r", "still in"))


def test_kick_of_someone_not_there(net: Net) -> None:
    refused(net.do(1, Kick("#r", "nobody")), "not_in_that_room")


def test_ban_is_announced_and_refuses_the_join(net: Net) -> None:
    net.ok(2, Join("#r"))
    actions = net.ok(1, Ban("#r", "bob", reason="spam"))
    assert ModeEvent("#r", "ada", "+b", ("bob!*@*",)) in events_for(actions, 3)
    net.ok(1, Kick("#r", "bob"))
    assert "spam" in refused(net.do(2, Join("#r")), "banned")


def test_a_ban_is_not_evaded_by_a_new_nick_or_a_reconnect(net: Net) -> None:
    net.ok(1, Ban("#r", "bob"))  # bob is not logged in: his address is banned too
    net.ok(1, Ban("#r", "carol"))  # carol is: her account is banned too
    net.ok(1, Kick("#r", "bob"))
    net.ok(1, Kick("#r", "carol"))
    net.ok(2, Nick("bobby"))
    refused(net.do(2, Join("#r")), "banned")
    net.hello(9, "robert", address="10.0.0.2")  # a reconnect from bob's address
    refused(net.do(9, Join("#r")), "banned")
    net.hello(8, "caz", account="carol", address="10.9.9.9")  # carol, elsewhere
    refused(net.do(8, Join("#r")), "banned")
    net.hello(7, "dave", address="10.0.0.7")  # somebody else gets in
    net.ok(7, Join("#r"))


def test_a_ban_with_expiry_runs_out(net: Net) -> None:
    net.ok(1, Ban("#r", "*!*@10.0.0.2", duration=60))
    net.ok(1, Kick("#r", "bob"))
    refused(net.do(2, Join("#r")), "banned")
    net.now += 61
    net.ok(2, Join("#r"))


def test_a_member_may_not_ban_unban_or_list_server_bans(net: Net) -> None:
    refused(net.do(2, Ban("#r", "carol")), "not_operator")
    net.ok(1, Ban("#r", "dave"))
    refused(net.do(2, Unban("#r", "dave")), "not_operator")
    refused(net.do(2, Ban(None, "carol", server=True)), "not_server_operator")
    refused(net.do(2, BanList(None, server=True)), "not_server_operator")


def test_unban_and_the_ban_list(net: Net) -> None:
    net.ok(1, Ban("#r", "dave", duration=3600, reason="rude"))
    (reply,) = events_for(net.ok(2, BanList("#r")), 2)
    assert isinstance(reply, BanListReply)
    assert [(b.mask, b.by, b.reason, b.expires) for b in reply.bans] == [
        ("dave!*@*", "ada", "rude", NOW + 3600)
    ]
    actions = net.ok(1, Unban("#r", "dave"))
    assert ModeEvent("#r", "ada", "-b", ("dave!*@*",)) in events_for(actions, 2)
    refused(net.do(1, Unban("#r", "dave")), "bad_request")


def test_a_muted_member_is_told_and_nobody_sees_the_message(net: Net) -> None:
    actions = net.ok(1, Ban("#r", "bob", quiet=True, reason="calm down"))
    assert ModeEvent("#r", "ada", "+q", ("bob!*@*",)) in events_for(actions, 3)
    actions = net.do(2, Say("#r", "LOUD"))
    assert "muted" in refused(actions, "muted")
    assert not [
        a for a in actions if isinstance(a.event if isinstance(a, Deliver) else None, Message)
    ]
    net.ok(1, Unban("#r", "bob", quiet=True))
    net.ok(2, Say("#r", "sorry"))


def test_a_member_may_not_mute(net: Net) -> None:
    refused(net.do(2, Ban("#r", "carol", quiet=True)), "not_operator")


def test_moderated_room_only_voiced_and_operators_speak(net: Net) -> None:
    net.ok(1, Mode("#r", "+m"))
    assert "+m" in refused(net.do(2, Say("#r", "hi")), "cannot_send")
    actions = net.ok(1, Mode("#r", "+v", ("bob",)))
    assert ModeEvent("#r", "ada", "+v", ("bob",)) in events_for(actions, 3)
    net.ok(2, Say("#r", "hi"))
    net.ok(1, Say("#r", "ops speak too"))
    refused(net.do(3, Say("#r", "me?")), "cannot_send")


def test_op_and_deop(net: Net) -> None:
    refused(net.do(2, Mode("#r", "+o", ("bob",))), "not_operator")
    net.ok(1, Mode("#r", "+o", ("carol",)))
    net.ok(3, Kick("#r", "bob"))  # carol is an operator now
    net.ok(1, Mode("#r", "-o", ("carol",)))
    refused(net.do(3, Mode("#r", "+m")), "not_operator")


def test_the_founder_cannot_be_deopped_by_another_operator(net: Net) -> None:
    net.ok(1, Mode("#r", "+o", ("carol",)))
    refused(net.do(3, Mode("#r", "-o", ("ada",))), "not_operator")


def test_invite_only_and_invite(net: Net) -> None:
    net.ok(1, Mode("#r", "+i"))
    net.hello(5, "eve")
    assert "invite" in refused(net.do(5, Join("#r")), "invite_only")
    refused(net.do(2, Invite("eve", "#r")), "not_operator")
    actions = net.ok(1, Invite("eve", "#r"))
    assert InviteEvent("#r", "eve", "ada") in events_for(actions, 5)
    net.ok(5, Join("#r"))
    refused(net.do(1, Invite("eve", "#r")), "already_in_room")


def test_key(net: Net) -> None:
    net.ok(1, Mode("#r", "+k", ("s3cret",)))
    net.hello(5, "eve")
    refused(net.do(5, Join("#r")), "bad_key")
    refused(net.do(5, Join("#r", key="wrong")), "bad_key")
    net.ok(5, Join("#r", key="s3cret"))
    refused(net.do(2, Mode("#r", "-k")), "not_operator")
    refused(net.do(1, Mode("#r", "+k", ("two words",))), "bad_mode")


def test_modes_query_and_unknown_modes(net: Net) -> None:
    (reply,) = events_for(net.ok(2, Mode("#r")), 2)
    assert reply == ModeEvent("#r", "", "+nt")
    refused(net.do(1, Mode("#r", "+z")), "bad_mode")
    refused(net.do(1, Mode("#r", "-n")), "bad_mode")
    refused(net.do(1, Mode("#r", "+o")), "bad_mode")  # needs an argument
    actions = net.ok(1, Mode("#r", "+mi-t"))
    assert ModeEvent("#r", "ada", "+mi-t") in events_for(actions, 2)


def test_a_member_may_not_see_the_modlog(net: Net) -> None:
    refused(net.do(2, ModLog("#r")), "not_operator")
    refused(net.do(2, ModLog()), "not_server_operator")
    (fetch,) = net.ok(1, ModLog("#r", 10))
    assert fetch == FetchModLog(1, "#r", 10)


# ------------------------------------------------------------------ server operators


def test_config_operators_and_their_powers() -> None:
    n = Net(operators="root")
    n.hello(1, "root", account="root")
    n.hello(2, "bob", address="192.0.2.7")
    n.ok(2, Join("#x"))
    (whois,) = events_for(n.ok(1, Whois("bob")), 1)
    assert isinstance(whois, WhoisReply) and whois.address == "192.0.2.7"
    (hidden,) = events_for(n.ok(2, Whois("bob")), 2)
    assert isinstance(hidden, WhoisReply) and hidden.address is None
    n.ok(1, Kick("#x", "bob"))  # in a room it is not in, unregistered
    actions = n.ok(1, Announce("maintenance at 5"))
    assert any(isinstance(e, Notice) and "maintenance" in e.text for e in events_for(actions, 2))


def test_kill(net: Net) -> None:
    refused(net.do(2, Kill("carol")), "not_server_operator")
    net.hub.set_operators(["ada"], {})
    actions = net.ok(1, Kill("bob", "enough"))
    assert Error("killed", "killed by ada: enough") in events_for(actions, 2)
    assert Close(2, "killed by ada: enough") in actions
    assert QuitEvent("bob", "killed by ada: enough") in events_for(actions, 3)
    assert logged(actions) == ["kill bob"]


def test_announce_needs_a_server_operator(net: Net) -> None:
    refused(net.do(1, Announce("hi")), "not_server_operator")  # a founder is not enough


def test_oper_with_the_credential() -> None:
    n = Net(max_password_failures=2)
    n.hello(1, "ada")
    refused(n.do(1, Oper("boss", "x")), "not_server_operator")  # none configured
    n.hub.set_operators([], {"boss": "hunter22"})
    refused(n.do(1, Oper("boss", "wrong")), "bad_password")
    actions = n.ok(1, Oper("boss", "hunter22"))
    assert OperEvent("boss") in events_for(actions, 1)
    n.ok(1, Ban(None, "10.6.6.6", server=True))
    n.hello(2, "mal")
    n.hub.set_operators([], {"boss": "hunter22"})
    refused(n.do(2, Oper("boss", "a")), "bad_password")
    assert Close(2, "too many wrong passwords") in n.do(2, Oper("boss", "b"))


def test_server_ban_refuses_at_hello_and_login_and_disconnects() -> None:
    n = Net(operators="root")
    n.hello(1, "root", account="root")
    n.hello(2, "bob", address="192.0.2.7")
    actions = n.ok(1, Ban(None, "192.0.2.7", duration=3600, reason="go away", server=True))
    assert any(isinstance(a, SaveServerBans) for a in actions)
    assert Close(2, "banned from the server") in actions  # present: disconnected
    n.hub.connect(3, NOW, "192.0.2.7")
    actions = n.do(3, Hello("bobby"))
    assert "go away" in refused(actions, "banned") and Close(3, "banned from the server") in actions
    n.ok(1, Ban(None, "$a:mallory", server=True))
    n.hub.connect(4, NOW, "10.1.1.1")
    refused(n.do(4, Hello("mal", verified=Verified("mallory", "mallory"))), "banned")
    n.hello(5, "anon", address="10.1.1.2")
    refused(n.do(5, Identify(None, None, verified=Verified("mallory", "mallory"))), "banned")


def test_the_console_is_a_server_operator(net: Net) -> None:
    actions = net.hub.console(Kick("#r", "bob", "from the console"), NOW)
    assert KickEvent("#r", "bob", "console", "from the console") in events_for(actions, 3)
    assert logged(actions) == ["kick bob"]


def test_bad_masks_and_durations_are_refused(net: Net) -> None:
    for mask in ("", "a b", ":x", "x" * 101, "a,b"):
        refused(net.do(1, Ban("#r", mask)), "bad_request")
    refused(net.do(1, Ban("#r", "dave", duration=0)), "bad_request")


def test_lists_are_bounded(net: Net) -> None:
    for i in range(100):
        net.ok(1, Ban("#r", f"n{i}"))
    refused(net.do(1, Ban("#r", "one-more")), "bad_request")


def test_mode_changes_are_bounded(net: Net) -> None:
    refused(net.do(1, Mode("#r", "+" + "m" * 13)), "bad_mode")
    masks = tuple(f"{'x' * 90}{i}!*@*" for i in range(4))
    refused(net.do(1, Mode("#r", "+bbbb", masks)), "bad_mode")


def test_registered_rooms_are_bounded_per_founder(net: Net) -> None:
    for i in range(25):
        net.ok(1, Join(f"#room{i}"))
    assert sum(1 for r in net.hub._saved_rooms.values() if r.founder == "ada") == 20
    (who,) = events_for(net.ok(1, Who("#room24")), 1)
    assert isinstance(who, WhoReply) and who.prefixes == ()  # created unregistered
