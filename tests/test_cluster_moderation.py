"""Moderation across cluster nodes, against a real redis-server and real chatd nodes
(docs/cluster.md "Moderation", docs/moderation.md): kicks, bans, modes and kills decided
on one node hold on every node, and on nodes started later."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import Partition, RedisServer, needs_redis, node, stopped_after
from helpers import ChatdProcess, JsonClient, wait_until

pytestmark = needs_redis


@pytest.fixture
def opers(tmp_path: Path) -> Path:
    path = tmp_path / "opers"
    path.write_text("boss hunter2hunter2\n")
    path.chmod(0o600)
    return path


def start(redis: RedisServer, opers: Path) -> ChatdProcess:
    return node(redis, "--rate-limit", "0", "--oper-password-file", str(opers))


@pytest.fixture
def nodes(redis: RedisServer, opers: Path) -> Iterator[list[ChatdProcess]]:
    yield from stopped_after([start(redis, opers) for _ in range(3)])


def boss(proc: ChatdProcess, *rooms: str) -> JsonClient:
    """A server operator (OPER) on ``proc``, in ``rooms``."""
    client = proc.json_client("boss")
    client.send_json(op="oper", name="boss", password="hunter2hunter2", id="o")
    client.expect_frame(type="oper", id="o")
    for room in rooms:
        client.join(room)
    return client


def members(client: JsonClient, room: str) -> list[str]:
    client.send_json(op="who", room=room, id="w")
    return list(client.expect_frame(type="who", id="w")["members"])


def settles(client: JsonClient, room: str, wanted: set[str]) -> None:
    """``who`` on ``client``'s node comes to show exactly ``wanted``."""
    wait_until(lambda: set(members(client, room)) == wanted, 10, f"{room} to be {wanted}")


def error_of(client: JsonClient, rid: str) -> dict[str, Any]:
    return client.expect_frame(type="error", id=rid)


def test_an_operator_on_one_node_kicks_a_user_of_another_everywhere(
    nodes: list[ChatdProcess], redis: RedisServer, opers: Path
) -> None:
    a, b, c = nodes
    bob = b.json_client("bob", "#r")
    carol = c.json_client("carol", "#r")
    op = boss(a, "#r")  # (its status travels: b's and c's hubs must accept its kick)
    dave = b.json_client("dave", "#r")
    for client in (op, carol, dave):
        settles(client, "#r", {"boss", "bob", "carol", "dave"})
    op.send_json(op="kick", room="#r", nick="bob", reason="flood", id="k")
    assert op.expect_frame(type="kick", id="k")["nick"] == "bob"
    told = bob.expect_frame(type="kick", room="#r")
    assert (told["by"], told["reason"]) == ("boss", "flood")
    carol.expect_frame(type="kick", nick="bob")
    for client in (op, carol, dave):
        assert set(members(client, "#r")) == {"boss", "carol", "dave"}
    # bob's own node took him out: he may not speak there any more
    bob.send_json(op="say", room="#r", text="still here?", id="s")
    assert error_of(bob, "s")["code"] == "not_in_room"
    # a node started afterwards sees the same room (bob's record was rewritten)
    d = start(redis, opers)
    try:
        erin = d.json_client("erin")
        settles(erin, "#r", {"boss", "carol", "dave"})
    finally:
        d.stop()


def test_a_ban_set_on_one_node_holds_on_the_others_and_on_new_nodes(
    nodes: list[ChatdProcess], redis: RedisServer, opers: Path
) -> None:
    a, b, c = nodes
    op = boss(a, "#r")
    bob = b.json_client("bob", "#r")
    carol = c.json_client("carol", "#r")
    settles(carol, "#r", {"boss", "bob", "carol"})
    op.send_json(op="ban", room="#r", mask="bob", reason="spam", id="b")
    assert op.expect_frame(type="mode", id="b")["args"] == ["bob!*@*"]
    bob.expect_frame(type="mode", target="#r", modes="+b")
    op.send_json(op="kick", room="#r", nick="bob", id="k")
    bob.expect_frame(type="kick", room="#r")
    bob.send_json(op="join", room="#r", id="j")
    assert error_of(bob, "j")["code"] == "banned"
    # a new connection through the third node, under a new nick: the ban named bob's
    # address (his node told the others where he came from)
    bob.close()
    bobby = c.json_client("bobby")
    bobby.send_json(op="join", room="#r", id="j")
    assert error_of(bobby, "j")["code"] == "banned"
    # a node started after the ban enforces it, and lists it
    d = start(redis, opers)
    try:
        again = d.json_client("bob2")
        again.send_json(op="join", room="#r", id="j")
        assert error_of(again, "j")["code"] == "banned"
        again.send_json(op="bans", room="#r", id="l")
        assert [ban["mask"] for ban in again.expect_frame(type="bans", id="l")["bans"]] == [
            "bob!*@*"
        ]
    finally:
        d.stop()
    settles(carol, "#r", {"boss", "carol"})


