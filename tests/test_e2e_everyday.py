"""End to end, in a real terminal (tmux) against the real server: the everyday items of
issue 17 - a typed escape sequence, Ctrl-C's hint, a paste the terminal did not
bracket, rooms rejoined on the next start."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_e2e_client import ROOT, Pane, Tmux

from client import ui

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


def start(tmux: Tmux, tmp_path: Path, port: int, name: str, extra: str = "") -> Pane:
    command = (
        f"env CHAT_STATE_DIR={shlex.quote(str(tmp_path / 'state'))} "
        f"PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.quote(sys.executable)} -m client 127.0.0.1:{port} --nick alice --line {extra}"
    )
    return Pane(tmux, name, command, tmp_path)


def test_everyday_keys_in_a_real_terminal(chatd_server, tmux_server, tmp_path) -> None:
    pane = start(tmux_server, tmp_path, chatd_server.port, "first")
    pane.wait_for("you joined #lobby")

    # a raw escape sequence typed (ESC [31m): no traceback, the prompt goes on
    pane.press("Escape", "[", "3", "1", "m")
    pane.type("after the escape")
    pane.press("Enter")
    pane.wait_for("<alice> after the escape")
    assert "unexpected error" not in pane.log_file.read_text()  # not even in the log

    # Ctrl-C on an empty line says how to leave
    pane.press("C-c")
    pane.wait_for(ui.LEAVE_HINT)

    # a paste the terminal does not bracket: asked first, then sent as one message
    tmux_server.run("set-buffer", "-b", "p", "pasted one\npasted two\npasted three\n")
    tmux_server.run("paste-buffer", "-b", "p", "-t", pane.target)
    pane.wait_for("pasted 3 lines: Enter sends them")
    assert not any("<alice> pasted one" in line for line in pane.lines())
    pane.press("Enter")
    pane.wait_for("<alice> pasted one")
    lines = pane.lines()
    at = next(i for i, line in enumerate(lines) if "<alice> pasted one" in line)
    assert lines[at + 1].strip() == "pasted two" and lines[at + 2].strip() == "pasted three"

    # rooms are remembered: /join #dev, leave, start again without --room
    pane.type("/join #dev")
    pane.press("Enter")
    pane.wait_for("you joined #dev")
    pane.press("C-d")
    assert pane.exit_status() == 0
    again = start(tmux_server, tmp_path, chatd_server.port, "second")
    again.wait_for("you joined #dev")
    again.wait_for("you joined #lobby")
    screen = "\n".join(pane.lines() + again.lines())
    for needle in ("Traceback", "Unhandled exception", "Press ENTER"):
        assert needle not in screen, screen
    again.press("C-d")
    assert again.exit_status() == 0


def test_narrow_terminal_keeps_nick_room_and_members(chatd_server, tmux_server, tmp_path) -> None:
    pane = start(tmux_server, tmp_path, chatd_server.port, "narrow", "--room '#lobby'")
    pane.wait_for("you joined #lobby")
    tmux_server.run("resize-window", "-t", pane.target, "-x", "40", "-y", "12")
    pane.type("/away lunch")
    pane.press("Enter")
    pane.wait_for("you are marked as away")
    pane.wait_for("alice | away | #lobby | 1")
    toolbar = [line for line in pane.lines() if "alice | away" in line][-1]
    assert len(toolbar) <= 40 and toolbar.split(" | ")[0].strip() == "up", toolbar
    pane.press("C-d")
    assert pane.exit_status() == 0
