"""Cluster mode against a real redis-server and real chatd nodes (docs/cluster.md)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import Partition, RedisServer, needs_redis, node, stopped_after
from helpers import ChatdProcess, JsonClient, RawClient, wait_until
from test_irc_server import IrcClient

from chatd.cluster_scripts import mid_of, stream_id

pytestmark = needs_redis


@pytest.fixture
def nodes(redis: RedisServer) -> Iterator[list[ChatdProcess]]:
    yield from stopped_after([node(redis, "--rate-limit", "0", irc=True) for _ in range(3)])


def hello(port: int, nick: str, timeout: float = 10.0) -> JsonClient:
    """Register, retrying while the nick is still held (a dead node's, until reaped)."""

    def attempt() -> JsonClient | None:
        client = JsonClient(port)
        client.send_json(op="hello", nick=nick)
        frame = client.read_frame()
        if frame and frame.get("type") == "welcome":
            return client
        client.close()
        return None

    return wait_until(attempt, timeout, f"{nick} to register", interval=0.1)  # type: ignore[no-any-return]


def msgs(client: JsonClient, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = client.read_frame()
        assert frame is not None, f"got only {got}"
        if frame.get("type") == "msg":
            got.append(frame)
    return got


def test_mid_is_the_stream_id_as_an_exact_json_integer() -> None:
    assert mid_of("1795914156014-3") == 1795914156014 * 1024 + 3
    assert stream_id(mid_of("1795914156014-1023")) == "1795914156014-1023"
    assert mid_of("1795914156014-1023") < mid_of("1795914156015-0") < 2**53


def test_users_on_three_nodes_chat_in_json_text_and_irc(nodes: list[ChatdProcess]) -> None:
    a, b, c = nodes
    alice = a.json_client("alice", "#lobby")
    bob = b.text_client("bob")  # text mode lands in #lobby
    alice.expect_frame(type="join", nick="bob")
    assert c.irc_port
    carol = IrcClient(c.irc_port)
    carol.register("carol")
    carol.join("#lobby")
    alice.expect_frame(type="join", nick="carol")
    bob.send_line("hello from text")
    got = alice.expect_frame(type="msg", **{"from": "bob"})
    assert got["text"] == "hello from text"
    carol.expect(lambda line: "PRIVMSG #lobby :hello from text" in line)
    carol.send_line("PRIVMSG #lobby :hi from irc")
    alice.expect_frame(type="msg", text="hi from irc")
    bob.expect(lambda line: "hi from irc" in line)
    alice.say("#lobby", "json here")
    bob.expect(lambda line: "json here" in line)
    carol.expect(lambda line: "PRIVMSG #lobby :json here" in line)
    # who, across nodes; private messages across nodes
    bob.send_line("/who")
    bob.expect(lambda line: "alice" in line and "carol" in line)
    carol.send_line("PRIVMSG alice :psst")
    assert alice.expect_frame(type="privmsg")["text"] == "psst"
    alice.send_json(op="msg", to="bob", text="for bob")
    bob.expect(lambda line: "for bob" in line)
    # a topic set on one node is seen on the others; a nick change too
    alice.send_json(op="topic", room="#lobby", topic="cluster day")
    carol.expect(lambda line: "TOPIC #lobby :cluster day" in line)
    carol.send_line("NICK caroline")
    alice.expect_frame(type="nick", old="carol", new="caroline")
    late = b.json_client("dave", "#lobby")
    late.send_json(op="topic", room="#lobby")
    assert late.expect_frame(type="topic")["topic"] == "cluster day"


def test_every_node_sees_one_room_order(nodes: list[ChatdProcess]) -> None:
    """Senders on three nodes at once: every member gets the same sequence, mids rising."""
    readers = [p.json_client(f"r{i}", "#race") for i, p in enumerate(nodes)]
    senders = [p.json_client(f"s{i}", "#race") for i, p in enumerate(nodes)]
    for i, reader in enumerate(readers):
        for _ in range(5 - i):  # everyone who joined after it
            reader.expect_frame(type="join")
    for n in range(30):
        for i, sender in enumerate(senders):
            sender.say("#race", f"{i}-{n}")
    seen = [[(m["mid"], m["text"]) for m in msgs(reader, 90)] for reader in readers]
    assert seen[0] == seen[1] == seen[2]
    mids = [mid for mid, _ in seen[0]]
    assert mids == sorted(set(mids))


def test_commands_sent_behind_a_hello_wait_for_it(nodes: list[ChatdProcess]) -> None:
    """hello, join and say in one write: each runs after the one before it was settled in
    Redis (checked against the state it leaves), not against the state before it."""
    client = JsonClient(nodes[0].port)
    client.send(
        b'{"op":"hello","nick":"quick"}\n{"op":"join","room":"#fast"}\n'
        b'{"op":"say","room":"#fast","text":"first!","id":1}\n'
    )
    client.expect_frame(type="welcome")
    client.expect_frame(type="joined", room="#fast")
    assert client.expect_frame(id=1)["type"] == "msg"


def test_nick_collisions_across_nodes_are_refused(nodes: list[ChatdProcess]) -> None:
    a, b, _ = nodes
    alice = a.json_client("alice")
    other = JsonClient(b.port)
    for nick in ("alice", "ALICE", "aIice"):
        other.send_json(op="hello", nick=nick)
        assert other.expect_frame(type="error")["code"] == "nick_taken"
    other.hello("bob")
    other.send_json(op="nick", nick="Alice")
    assert other.expect_frame(type="error")["code"] == "nick_taken"
    alice.close()


def test_a_nick_held_in_redis_by_a_live_node_is_refused_dead_node_freed(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    """The claim itself, without the hubs' view: a nick key held by another node counts
    while that node's liveness key lives, and not after."""
    redis.command("SET", "chatd:nick:f:ghost", "elsewhere")
    redis.command("SET", "chatd:alive:elsewhere", "1")
    client = JsonClient(nodes[0].port)
    client.send_json(op="hello", nick="ghost")
    assert client.expect_frame(type="error")["code"] == "nick_taken"
    redis.command("DEL", "chatd:alive:elsewhere")
    client.hello("ghost")
    assert redis.command("GET", "chatd:nick:f:ghost").endswith(b"\r\n")
    assert b"elsewhere" not in redis.command("GET", "chatd:nick:f:ghost")


def test_simultaneous_claims_of_one_nick_one_wins(nodes: list[ChatdProcess]) -> None:
    clients = [JsonClient(p.port) for p in nodes for _ in range(3)]
    for client in clients:
        client.send_json(op="hello", nick="zed")
    answers = [client.read_frame() for client in clients]
    kinds = sorted(str(frame and frame["type"]) for frame in answers)
    assert kinds.count("welcome") == 1, answers


def test_a_killed_nodes_users_quit_and_their_clients_move_with_nothing_missed(
    nodes: list[ChatdProcess],
) -> None:
    a, b, c = nodes
    alice = a.json_client("alice", "#lobby")
    bob = b.json_client("bob", "#lobby")
    alice.expect_frame(type="join", nick="bob")
    alice.say("#lobby", "before")
    last = bob.expect_frame(type="msg", text="before")["mid"]
    b.stop(signal.SIGKILL)
    for n in range(5):
        alice.say("#lobby", f"while away {n}")
    quit_ = alice.expect_frame(timeout=10, type="quit", nick="bob")
    assert quit_["reason"] == "connection lost"
    # bob's client comes back on another node, with his nick, and fills the gap
    moved = hello(c.port, "bob")
    moved.join("#lobby")
    moved.send_json(op="history", room="#lobby", after=last, limit=50)
    texts = [m["text"] for m in moved.expect_frame(type="history")["messages"]]
    assert texts == [f"while away {n}" for n in range(5)]


def test_a_node_stopped_normally_announces_its_users_quits_at_once(redis: RedisServer) -> None:
    """SIGTERM: the node leaves the cluster on its way out (long TTL: not by reaping)."""
    a = node(redis, "--cluster-ttl-seconds", "60")
    b = node(redis, "--cluster-ttl-seconds", "60")
    try:
        alice = a.json_client("alice", "#lobby")
        bob = b.json_client("bob", "#lobby")
        alice.expect_frame(type="join", nick="bob")
        assert b.stop() == 0
        alice.expect_frame(timeout=5, type="quit", nick="bob")
        again = a.json_client("bob")  # the nick is free at once
        again.close()
        bob.close()
    finally:
        a.stop()
        b.stop()


def test_redis_killed_and_restarted_loses_nothing_acknowledged(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    a, b, _ = nodes
    alice = a.json_client("alice", "#log")
    bob = b.json_client("bob", "#log")
    acked = []
    for n in range(20):
        alice.send_json(op="say", room="#log", text=f"m{n}", id=n)
        acked.append(alice.expect_frame(type="msg", id=n)["mid"])
    redis.kill()
    alice.send_json(op="say", room="#log", text="lost?", id="x")
    error = alice.expect_frame(timeout=10, type="error", id="x")
    assert error["code"] == "cluster_unavailable"
    redis.start()  # same port, same directory: the AOF is replayed

    def says() -> bool:
        alice.send_json(op="say", room="#log", text="back", id="b")
        frame = alice.expect_frame(timeout=5, id="b")
        return bool(frame["type"] == "msg")

    wait_until(says, 15, "the cluster to accept messages again", interval=0.2)
    bob.expect_frame(type="msg", text="back")  # delivery resumed on the other node
    bob.send_json(op="history", room="#log", limit=100)
    mids = [m["mid"] for m in bob.expect_frame(type="history")["messages"]]
    assert set(acked) <= set(mids)


def test_redis_stopped_refuses_keeps_connections_and_recovers(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    a, b, _ = nodes
    alice = a.json_client("alice", "#lobby")
    bob = b.json_client("bob", "#lobby")
    alice.expect_frame(type="join", nick="bob")
    redis.signal(signal.SIGSTOP)
    try:
        alice.send_json(op="say", room="#lobby", text="into the void", id=1)
        error = alice.expect_frame(timeout=10, type="error", id=1)
        assert error["code"] == "cluster_unavailable"
        newcomer = JsonClient(a.port)
        newcomer.send_json(op="hello", nick="newbie")
        assert newcomer.expect_frame(type="error")["code"] == "cluster_unavailable"
        alice.send_json(op="who", room="#lobby", id=2)  # the last known view still answers
        assert set(alice.expect_frame(type="who", id=2)["members"]) == {"alice", "bob"}
    finally:
        redis.signal(signal.SIGCONT)

    def says() -> bool:
        alice.send_json(op="say", room="#lobby", text="we are back", id=3)
        return bool(alice.expect_frame(timeout=5, id=3)["type"] == "msg")

    wait_until(says, 15, "the cluster to accept messages again", interval=0.2)
    got = bob.expect_frame(type="msg", text="we are back")
    assert got["from"] == "alice"  # nobody was declared dead: the same two users


def test_a_node_cut_off_from_redis_catches_up_when_back(redis: RedisServer) -> None:
    """Only node B loses Redis (a relay that stops passing bytes): A goes on; B refuses
    new messages meanwhile, keeps its clients, and when the link is back its members get
    what they missed, in order, once."""
    cut = Partition(redis.port)
    a = node(redis, "--rate-limit", "0")
    b = node(cut, "--rate-limit", "0")
    try:
        alice = a.json_client("alice", "#lobby")
        bob = b.json_client("bob", "#lobby")
        alice.expect_frame(type="join", nick="bob")
        alice.say("#lobby", "before")
        bob.expect_frame(type="msg", text="before")
        cut.frozen = True
        for n in range(3):
            alice.say("#lobby", f"during {n}")
        # In flight when the link went silent: not confirmed (it may still be stored,
        # as TCP may yet deliver it); once the link is known down: refused, never sent.
        bob.send_json(op="say", room="#lobby", text="in flight", id=1)
        error = bob.expect_frame(timeout=10, id=1)
        assert error["code"] == "cluster_unavailable" and "not confirmed" in error["message"]
        bob.send_json(op="say", room="#lobby", text="refused", id=2)
        error = bob.expect_frame(timeout=10, id=2)
        assert error["code"] == "cluster_unavailable" and "not sent" in error["message"]
        cut.frozen = False
        alice.say("#lobby", "after")
        texts: list[str] = []
        while not texts or texts[-1] != "after":
            texts += [m["text"] for m in msgs(bob, 1)]
        assert "refused" not in texts
        assert [t for t in texts if t != "in flight"] == [f"during {n}" for n in range(3)] + [
            "after"
        ]
        assert len(texts) == len(set(texts))  # each once
        bob.send_json(op="who", room="#lobby", id=3)
        assert set(bob.expect_frame(type="who", id=3)["members"]) == {"alice", "bob"}
    finally:
        a.stop()
        b.stop()
        cut.close()


def test_bad_cluster_url_is_refused_at_startup(tmp_path: Path) -> None:
    import subprocess
    import sys

    from helpers import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--port", "0", "--cluster", "http://x/1"],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "redis://" in result.stderr


def test_text_client_sees_cluster_unavailable_clearly(
    redis: RedisServer, nodes: list[ChatdProcess]
) -> None:
    a = nodes[0]
    text: RawClient = a.text_client("tex")
    redis.signal(signal.SIGSTOP)
    try:
        text.send_line("anyone?")
        text.expect(lambda line: "not confirmed" in line, timeout=10)
        text.send_line("still there?")
        text.expect(lambda line: "unreachable: not sent" in line, timeout=10)
    finally:
        redis.signal(signal.SIGCONT)


def test_the_client_moves_to_the_next_node_and_misses_nothing(redis: RedisServer) -> None:
    """``chat A,B``: A is killed; the client goes on with B under the same nick (B waits
    for A's liveness to lapse), fills the gap there, and shows every message once, in
    order, with the move as a status line."""
    import asyncio

    from prompt_toolkit.input import PipeInput
    from test_client_app import Screen, run

    from client import app

    a = node(redis, "--rate-limit", "0")
    b = node(redis, "--rate-limit", "0")
    try:
        alice = b.json_client("alice", "#lobby")
        screen = Screen()
        opts = app.Options(
            "127.0.0.1", a.port, "carol", "#lobby", None, others=(("127.0.0.1", b.port),)
        )

        async def script(pipe: PipeInput) -> None:
            await screen.wait_for("you joined #lobby")
            await asyncio.to_thread(alice.expect_frame, type="join", nick="carol")
            for n in range(3):
                alice.say("#lobby", f"m{n}")
            await screen.wait_for("m2")
            await asyncio.to_thread(a.stop, signal.SIGKILL)
            for n in range(3, 6):
                alice.say("#lobby", f"m{n}")
            await screen.wait_for(f"connected to 127.0.0.1:{b.port}", timeout=20)
            await screen.wait_for("m5", timeout=20)
            pipe.send_text("/quit\r")

        assert run(screen.run(opts, script), timeout=40) == 0
        shown = [
            line.split("<alice> ")[1] for line in screen.text.splitlines() if "<alice> m" in line
        ]
        assert shown == [f"m{n}" for n in range(6)], screen.text
        assert "was taken" not in screen.text  # the same nick on the new node
    finally:
        a.stop(signal.SIGKILL)
        b.stop()


def test_history_ranges_from_any_client_get_an_answer(nodes: list[ChatdProcess]) -> None:
    """Every mid a client may send (0..2**63-1, empty or inverted ranges) gets a page."""
    client = nodes[0].json_client("pager", "#h")
    client.send_json(op="say", room="#h", text="one", id="s")
    mid = client.expect_frame(id="s")["mid"]
    cases = [
        ({"before": 0}, 0), ({"after": 0}, 1), ({"after": 2**63 - 1}, 0),
        ({"before": 2**63 - 1}, 1), ({"after": mid, "before": mid}, 0),
        ({"after": mid - 1, "before": mid + 1}, 1), ({"before": mid}, 0),
    ]  # fmt: skip
    for n, (query, count) in enumerate(cases):
        client.send_json(op="history", room="#h", id=n, **query)
        reply = client.expect_frame(id=n)
        assert reply["type"] == "history" and len(reply["messages"]) == count, (query, reply)


def test_a_long_cut_off_is_caught_up_to_a_page_then_skipped(redis: RedisServer) -> None:
    """More missed than one page (history_max_limit): the first page is delivered, then
    ``skipped`` tells the client to fill the rest from history, as for a slow reader."""
    cut = Partition(redis.port)
    a = node(redis, "--rate-limit", "0")
    b = node(cut, "--rate-limit", "0", "--history-max-limit", "2")
    try:
        alice = a.json_client("alice", "#lobby")
        bob = b.json_client("bob", "#lobby")
        alice.expect_frame(type="join", nick="bob")
        cut.frozen = True
        for n in range(5):
            alice.send_json(op="say", room="#lobby", text=f"during {n}", id=n)
            alice.expect_frame(id=n)
        wait_until(lambda: "lost Redis" in b.log(), 10, "B to notice (its heartbeat times out)")
        cut.frozen = False
        got = [m["text"] for m in msgs(bob, 2)]
        assert got == ["during 0", "during 1"]
        bob.expect_frame(timeout=10, type="skipped")
        last = None
        texts: list[str] = []
        while len(texts) < 3:
            bob.send_json(op="history", room="#lobby", after=last or 0, limit=2, id="h")
            page = bob.expect_frame(type="history", id="h")["messages"]
            texts += [m["text"] for m in page if m["text"] not in got]
            last = page[-1]["mid"]
        assert texts == ["during 2", "during 3", "during 4"]
    finally:
        a.stop()
        b.stop()
        cut.close()


def test_replays_and_history_pages_are_sized_by_bytes(redis: RedisServer) -> None:
    """max_reply_bytes holds in cluster mode too: the newest that fit, then ``more``."""
    a = node(redis, "--rate-limit", "0", "--max-reply-bytes", "3000")
    try:
        writer = a.json_client("writer", "#big")
        for n in range(10):
            writer.send_json(op="say", room="#big", text=f"{n}" + "x" * 999, id=n)
            writer.expect_frame(id=n)
        reader = JsonClient(a.port)
        reader.hello("reader")
        reader.send_json(op="join", room="#big")
        replayed = []
        while (frame := reader.read_frame()) and frame["type"] != "history_end":
            if frame["type"] == "msg":
                replayed.append(frame["text"][0])
        assert 1 <= len(replayed) < 10 and replayed[-1] == "9"  # the newest that fit
        reader.send_json(op="history", room="#big", limit=10, id="h")
        page = reader.expect_frame(type="history", id="h")
        assert page["more"] is True and 1 <= len(page["messages"]) < 10
    finally:
        a.stop()


def test_a_node_cut_off_longer_than_the_ttl_starts_over(redis: RedisServer) -> None:
    """B is cut off past the TTL: A declares it dead (bob quits, his nick is free). When B
    is back it must not resurrect bob: it tells him to reconnect and closes."""
    cut = Partition(redis.port)
    a = node(redis, "--rate-limit", "0")
    b = node(cut, "--rate-limit", "0")
    try:
        alice = a.json_client("alice", "#lobby")
        bob = b.json_client("bob", "#lobby")
        alice.expect_frame(type="join", nick="bob")
        cut.frozen = True
        alice.expect_frame(timeout=15, type="quit", nick="bob")
        impostor = a.json_client("bob")  # free now: bob's node is dead to the cluster
        cut.frozen = False
        error = bob.expect_frame(timeout=15, type="error")
        assert error["code"] == "cluster_unavailable" and "reconnect" in error["message"]
        assert bob.read_until_closed(timeout=10) is not None
        alice.send_json(op="who", room="#lobby", id="w")
        assert alice.expect_frame(type="who", id="w")["members"] == ["alice"]
        impostor.close()
        wait_until(lambda: "in sync" in b.log().split("declared dead")[-1], 10, "B back")
    finally:
        a.stop()
        b.stop()
        cut.close()


def test_notices_are_relayed_across_nodes_but_not_kept(nodes: list[ChatdProcess]) -> None:
    a, b, c = nodes
    alice = a.json_client("alice", "#n")
    assert c.irc_port
    carol = IrcClient(c.irc_port)
    carol.register("carol")
    carol.join("#n")
    alice.expect_frame(type="join", nick="carol")
    carol.send_line("NOTICE #n :just so you know")
    carol.send_line("PRIVMSG #n :a real message")
    alice.expect_frame(type="msg", text="just so you know")
    alice.expect_frame(type="msg", text="a real message")
    late = b.json_client("late")
    late.send_json(op="join", room="#n")
    replayed = []
    while (frame := late.read_frame()) and frame["type"] != "history_end":
        if frame["type"] == "msg":
            replayed.append(frame["text"])
    assert replayed == ["a real message"]
