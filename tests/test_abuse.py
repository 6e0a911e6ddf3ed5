"""Hostile clients against a real chatd process (issue 6).

Every scenario starts its own server on 127.0.0.1 port 0, attacks it the way sleeping
laptops, flaky Wi-Fi, students with ``nc`` and scripts do, and checks what issue 2 and
docs/protocol.md promise: the attacker is answered per the protocol, everybody else keeps
chatting with low latency, memory and descriptors stay bounded, nothing is lost that must
not be, and the server never crashes or spins.

Each scenario is a ``run_*`` function that takes its scale as arguments and returns the
figures it measured; the tests call them at a size that runs in seconds and assert on the
figures, and ``bench/stress.py`` calls the same functions at a larger size for a person to
watch. Counts and deadlines are bounded everywhere; nothing sleeps a fixed time to wait
for the server: it polls for a condition with a deadline.

Scenario 8 of the issue (SIGKILL and restart with history) lives with the history tests.
"""

from __future__ import annotations

import json
import random
import resource
import selectors
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import ChatdProcess, JsonClient, RawClient, many_sockets, wait_until

MiB = 1024

# ============================================================================ tooling

# The crowds of these scenarios all connect from 127.0.0.1 but stand for many hosts:
# per-address limits (tests/test_abuse_server.py proves them) are off for them.
MANY_HOSTS = ("--max-clients-per-ip", "0")


def strict_loads(line: str | bytes) -> Any:
    """json.loads that refuses NaN/Infinity: what a non-Python client would accept."""

    def refuse(name: str) -> Any:
        raise ValueError(f"server sent {name}, which is not JSON")

    return json.loads(line, parse_constant=refuse)


def has_controls(text: str) -> bool:
    """C0 except tab/newline, DEL, C1: what must never be relayed (docs/protocol.md)."""
    return any((ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F for c in text)


class RssSampler:
    """Samples a process's RSS every few milliseconds in a thread; keeps the peak."""

    def __init__(self, server: ChatdProcess, interval: float = 0.02) -> None:
        self.server = server
        self.interval = interval
        self.start_kib = server.rss_kib()
        self.peak_kib = self.start_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, self.server.rss_kib())
            except (OSError, AssertionError):
                return  # the process is gone; the test will say so
            self._stop.wait(self.interval)

    def stop(self) -> int:
        """Stop sampling; return the peak growth over the start, in KiB (the kernel's
        high-water mark counts too, so a spike between two samples is not missed)."""
        self._stop.set()
        self._thread.join()
        with open(f"/proc/{self.server.pid}/status") as fh:
            hwm = next(int(x.split()[1]) for x in fh if x.startswith("VmHWM:"))
        return max(self.peak_kib, hwm) - self.start_kib


class Swarm:
    """Many non-blocking client sockets driven from one selector: the test's side of a
    crowd. Lines received are handed to ``on_line(index, line)`` (default: kept in
    ``lines[index]``); a socket that reaches EOF or a reset is noted in ``closed``."""

    def __init__(
        self,
        socks: list[socket.socket],
        on_line: Callable[[int, bytes], None] | None = None,
        on_data: Callable[[int, bytes], None] | None = None,
    ) -> None:
        self.socks = socks
        self.on_data = on_data  # if set: raw chunks instead of lines (cheap, for crowds)
        self.sel = selectors.DefaultSelector()
        self.bufs = [b""] * len(socks)
        self.lines: list[list[bytes]] = [[] for _ in socks]
        self.closed: dict[int, float] = {}  # index -> when EOF/reset was seen
        self.on_line = on_line or (lambda i, line: self.lines[i].append(line))
        for i, s in enumerate(socks):
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, i)

    def send_all(self, data: bytes | Callable[[int], bytes]) -> None:
        """Send a small payload to every open socket (it must fit the kernel buffer)."""
        for i, s in enumerate(self.socks):
            if i in self.closed:
                continue
            payload = data(i) if callable(data) else data
            try:
                sent = s.send(payload)
            except (BrokenPipeError, ConnectionResetError):
                self._mark_closed(i)
                continue
            assert sent == len(payload), "payload did not fit the socket buffer"

    def send_pumping(self, i: int, data: bytes, timeout: float = 10) -> None:
        """Send all of ``data`` on socket ``i``, reading every socket while it waits (the
        server stops reading a client whose replies pile up unread)."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                view = view[self.socks[i].send(view) :]
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AssertionError(f"socket {i} stayed unwritable") from None
                self.pump(0.01)

    def _mark_closed(self, i: int) -> None:
        if i not in self.closed:
            self.closed[i] = time.monotonic()
            self.sel.unregister(self.socks[i])

    def pump(self, timeout: float = 0.05) -> int:
        """Read whatever is ready once; return the number of lines delivered."""
        count = 0
        for key, _ in self.sel.select(timeout):
            i = key.data
            try:
                chunk = self.socks[i].recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self._mark_closed(i)
                continue
            if self.on_data is not None:
                self.on_data(i, chunk)
                continue
            data = self.bufs[i] + chunk
            *complete, self.bufs[i] = data.split(b"\n")
            for line in complete:
                self.on_line(i, line)
            count += len(complete)
        return count

    def pump_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            self.pump(0.05)

    def close(self) -> None:
        self.sel.close()
        for s in self.socks:
            s.close()


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def frame(**obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def chat_round_trip(
    clients: list[JsonClient], speaker: int, room: str, tag: str, timeout: float = 5.0
) -> float:
    """``speaker`` says ``tag`` in ``room``; seconds until every client has it (an upper
    bound: clients are read one after the other)."""
    start = time.monotonic()
    clients[speaker].say(room, tag)
    for client in clients:
        client.expect_frame(timeout=timeout, type="msg", text=tag)
    return time.monotonic() - start


def server_healthy(server: ChatdProcess) -> None:
    """The process is alive and never hit the loop's 'this is a bug' handler."""
    assert server.proc is not None and server.proc.poll() is None, server.log()[-3000:]
    log = server.log()
    assert "bug while serving" not in log and "Traceback" not in log, log[-5000:]


