"""One registered user against a real chatd process: crash, memory, replies, addresses.

Issue 10, the findings that live in the transport and the server loop. Like
``test_abuse.py``, each scenario that ``make stress`` runs larger is a ``run_*`` function
taking its scale and returning its figures.

To put several clients' input into *one* loop turn (the crash of finding 1 needs a
neighbour to leave in the same turn as the bad line), the tests stop the server process
with SIGSTOP, let every client send, and continue it: its next ``select()`` returns them
all at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, ChatdProcess, JsonClient, RawClient, many_sockets, wait_until
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_abuse import RssSampler, Swarm, server_healthy

FAULTS = Path(__file__).resolve().parent / "faults"


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@contextmanager
def one_turn(server: ChatdProcess) -> Iterator[None]:
    """Everything sent inside the block reaches the server in one loop turn."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: _state(server.pid) == "T", what="the server to stop")
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def alive(server: ChatdProcess, client: JsonClient, token: str) -> None:
    """The process runs and answers ``client``'s ping."""
    assert server.proc is not None and server.proc.poll() is None, server.log()[-3000:]
    client.send_json(op="ping", id=token)
    client.expect_frame(type="pong", id=token)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def frames_until(
    client: JsonClient, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Every frame ``client`` has received, once ``done`` holds for them (reads on)."""
    while True:
        frames = [json.loads(line) for line in client.lines if line.startswith("{")]
        if done(frames):
            return frames
        client.expect(lambda line: True)


# ============================================================================ finding 1


def test_nested_id_with_a_neighbour_leaving_in_the_same_turn(make_server) -> None:
    """The crash of issue 10: a deeply nested id, waiting in the tick's batch, is encoded
    when a neighbour's departure materialises it (``_tell_hub_departures``)."""
    # No nick hold: the departure must be announced in that same turn (accounts issue).
    server = make_server("--rate-limit", "0", "--nick-hold-seconds", "0")
    observer = server.json_client("obs", "#r")
    leaver = server.json_client("leaver", "#r")
    attacker = server.json_client("att", "#r")
    with one_turn(server):
        leaver.close()
        attacker.send(
            b'{"op":"say","room":"#r","text":"deep","id":' + nested(980).encode() + b"}\n"
        )
        attacker.send_json(op="say", room="#r", text="after")
    frames_until(observer, lambda fs: {"after", "quit"} <= {f.get("text", f["type"]) for f in fs})
    alive(server, observer, "up")
    error = attacker.expect(lambda line: '"type":"error"' in line)  # not parsed: it could nest
    assert '"code":"bad_request"' in error and '"id"' not in error, error[:200]
    assert "Traceback" not in server.log()


def test_encoding_bug_costs_one_delivery_not_the_loop(make_server) -> None:
    """(b) alone: a codec bug no input check catches (injected: tests/faults) drops that
    delivery, is logged with the connection id, and everybody else is served."""
    env = {
        "PYTHONPATH": f"{FAULTS}{os.pathsep}{ROOT}",
        "CHATD_TEST_ENCODE_FAULT": "1",
    }
    server = make_server("--rate-limit", "0", "--nick-hold-seconds", "0", env=env)
    observer = server.json_client("obs", "#r")
    texter = server.text_client("texter")
    texter.send_line("/join #r")
    texter.expect(lambda line: "You joined #r" in line)
    leaver = server.json_client("leaver", "#r")
    sender = server.json_client("sender", "#r")
    with one_turn(server):
        leaver.close()
        # Per recipient: only the sender's own copy (it carries the id) fails.
        sender.send_json(op="say", room="#r", text="one", id="encode-fail")
        # Per cache entry: every JSON copy fails; the text-mode copy does not.
        sender.send_json(op="say", room="#r", text="ENCODE-FAIL-ALL two")
        sender.send_json(op="say", room="#r", text="three", id=3)
    frames = frames_until(
        observer, lambda fs: {"three", "quit"} <= {f.get("text", f["type"]) for f in fs}
    )
    assert [f["text"] for f in frames if f["type"] == "msg"] == ["one", "three"], frames
    texter.expect(lambda line: "ENCODE-FAIL-ALL two" in line)
    texter.expect(lambda line: "three" in line)
    assert sender.expect_frame(type="msg")["text"] == "three"  # own "one" was dropped
    # Outside the batch too (_deliver): a private message, a reply with an id.
    sender.send_json(op="msg", to="obs", text="ENCODE-FAIL-ALL pm")
    sender.send_json(op="ping", id="encode-fail")
    sender.send_json(op="msg", to="texter", text="ENCODE-FAIL-ALL pm")
    texter.expect(lambda line: "ENCODE-FAIL-ALL pm" in line)
    alive(server, sender, "up")
    alive(server, observer, "up")
    log = server.log()
    failures = [line for line in log.splitlines() if "cannot encode" in line]
    # One line per failure: the shared JSON entry of "two", the sender's "one"; each pm
    # to obs and its copy to the sender, the sender's copy of the pm to texter; the ping.
    assert len(failures) == 6, failures
    assert all("#" in line for line in failures)


# Every op, every field, arbitrary JSON values (and ids nested too deep to encode back).
OPS = ["hello", "join", "part", "say", "me", "msg", "nick", "who", "rooms", "topic"]
OPS += ["history", "away", "whois", "ping", "quit"]
FIELDS = ["room", "text", "nick", "to", "topic", "reason", "message", "before", "after"]
FIELDS += ["limit", "password", "action", "id"]
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
    st.sampled_from(["#r", "#other", "obs", "att"]),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_text = st.one_of(
    _value.map(json.dumps), st.integers(1, 1000).map(nested), st.integers(900, 990).map(nested)
)
# A valid request per op, so that overriding a few fields reaches deep into each op.
VALID: dict[str, dict[str, Any]] = {
    "hello": {"nick": "x"},
    "join": {"room": "#r"},
    "part": {"room": "#r"},
    "say": {"room": "#r", "text": "hi"},
    "me": {"room": "#r", "text": "waves"},
    "msg": {"to": "obs", "text": "hi"},
    "nick": {"nick": "att2"},
    "who": {"room": "#r"},
    "topic": {"room": "#r", "topic": "t"},
    "history": {"room": "#r", "limit": 3},
    "whois": {"nick": "obs"},
    "away": {"message": "lunch"},
}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, str]:
    op = draw(st.sampled_from(OPS))
    fields = {"op": json.dumps(op)} | {k: json.dumps(v) for k, v in VALID.get(op, {}).items()}
    overrides = draw(st.dictionaries(st.sampled_from(FIELDS), json_text, max_size=3))
    if draw(st.booleans()):
        fields["op"] = draw(json_text)
    return fields | overrides


