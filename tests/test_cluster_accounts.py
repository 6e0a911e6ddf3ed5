"""Accounts, the nick hold and away across cluster nodes: a real redis-server, real chatd
nodes, real sockets (docs/cluster.md, docs/accounts.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import RedisServer, needs_redis, node, stopped_after
from helpers import ROOT, ChatdProcess, JsonClient, wait_until
from test_accounts_server import PASSWORD, drop, leave

from chatd.cluster_accounts import MAX_ACCOUNTS
from chatd.names import nick_skeleton

pytestmark = needs_redis


@pytest.fixture
def nodes(redis: RedisServer) -> Iterator[list[ChatdProcess]]:
    yield from stopped_after([node(redis, "--rate-limit", "0") for _ in range(2)])


def hello(port: int, nick: str, **fields: Any) -> tuple[JsonClient, dict[str, Any]]:
    """A hello; the client and its answer (welcome or error)."""
    client = JsonClient(port)
    client.send_json(op="hello", nick=nick, **fields)
    answer = client.expect(lambda line: '"welcome"' in line or '"error"' in line)
    return client, json.loads(answer)


def registered(port: int, nick: str) -> JsonClient:
    client, welcome = hello(port, nick)
    assert welcome["type"] == "welcome", welcome
    client.send_json(op="register", password=PASSWORD, id="r")
    assert client.expect_frame(type="account", id="r")["event"] == "registered"
    return client


def test_register_on_one_node_log_in_on_another(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    a, b = nodes
    leave(registered(a.port, "alice"))
    stored = json.loads(redis.command("HGET", "chatd:acct", "alice").split(b"\r\n")[1])
    assert stored["n"] == "alice" and stored["s"].startswith("scrypt$")
    assert PASSWORD not in redis.command("HGET", "chatd:acct", "alice").decode()
    # the right password on B: logged in, the account shows on A too
    alice, welcome = hello(b.port, "alice", account_password=PASSWORD)
    assert welcome["type"] == "welcome" and welcome["account"] == "alice", welcome
    bob = a.json_client("bob")
    bob.send_json(op="whois", nick="alice", id="w")
    assert bob.expect_frame(type="whois", id="w").get("account") == "alice"
    # a wrong one on B: refused
    mallory, refused = hello(b.port, "alice2", account="alice", account_password="guess-guess")
    assert refused["code"] == "bad_login"
    # identify later, on B, after a hello as someone else
    me, welcome = hello(b.port, "al")
    me.send_json(op="identify", account="alice", password=PASSWORD, id="i")
    assert me.expect_frame(type="account", id="i")["account"] == "alice"


def test_a_registered_nick_cannot_be_taken_on_another_node(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    a, b = nodes
    leave(registered(a.port, "alice"))
    gone = partial(redis.command, "EXISTS", "chatd:nick:f:alice")
    wait_until(lambda: gone() == b":0\r\n", 10, "alice's quit to free her nick in Redis")
    strangers = []
    for nick in ("alice", "ALICE", "aIice"):
        stranger, refused = hello(b.port, nick)
        assert refused["code"] == "nick_registered", refused
        strangers.append(stranger)
    stranger, _ = hello(b.port, "mallory")
    stranger.send_json(op="nick", nick="alice", id="n")
    assert stranger.expect_frame(type="error", id="n")["code"] == "nick_registered"
    # refused before the nick was claimed in Redis: nobody holds it there, nobody on A
    assert gone() == b":0\r\n"
    probe = a.json_client("probe")
    probe.send_json(op="whois", nick="alice", id="w")
    assert probe.expect_frame(type="error", id="w")["code"] == "no_such_nick"
    # alice gets it at once
    alice, welcome = hello(a.port, "alice", account_password=PASSWORD)
    assert welcome["type"] == "welcome"


def test_passwd_and_unregister_on_one_node_count_on_the_other(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    a, b = nodes
    alice = registered(a.port, "alice")
    alice.send_json(op="passwd", password=PASSWORD, new_password="n3w-passw0rd", id="p")
    assert alice.expect_frame(type="account", id="p")["event"] == "password_changed"
    leave(alice)
    old, refused = hello(b.port, "alice", account_password=PASSWORD)
    assert refused["code"] == "bad_login"
    back, welcome = hello(b.port, "alice", account_password="n3w-passw0rd")
    assert welcome["account"] == "alice", welcome
    back.send_json(op="unregister", password="n3w-passw0rd", id="u")
    assert back.expect_frame(type="account", id="u")["event"] == "dropped"
    leave(back)
    assert redis.command("HEXISTS", "chatd:acct", "alice") == b":0\r\n"
    free, welcome = hello(a.port, "alice")  # anybody's again, on every node
    assert welcome["type"] == "welcome", welcome


def test_redis_decides_a_registration_not_the_nodes_mirror(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    """Two nodes registering one name at once cannot both hold it as a nick (nick claims
    are exclusive cluster-wide), so the race is a node whose mirror has not seen the
    other's account yet: here an account written to Redis behind every node's back.
    The node's mirror says the name is free; the script refuses; no second account."""
    a, b = nodes
    record = json.dumps({"n": "Zed", "s": "scrypt$16384$8$1$00$00", "c": 1.0})
    redis.command("HSET", "chatd:acct", "zed", record)
    for port in (a.port, b.port):
        zed, welcome = hello(port, "zed")
        assert welcome["type"] == "welcome", welcome  # the mirror does not know it
        zed.send_json(op="register", password=PASSWORD, id="r")
        assert zed.expect_frame(type="error", id="r")["code"] == "account_exists"
        leave(zed)
    assert json.loads(redis.command("HGET", "chatd:acct", "zed").split(b"\r\n")[1])["n"] == "Zed"
    # a look-alike too (one skeleton per account), written behind the nodes' backs
    redis.command("HSET", "chatd:acctsk", nick_skeleton("bobby"), "b0bby")
    bobby, _ = hello(b.port, "bobby")
    bobby.send_json(op="register", password=PASSWORD, id="r")
    assert bobby.expect_frame(type="error", id="r")["code"] == "account_exists"