@pytest.fixture
def fd_limit() -> Iterator[Callable[[int], None]]:
    """Raise this test process's soft RLIMIT_NOFILE; restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def need(count: int) -> None:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"hard RLIMIT_NOFILE {hard} < {count}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count), hard))

    yield need
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ============================================================================ 1. slowloris


def run_slowloris(
    server: ChatdProcess, tricklers: int, chatters: int, register_timeout: float
) -> dict[str, Any]:
    """``tricklers`` connections send one byte at a time and never end a line, while
    ``chatters`` JSON clients chat in one room; returns latencies, RSS and close times."""
    rss = RssSampler(server)
    fds_before = server.fd_count()
    crowd = Swarm(many_sockets(server.port, tricklers))
    opened = time.monotonic()
    room = "#slowloris"
    talkers = [server.json_client(f"talker{i}", room) for i in range(chatters)]
    latencies: list[float] = []
    deadline = opened + register_timeout + 5
    rounds = 0
    while len(crowd.closed) < tricklers and time.monotonic() < deadline:
        crowd.send_all(b"x")  # one more byte of a nickname that never ends
        latencies.append(chat_round_trip(talkers, rounds % chatters, room, f"r{rounds}"))
        crowd.pump(0.05)
        rounds += 1
    timeout_lines = sum(1 for lines in crowd.lines if any(b"timeout" in x for x in lines))
    close_times = [t - opened for t in crowd.closed.values()]
    crowd.close()
    # The talkers stay, the tricklers' descriptors must all be given back.
    wait_until(lambda: server.fd_count() <= fds_before + chatters, 5, "tricklers' fds freed")
    for i in range(3):  # and the room still works
        latencies.append(chat_round_trip(talkers, i, room, f"after{i}"))
    for talker in talkers:
        talker.close()
    return {
        "tricklers": tricklers,
        "closed": len(crowd.closed),
        "told_timeout": timeout_lines,
        "first_close_s": min(close_times, default=float("nan")),
        "last_close_s": max(close_times, default=float("nan")),
        "rounds": rounds,
        "latency_p50_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
        "rss_growth_kib": rss.stop(),
    }


def test_slowloris_tricklers_timed_out_while_chat_flows(make_server) -> None:
    timeout = 2.0
    server = make_server(*MANY_HOSTS, "--register-timeout-seconds", str(timeout))
    got = run_slowloris(server, tricklers=200, chatters=10, register_timeout=timeout)
    print("slowloris:", got)
    assert got["closed"] == 200, got
    # Closed by the registration timeout (swept every 0.25 s), not before, not much after.
    assert got["first_close_s"] >= timeout * 0.9, got
    assert got["last_close_s"] <= timeout + 2.5, got
    assert got["told_timeout"] >= 190, got  # told why (a few may be reset before reading)
    # Measured ~2 ms median, ~30 ms worst; the bounds leave room for a busy CI box.
    assert got["latency_p50_s"] < 0.2 and got["latency_max_s"] < 2.0, got
    assert got["rss_growth_kib"] < 16 * MiB, got
    server_healthy(server)


# ============================================================================ 2. endless line


def run_endless_line(server: ChatdProcess, megabytes: int, mode: str) -> dict[str, Any]:
    """Send ``megabytes`` MB without a newline, then a newline and a real request."""
    client = RawClient(server.port, timeout=10)
    if mode == "json":
        client.send(frame(op="hello", nick="endless"))
        client.expect(lambda line: '"welcome"' in line)
    rss = RssSampler(server, interval=0.01)
    chunk = b"A" * (1 << 20)
    start = time.monotonic()
    for _ in range(megabytes):
        client.send(chunk)  # blocks whenever the server reads slower: streamed, not buffered
    elapsed = time.monotonic() - start
    client.send(b"\n")
    if mode == "json":
        client.send(frame(op="ping", id="still-there"))
        error = strict_loads(client.expect(lambda line: line.startswith("{")))
        assert error["type"] == "error" and error["code"] == "line_too_long", error
        pong = strict_loads(client.expect(lambda line: line.startswith("{")))
        assert pong == {"type": "pong", "id": "still-there"}, pong
    else:  # nobody has picked a mode yet: told in text, then free to pick a nick
        client.expect(lambda line: "line_too_long" in line)
        client.send_line("endless")
        client.expect(lambda line: "You joined #lobby" in line)
    growth = rss.stop()
    client.close()
    return {
        "mode": mode,
        "sent_mb": megabytes,
        "seconds": elapsed,
        "mb_per_s": megabytes / elapsed,
        "rss_growth_kib": growth,
    }


@pytest.mark.parametrize("mode,megabytes", [("json", 50), ("text", 10)])
def test_endless_line_is_streamed_and_answered(make_server, mode: str, megabytes: int) -> None:
    server = make_server("--rate-limit", "0")
    got = run_endless_line(server, megabytes, mode)
    print("endless line:", got)
    # The framer keeps at most max_line_bytes + 1 of a partial line; recv() reads 64 KiB.
    # 8 MiB is the stated bound: the 50 MB must never be held, even in part.
    assert got["rss_growth_kib"] < 8 * MiB, got
    server_healthy(server)


# ============================================================================ 3. garbage
#
# One server for the module's garbage tests, with a 2 MiB line limit so that big objects
# (100k keys, deep nesting) reach the JSON parser instead of the framer's limit.

GARBAGE_LINE_LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def garbage_server() -> Iterator[ChatdProcess]:
    server = ChatdProcess("--rate-limit", "0", "--max-line-bytes", str(GARBAGE_LINE_LIMIT))
    try:
        yield server
    finally:
        server.stop()


class Victim:
    """A registered JSON client that sends garbage, and a bystander in the same room who
    must never see anything raw."""

    room = "#garbage"

    def __init__(self, server: ChatdProcess, name: str) -> None:
        self.server = server
        self.nick, self.bystander_nick = name, f"{name}_by"
        self.client = server.json_client(name, self.room)
        self.bystander = server.json_client(self.bystander_nick, self.room)
        self.client.expect_frame(type="join", nick=self.bystander_nick)
        self.serial = 0

    def send(self, line: bytes) -> list[dict[str, Any]]:
        """Send one raw line, then a ping; return every frame before the pong."""
        self.serial += 1
        token = f"sync{self.serial}"
        self.client.send(line + b"\n" + frame(op="ping", id=token))
        frames: list[dict[str, Any]] = []
        while True:
            raw = self.client.read_line(10)
            assert raw is not None, f"server closed the connection after {line[:100]!r}"
            if not raw.startswith("{"):
                continue
            got = strict_loads(raw)  # the server's own output is always valid JSON
            assert isinstance(got, dict) and "type" in got, raw
            if got == {"type": "pong", "id": token}:
                return frames
            frames.append(got)

    def bystander_frames(self) -> list[dict[str, Any]]:
        """Frames the bystander got since last asked (synchronised by a ping)."""
        self.serial += 1
        token = f"by{self.serial}"
        self.bystander.send_json(op="ping", id=token)
        frames = []
        while (got := self.bystander.read_frame(10)) != {"type": "pong", "id": token}:
            assert got is not None, "bystander was disconnected"
            frames.append(got)
        return frames

    def close(self) -> None:
        self.client.close()
        self.bystander.close()


@pytest.fixture
def victim(garbage_server: ChatdProcess, request: pytest.FixtureRequest) -> Iterator[Victim]:
    v = Victim(garbage_server, f"v{abs(hash(request.node.name)) % 10**8}")
    yield v
    v.close()
    server_healthy(garbage_server)


ESC_TEXT = "\x1b[2J\x1b]0;pwned\x07 red:\x1b[31m bell:\x07 nul:\x00 del:\x7f csi:\x9b31m"

# (line, the error codes that are a correct answer)
FIXED_GARBAGE: list[tuple[bytes, set[str]]] = [
    (b"\xff\xfe\xfd", {"bad_encoding"}),
    (b'{"op":"say","room":"#garbage","text":"\xc3\x28"}', {"bad_encoding"}),
    (b"\xed\xa0\x80", {"bad_encoding"}),  # a surrogate encoded as UTF-8 bytes
    (b"\x00\x00\x00\x00", {"bad_json"}),
    (b"{\x00}", {"bad_json"}),
    (b"[1, 2, 3]", {"bad_json"}),
    (b"42", {"bad_json"}),
    (b'"a string"', {"bad_json"}),
    (b"null", {"bad_json"}),
    (b"{", {"bad_json"}),
    (b"{}", {"unknown_op"}),
    (b'{"op": null}', {"unknown_op"}),
    (b'{"op": 7}', {"unknown_op"}),
    (b'{"op": ["say"]}', {"unknown_op"}),
    (b'{"op": "DROP TABLE rooms"}', {"unknown_op"}),
    (b'{"op": "__class__"}', {"unknown_op"}),
    (b'{"op": "ping", "id": NaN}', {"bad_json"}),
    (b'{"op": "ping", "id": Infinity}', {"bad_json"}),
    (b'{"op": "ping", "id": 1e999}', {"bad_json"}),
    (b'{"op": "say", "room": "#garbage", "text": "\\ud800"}', {"bad_encoding"}),
    (b'{"op": "join", "room": "#\\udfff"}', {"bad_encoding"}),
    (b'{"op": "say", "room": 5, "text": "x"}', {"bad_request"}),
    (b'{"op": "say", "room": "#garbage", "text": ["x"]}', {"bad_request"}),
    (b'{"op": "say", "room": "#garbage"}', {"bad_request"}),
    (b'{"op": "join", "room": {"#a": 1}}', {"bad_request"}),
    (b'{"op": "history", "room": "#garbage", "limit": "ten"}', {"bad_request"}),
    (b'{"op": "history", "room": "#garbage", "limit": true}', {"bad_request"}),
    (b'{"op": "history", "room": "#garbage", "limit": 1e300}', {"bad_request"}),
    (b'{"op": "history", "room": "#garbage", "limit": -5}', {"bad_request", "history_off"}),
    (
        b'{"op": "history", "room": "#garbage", "before": 100000000000000000000000000000}',
        {"bad_request", "history_off"},
    ),
    (b'{"op": "hello", "nick": "again"}', {"already_registered"}),
    (b'{"op": "nick", "nick": ""}', {"bad_nick"}),
    (b'{"op": "nick", "nick": "\\u001b[31mred"}', {"bad_nick"}),
    (b'{"op": "nick", "nick": "a\\u0000b"}', {"bad_nick"}),
    (b'{"op": "nick", "nick": "' + b"n" * 5000 + b'"}', {"bad_nick"}),
    (b'{"op": "join", "room": "#a\\u001bb"}', {"bad_room"}),
    (b'{"op": "join", "room": "#a\\u009bb"}', {"bad_room"}),
    (b'{"op": "join", "room": "no-hash"}', {"bad_room"}),
    (b'{"op": "join", "room": "#' + b"r" * 100 + b'"}', {"bad_room"}),
    (b'{"op": "msg", "to": "\\u0007", "text": "x"}', {"bad_nick", "no_such_nick"}),
    (b'{"op": "say", "room": "#garbage", "text": "' + b"t" * 3000 + b'"}', {"text_too_long"}),
    (b'{"op": "say", "room": "#elsewhere", "text": "x"}', {"not_in_room"}),
    (b'{"op": "topic", "room": "#garbage", "topic": 12}', {"bad_request"}),
    (b"[" * 100_000, {"bad_json"}),
    (b'{"op": "ping", "id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {"bad_json"}),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, {"bad_json"}),
    # 100k keys, no op; then 100k keys around a wrongly typed say.
    (json.dumps({f"k{i}": i for i in range(100_000)}).encode(), {"unknown_op"}),
    (
        json.dumps(
            {**{f"k{i}": [i] for i in range(100_000)}, "op": "say", "room": "#garbage", "text": 1}
        ).encode(),
        {"bad_request"},
    ),
]


def test_garbage_fixed_cases_each_get_a_protocol_error(victim: Victim) -> None:
    for line, codes in FIXED_GARBAGE:
        assert len(line) <= GARBAGE_LINE_LIMIT
        frames = victim.send(line)
        assert len(frames) == 1, (line[:120], frames)
        assert frames[0]["type"] == "error" and frames[0]["code"] in codes, (line[:120], frames)
    assert victim.bystander_frames() == []  # nothing of it reached the room


def test_garbage_escape_sequences_are_not_relayed_raw(victim: Victim) -> None:
    room = victim.room
    own = victim.send(
        b"".join(
            [
                frame(op="say", room=room, text=ESC_TEXT),
                frame(op="me", room=room, text=ESC_TEXT),
                frame(op="topic", room=room, topic=ESC_TEXT + "\nline two"),
                frame(op="part", room=room, reason=ESC_TEXT),
                frame(op="join", room=room),
                frame(op="msg", to=victim.bystander_nick, text=ESC_TEXT),
            ]
        ).rstrip(b"\n")
    )
    assert "error" not in [f["type"] for f in own], own
    got = victim.bystander_frames()
    kinds = [f["type"] for f in got]
    assert kinds.count("msg") == 2 and "privmsg" in kinds, got
    assert "topic" in kinds and "part" in kinds and "join" in kinds, got
    for f in got:
        for value in (f.get("text"), f.get("topic"), f.get("reason")):
            if isinstance(value, str):
                assert not has_controls(value), f
    texts = [f["text"] for f in got if f["type"] in ("msg", "privmsg")]
    assert all("\ufffd[2J" in t for t in texts), texts
    topic = next(f["topic"] for f in got if f["type"] == "topic")
    assert "\n" not in topic, topic


def test_garbage_text_mode_escape_sequences(garbage_server: ChatdProcess) -> None:
    """A person on nc pastes escapes; a text-mode and a JSON-mode bystander see them
    neutralised (text mode: plain lines are said to #lobby)."""
    typist = garbage_server.text_client("typist")
    watcher = garbage_server.text_client("watcher")
    observer = garbage_server.json_client("observer", "#lobby")
    typist.send(ESC_TEXT.encode() + b"\n")
    typist.send(b"/me \x1b[5mblinks\x1b[0m\n")
    typist.send(b"/nick \x1b[31mred\n")
    err = typist.expect(lambda line: line.startswith("!!!"))
    assert "bad_nick" in err and "\x1b" not in err, err
    for _ in range(2):
        msg = observer.expect_frame(type="msg")
        assert not has_controls(msg["text"]), msg
    for _ in range(2):
        line = watcher.expect(lambda line: "typist" in line)
        assert not has_controls(line), repr(line)
    for client in (typist, watcher, observer):
        client.close()
    server_healthy(garbage_server)


# --- hypothesis: random bytes and random JSON shapes --------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from chatd.names import blank, clean_text  # noqa: E402

_FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
OPS = [
    "hello",
    "join",
    "part",
    "say",
    "me",
    "msg",
    "nick",
    "who",
    "rooms",
    "topic",
    "history",
    "away",
    "whois",
    "ping",
]  # everything but quit
FIELDS = [
    "room",
    "text",
    "nick",
    "to",
    "topic",
    "reason",
    "message",
    "before",
    "after",
    "limit",
    "password",
    "id",
]
request_shapes = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(OPS), json_value)},
    optional={name: st.one_of(json_value, st.just("#garbage"), st.just("#fz")) for name in FIELDS},
)