class Room:
    """An observer that stays, a sender, and an attacker that is replaced when it leaves."""

    def __init__(self, server: ChatdProcess) -> None:
        self.server = server
        self.observer = server.json_client("obs", "#r")
        self.sender = server.json_client("sender", "#r")
        self.attacker = server.json_client("att", "#r")
        self.count = 0

    def fresh(self, nick: str, *rooms: str) -> JsonClient:
        self.count += 1
        return self.server.json_client(f"{nick}{self.count}", *rooms)

    def run(self, fields: dict[str, str]) -> None:
        line = "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}\n"
        leaver = self.fresh("leaver", "#r")
        joiner = self.fresh("joiner")
        marker = f"marker {self.count}"
        with one_turn(self.server):
            leaver.close()
            joiner.send_json(op="join", room="#r")
            self.attacker.send(line.encode())
            self.sender.send_json(op="say", room="#r", text=marker, id=self.count)
        got = self.observer.expect(lambda text: marker in text, timeout=10)
        assert json.loads(got)["text"] == marker
        self.sender.expect_frame(type="msg", text=marker, id=self.count)
        alive(self.server, self.observer, f"alive {self.count}")
        joiner.expect_frame(type="joined", room="#r")
        alive(self.server, joiner, "joined")
        joiner.close()
        # The attacker may have quit, changed nick or left #r: start a new one.
        self.attacker.close()
        self.attacker = self.fresh("att", "#r")


@pytest.fixture(scope="module")
def room() -> Iterator[Room]:
    server = ChatdProcess("--rate-limit", "0")
    try:
        yield Room(server)
        assert server.proc is not None and server.proc.poll() is None
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        server.stop()


