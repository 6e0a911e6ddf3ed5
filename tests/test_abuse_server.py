"""One registered user against a real chatd process: crash, memory, replies, addresses.

Issue 10, the findings that live in the transport and the server loop. Like
``test_abuse.py``, each scenario that ``make stress`` runs larger is a ``run_*`` function
taking its scale and returning its figures; they live in bench/abuse_server.py, with
``one_turn`` (several clients' input in one loop turn, by SIGSTOP and SIGCONT).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, ChatdProcess, JsonClient, RawClient, wait_until
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.abuse_server import (
    Room,
    alive,
    nested,
    one_turn,
    run_big_replies,
    run_burst_crowd,
    run_password_guessing,
    run_tiny_lines,
)
from bench.abuse_tools import server_healthy

FAULTS = Path(__file__).resolve().parent / "faults"


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


def test_burst_crowd_from_one_address_is_bounded(make_server) -> None:
    server = make_server()
    got = run_burst_crowd(server, clients=100, lines=30)
    print(f"\nburst crowd: {got}")
    server_healthy(server)
    assert got["admitted"] == 64 and got["refused"] == 36, got


# ============================================================================ finding 3


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