@_FUZZ
@given(data=st.binary(min_size=1, max_size=3000).map(lambda b: b.replace(b"\n", b"")))
def test_garbage_random_bytes_fuzz(victim: Victim, data: bytes) -> None:
    frames = victim.send(data)
    # Garbage is answered with one protocol error; the rare valid line gets its reply.
    assert len(frames) <= 2, frames
    if data.strip(b" \t\r") and not data.lstrip().startswith(b"{"):
        assert [f["type"] for f in frames] == ["error"], (data[:100], frames)


@_FUZZ
@given(obj=request_shapes)
def test_garbage_random_request_shapes_fuzz(victim: Victim, obj: dict[str, Any]) -> None:
    frames = victim.send(json.dumps(obj).encode())
    rid = obj.get("id")
    flat = rid is None or (isinstance(rid, str) and len(rid) <= 64)
    if not (flat or (type(rid) is int and abs(rid) <= 2**53)):
        # Only small flat ids are echoed (docs/protocol.md): anything else is refused.
        assert [(f["type"], f["code"]) for f in frames] == [("error", "bad_request")], frames
        assert "id" not in frames[0]
        return
    if obj.get("op") not in OPS:
        assert [f["type"] for f in frames] == ["error"], (obj, frames)
        assert frames[0]["code"] == "unknown_op"
    if frames and frames[0]["type"] == "error" and "id" in obj:
        assert frames[0].get("id") == obj["id"], (obj, frames)  # the id is copied back
    for f in frames:
        for value in (f.get("text"), f.get("topic"), f.get("reason")):
            if isinstance(value, str):
                assert not has_controls(value), f