def test_a_dropped_users_nick_is_held_cluster_wide_and_resumed_via_another_node(
    redis: RedisServer, nodes: list[ChatdProcess], request: pytest.FixtureRequest
) -> None:
    a, b = nodes
    c = node(redis)  # a third node: sees the hold and the move from outside
    request.addfinalizer(lambda: c.stop(signal.SIGKILL))
    dave = c.json_client("dave")
    alice, welcome = hello(a.port, "alice")
    token = welcome["resume"]
    alice.send_json(op="join", room="#lobby")
    alice.expect_frame(type="joined")
    bob = b.json_client("bob", "#lobby")
    alice.expect_frame(type="join", nick="bob")
    alice.send_json(op="away", message="lunch", id="aw")
    alice.expect_frame(id="aw")
    drop(alice)
    wait_until(lambda: redis.command("EXISTS", "chatd:hold:alice") == b":1\r\n", 10, "the hold")
    # nobody on B takes the nick (at once: no heartbeat wait); nor with a forged token
    for fields in ({}, {"resume": "forged-" + token[7:]}):
        stranger, refused = hello(b.port, "alice", **fields)
        assert refused["type"] == "error" and refused["code"] == "nick_taken", refused
        assert "held for its owner" in refused["message"]
        stranger.close()
    stranger, _ = hello(b.port, "mallory")
    stranger.send_json(op="nick", nick="Alice", id="n")
    assert "held for its owner" in stranger.expect_frame(type="error", id="n")["message"]
    # private messages to her meanwhile: bob (B) is told they are kept
    bob.send_json(op="msg", to="alice", text="are you there?", id="p")
    bob.expect_frame(type="privmsg", id="p")
    note = bob.expect_frame(type="notice", nick="alice")
    assert "held" in note["away"]
    carol = a.json_client("carol")
    carol.send_json(op="msg", to="alice", text="from A too", id="q")
    carol.expect_frame(type="privmsg", id="q")
    # she comes back through B with her token: her session, silently
    back, welcome = hello(b.port, "alice", resume=token)
    assert welcome["type"] == "welcome" and welcome["resumed"] is True, welcome
    assert back.expect_frame(type="joined")["room"] == "#lobby"
    texts = {back.expect_frame(type="privmsg")["text"] for _ in range(2)}
    assert texts == {"are you there?", "from A too"}
    bob.send_json(op="say", room="#lobby", text="welcome back", id="s")
    back.expect_frame(type="msg", text="welcome back")
    # nobody saw her leave or come back; she is in the room everywhere, once
    bob.send_json(op="who", room="#lobby", id="who")
    assert sorted(bob.expect_frame(type="who", id="who")["members"]) == ["alice", "bob"]
    assert redis.command("EXISTS", "chatd:hold:alice") == b":0\r\n"
    back.send_json(op="say", room="#lobby", text="hi again", id="h")
    assert bob.expect_frame(type="msg", text="hi again")["from"] == "alice"

    # A and the third node see her where she is now: she gets private messages on B. A
    # knows it (it forwarded her kept messages); the third node learns it from the channel
    # in its own time: wait until its whois no longer calls her held (a message it routed
    # before would go to A, where she no longer is)
    def resumed_seen_by(client: JsonClient) -> bool:
        client.send_json(op="whois", nick="alice", id="seen")
        return client.expect_frame(type="whois", id="seen").get("away") == "lunch"

    wait_until(partial(resumed_seen_by, dave), 10, "the third node to see her resumed")
    for name, sender in (("carol", carol), ("dave", dave)):
        sender.send_json(op="msg", to="alice", text=f"hello from {name}", id="x")
        sender.expect_frame(type="privmsg", id="x")
        assert back.expect_frame(type="privmsg")["text"] == f"hello from {name}"
        sender.send_json(op="whois", nick="alice", id="w")
        assert sender.expect_frame(type="whois", id="w")["away"] == "lunch"  # not "held"


