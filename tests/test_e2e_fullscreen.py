"""End to end: the full-screen client (--full-screen) in a real terminal (tmux) against
the real server, with bob as a raw JSON client."""

from __future__ import annotations

import shlex
import shutil
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


def test_buffers_unread_counts_scrollback_and_private(chatd_server, tmux_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    command = (
        f"env CHAT_STATE_DIR={shlex.quote(str(tmp_path / 'state'))} "
        f"PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.quote(sys.executable)} -m client 127.0.0.1:{chatd_server.port} --nick alice "
        "--full-screen --room '#lobby'"
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
    assert screen(pane)[-1] == "#dev> half typed"

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
    wait_screen(pane, lambda rows: not any("flood 39" in r for r in rows), "scrolled back")
    bob.say("#lobby", "while scrolled")
    assert not any("while scrolled" in r for r in screen(pane))
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