@_FUZZ
@given(text=st.text(min_size=1, max_size=500))
def test_garbage_random_text_is_relayed_clean(victim: Victim, text: str) -> None:
    frames = victim.send(frame(op="say", room=victim.room, text=text).rstrip(b"\n"))
    assert len(frames) == 1, frames
    if frames[0]["type"] == "msg":
        assert not has_controls(frames[0]["text"]), frames
        seen = victim.bystander_frames()
        assert [f["text"] for f in seen] == [frames[0]["text"]], seen
    else:
        # or nothing visible, or more lines than max_message_lines (issue 10, finding 4/6)
        refused_for = ("text_too_long", "too_many_lines")
        assert frames[0]["code"] in refused_for or blank(clean_text(text)), frames


# ============================================================================ 4. slow consumers

# Every sleeper goes over the soft limit early in the loaded chat, and its soft-limit timer
# runs from then on, concurrently with the test's next steps (the rest of the chat, the
# waker, the private-message flood). Those steps must end before it fires, or a sleeper
# meant for the hard limit (or the waker) is cut by the timer first: on a busy 2-core
# machine they took over 4 s. The window is wide so that they fit; the test checks that
# they did (a clear failure, not a wrong count).
SLOW_SOFT_SECONDS = 15.0
SLOW_LIMITS = (
    *MANY_HOSTS,
    "--nick-hold-seconds",  # cut sleepers must leave the room now, not after the hold
    "0",
    "--out-high-water-bytes",
    "8192",
    "--out-low-water-bytes",
    "2048",
    "--out-soft-limit-bytes",
    "16384",
    "--out-hard-limit-bytes",
    "65536",
    "--out-soft-limit-seconds",
    f"{SLOW_SOFT_SECONDS:g}",
    "--rate-limit",
    "0",
    # Without this the kernel takes ~3 MB per sleeper before chatd sees any.
    "--send-buffer-bytes",
    "32768",
)