def _deep_ids(test: Callable[..., None]) -> Callable[..., None]:
    """Explicit examples: a ``say`` whose id nests just deep enough to decode but not to
    be encoded back (the exact depth depends on the stack of the path that encodes)."""
    for depth in range(970, 996):
        say = {"op": '"say"', "room": '"#r"', "text": '"x"', "id": nested(depth)}
        test = example(fields=say)(test)
    return test


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@_deep_ids
@given(fields=requests())
def test_any_json_in_any_field_with_neighbours_coming_and_going(
    room: Room, fields: dict[str, str]
) -> None:
    room.run(fields)


# ============================================================================ finding 2


def run_tiny_lines(server: ChatdProcess, clients: int) -> dict[str, Any]:
    """``clients`` registered JSON clients each send one 64 KiB packet of ``xy\\n`` (21,845
    lines, each a bad_json error at the rate limit); returns the server's RSS growth."""
    start_kib = server.rss_kib()
    crowd = Swarm(many_sockets(server.port, clients))
    crowd.send_all(lambda i: b'{"op":"hello","nick":"tiny%d"}\n' % i)
    crowd.pump_until(
        lambda: all(any(b'"welcome"' in line for line in lines) for lines in crowd.lines),
        30,
        "every client registered",
    )
    registered_kib = server.rss_kib()
    rss = RssSampler(server)
    packet = b"xy\n" * (65536 // 3)
    for i in range(clients):
        crowd.send_pumping(i, packet)
    crowd.pump_until(
        lambda: all(any(b"bad_json" in line for line in lines) for lines in crowd.lines),
        30,
        "every packet read",
    )
    deadline = time.monotonic() + 1.0  # let it run a second at the rate limit
    while time.monotonic() < deadline:
        crowd.pump(0.05)
    packets_kib = rss.stop()
    crowd.close()
    return {
        "clients": clients,
        "registered_kib": registered_kib - start_kib,
        "packets_kib": packets_kib,
        "total_kib": registered_kib - start_kib + packets_kib,
    }


def test_tiny_lines_backlog_is_bounded_in_bytes(make_server) -> None:
    server = make_server("--max-clients-per-ip", "0")  # 300 clients on one address
    got = run_tiny_lines(server, 300)
    print(f"\ntiny lines: {got}")
    server_healthy(server)
    # Before the bound: ~1.2 MiB per client (21,845 parsed lines each). The goal of the
    # issue: under 20 MiB for all 300, connections included.
    assert got["total_kib"] < 20 * 1024, got


# ============================================================================ finding 5


def test_max_clients_per_ip_refuses_in_the_newcomers_protocol(make_server) -> None:
    server = make_server("--max-clients-per-ip", "3", irc=True)
    held = [RawClient(server.port) for _ in range(2)] + [RawClient(server.irc_port or 0)]
    for client in held[:2]:
        client.expect(lambda line: line.startswith("***"))  # admitted: the banner
    held[2].send_line("NICK irc1")
    held[2].send_line("USER irc1 0 * :irc1")
    held[2].expect(lambda line: " 001 " in line)
    refused = RawClient(server.port)
    lines = refused.read_until_closed()
    assert any("too many connections from your address" in line for line in lines), lines
    frame = json.loads(next(line for line in lines if line.startswith("{")))
    assert frame["code"] == "server_full", frame
    refused_irc = RawClient(server.irc_port or 0)
    lines = refused_irc.read_until_closed()
    assert lines and lines[0].startswith("ERROR") and "too many connections" in lines[0], lines
    # Another address is not affected...
    other = JsonClient(server.port, source="127.0.0.2")
    assert other.hello("other")["nick"] == "other"
    # ...and a slot given back is free again.
    held[0].close()

    def admitted() -> bool:
        client = RawClient(server.port)
        line = client.read_line()
        client.close()
        return bool(line and line.startswith("***"))

    wait_until(admitted, what="the freed slot")
    refusals = [line for line in server.log().splitlines() if "already has 3 connections" in line]
    assert len(refusals) == 1, refusals  # logged at 1, 10, 100, then every 1000th


def run_password_guessing(
    server: ChatdProcess, seconds: float, source: str = "127.0.0.1"
) -> dict[str, Any]:
    """One client guesses as fast as the server answers: reconnecting after each close,
    3 wrong passwords per connection, for ``seconds``. Meanwhile, at the end, somebody
    on another address logs in with the right one. Returns guesses/s and that login's
    time."""
    guesses = connections = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        guesser = JsonClient(server.port, source=source, timeout=seconds + 5)
        connections += 1
        for i in range(3):
            guesser.send_json(op="hello", nick=f"g{i}", password=f"guess{guesses + i}")
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                got = guesser.read_frame(remaining)
            except AssertionError:  # held past the end of the run
                break
            if got is None:
                break
            if got.get("code") == "bad_password":
                guesses += 1
        guesser.close()
    elapsed = time.monotonic() - start
    # The guesser's address is out of guesses now; another address is not.
    held = JsonClient(server.port, source=source)
    held.send_json(op="hello", nick="held", password="sesame")
    login_start = time.monotonic()
    right = JsonClient(server.port, source="127.0.0.2")
    right.hello("right", password="sesame")
    login_s = time.monotonic() - login_start
    held.expect_frame(type="welcome")  # the right password gets in there too, in turn
    held_s = time.monotonic() - login_start
    right.close()
    held.close()
    return {
        "seconds": elapsed,
        "guesses": guesses,
        "connections": connections,
        "guesses_per_s": guesses / elapsed,
        "right_login_s": login_s,
        "held_login_s": held_s,
    }


def password_server(make: Callable[..., ChatdProcess], tmp: Path, *args: str) -> ChatdProcess:
    secret = tmp / "password"
    secret.write_text("sesame\n")
    return make("--password-file", str(secret), *args)


def test_password_guesses_are_throttled_per_address(make_server, tmp_path: Path) -> None:
    server = password_server(make_server, tmp_path)
    got = run_password_guessing(server, seconds=4.0)
    print(f"\npassword guessing: {got}")
    server_healthy(server)
    # Burst 10, then 1/s: ~14 in 4 s. Before the throttle: ~8,000/s.
    assert got["guesses"] <= 10 + 4 * 1.0 + 2, got
    assert got["guesses_per_s"] < 5, got
    log = server.log().splitlines()
    slowed = [line for line in log if "127.0.0.1: 10 wrong passwords; slowing" in line]
    assert len(slowed) == 1, slowed  # one line for the address, not one per connection
    closed = [line for line in log if "closed: too many wrong passwords" in line]
    assert len(closed) <= 4, closed  # only the connections before the throttle set in
    # The episode ends once the address stops guessing; one summary line.
    wait_until(lambda: "wrong passwords in" in server.log(), 15, "the summary line", interval=0.1)


def ping_rtt(client: JsonClient, token: str) -> float:
    start = time.monotonic()
    client.send_json(op="ping", id=token)
    client.expect_frame(type="pong", id=token, timeout=30)
    return time.monotonic() - start


def run_burst_crowd(server: ChatdProcess, clients: int, lines: int) -> dict[str, Any]:
    """``clients`` connections from 127.0.0.1 register, join one room and each send
    ``lines`` messages at once, while a user on 127.0.0.2 pings; returns its ping times."""
    victim = JsonClient(server.port, source="127.0.0.2")
    victim.hello("victim")
    quiet = [ping_rtt(victim, f"q{i}") for i in range(20)]
    counts = [0] * clients

    def on_line(i: int, line: bytes) -> None:
        if b'"type":"msg"' in line:
            counts[i] += 1

    crowd = Swarm(many_sockets(server.port, clients), on_line=on_line)
    welcomed: set[int] = set()

    def on_register(i: int, line: bytes) -> None:
        if b'"welcome"' in line:
            welcomed.add(i)

    crowd.on_line = on_register
    crowd.send_all(lambda i: b'{"op":"hello","nick":"b%d"}\n{"op":"join","room":"#burst"}\n' % i)
    crowd.pump_until(
        lambda: len(welcomed) + len(crowd.closed) >= clients, 30, "every client answered"
    )
    admitted = sorted(welcomed)
    # Wait until the last one's join is done (every admitted one sees it).
    crowd.on_line = on_line
    last = b'{"op":"ping","id":"ready"}\n'
    crowd.send_all(last)
    crowd.pump(0.2)
    burst = b"".join(b'{"op":"say","room":"#burst","text":"burst %d"}\n' % n for n in range(lines))
    expected = len(admitted) * lines
    start = time.monotonic()
    crowd.send_all(burst)
    loaded: list[float] = []
    deadline = start + 60
    while time.monotonic() < deadline and any(counts[i] < expected for i in admitted):
        crowd.pump(0.005)
        loaded.append(ping_rtt(victim, f"l{len(loaded)}"))
    elapsed = time.monotonic() - start
    crowd.close()
    victim.close()
    loaded = loaded or [0.0]
    return {
        "clients": clients,
        "admitted": len(admitted),
        "refused": len(crowd.closed),
        "deliveries": expected * len(admitted),
        "burst_s": elapsed,
        "quiet_p90_s": sorted(quiet)[int(len(quiet) * 0.9)],
        "loaded_p50_s": sorted(loaded)[len(loaded) // 2],
        "loaded_p90_s": sorted(loaded)[int(len(loaded) * 0.9)],
        "pings": len(loaded),
    }


def test_burst_crowd_from_one_address_is_bounded(make_server) -> None:
    server = make_server()
    got = run_burst_crowd(server, clients=100, lines=30)
    print(f"\nburst crowd: {got}")
    server_healthy(server)
    assert got["admitted"] == 64 and got["refused"] == 36, got


# ============================================================================ finding 3

PIPELINED = 100  # history requests in one packet: 100 pages of 64 KiB, 6.4 MB
CONTROLS = "".join(chr(c) for c in range(1, 32) if chr(c) not in "\t\n\r")  # -> U+FFFD


def fill_room(server: ChatdProcess, room: str, count: int, text: str) -> None:
    """``count`` messages of ``text`` in ``room``, said in text mode (raw control characters
    fit a line there; JSON would escape each as 6 bytes). The server has no rate limit."""
    writer = server.text_client("writer")
    writer.send_line(f"/join {room}")
    writer.expect(lambda line: f"You joined {room}" in line)
    batch = (text.encode() + b"\n") * count + b"/ping\n"
    view = memoryview(batch)
    while view:  # send while reading our own echoes, or the server stops reading us
        writer.sock.settimeout(30)
        view = view[writer.sock.send(view[:65536]) :]
        writer.sock.settimeout(0.001)
        try:
            while writer.sock.recv(1 << 20):
                pass
        except (TimeoutError, BlockingIOError):
            pass
    writer.expect(lambda line: "pong" in line, 60)
    writer.close()


def run_big_replies(server: ChatdProcess, messages: int, rooms: int) -> dict[str, Any]:
    """Replies the server sizes itself, to clients that read at full speed: a history of
    ``messages`` messages of 2,000 control characters (JSON, text), the list of ``rooms``
    rooms with 300-character topics (JSON, text), a join replay to an IRC client."""
    noisy = (CONTROLS * 100)[:2000]  # stored as 6 KB of U+FFFD
    fill_room(server, "#big", messages, noisy)
    got: dict[str, Any] = {}
    # JSON history: pages marked "more", followed until the range is done.
    reader = server.json_client("reader", "#big")
    mids: list[int] = []
    pages, size, before = 0, 0, None
    while True:
        reader.send_json(op="history", room="#big", limit=500, before=before, id=pages)
        line = reader.expect(lambda text: '"type":"history"' in text, timeout=30)
        size += len(line.encode())
        page = json.loads(line)
        pages += 1
        mids = [m["mid"] for m in page["messages"]] + mids
        if not page.get("more") or len(mids) >= min(messages, 500):
            break
        before = page["messages"][0]["mid"]
    got |= {"history_pages": pages, "history_messages": len(mids), "history_bytes": size}
    got["history_in_order"] = mids == sorted(set(mids))
    alive(server, reader, "after history")
    # Pipelined: PIPELINED requests of a full page each in one packet, read by a client
    # at a steady 4 MB/s (a Wi-Fi laptop) with a small receive window (little in flight).
    piper = JsonClient(server.port, rcvbuf=16384)
    piper.hello("piper")
    piper.join("#big")
    piper.send(
        b"".join(
            json.dumps({"op": "history", "room": "#big", "limit": 500, "id": f"p{i}"}).encode()
            + b"\n"
            for i in range(PIPELINED)
        )
    )
    got["pipelined_s"] = read_paced(piper, b'"type":"history"', PIPELINED, 4_000_000)
    alive(server, piper, "after pipelined history")
    # Text mode: one reply, the newest that fit, and a line saying so.
    texter = server.text_client("texter")
    texter.send_line("/join #big")
    texter.expect(lambda line: "You joined #big" in line)
    texter.send_line("/history 500")
    got["text_history_note"] = texter.expect(lambda line: "fit in one reply" in line, 30)
    texter.send_line("/ping")  # still connected, still answered
    texter.expect(lambda line: "pong" in line, 30)
    # The rooms list: rooms with long topics, shortened to fit.
    owner = server.json_client("owner")
    topic = (CONTROLS * 20)[:300]
    batch = b"".join(
        json.dumps({"op": "join", "room": f"#room{i}"}).encode()
        + b"\n"
        + json.dumps({"op": "topic", "room": f"#room{i}", "topic": topic}).encode()
        + b"\n"
        for i in range(rooms)
    )
    for start in range(0, len(batch), 32768):
        owner.send(batch[start : start + 32768])
        owner.sock.settimeout(0.01)
        try:
            while owner.sock.recv(1 << 20):
                pass
        except TimeoutError:
            pass
        owner.sock.settimeout(5)
    alive(server, owner, "rooms made")
    reader.send_json(op="rooms", id="list")
    listing = reader.expect(lambda text: '"type":"rooms"' in text, timeout=30)
    frame = json.loads(listing)
    got |= {"rooms_listed": len(frame["rooms"]), "rooms_omitted": frame.get("omitted", 0)}
    got["rooms_bytes"] = len(listing.encode())
    alive(server, reader, "after rooms")
    texter.send_line("/rooms")
    texter.expect(lambda line: "more room" in line, 30)
    alive_text(texter)
    # IRC: the join replay is the newest messages that fit.
    irc = RawClient(server.irc_port or 0, timeout=30)
    irc.send(b"NICK ircr\r\nUSER ircr 0 * :r\r\nJOIN #big\r\n")
    end = irc.expect(lambda line: "End of history" in line or "ERROR" in line)
    got["irc_replay_note"] = end
    got["irc_replay_bytes"] = sum(len(line.encode()) + 1 for line in irc.lines)
    irc.send(b"PING :still\r\n")
    irc.expect(lambda line: "PONG" in line and "still" in line)
    got["cut"] = server.log().count("slow consumer")
    return got


def read_paced(client: RawClient, marker: bytes, count: int, rate: float) -> float:
    """Read at ``rate`` bytes/s until ``marker`` has been seen ``count`` times; seconds."""
    start = time.monotonic()
    seen, tail, total = 0, b"", 0
    client.sock.settimeout(30)
    while seen < count:
        chunk = client.sock.recv(16384)
        assert chunk, f"cut off after {seen} of {count} replies"
        total += len(chunk)
        data = tail + chunk
        seen += data.count(marker) - tail.count(marker)
        tail = data[-len(marker) :]
        pause = start + total / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing a reader, not waiting for the server
    return time.monotonic() - start


def alive_text(client: RawClient) -> None:
    client.send_line("/ping")
    client.expect(lambda line: "pong" in line, 30)


def test_big_replies_are_paged_and_nobody_reading_is_cut(make_server) -> None:
    server = make_server(
        "--rate-limit", "0", "--max-rooms-per-client", "2000", "--history-replay", "50", irc=True
    )
    got = run_big_replies(server, messages=500, rooms=1200)
    print(f"\nbig replies: {got}")
    server_healthy(server)
    assert got["cut"] == 0, got
    assert got["history_messages"] == 500 and got["history_in_order"], got
    assert got["history_pages"] > 1, got  # 3 MB of history does not fit one reply
    assert got["rooms_omitted"] > 0 and got["rooms_listed"] + got["rooms_omitted"] >= 1200, got
    assert got["rooms_bytes"] <= 65536 + 1024, got
    assert got["irc_replay_bytes"] < 2 * 65536, got