def test_room_modes_set_on_one_node_hold_on_the_others(nodes: list[ChatdProcess]) -> None:
    a, b, c = nodes
    op = boss(a, "#m")
    carol = c.json_client("carol", "#m")
    op.send_json(op="mode", target="#m", modes="+imk", args=["sesame"], id="m")
    op.expect_frame(type="mode", id="m")
    carol.expect_frame(type="mode", target="#m", by="boss")
    dave = b.json_client("dave")
    dave.send_json(op="join", room="#m", id="j")
    assert error_of(dave, "j")["code"] == "invite_only"
    carol.send_json(op="say", room="#m", text="hello?", id="s")
    assert error_of(carol, "s")["code"] == "cannot_send"
    op.send_json(op="mode", target="#m", modes="-i", id="m2")
    op.expect_frame(type="mode", id="m2")
    dave.send_json(op="join", room="#m", id="j2")
    assert error_of(dave, "j2")["code"] == "bad_key"
    dave.send_json(op="join", room="#m", key="sesame", id="j3")
    dave.expect_frame(type="joined", room="#m")
    # +v given on one node lets the member speak through its own
    op.send_json(op="mode", target="#m", modes="+v", args=["carol"], id="v")
    op.expect_frame(type="mode", id="v")
    carol.expect_frame(type="mode", modes="+v")
    carol.send_json(op="say", room="#m", text="now I may", id="s2")
    assert dave.expect_frame(type="msg", room="#m")["text"] == "now I may"
    # an invitation from one node lets a user of another in
    op.send_json(op="mode", target="#m", modes="+i", id="m3")
    op.expect_frame(type="mode", id="m3")
    erin = b.json_client("erin")
    op.send_json(op="invite", nick="erin", room="#m", id="i")
    erin.expect_frame(type="invite", room="#m", by="boss")
    erin.send_json(op="join", room="#m", id="j")
    erin.expect_frame(type="joined", room="#m")
    settles(carol, "#m", {"boss", "carol", "dave", "erin"})


def test_a_non_operator_is_refused_on_its_node_and_redis_hears_nothing(
    nodes: list[ChatdProcess], redis: RedisServer
) -> None:
    a, b, _ = nodes
    carol = a.json_client("carol", "#r")
    bob = b.json_client("bob", "#r")
    bob.send_json(op="kick", room="#r", nick="carol", id="k")
    assert error_of(bob, "k")["code"] == "not_operator"
    bob.send_json(op="ban", room="#r", mask="carol", id="b")
    assert error_of(bob, "b")["code"] == "not_operator"
    bob.send_json(op="mode", target="#r", modes="+i", id="m")
    assert error_of(bob, "m")["code"] == "not_operator"
    bob.send_json(op="kill", nick="carol", id="x")
    assert error_of(bob, "x")["code"] == "not_server_operator"
    bob.send_json(op="ban", server=True, mask="carol", id="s")
    assert error_of(bob, "s")["code"] == "not_server_operator"
    assert redis.command("GET", "chatd:mod:seq").startswith(b"$-1")  # nothing was sent
    assert set(members(carol, "#r")) == {"bob", "carol"}