CUT_HARD = "closed: slow consumer: output buffer over the hard limit"
CUT_SOFT_TIME = "closed: slow consumer: over the soft limit for"


def chat_at_full_speed(
    server: ChatdProcess, readers: Swarm, room: str, messages: int, tag: str
) -> dict[str, Any]:
    """Every reader says ``messages`` messages as fast as the room carries them: closed
    loop, each sends its next message the moment its previous one comes back (what a
    client typing at machine speed does). Returns latency and throughput as seen."""
    n = len(readers.socks)
    got = [0] * n
    said = [0] * n
    skipped = [0] * n
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    prefix = f"{tag}:".encode()
    pad = "p" * 400

    def say(i: int) -> None:
        key = f"{tag}:{i}:{said[i]}"
        said[i] += 1
        sent_at[key] = time.monotonic()
        readers.socks[i].send(frame(op="say", room=room, text=f"{key}|{pad}"))

    def on_line(i: int, line: bytes) -> None:
        if prefix in line and b'"msg"' in line:
            key = json.loads(line)["text"].split("|")[0]
            got[i] += 1
            latencies.append(time.monotonic() - sent_at[key])
            if key.split(":")[1] == str(i) and said[i] < messages:
                say(i)  # my own message is back: the next one
        elif b'"skipped"' in line:
            skipped[i] += 1

    readers.on_line = on_line
    start = time.monotonic()
    for i in range(n):
        say(i)
    readers.pump_until(lambda: min(got) >= n * messages, 30, f"{tag}: all deliveries")
    elapsed = time.monotonic() - start
    assert got == [n * messages] * n, got
    assert skipped == [0] * n, "a reader that keeps up must never be skipped"
    return {
        "deliveries": sum(got),
        "seconds": elapsed,
        "per_s": sum(got) / elapsed,
        "latency_p50_s": statistics.median(latencies),
        "latency_p99_s": percentile(latencies, 99),
    }


