"""End to end: a real chatd server and real clients in real terminals (tmux).

Each client runs in its own session of a private tmux server (``tmux -L``), so the tests
never touch anyone's tmux. We read the screen the way a person would (``capture-pane``)
and poll with deadlines; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]

ROOT = Path(__file__).resolve().parent.parent


class Tmux:
    """A private tmux server; one session per client."""

    def __init__(self) -> None:
        self.name = f"chatd-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.name, *args], check=True, capture_output=True, text=True
        )
        return done.stdout

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True)


class Pane:
    """One client in one tmux session; read it like a person would."""

    def __init__(self, tmux: Tmux, name: str, command: str, workdir: Path) -> None:
        self.tmux, self.target = tmux, name
        self.status_file = workdir / f"{name}.status"
        self.log_file = workdir / f"{name}.log"
        tmux.run("new-session", "-d", "-s", name, "-x", "100", "-y", "30", "-c", str(ROOT))
        tmux.run("set-option", "-t", name, "remain-on-exit", "on")
        # The exit status goes to a file: more dependable than #{pane_dead_status}.
        wrapped = f"{command} --log-file {shlex.quote(str(self.log_file))}; echo $? > " + (
            shlex.quote(str(self.status_file))
        )
        tmux.run("respawn-pane", "-k", "-t", name, wrapped)

    def lines(self) -> list[str]:
        text = self.tmux.run("capture-pane", "-p", "-J", "-S", "-", "-t", self.target)
        return [line.rstrip() for line in text.splitlines()]

    def screen(self) -> str:
        return "\n".join(self.lines())

    def type(self, text: str) -> None:
        if text.endswith(";"):  # tmux reads a trailing ';' as a command separator
            text = text[:-1] + "\\;"
        self.tmux.run("send-keys", "-t", self.target, "-l", "--", text)

    def press(self, *keys: str) -> None:
        self.tmux.run("send-keys", "-t", self.target, *keys)

    def wait_for(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        text = text.rstrip()  # trailing blanks are never captured
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(text in line for line in self.lines()) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"{text!r} (x{count}) not on {self.target}'s screen:\n{self.screen()}")

    def prompt_line(self) -> str:
        """The input line: the last line that starts with the room prompt."""
        candidates = [line for line in self.lines() if line.startswith("#lobby>")]
        return candidates[-1] if candidates else ""

    def wait_prompt(self, expected: str, timeout: float = 10.0) -> None:
        """Wait until the input line reads ``expected`` (redraws are asynchronous)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.prompt_line() == expected:
                return
            time.sleep(0.05)
        raise AssertionError(f"input line is not {expected!r}:\n{self.screen()}")

    def exit_status(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status_file.exists() and self.status_file.read_text().strip():
                return int(self.status_file.read_text())
            time.sleep(0.05)
        raise AssertionError(f"{self.target} did not exit:\n{self.screen()}")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.close()


def client(tmux: Tmux, tmp_path: Path, port: int, nick: str) -> Pane:
    state = tmp_path / f"state-{nick}"
    command = (
        f"env CHAT_STATE_DIR={shlex.quote(str(state))} PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.quote(sys.executable)} -m client 127.0.0.1:{port} --nick {nick} --line"
    )
    pane = Pane(tmux, nick, command, tmp_path)
    pane.wait_for("you joined #lobby")
    return pane


def test_incoming_messages_never_disturb_typing(chatd_server, tmux, tmp_path) -> None:
    alice = client(tmux, tmp_path, chatd_server.port, "alice")
    bob = client(tmux, tmp_path, chatd_server.port, "bob")
    alice.wait_for("bob joined #lobby")

    alice.type("half typed")
    alice.wait_for("#lobby> half typed")
    for n in range(5):
        bob.type(f"message {n} from bob")
        bob.press("Enter")
        # one at a time: keys that reach the client in one read are a paste (asked first)
        bob.wait_for(f"<bob> message {n} from bob")
    alice.wait_for("<bob> message 4 from bob")
    screen = alice.lines()
    for n in range(5):
        assert any(f"<bob> message {n} from bob" in line for line in screen), alice.screen()
    alice.wait_prompt("#lobby> half typed")
    # no line mixes the draft with an incoming message
    assert not any("half typed" in line and "bob" in line for line in screen)

    alice.type(" and finished")
    alice.press("Enter")
    bob.wait_for("<alice> half typed and finished")
    alice.wait_for("<alice> half typed and finished")
    alice.wait_prompt("#lobby>")
    assert sum("half typed" in line for line in alice.lines()) == 1  # the echo, once

    # a mention of bob is shown to bob (highlighted: checked in the ui tests)
    alice.type("bob: ping")
    alice.press("Enter")
    bob.wait_for("<alice> bob: ping")

    alice.press("C-d")
    assert alice.exit_status() == 0
    bob.wait_for("alice quit")
    bob.type("/quit bye")
    bob.press("Enter")
    assert bob.exit_status() == 0


def test_clients_reconnect_and_rejoin_after_server_restart(chatd_server, tmux, tmp_path) -> None:
    alice = client(tmux, tmp_path, chatd_server.port, "alice")
    bob = client(tmux, tmp_path, chatd_server.port, "bob")
    alice.wait_for("bob joined #lobby")
    alice.type("/join #dev")
    alice.press("Enter")
    alice.wait_for("you joined #dev")
    alice.type("/switch #lobby")
    alice.press("Enter")
    alice.wait_for("now talking in #lobby")

    alice.type("typed across the restart")
    chatd_server.restart()
    alice.wait_for("disconnected from")
    bob.wait_for("disconnected from")
    # both come back by themselves: registered, rejoined, in the same rooms
    alice.wait_for("you joined #lobby", count=2, timeout=15)
    alice.wait_for("you joined #dev", count=2, timeout=15)
    bob.wait_for("you joined #lobby", count=2, timeout=15)
    alice.wait_for("connected | 127.0.0.1")
    alice.wait_prompt("#lobby> typed across the restart")

    alice.press("Enter")
    bob.wait_for("<alice> typed across the restart")
    bob.type("welcome back")
    bob.press("Enter")
    alice.wait_for("<bob> welcome back")
    alice.press("C-d")
    bob.press("C-d")
    assert alice.exit_status() == 0
    assert bob.exit_status() == 0


def test_refused_connection_is_one_sentence(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port that is free, so nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "client", f"127.0.0.1:{port}", "--nick", "x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        env={"CHAT_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "connection refused" in done.stderr and "Traceback" not in done.stderr
