"""The scenarios of tests/test_abuse_server.py (issue 10; bench/abuse_server.py) for
``make stress``.

Each function runs one scenario at the stress size (or the test's size with ``quick``),
with the protection on ("after") and, where a setting can turn it off, off ("before"),
and returns the figures and the summary lines ``bench.stress`` prints.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench import abuse_server as srv
from bench import abuse_tools as abuse
from bench.abuse_tools import MiB, raise_nofile_or_exit
from bench.chatd_process import ChatdProcess

Result = tuple[dict[str, Any], list[str]]


def _run(
    args: tuple[str, ...], scenario: Any, *, irc: bool = False, **kwargs: Any
) -> dict[str, Any]:
    server = ChatdProcess(*args, irc=irc)
    try:
        got: dict[str, Any] = scenario(server, **kwargs)
        abuse.server_healthy(server)
    finally:
        server.stop()
    return got


def deep_ids(quick: bool) -> Result:
    """Finding 1: ids nested just deep enough to decode, neighbours leaving that turn."""
    rounds = 1 if quick else 5
    server = ChatdProcess("--rate-limit", "0")
    try:
        room = srv.Room(server)
        for _ in range(rounds):
            for depth in range(960, 1000):
                room.run({"op": '"say"', "room": '"#r"', "text": '"x"', "id": srv.nested(depth)})
        abuse.server_healthy(server)
    finally:
        server.stop()
    got = {"lines": rounds * 40}
    return got, [f"{got['lines']} deep ids, each with a neighbour leaving that turn: server up"]


def tiny_lines(quick: bool) -> Result:
    """Finding 2: one 64 KiB packet of 'xy\\n' per registered client."""
    clients = 300 if quick else 1000
    abuse_nofile = clients + 500
    raise_nofile_or_exit(abuse_nofile)
    got = _run(abuse.MANY_HOSTS, srv.run_tiny_lines, clients=clients)
    ok = got["total_kib"] < 20 * MiB * clients / 300
    return got, [
        f"{clients} clients x 64 KiB of 'xy\\n': RSS +{got['total_kib'] / MiB:.1f} MiB "
        f"(connections {got['registered_kib'] / MiB:.1f}, packets "
        f"{got['packets_kib'] / MiB:.1f}); before the bound: +354 MiB for 300",
    ] if ok else ["FAIL"]


def password_guessing(quick: bool) -> Result:
    """Finding 5: one address guessing passwords; the right one from another."""
    seconds = 4.0 if quick else 15.0
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "password"
        secret.write_text("sesame\n")
        base = ("--password-file", str(secret))
        before = _run(
            (*base, "--password-guess-burst", "1000000000"), srv.run_password_guessing, seconds=2.0
        )
        after = _run(base, srv.run_password_guessing, seconds=seconds)
    got = {"before": before, "after": after}
    ok = after["guesses_per_s"] < 5
    return got, [
        f"guesses/s from one address: {before['guesses_per_s']:.0f} unthrottled -> "
        f"{after['guesses_per_s']:.1f} over {seconds:g}s (burst 10, then 1/s)",
        f"right password from another address: {after['right_login_s'] * 1000:.1f} ms",
    ] if ok else ["FAIL"]


def burst_crowd(quick: bool) -> Result:
    """Finding 5: N connections from one address each burst 30 lines; another pings."""
    clients = 100 if quick else 400
    raise_nofile_or_exit(clients + 500)
    before = _run(abuse.MANY_HOSTS, srv.run_burst_crowd, clients=clients, lines=30)
    after = _run((), srv.run_burst_crowd, clients=clients, lines=30)
    got = {"before": before, "after": after}
    ok = after["admitted"] == min(clients, 64)
    return got, [
        f"{clients} connections x 30 lines from one address; another user's ping p90: "
        f"{before['loaded_p90_s'] * 1000:.0f} ms ({before['admitted']} admitted, "
        f"{before['deliveries']} deliveries) -> {after['loaded_p90_s'] * 1000:.0f} ms "
        f"({after['admitted']} admitted, {after['deliveries']} deliveries)",
    ] if ok else ["FAIL"]


SCENARIOS = {
    "deep_ids": deep_ids,
    "tiny_lines": tiny_lines,
    "password_guessing": password_guessing,
    "burst_crowd": burst_crowd,
}


def big_replies(quick: bool) -> Result:
    """Finding 3: big replies to clients that read; before = replies not cut to size."""
    messages, rooms = (500, 1200) if quick else (500, 3000)
    base = ("--rate-limit", "0", "--max-rooms-per-client", "5000")
    try:
        before = _run(
            (*base, "--max-reply-bytes", "1000000000"), _big, irc=True, m=messages, r=rooms
        )
        was = f"{before['cut']} readers cut"
    except (AssertionError, RuntimeError, OSError, ValueError) as exc:  # cut mid-line
        before, was = {"error": str(exc)[:200]}, f"the asker was cut ({str(exc)[:60]})"
    after = _run(base, _big, irc=True, m=messages, r=rooms)
    got = {"before": before, "after": after}
    ok = after["cut"] == 0 and after["history_messages"] == min(messages, 500)
    return got, [
        f"before: {was}",
        f"after: history {after['history_messages']} msgs in {after['history_pages']} pages "
        f"({after['history_bytes'] / 1e6:.1f} MB); {srv.PIPELINED} pipelined pages read at "
        f"4 MB/s in {after['pipelined_s']:.1f}s; rooms {after['rooms_listed']} listed + "
        f"{after['rooms_omitted']} omitted; IRC replay {after['irc_replay_bytes'] // 1024} KiB; "
        f"nobody cut",
    ] if ok else ["FAIL"]


def _big(server: ChatdProcess, m: int, r: int) -> dict[str, Any]:
    return srv.run_big_replies(server, messages=m, rooms=r)


SCENARIOS["big_replies"] = big_replies