def run_slow_consumers(
    server: ChatdProcess, readers: int, sleepers: int, messages: int
) -> dict[str, Any]:
    room = "#busy"
    fds_before = server.fd_count()
    rss = RssSampler(server)
    socks = []
    for i in range(readers):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(frame(op="hello", nick=f"reader{i}") + frame(op="join", room=room))
        socks.append(s)
    swarm = Swarm(socks)
    swarm.pump_until(
        lambda: all(any(b'"history_end"' in x for x in lines) for lines in swarm.lines),
        10,
        "readers joined",
    )
    baseline = chat_at_full_speed(server, swarm, room, messages, "base")

    # The sleepers: tiny receive window, registered and joined, and then never read.
    sleeping = []
    for i in range(sleepers):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        s.sendall(frame(op="hello", nick=f"sleeper{i}") + frame(op="join", room=room))
        sleeping.append(s)
    swarm.on_line = lambda i, line: None
    swarm.pump_until(lambda: _members(server, room) == readers + sleepers, 10, "sleepers joined")
    loaded_start = time.monotonic()
    loaded = chat_at_full_speed(server, swarm, room, messages, "load")
    log = server.log()
    skipping = log.count("is reading slowly")

    # One sleeper wakes up and reads: it is told how many messages it missed.
    waker = sleeping.pop(0)
    seen = b""
    deadline = time.monotonic() + 10
    # Until it is told, or the deadline: a pause in the bytes is not the end of them (the
    # server flushes the rest when it next runs, which can take a while on a busy machine).
    while b'"skipped"' not in seen and time.monotonic() < deadline:
        waker.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = waker.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        seen = seen[-4096:] + chunk
    woke_skipped = b'"skipped"' in seen

    # Private messages are never skipped: they push the rest past the hard limit, at once.
    flood_start = time.monotonic()
    text = "q" * 1900
    target = sleepers // 2
    for i in range(1, target + 1):
        for _ in range(40):  # 40 x ~2 KB > 64 KiB hard limit
            swarm.send_pumping(0, frame(op="msg", to=f"sleeper{i}", text=text))
            # Reader 0 gets an echo of every private message it sends: it must read them
            # as it goes, or it is the one cut at the hard limit (seen once in CI: reset).
            swarm.pump(0)

    def all_cut_hard() -> bool:
        log = server.log()
        cut_early = log.count(CUT_SOFT_TIME)
        assert not cut_early, (
            f"{cut_early} sleepers were cut by the {SLOW_SOFT_SECONDS:g} s soft-limit timer "
            f"before the test could wake or flood them: its steps took "
            f"{time.monotonic() - loaded_start:.1f} s"
        )
        return log.count(CUT_HARD) >= target

    swarm.pump_until(all_cut_hard, 15, "sleepers cut at the hard limit")
    hard_cut_s = time.monotonic() - flood_start
    steps_s = time.monotonic() - loaded_start
    # The others are over the soft limit and are cut when out_soft_limit_seconds pass.
    swarm.pump_until(
        lambda: _members(server, room) == readers + 1,
        SLOW_SOFT_SECONDS + 15,
        "every sleeper disconnected",
    )
    log = server.log()
    figures = {
        "readers": readers,
        "sleepers": sleepers,
        "messages_each": messages,
        "base_per_s": baseline["per_s"],
        "load_per_s": loaded["per_s"],
        "base_p99_s": baseline["latency_p99_s"],
        "load_p99_s": loaded["latency_p99_s"],
        "base_p50_s": baseline["latency_p50_s"],
        "load_p50_s": loaded["latency_p50_s"],
        "skipping_logged": skipping,
        "woke_got_skipped": woke_skipped,
        "cut_hard": log.count(CUT_HARD),
        "cut_soft_time": log.count(CUT_SOFT_TIME),
        "hard_cut_s": hard_cut_s,
        "steps_s": steps_s,
        "rss_growth_kib": rss.stop(),
    }
    for s in sleeping:
        s.close()
    waker.close()
    swarm.close()
    wait_until(lambda: server.fd_count() <= fds_before, 5, "descriptors freed")
    return figures


def _members(server: ChatdProcess, room: str) -> int:
    """Member count of ``room`` via a short-lived JSON client and the ``rooms`` op."""
    probe = JsonClient(server.port)
    try:
        probe.hello(f"probe{random.randrange(10**9)}")
        probe.send_json(op="rooms")
        rooms = probe.expect_frame(type="rooms")["rooms"]
    finally:
        probe.close()
    return next((r["members"] for r in rooms if r["room"] == room), 0)


@pytest.mark.slow
def test_slow_consumers_skipped_then_cut_while_readers_flow(make_server) -> None:
    server = make_server(*SLOW_LIMITS)
    got = run_slow_consumers(server, readers=20, sleepers=50, messages=40)
    print("slow consumers:", got)
    assert got["skipping_logged"] >= 50, got  # every sleeper went over the soft limit
    assert got["woke_got_skipped"], got  # and the one that woke up was told
    assert got["cut_hard"] == 25 and got["cut_soft_time"] == 24, got
    assert got["hard_cut_s"] < 5, got
    # Readers keep their pace: throughput within a factor of the run without sleepers
    # (fan-out to 70 instead of 20 costs something), latency still interactive.
    assert got["load_per_s"] > got["base_per_s"] / 4, got
    assert got["load_p99_s"] < max(1.0, 4 * got["base_p99_s"]), got
    # 50 sleepers x soft limit (16 KiB) + kernel buffers: a few MiB, not 50 x everything.
    assert got["rss_growth_kib"] < 24 * MiB, got
    server_healthy(server)


# ============================================================================ 5. churn