def test_a_kill_and_a_server_ban_reach_the_users_own_node(
    nodes: list[ChatdProcess], redis: RedisServer, opers: Path
) -> None:
    a, b, c = nodes
    op = boss(a, "#r")
    bob = b.json_client("bob", "#r")
    mallory = c.json_client("mallory", "#r")
    settles(op, "#r", {"boss", "bob", "mallory"})
    op.send_json(op="kill", nick="bob", reason="enough", id="x")
    op.expect_frame(type="notice", id="x")
    assert "killed by boss: enough" in bob.expect_frame(type="error")["message"]
    while bob.read_line(10) is not None:  # then its node closes the connection
        pass
    mallory.expect_frame(type="quit", nick="bob")
    settles(mallory, "#r", {"boss", "mallory"})
    c.json_client("bob").close()  # the nick is free again, on any node
    # a server ban: mallory (on c) is disconnected there; she cannot come back anywhere
    op.send_json(op="ban", server=True, mask="mallory*!*@*", reason="spam", id="s")
    op.expect_frame(type="notice", id="s")
    assert mallory.expect_frame(type="error")["code"] == "banned"
    settles(op, "#r", {"boss"})
    back = JsonClient(b.port)
    back.send_json(op="hello", nick="mallory", id="h")
    assert back.expect_frame(type="error", id="h")["code"] == "banned"
    d = start(redis, opers)
    try:
        later = JsonClient(d.port)
        later.send_json(op="hello", nick="mallory", id="h")
        assert later.expect_frame(type="error", id="h")["code"] == "banned"
        # ... and the moderation log came with the state
        boss2 = d.json_client("boss2")
        boss2.send_json(op="oper", name="boss", password="hunter2hunter2", id="o")
        boss2.expect_frame(type="oper", id="o")
        boss2.send_json(op="modlog", id="l")
        actions = [e["action"] for e in boss2.expect_frame(type="modlog", id="l")["entries"]]
        assert "kill" in actions and "server ban" in actions
    finally:
        d.stop()


def test_a_kick_while_redis_is_away_is_refused_and_applied_nowhere(
    nodes: list[ChatdProcess], redis: RedisServer
) -> None:
    a, b, _ = nodes
    op = boss(a, "#r")
    bob = b.json_client("bob", "#r")
    settles(op, "#r", {"boss", "bob"})
    redis.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: "Redis away" in a.log(), 10, "node a to notice")
        op.send_json(op="kick", room="#r", nick="bob", id="k")
        assert error_of(op, "k")["code"] == "cluster_unavailable"
        assert set(members(op, "#r")) == {"boss", "bob"}
    finally:
        redis.signal(signal.SIGCONT)
    wait_until(lambda: a.log().count("in sync") >= 2, 10, "node a to be back")
    bob.send_json(op="say", room="#r", text="still in", id="s")
    assert op.expect_frame(type="msg", room="#r")["text"] == "still in"


def test_a_node_cut_off_meanwhile_catches_up_with_rules_and_members(
    redis: RedisServer, opers: Path
) -> None:
    """Node B misses, while cut off from Redis, a mode change and a join that the room's
    rules let in only by invitation: when back, it has both (the join is not refused by
    B's older view of the rules, and the rules are the new ones)."""
    cut = Partition(redis.port)
    slow = ("--rate-limit", "0", "--oper-password-file", str(opers), "--cluster-ttl-seconds", "6")
    a = node(redis, *slow)
    b = node(cut, *slow)
    try:
        op = boss(a, "#r")
        bob = b.json_client("bob", "#r")
        op.send_json(op="mode", target="#r", modes="+i", id="i")
        bob.expect_frame(type="mode", modes="+i")
        cut.frozen = True
        wait_until(lambda: "Redis away" in b.log(), 10, "node b to notice")
        dave = a.json_client("dave")
        op.send_json(op="invite", nick="dave", room="#r", id="v")
        op.expect_frame(type="invite", id="v")
        dave.join("#r")
        op.send_json(op="mode", target="#r", modes="+m", id="m")
        op.expect_frame(type="mode", id="m")
        cut.frozen = False
        wait_until(lambda: b.log().count("moderation state loaded") >= 2, 10, "b to resync")
        settles(bob, "#r", {"boss", "bob", "dave"})
        bob.send_json(op="say", room="#r", text="hello?", id="s")
        assert error_of(bob, "s")["code"] == "cannot_send"
    finally:
        a.stop()
        b.stop()
        cut.close()


