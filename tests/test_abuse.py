"""Hostile clients against a real chatd process (issue 6).

Every scenario starts its own server on 127.0.0.1 port 0, attacks it the way sleeping
laptops, flaky Wi-Fi, students with ``nc`` and scripts do, and checks what issue 2 and
docs/protocol.md promise: the attacker is answered per the protocol, everybody else keeps
chatting with low latency, memory and descriptors stay bounded, nothing is lost that must
not be, and the server never crashes or spins.

Each scenario is a ``run_*`` function (bench/abuse_crowds.py, bench/abuse_traffic.py)
that takes its scale as arguments and returns the figures it measured; the tests call
them at a size that runs in seconds and assert on the figures, and ``bench/stress.py``
calls the same functions at a larger size for a person to watch. Counts and deadlines
are bounded everywhere; nothing sleeps a fixed time to wait for the server: it polls for
a condition with a deadline.

Scenario 8 of the issue (SIGKILL and restart with history) lives with the history tests.
"""

from __future__ import annotations

import json
import resource
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import ChatdProcess, wait_until

from bench.abuse_crowds import run_churn, run_fd_exhaustion, run_many, run_slowloris
from bench.abuse_tools import MANY_HOSTS, _low_nofile, frame, server_healthy, strict_loads
from bench.abuse_traffic import SLOW_LIMITS, run_endless_line, run_flood, run_slow_consumers

MiB = 1024

# ============================================================================ tooling


def has_controls(text: str) -> bool:
    """C0 except tab/newline, DEL, C1: what must never be relayed (docs/protocol.md)."""
    return any((ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F for c in text)


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