def run_churn(server: ChatdProcess, cycles: int, batch: int = 100) -> dict[str, Any]:
    """Connect/register/join/disconnect ``cycles`` times in batches, ending each
    connection one of six ways; returns the cleanup figures."""
    fds_before = server.fd_count()
    rss = RssSampler(server)
    observer = server.json_client("churn_observer", "#churn0")
    ways = ["quit", "close", "reset", "reset_mid_line", "reset_mid_write", "reset_unregistered"]
    count = {way: 0 for way in ways}
    start = time.monotonic()
    nicks: list[str] = []
    for base in range(0, cycles, batch):
        size = min(batch, cycles - base)
        socks = many_sockets(server.port, size)
        swarm = Swarm(socks)
        plan = [ways[(base + i) % len(ways)] for i in range(size)]
        for i, s in enumerate(socks):
            nick = f"churn{base + i}"
            if plan[i] != "reset_unregistered":
                nicks.append(nick)
                s.send(
                    frame(op="hello", nick=nick)
                    + frame(op="join", room=f"#churn{i % 7}")
                    + frame(op="join", room=f"#c{base + i}")
                )
            else:
                s.send(b'{"op":"hel')  # mid-line, before a nick

        def batch_joined(swarm: Swarm = swarm, plan: list[str] = plan) -> bool:
            return all(
                way == "reset_unregistered"
                or sum(b'"history_end"' in x for x in swarm.lines[i]) == 2
                for i, way in enumerate(plan)
            )

        swarm.pump_until(batch_joined, 10, "batch joined")
        for i, s in enumerate(socks):
            way = plan[i]
            count[way] += 1
            if way == "quit":
                s.send(frame(op="quit", reason="bye"))
            elif way == "close":
                s.close()
            elif way in ("reset", "reset_unregistered"):
                reset(s)
            elif way == "reset_mid_line":
                s.send(b'{"op":"say","room":"#churn0","text":"half a li')
                reset(s)
            elif way == "reset_mid_write":
                # Ask for plenty of output and vanish before reading it: the server is
                # writing when the RST comes.
                s.send(frame(op="who", room="#churn0") * 200)
                reset(s)
        swarm.sel.close()
        for s in socks:
            s.close()
        # The observer drains its join/quit traffic so it is never a slow consumer.
        while True:
            observer.send_json(op="ping", id=base)
            if observer.expect_frame(type="pong", id=base):
                break
    elapsed = time.monotonic() - start
    wait_until(lambda: server.fd_count() <= fds_before + 1, 10, "descriptors back to baseline")
    fds_after = server.fd_count()
    observer.send_json(op="rooms")
    rooms = observer.expect_frame(type="rooms")["rooms"]
    # Every nick must be free again: one connection takes each in turn with `nick`.
    taker = server.json_client("churn_taker")
    taken = 0
    for lo in range(0, len(nicks), 500):
        chunk = nicks[lo : lo + 500]
        taker.send(b"".join(frame(op="nick", nick=n) for n in chunk))
        for n in chunk:
            reply = taker.expect_frame(timeout=10)
            while reply["type"] != "nick" and reply["type"] != "error":
                reply = taker.expect_frame(timeout=10)
            if reply["type"] == "nick" and reply["new"] == n:
                taken += 1
    taker.close()
    observer.close()
    return {
        "cycles": cycles,
        "seconds": elapsed,
        "per_s": cycles / elapsed,
        "ways": count,
        "fds_before": fds_before,
        "fds_after": fds_after,
        "rooms_left": [r["room"] for r in rooms],
        "nicks_reusable": taken,
        "nicks_used": len(nicks),
        "rss_growth_kib": rss.stop(),
    }


@pytest.mark.slow
def test_churn_leaves_nothing_behind(make_server) -> None:
    server = make_server(
        *MANY_HOSTS,
        "--rate-limit",
        "0",
        "--register-timeout-seconds",
        "5",
        "--nick-hold-seconds",
        "0",
    )
    got = run_churn(server, cycles=2400)
    print("churn:", got)
    assert got["fds_after"] <= got["fds_before"] + 1, got  # +1: the observer
    assert got["rooms_left"] == ["#churn0"], got  # only the observer's room
    assert got["nicks_reusable"] == got["nicks_used"], got
    assert got["rss_growth_kib"] < 24 * MiB, got
    server_healthy(server)


# ============================================================================ 6. descriptors