def test_ban_lists_are_bounded_on_every_node_as_on_one(
    nodes: list[ChatdProcess], redis: RedisServer
) -> None:
    a, b, _ = nodes
    op = boss(a, "#r")
    bob = b.json_client("bob", "#r")
    op.send_json(op="ban", room="#r", mask="x" * 101 + "!*@*", id="huge")
    assert error_of(op, "huge")["code"] == "bad_request"
    for n in range(100):
        op.send_json(op="ban", room="#r", mask=f"spam{n}!*@*", id=f"b{n}")
    op.expect_frame(type="mode", id="b99")
    op.send_json(op="ban", room="#r", mask="one!*@*", id="more")
    assert "lift one first" in error_of(op, "more")["message"]
    bob.send_json(op="bans", room="#r", id="l")
    assert len(bob.expect_frame(type="bans", id="l")["bans"]) == 100
    stored = redis.command("HGET", "chatd:mod:live", "#r")
    assert stored.count(b'"mask"') == 100 and len(stored) < 100 * 200


def test_the_console_of_one_node_refuses_to_act_for_the_cluster(
    redis: RedisServer, tmp_path: Path
) -> None:
    sock = tmp_path / "ctl.sock"
    a = node(redis, "--rate-limit", "0", "--ctl-socket", str(sock))
    try:
        bob = a.json_client("bob", "#r")

        def ctl(*args: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "chatd", "ctl", "--socket", str(sock), *args]
            return subprocess.run(command, capture_output=True, text=True, timeout=30)

        kicked = ctl("kick", "#r", "bob")
        assert kicked.returncode == 1 and "one node only" in kicked.stderr
        assert ctl("modlog").returncode == 0  # reading is fine
        assert set(members(bob, "#r")) == {"bob"}
    finally:
        a.stop()


def test_a_join_that_a_mode_change_overtook_is_refused_everywhere(
    redis: RedisServer, opers: Path
) -> None:
    """+i on A reaches Redis before a join from B that B let through (B had not seen
    the +i yet): every node refuses the join where the channel puts it, and B's record
    of the user in Redis says so (a node started later agrees)."""
    cut = Partition(redis.port)
    patient = ["--rate-limit", "0", "--oper-password-file", str(opers)]
    patient += ["--cluster-ttl-seconds", "6", "--cluster-timeout-seconds", "5"]
    a = node(redis, *patient)
    b = node(cut, *patient)
    try:
        op = boss(a, "#m")
        dave = b.json_client("dave")
        settles(dave, "#m", {"boss"})
        cut.frozen = True
        op.send_json(op="mode", target="#m", modes="+i", id="i")
        op.expect_frame(type="mode", id="i")
        dave.send_json(op="join", room="#m", id="j")  # b does not know of +i yet
        cut.frozen = False
        assert error_of(dave, "j")["code"] == "invite_only"
        assert set(members(op, "#m")) == {"boss"}
        c = node(redis, *patient)
        try:
            settles(c.json_client("erin"), "#m", {"boss"})
        finally:
            c.stop()
    finally:
        a.stop()
        b.stop()
        cut.close()


def test_a_moderation_command_arriving_while_a_join_is_in_flight_does_not_undo_it(
    redis: RedisServer, opers: Path
) -> None:
    cut = Partition(redis.port)
    patient = ["--rate-limit", "0", "--oper-password-file", str(opers)]
    patient += ["--cluster-ttl-seconds", "6", "--cluster-timeout-seconds", "5"]
    a = node(redis, *patient)
    b = node(cut, *patient)
    try:
        op = boss(a, "#m", "#r")
        dave = b.json_client("dave")
        settles(dave, "#r", {"boss"})
        cut.frozen = True
        op.send_json(op="mode", target="#m", modes="+m", id="m")  # another room
        op.expect_frame(type="mode", id="m")
        dave.send_json(op="join", room="#r", id="j")  # sent behind it, answered after
        cut.frozen = False
        dave.expect_frame(type="joined", room="#r")
        settles(op, "#r", {"boss", "dave"})
        c = node(redis, *patient)
        try:
            settles(c.json_client("erin"), "#r", {"boss", "dave"})
        finally:
            c.stop()
    finally:
        a.stop()
        b.stop()
        cut.close()
