"""End to end: the full-screen client (--full-screen) in a real terminal (tmux) against
the real server, with bob as a raw JSON client."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from test_e2e_client import ROOT, Pane, Tmux

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


@pytest.fixture
def tmux_server() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.close()


def screen(pane: Pane) -> list[str]:
    return [
        row.rstrip() for row in pane.tmux.run("capture-pane", "-p", "-t", pane.target).splitlines()
    ]


def wait_screen(
    pane: Pane, check: Callable[[list[str]], bool], what: str, timeout: float = 10.0
) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = screen(pane)
        if check(rows):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no {what}:\n" + "\n".join(screen(pane)))


def test_buffers_unread_counts_scrollback_and_private(chatd_server, tmux_server, tmp_path) -> None:
    command = (
        f"env CHAT_STATE_DIR={shlex.quote(str(tmp_path / 'state'))} "
        f"PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.quote(sys.executable)} -m client 127.0.0.1:{chatd_server.port} --nick alice "
        "--room '#lobby'"  # full screen: the default on a terminal
    )
    pane = Pane(tmux_server, "alice", command, tmp_path)
    pane.wait_for("you joined #lobby")
    pane.type("/join #dev")
    pane.press("Enter")
    pane.wait_for("you joined #dev")
    bob = chatd_server.json_client("bob", "#lobby", "#dev")

    # messages to another buffer raise its count; the half-typed line survives
    pane.type("half typed")
    for n in range(3):
        bob.say("#lobby", f"lobby {n}")
    bob.say("#lobby", "alice: ping")
    wait_screen(pane, lambda rows: "2:#lobby(4!)" in rows[0], "unread count in the bar")
    # (the keys and bob's lines race to the client: wait for both, then the line is intact)
    wait_screen(pane, lambda rows: rows[-1] == "#dev> half typed", "the half-typed line")

    # Alt-2 shows #lobby: its lines, its count cleared
    pane.press("M-2")
    rows = wait_screen(pane, lambda rows: any("<bob> alice: ping" in r for r in rows), "#lobby")
    assert "2:#lobby " in rows[0] + " " and "(4!)" not in rows[0]
    assert rows[-1] == "#lobby> half typed"

    # scroll-back: PageUp shows earlier lines and holds still while new ones arrive
    for n in range(40):
        bob.say("#lobby", f"flood {n}")
    wait_screen(pane, lambda rows: any("flood 39" in r for r in rows), "the flood")
    pane.press("PageUp")
    before = wait_screen(pane, lambda rows: "more below" in rows[-2], "scrolled back")
    assert not any("flood 39" in r for r in before)
    below = int(re.findall(r"(\d+) more below", before[-2])[0])  # the lines under the view
    bob.say("#lobby", "while scrolled")
    bob.say("#lobby", "and a long line " + "that wraps " * 15)
    count = f"{below + 2} more below"
    after = wait_screen(pane, lambda rows: count in rows[-2], "the count below")
    assert after[1:-2] == before[1:-2]  # the view held still: not one row moved
    pane.press("PageDown")
    wait_screen(pane, lambda rows: any("while scrolled" in r for r in rows), "back at the bottom")

    # a private message opens a buffer; typing there answers bob
    bob.send_json(op="msg", to="alice", text="psst")
    wait_screen(pane, lambda rows: "4:bob(1!)" in rows[0], "a private buffer")
    pane.press("C-u")
    pane.press("M-4")
    pane.wait_for("<bob -> alice> psst")
    pane.type("hi bob")
    pane.press("Enter")
    bob.expect_frame(type="privmsg", text="hi bob")

    pane.press("C-d")
    assert pane.exit_status() == 0
    bob.close()


def test_retry_key_after_the_server_is_killed_and_restarted(
    chatd_server, tmux_server, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The server is killed: the status bar counts down (capped at 5 s while the port
    refuses); the server comes back; F5 connects at once, before the countdown ends,
    and the half-typed line is still there."""
    command = (
        f"env CHAT_STATE_DIR={shlex.quote(str(tmp_path / 'state'))} "
        f"PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.quote(sys.executable)} -m client 127.0.0.1:{chatd_server.port} --nick alice"
    )
    pane = Pane(tmux_server, "alice", command, tmp_path)
    pane.wait_for("you joined #lobby")
    pane.type("half typed")
    chatd_server.stop(signal.SIGKILL)
    # attempts 1..4 wait 0.5, 1, 2, 4 s; the fifth waits the refused-port cap of 5 s
    rows = wait_screen(
        pane, lambda rows: "(attempt 5; F5: now)" in rows[-2], "the fifth countdown", 30
    )
    assert "reconnecting in" in rows[-2] and rows[-1] == "#lobby> half typed"
    chatd_server.start()  # same port
    pane.press("F5")
    wait_screen(pane, lambda rows: rows[-2].lstrip().startswith("connected"), "connected", 15)
    log = pane.log_file.read_text()
    assert re.search(r"reconnect attempt 5: retrying now, [\d.]+ s early", log), log
    waits = [float(d) for d in re.findall(r"reconnect attempt \d+ in ([\d.]+) s", log)]
    assert max(waits) <= 5 * 1.2, waits  # the refused-port cap
    pane.wait_for("you joined #lobby", count=2)
    assert screen(pane)[-1] == "#lobby> half typed"
    bob = chatd_server.json_client("bob", "#lobby")
    bob.say("#lobby", "welcome back")
    pane.wait_for("<bob> welcome back")
    pane.press("C-u", "C-d")
    assert pane.exit_status() == 0
    bob.close()


def test_a_paste_the_terminal_does_not_bracket_is_asked_about(
    chatd_server, tmux_server, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    command = (
        f"env CHAT_STATE_DIR={shlex.quote(str(tmp_path / 'state'))} "
        f"PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.quote(sys.executable)} -m client 127.0.0.1:{chatd_server.port} --nick alice"
    )
    pane = Pane(tmux_server, "alice", command, tmp_path)
    pane.wait_for("you joined #lobby")
    bob = chatd_server.json_client("bob", "#lobby")
    tmux_server.run("set-buffer", "-b", "p", "pasted one\npasted two\npasted three\n")
    tmux_server.run("paste-buffer", "-b", "p", "-t", pane.target)  # no -p: not bracketed
    pane.wait_for("pasted 3 lines: Enter sends them")
    rows = screen(pane)
    assert rows[-4:-1] == ["#lobby> pasted one", "pasted two", "pasted three"], rows
    pane.press("Enter")
    sent = bob.expect_frame(type="msg", **{"from": "alice"})
    assert sent["text"] == "pasted one\npasted two\npasted three"
    pane.wait_for("<alice> pasted one")
    pane.press("C-d")
    assert pane.exit_status() == 0
    bob.close()