def _low_nofile(limit: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child before exec: soft and hard, so the
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # server cannot lift it

    return preexec


def run_fd_exhaustion(
    server: ChatdProcess, limit: int, extra: int, measure_s: float
) -> dict[str, Any]:
    """Open ``limit + extra`` connections against a server whose RLIMIT_NOFILE is
    ``limit``; measure its CPU while saturated; then free them and check recovery."""
    fds_idle = server.fd_count()
    assert extra <= limit - 2 * fds_idle, "the waiting ones must fit once the others leave"
    socks = many_sockets(server.port, limit + extra)  # the kernel completes them all
    swarm = Swarm(socks)
    swarm.send_all(lambda i: frame(op="hello", nick=f"fd{i}"))
    swarm.pump_until(
        lambda: server.fd_count() >= limit - 1 and "accept failed" in server.log(),
        10,
        "the server to run out of descriptors",
    )

    def welcomed() -> list[int]:
        return [i for i, lines in enumerate(swarm.lines) if any(b'"welcome"' in x for x in lines)]

    # Saturated: the listening socket stays readable. Measure CPU over a few seconds.
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    deadline = t0 + measure_s
    while time.monotonic() < deadline:
        swarm.pump(0.1)
    cpu_share = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    served = welcomed()
    # Recovery: the served ones leave; the ones waiting in the backlog get their turn.
    for i in served:
        swarm.sel.unregister(socks[i])
        swarm.closed[i] = time.monotonic()
        socks[i].close()
    waiting = [i for i in range(len(socks)) if i not in swarm.closed]
    swarm.pump_until(lambda: set(waiting) <= set(welcomed()), 15, "the waiting ones served")
    newcomer = server.json_client("after_exhaustion", "#back")
    newcomer.close()
    swarm.close()
    wait_until(lambda: server.fd_count() <= fds_idle, 10, "descriptors back to idle")
    return {
        "nofile": limit,
        "opened": len(socks),
        "served_while_full": len(served),
        "waiting": len(waiting),
        "cpu_share_saturated": cpu_share,
        "fds_idle": fds_idle,
        "fds_after": server.fd_count(),
    }


def test_fd_exhaustion_no_spin_and_recovers(make_server) -> None:
    limit = 64
    server = make_server(
        *MANY_HOSTS,
        "--rate-limit",
        "0",
        "--register-timeout-seconds",
        "60",
        preexec=_low_nofile(limit),
    )
    got = run_fd_exhaustion(server, limit, extra=40, measure_s=2.0)
    print("fd exhaustion:", got)
    assert got["served_while_full"] >= limit - 16, got  # it used what it had
    assert got["waiting"] >= 40, got
    assert got["cpu_share_saturated"] < 0.2, got  # far from a spinning core
    server_healthy(server)


# ============================================================================ 7. flood


def run_flood(
    server: ChatdProcess, flood: int, chatters: int, rate: float, burst: int
) -> dict[str, Any]:
    """One client pipelines ``flood`` messages at once; ``chatters`` others keep talking.
    Returns arrival order and timing as a listener saw them, and chat latency."""
    room = "#flood"
    listener = server.json_client("flood_listener", room)
    talkers = [server.json_client(f"calm{i}", room) for i in range(chatters)]
    flooder = server.json_client("flooder", room)
    # A pasted block is one message; 21 lines cost 6 tokens (chatd/ratelimit.py).
    lines = [
        frame(op="say", room=room, text=f"flood {k}" + ("\nmore" * 20 if k % 10 == 0 else ""))
        for k in range(flood)
    ]
    start = time.monotonic()
    flooder.send(b"".join(lines))  # as fast as the socket takes it

    def flood_seen() -> list[int]:  # RawClient.lines keeps every line read, in order
        return [
            int(strict_loads(x)["text"].split()[1])
            for x in listener.lines
            if x.startswith('{"type":"msg"') and '"text":"flood ' in x
        ]

    latencies: list[float] = []
    duration = float("nan")
    k = 0
    while time.monotonic() < start + flood / rate + 10:
        latencies.append(chat_round_trip(talkers + [listener], k % chatters, room, f"calm{k}"))
        k += 1
        try:  # whatever else the listener has now (flood frames)
            while listener.read_line(0.02) is not None:
                pass
        except AssertionError:
            pass
        if len(flood_seen()) >= flood:
            duration = time.monotonic() - start
            break
    seq = flood_seen()
    for c in (listener, flooder, *talkers):
        c.close()
    return {
        "flood": flood,
        "arrived": len(seq),
        "in_order": seq == list(range(flood)),
        "seconds": duration,
        "rate_seen": (flood - burst) / duration if duration else 0,
        "latency_p50_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
        "rounds": len(latencies),
    }


def test_flood_is_slowed_not_lost(make_server) -> None:
    server = make_server()  # the default rate limit: 10/s, burst 30
    got = run_flood(server, flood=70, chatters=4, rate=10, burst=30)
    print("flood:", got)
    assert got["arrived"] == 70 and got["in_order"], got
    # 40 messages past the burst at 10/s take about 4 s: the flooder was slowed.
    assert 3.0 <= got["seconds"] <= 12.0, got
    assert got["latency_p50_s"] < 0.2 and got["latency_max_s"] < 2.0, got
    server_healthy(server)


# ============================================================================ 9. many


def run_many(server: ChatdProcess, clients: int, rooms: int) -> dict[str, Any]:
    """``clients`` JSON connections, each joined to one of ``rooms`` rooms; one message
    per room is fanned out; returns timings and how many got it."""
    rss = RssSampler(server, interval=0.1)
    start = time.monotonic()
    # Connect in waves the server has accepted before the next: 5,000 SYNs at once
    # overflow the kernel's accept queue (SOMAXCONN, 4096), and the overflow then waits
    # for SYN-ACK retransmits (1 s, 3 s, 7 s ...), which measures the kernel, not chatd.
    socks: list[socket.socket] = []
    base_fds = server.fd_count()
    while len(socks) < clients:
        socks += many_sockets(server.port, min(1000, clients - len(socks)), timeout=30)
        wanted = base_fds + len(socks)
        wait_until(lambda: server.fd_count() >= wanted, 30, "accepted")  # noqa: B023 (used at once)
    connected_s = time.monotonic() - start
    joined = [False] * clients
    got_msg = [0] * clients
    tails = [b""] * clients

    def on_data(i: int, chunk: bytes) -> None:
        # Scan raw chunks (a marker may straddle two of them): 5,000 clients receive
        # hundreds of join events each, too many lines to parse one by one in a test.
        data = tails[i] + chunk
        tails[i] = data[-64:]
        if b'"history_end"' in data:
            joined[i] = True
        if b'"text":"fan-out ' in data:
            got_msg[i] = 1

    swarm = Swarm(socks, on_data=on_data)
    cpu0 = server.cpu_seconds()
    swarm.send_all(
        lambda i: frame(op="hello", nick=f"m{i}") + frame(op="join", room=f"#many{i % rooms}")
    )
    swarm.pump_until(lambda: all(joined), 60, "everyone joined")
    joined_s = time.monotonic() - start
    join_cpu_s = server.cpu_seconds() - cpu0
    assert not swarm.closed, f"{len(swarm.closed)} connections were closed"
    t0 = time.monotonic()
    for r in range(rooms):  # one speaker per room: one message fanned out to its members
        socks[r].send(frame(op="say", room=f"#many{r}", text=f"fan-out {r}"))
    swarm.pump_until(lambda: all(got_msg), 30, "the fan-out delivered to all")
    fanout_s = time.monotonic() - t0
    figures = {
        "clients": clients,
        "rooms": rooms,
        "connect_s": connected_s,
        "register_join_s": joined_s,
        "server_cpu_join_s": join_cpu_s,
        "fanout_s": fanout_s,
        "delivered": sum(1 for n in got_msg if n == 1),
        "server_fds": server.fd_count(),
        "rss_growth_kib": rss.stop(),
    }
    swarm.close()
    return figures


@pytest.mark.slow
def test_many_connections_all_delivered(make_server, fd_limit) -> None:
    n = 5000
    fd_limit(n + 200)
    server = make_server(*MANY_HOSTS, "--rate-limit", "0", "--max-clients", str(n + 100))
    # Every join is announced to the room's members: joining costs O(members), filling
    # a room O(members^2). 10 rooms of 500 keep that at 1.25M join events.
    got = run_many(server, clients=n, rooms=10)
    print("many:", got)
    assert got["delivered"] == n, got
    assert got["server_fds"] >= n, got
    assert got["fanout_s"] < 10, got
    server_healthy(server)
    wait_until(lambda: server.fd_count() < 50, 15, "all 5000 descriptors freed")
