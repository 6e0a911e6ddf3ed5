"""Accounts and moderation across cluster nodes, together (docs/cluster.md "Moderation"
and "Accounts, the nick hold and away"): account bans, registered rooms, account
operators and held sessions, decided on one node and holding on another. A real
redis-server, real chatd nodes, real sockets."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import RedisServer, needs_redis, node, stopped_after
from helpers import ChatdProcess, JsonClient, wait_until
from test_accounts_server import PASSWORD, drop, leave
from test_cluster_accounts import hello, registered
from test_cluster_moderation import boss, error_of, members, settles

pytestmark = needs_redis


@pytest.fixture
def nodes(redis: RedisServer, tmp_path: Path) -> Iterator[list[ChatdProcess]]:
    opers = tmp_path / "opers"
    opers.write_text("boss hunter2hunter2\n")
    opers.chmod(0o600)
    flags = ("--rate-limit", "0", "--oper-password-file", str(opers), "--operators", "root")
    yield from stopped_after([node(redis, *flags) for _ in range(2)])


def logged_in(port: int, nick: str, account: str) -> JsonClient:
    client, welcome = hello(port, nick, account=account, account_password=PASSWORD)
    assert welcome["type"] == "welcome" and welcome["account"] == account, welcome
    return client


def test_an_account_ban_set_on_one_node_refuses_the_account_on_another(
    nodes: list[ChatdProcess],
) -> None:
    a, b = nodes
    leave(registered(a.port, "mal"))
    op = boss(a, "#r")
    op.send_json(op="ban", room="#r", mask="$a:mal", reason="spam", id="b")
    assert op.expect_frame(type="mode", id="b")["args"] == ["$a:mal"]
    # logged in to the account on B, under its own nick, then under a new one
    mal = logged_in(b.port, "mal", "mal")
    mal.send_json(op="join", room="#r", id="j")
    assert error_of(mal, "j")["code"] == "banned"
    mal.send_json(op="nick", nick="innocent", id="n")
    mal.expect_frame(type="nick", id="n")
    mal.send_json(op="join", room="#r", id="j2")
    assert error_of(mal, "j2")["code"] == "banned"
    # a fresh connection through B under another nick, logged in to the account
    other = logged_in(b.port, "someone", "mal")
    other.send_json(op="join", room="#r", id="j")
    assert error_of(other, "j")["code"] == "banned"
    # someone without the account is not banned: the ban names the account
    guest = b.json_client("guest")
    guest.join("#r")
    settles(op, "#r", {"boss", "guest"})


def test_a_rooms_founder_is_its_operator_on_every_node(
    nodes: list[ChatdProcess], redis: RedisServer, request: pytest.FixtureRequest
) -> None:
    a, b = nodes
    ada = registered(a.port, "ada")
    assert ada.join("#club").get("ops") == ["ada"]  # founded on A
    assert ada.join("#quiet").get("ops") == ["ada"]  # and one nobody moderates
    leave(registered(b.port, "carol"))  # an account, but not the founder
    bob = a.json_client("bob", "#club")
    leave(ada)
    settles(bob, "#club", {"bob"})
    # ada comes back through B: the room knows her as its founder there
    ada = logged_in(b.port, "ada", "ada")
    assert ada.join("#club").get("ops") == ["ada"]
    carol = logged_in(b.port, "carol", "carol")
    carol.join("#club")
    settles(bob, "#club", {"ada", "bob", "carol"})
    carol.send_json(op="kick", room="#club", nick="bob", id="k")
    assert error_of(carol, "k")["code"] == "not_operator"
    ada.send_json(op="kick", room="#club", nick="bob", reason="out", id="k")
    assert ada.expect_frame(type="kick", id="k")["nick"] == "bob"
    assert bob.expect_frame(type="kick", room="#club")["by"] == "ada"
    settles(carol, "#club", {"ada", "carol"})
    # everyone leaves; a node started now knows the founder (Redis keeps the room)
    leave(ada)
    leave(carol)
    c = node(redis, "--rate-limit", "0")
    request.addfinalizer(lambda: c.stop(signal.SIGKILL))
    carol = logged_in(c.port, "carol", "carol")
    for room in ("#club", "#quiet"):
        assert not carol.join(room).get("ops")  # first in, yet not its operator
        carol.send_json(op="kick", room=room, nick="carol", id="k")
        assert error_of(carol, "k")["code"] == "not_operator"
    ada = logged_in(c.port, "ada", "ada")
    for room in ("#club", "#quiet"):
        assert ada.join(room).get("ops") == ["ada"]


def test_an_operator_account_logged_in_on_one_node_acts_on_anothers_users(
    nodes: list[ChatdProcess],
) -> None:
    a, b = nodes
    leave(registered(a.port, "root"))  # named in --operators
    leave(registered(a.port, "nobody"))  # not named
    bob = a.json_client("bob", "#plain")  # an unregistered room: nobody has ops there
    cat = a.json_client("cat", "#plain")
    root = b.json_client("admin")  # logs in after its hello: the others learn it then
    root.send_json(op="identify", account="root", password=PASSWORD, id="i")
    assert root.expect_frame(type="account", id="i")["account"] == "root"
    nobody = logged_in(b.port, "nobody", "nobody")
    nobody.send_json(op="kill", nick="bob", reason="no", id="x")
    assert error_of(nobody, "x")["code"] == "not_server_operator"
    root.join("#plain")
    settles(bob, "#plain", {"admin", "bob", "cat"})
    root.send_json(op="announce", text="maintenance at noon", id="an")
    assert "maintenance" in bob.expect_frame(type="notice")["text"]
    root.send_json(op="kick", room="#plain", nick="cat", reason="out", id="k")
    assert root.expect_frame(type="kick", id="k")["nick"] == "cat"
    assert cat.expect_frame(type="kick", room="#plain")["by"] == "admin"
    root.send_json(op="kill", nick="bob", reason="enough", id="x")
    bob.read_until_closed()  # bob's own node (A) closed his connection
    settles(root, "#plain", {"admin"})
    # a server ban of an account, set on B: its user on B is closed, and it cannot log
    # in through A (nor does its nick stay claimed there)
    root.send_json(op="ban", server=True, mask="$a:nobody", reason="spam", id="s")
    root.expect_frame(type="notice", id="s")
    assert nobody.expect_frame(type="error")["code"] == "banned"
    again, refused = hello(a.port, "someone", account="nobody", account_password=PASSWORD)
    assert refused["type"] == "error" and refused["code"] == "banned", refused
    free, welcome = hello(b.port, "someone")
    assert welcome["type"] == "welcome", welcome


def test_a_held_user_banned_from_a_room_does_not_rejoin_it_by_resuming_elsewhere(
    nodes: list[ChatdProcess], redis: RedisServer
) -> None:
    a, b = nodes
    op = boss(a, "#r")
    bob, welcome = hello(a.port, "bob")
    bob.join("#r")
    settles(op, "#r", {"boss", "bob"})
    drop(bob)
    wait_until(lambda: redis.command("EXISTS", "chatd:hold:bob") == b":1\r\n", 10, "the hold")
    op.send_json(op="ban", room="#r", mask="bob", reason="spam", id="b")
    op.expect_frame(type="mode", id="b")
    op.send_json(op="kick", room="#r", nick="bob", id="k")
    op.expect_frame(type="kick", id="k")
    settles(op, "#r", {"boss"})
    back, again = hello(b.port, "bob", resume=welcome["resume"], autojoin=["#r"])
    assert again["type"] == "welcome" and again["resumed"] is True, again
    back.send_json(op="join", room="#r", id="j")
    assert error_of(back, "j")["code"] == "banned"
    assert "bob" not in members(back, "#r")
    assert set(members(op, "#r")) == {"boss"}


@pytest.mark.parametrize("how", ["kill", "server ban"])
def test_a_held_user_killed_or_server_banned_is_gone_on_every_node(
    nodes: list[ChatdProcess], redis: RedisServer, how: str
) -> None:
    a, b = nodes
    op = boss(b, "#r")  # on B; the held session is A's
    mal = registered(a.port, "mal")
    mal.join("#r")
    settles(op, "#r", {"boss", "mal"})
    drop(mal)
    wait_until(lambda: redis.command("EXISTS", "chatd:hold:mal") == b":1\r\n", 10, "the hold")
    if how == "kill":
        op.send_json(op="kill", nick="mal", id="x")
    else:
        op.send_json(op="ban", server=True, mask="$a:mal", reason="spam", id="x")
    op.expect_frame(type="notice", id="x")
    watcher = a.json_client("watcher")
    # gone on both nodes, and from Redis: the hold and the nick are freed at once
    for client in (op, watcher):
        settles(client, "#r", {"boss"})
    wait_until(lambda: redis.command("EXISTS", "chatd:hold:mal") == b":0\r\n", 10, "no hold")
    back, answer = hello(b.port, "mal", account_password=PASSWORD)
    if how == "kill":
        assert answer["type"] == "welcome" and not answer.get("resumed"), answer
        assert "mal" not in members(back, "#r")
    else:
        assert answer["type"] == "error" and answer["code"] == "banned", answer
