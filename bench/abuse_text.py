"""Abuse scenario of issue 10, finding 4: what a pasted block of many lines costs the
IRC members of a room and an IRC client that joins it.

``run_paste`` takes its scale and returns its figures; tests/test_abuse_text.py calls it
at the tests' size and asserts on the figures, ``make stress`` (bench/stress.py) before
and after the line limit.
"""

from __future__ import annotations

from typing import Any

from bench.chatd_process import ChatdProcess, IrcClient
from chatd.model import Say
from chatd.ratelimit import command_cost


def irc_member(server: ChatdProcess, nick: str, room: str) -> IrcClient:
    assert server.irc_port
    client = IrcClient(server.irc_port)
    client.register(nick)
    client.join(room)
    return client


def _worst_paste(lines: int, chars: int = 2000) -> str:
    """The text with the most IRC lines a server allows: ``lines`` lines, ``chars`` in all."""
    width = max(1, (chars - (lines - 1)) // lines)
    return "\n".join("x" * width for _ in range(lines))


def _irc_bytes_until(client: IrcClient, marker: str) -> tuple[int, bool]:
    """Bytes (with CRLF) read until a line containing ``marker``; False if cut off first."""
    total = 0
    while True:
        try:
            line = client.read_line()
        except AssertionError:
            return total, False
        if line is None or line.startswith("ERROR"):
            return total, False
        total += len(line.encode()) + 2
        if marker in line:
            return total, True


def run_paste(server: ChatdProcess, pastes: int, max_lines: int) -> dict[str, Any]:
    """Finding 4: what one pasted block costs IRC members, then what ``pastes`` of the
    largest allowed blocks in history cost an IRC client that joins (``max_lines`` is the
    server's ``--max-message-lines``; 1000 reproduces the server before the limit)."""
    room = "#paste"
    paster = server.json_client("paster", room)
    watcher = irc_member(server, "watcher", room)
    paster.send_json(op="say", room=room, text="x\n" * 1000, id="thousand")
    refused = paster.expect_frame(id="thousand").get("code") == "too_many_lines"
    paster.say(room, "marker1")
    thousand_bytes, _ = _irc_bytes_until(watcher, "marker1")
    worst = _worst_paste(min(max_lines, 1000))
    paster.say(room, worst)
    paster.say(room, "marker2")
    worst_bytes, _ = _irc_bytes_until(watcher, "marker2")
    for k in range(pastes):  # the last 50 (history_replay) are all worst-case
        paster.send_json(op="say", room=room, text=worst, id=k)
        paster.expect_frame(type="msg", id=k, timeout=30)
    assert server.irc_port
    joiner = IrcClient(server.irc_port, timeout=30)
    joiner.register("joiner")
    joiner.send_line(f"JOIN {room}")
    joiner.send_line("PING :replayed")
    replay_bytes, survived = _irc_bytes_until(joiner, "PONG")
    for client in (paster, watcher, joiner):
        client.close()
    return {
        "thousand_refused": refused,
        "thousand_irc_bytes": thousand_bytes,
        "worst_lines": worst.count("\n") + 1,
        "worst_irc_bytes": worst_bytes,
        "worst_tokens": command_cost(Say(room, worst)),
        "replay_messages": pastes,
        "replay_irc_bytes": replay_bytes,
        "joiner_survived": survived,
    }