def test_the_hold_ends_with_a_quit_everywhere(redis: RedisServer) -> None:
    a = node(redis, "--nick-hold-seconds", "1")
    b = node(redis, "--nick-hold-seconds", "1")
    try:
        alice = a.json_client("alice", "#lobby")
        bob = b.json_client("bob", "#lobby")
        alice.expect_frame(type="join", nick="bob")
        drop(alice)
        assert bob.expect_frame(timeout=10, type="quit", nick="alice")
        again, welcome = hello(b.port, "alice")
        assert welcome["type"] == "welcome"
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)


def test_a_held_session_resumes_with_the_account_password_on_another_node(
    nodes: list[ChatdProcess],
) -> None:
    a, b = nodes
    alice = registered(a.port, "alice")
    drop(alice)
    bob = b.json_client("bob")
    wait_until(lambda: _whois_away(bob, "alice"), 10, "alice held")
    back, welcome = hello(b.port, "alice", account_password=PASSWORD)
    assert welcome["type"] == "welcome" and welcome["resumed"] is True, welcome
    assert welcome["account"] == "alice"


def _whois_away(client: JsonClient, nick: str) -> bool:
    client.send_json(op="whois", nick=nick, id="wa")
    return bool(client.expect_frame(type="whois", id="wa").get("away"))


def test_away_set_on_one_node_shows_on_another(nodes: list[ChatdProcess]) -> None:
    a, b = nodes
    alice = a.json_client("alice", "#lobby")
    bob = b.json_client("bob", "#lobby")
    alice.expect_frame(type="join", nick="bob")
    alice.send_json(op="away", message="gone fishing", id="aw")
    alice.expect_frame(id="aw")
    wait_until(lambda: _whois_away(bob, "alice"), 10, "alice away on B")
    bob.send_json(op="whois", nick="alice", id="w")
    assert bob.expect_frame(type="whois", id="w")["away"] == "gone fishing"


def test_redis_away_register_and_login_get_cluster_unavailable(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    a, _ = nodes
    leave(registered(a.port, "alice"))
    me, _ = hello(a.port, "bob")
    redis.kill()
    wait_until(lambda: "Redis away" in a.log(), 10, "the node to notice")
    me.send_json(op="register", password=PASSWORD, id="r")
    assert me.expect_frame(type="error", id="r")["code"] == "cluster_unavailable"
    me.send_json(op="identify", account="alice", password=PASSWORD, id="i")
    assert me.expect_frame(type="error", id="i")["code"] == "cluster_unavailable"
    redis.start()
    wait_until(lambda: a.log().count("in sync") >= 2, 10, "the node back in sync")
    # nothing half-registered: bob has no account, and may register now
    assert redis.command("HEXISTS", "chatd:acct", "bob") == b":0\r\n"
    me.send_json(op="register", password=PASSWORD, id="r2")
    me.expect(lambda line: '"r2"' in line)


def test_the_number_of_accounts_is_bounded(redis: RedisServer, nodes: list[ChatdProcess]) -> None:
    """Every node mirrors every account: the cluster keeps at most MAX_ACCOUNTS."""
    fill = "for i = 1, tonumber(ARGV[1]) do redis.call('HSET', KEYS[1], 'x' .. i, '{}') end"
    redis.command("EVAL", fill, "1", "chatd:acct", str(MAX_ACCOUNTS))
    late, _ = hello(nodes[0].port, "late")
    late.send_json(op="register", password=PASSWORD, id="r")
    assert late.expect_frame(type="error", id="r")["code"] == "registration_closed"
    assert redis.command("HEXISTS", "chatd:acct", "late") == b":0\r\n"


def test_a_held_session_resumed_on_its_own_node_gets_other_nodes_messages(
    nodes: list[ChatdProcess],
) -> None:
    a, b = nodes
    alice, welcome = hello(a.port, "alice")
    bob = b.json_client("bob")
    drop(alice)
    wait_until(lambda: _whois_away(bob, "alice"), 10, "alice held")
    bob.send_json(op="msg", to="alice", text="kept on A", id="p")
    bob.expect_frame(type="privmsg", id="p")
    back, again = hello(a.port, "alice", resume=welcome["resume"])
    assert again["resumed"] is True, again
    assert back.expect_frame(type="privmsg")["text"] == "kept on A"
    back.send_json(op="msg", to="bob", text="back", id="m")
    assert bob.expect_frame(type="privmsg", text="back")["from"] == "alice"


def test_a_node_started_later_knows_the_accounts(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    leave(registered(nodes[0].port, "alice"))
    late = node(redis)
    try:
        stranger, refused = hello(late.port, "alice")
        assert refused["code"] == "nick_registered", refused
        alice, welcome = hello(late.port, "alice", account_password=PASSWORD)
        assert welcome["account"] == "alice", welcome
    finally:
        print(f"--- the late node ---\n{late.log()[-4000:]}")
        late.stop(signal.SIGKILL)


def _account_cli(redis: RedisServer, *args: str, password: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "chatd", "account", "--cluster", redis.url, *args],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if password:
        assert password not in done.stdout + done.stderr  # never echoed
    return done.stdout + done.stderr


def test_the_operator_manages_a_clusters_accounts(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    a, b = nodes
    assert "created" in _account_cli(redis, "add", "ada", password="ada-passw0rd")
    assert "exists" in _account_cli(redis, "add", "Ada", password="ada-passw0rd")
    stranger, refused = hello(b.port, "ada")  # every node knows at once
    assert refused["code"] == "nick_registered", refused
    ada, welcome = hello(a.port, "ada", account_password="ada-passw0rd")
    assert welcome["account"] == "ada", welcome
    leave(ada)
    assert "ada\t" in _account_cli(redis, "list")
    assert "changed" in _account_cli(redis, "passwd", "ada", password="n3w-passw0rd")
    ada, welcome = hello(b.port, "ada", account_password="n3w-passw0rd")
    assert welcome["account"] == "ada", welcome
    leave(ada)
    assert "deleted" in _account_cli(redis, "delete", "ada")
    anybody, welcome = hello(a.port, "ada")
    assert welcome["type"] == "welcome", welcome


def test_a_resume_still_needs_the_server_password(redis: RedisServer, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("letmein\n")
    a = node(redis, "--password-file", str(secret))
    b = node(redis, "--password-file", str(secret))
    try:
        alice, welcome = hello(a.port, "alice", password="letmein")
        drop(alice)
        probe, _ = hello(b.port, "probe", password="letmein")
        wait_until(lambda: _whois_away(probe, "alice"), 10, "alice held")
        thief, refused = hello(b.port, "alice", resume=welcome["resume"], password="guess")
        assert refused["code"] == "bad_password", refused
        back, again = hello(b.port, "alice", resume=welcome["resume"], password="letmein")
        assert again["resumed"] is True, again
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)


def test_holds_are_bounded_and_the_oldest_ends_everywhere(redis: RedisServer) -> None:
    """No more holds than connections (as on one node): past it the oldest hold ends
    early - on every node at once, not only in its own node's hub."""
    a = node(redis, "--max-clients", "2")
    b = node(redis)
    try:
        watcher = b.json_client("watcher", "#lobby")
        for nick in ("alice", "bob", "carol"):
            user = a.json_client(nick, "#lobby")
            watcher.expect_frame(type="join", nick=nick)
            drop(user)
            wait_until(partial(_whois_away, watcher, nick), 10, f"{nick} held")
        watcher.send_json(op="whois", nick="alice", id="gone")
        assert watcher.expect_frame(id="gone")["code"] == "no_such_nick"
        assert _whois_away(watcher, "bob") and _whois_away(watcher, "carol")
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)
