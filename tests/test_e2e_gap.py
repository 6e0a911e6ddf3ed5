"""End to end, issue 4: the real client never misses a message of the real server.

The client's gap logic (``client/core.py``) was first proven against a stub server; these
tests run ``python -m client`` in a private tmux server against ``python -m chatd`` with an
on-disk history file, and read the client's screen and scrollback like a person would:

- the server is restarted (SIGTERM, and SIGKILL) while a raw JSON participant keeps
  talking, part of it while the client is away: every message is on screen once, in order;
- the client is suspended (``kill -STOP``) until the server skips messages for it and
  tells it so (``skipped``): after it drains, every message is on screen once, in order;
- ``/history N`` shows older messages.

Nothing sleeps for a fixed time to wait for something: every wait polls with a deadline.
The one timed wait is the sender's pacing (``Event.wait``), which only sets its rate.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from helpers import ChatdProcess, JsonClient, wait_until
from test_e2e_client import Pane, Tmux, client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]

_MSG_RE = re.compile(r"<bob> m(\d+)(?: |$)")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        # A placeholder session keeps the private server up so the scrollback can be made
        # deep enough for every message before the client's session is created.
        server.run("new-session", "-d", "-s", "keep", "-x", "80", "-y", "10")
        server.run("set-option", "-g", "history-limit", "50000")
        yield server
    finally:
        server.close()


def numbers_on(pane: Pane) -> list[int]:
    """The numbers of bob's messages, in the order they are on the pane (scrollback too)."""
    found = []
    for line in pane.lines():
        match = _MSG_RE.search(line)
        if match:
            found.append(int(match.group(1)))
    return found


def client_pid(pane: Pane) -> int:
    """The pid of the client process (the pane runs ``sh -c 'env … python -m client …'``)."""
    shell = int(pane.tmux.run("display-message", "-p", "-t", pane.target, "#{pane_pid}"))

    def child() -> int | None:
        try:
            text = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        except OSError:
            return None
        return int(text[0]) if text else None

    pid: int = wait_until(child, what="the client process")
    return pid


def barrier(pane: Pane, token: str) -> None:
    """Say ``token`` and wait for its echo: everything the server sent before is shown."""
    pane.type(token)
    pane.press("Enter")
    pane.wait_for(f"<alice> {token}", timeout=15)


class Bob(threading.Thread):
    """A raw JSON participant that says m1, m2, … in #lobby, one at a time, and reconnects
    by itself when the server goes away. Paced while alice is in the room; flat out
    while she is away after a restart, so that her gap spans several history pages.

    A message counts as sent once its echo (with its mid) came back, or, after a
    reconnect, once it is found in the join replay: then the server stored it. Otherwise
    it is sent again, so each number is in the room exactly once.
    """

    def __init__(self, port: int, interval: float, pad: str = "") -> None:
        super().__init__(daemon=True)
        self.port, self.interval, self.pad = port, interval, pad
        self.stop = threading.Event()
        self.sent = 0  # m1..m<sent> are in the room
        self.alice_here = False
        self.sent_while_alice_away = 0  # after the first connection
        self.sent_since_alice_back = 0
        self.connections = 0
        self.error: BaseException | None = None
        self.conn: JsonClient | None = None

    def text(self, n: int) -> str:
        return f"m{n}{self.pad}"

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.conn is None:
                self._connect()
            assert self.conn is not None
            n = self.sent + 1
            try:
                self.conn.send_json(op="say", room="#lobby", text=self.text(n))
                self._await_echo(n)
            except (OSError, AssertionError):
                self.conn.close()
                self.conn = None
                continue
            if self.alice_here or self.connections == 1:
                self.stop.wait(self.interval)
            # else: as fast as the server takes them, so the gap is several history pages

    def _connect(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "bob could not reconnect"
            try:
                conn = JsonClient(self.port, timeout=5)
                conn.hello("bob")
                break
            except (OSError, AssertionError):
                if self.stop.wait(0.02):  # retry pacing, not a wait for a condition
                    raise AssertionError("stopped while reconnecting") from None
        self.connections += 1
        conn.send_json(op="join", room="#lobby")
        pending = self.text(self.sent + 1)
        while True:
            frame = conn.read_frame()
            assert frame is not None, "closed during join"
            if frame.get("type") == "joined":
                self.alice_here = "alice" in frame["members"]
            elif frame.get("type") == "msg" and frame.get("from") == "bob":
                if frame["text"] == pending:  # stored before the server went away
                    self.sent += 1
                    pending = self.text(self.sent + 1)
            elif frame.get("type") == "history_end":
                break
        self.conn = conn

    def _await_echo(self, n: int) -> None:
        assert self.conn is not None
        while True:
            frame = self.conn.read_frame()
            if frame is None:
                raise OSError("closed")
            kind = frame.get("type")
            if kind == "join" and frame.get("nick") == "alice":
                self.alice_here = True
            elif kind in ("quit", "part") and frame.get("nick") == "alice":
                self.alice_here = False
            elif kind == "msg" and frame.get("from") == "bob" and frame["text"] == self.text(n):
                self.sent = n
                if self.connections > 1 and not self.alice_here:
                    self.sent_while_alice_away += 1
                if self.connections > 1 and self.alice_here:
                    self.sent_since_alice_back += 1
                return

    def finish(self) -> int:
        self.stop.set()
        self.join(15)
        assert not self.is_alive(), "bob did not stop"
        if self.error is not None and not isinstance(self.error, AssertionError | OSError):
            raise self.error
        if self.conn is not None:
            self.conn.close()
        return self.sent


def assert_every_message_once_in_order(pane: Pane, last: int) -> None:
    shown = numbers_on(pane)
    duplicates = sorted({n for n in shown if shown.count(n) > 1})
    missing = sorted(set(range(1, last + 1)) - set(shown))
    assert not duplicates and not missing and shown == list(range(1, last + 1)), (
        f"missing {missing[:20]}, duplicated {duplicates[:20]}, "
        f"out of order at {[b for a, b in pairwise(shown) if b != a + 1][:20]}\n"
        + pane.screen()[-3000:]
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_gap_every_message_once_in_order(make_server, tmux, tmp_path, sig) -> None:
    server: ChatdProcess = make_server("--db", str(tmp_path / "h.db"), "--rate-limit", "0")
    alice = client(tmux, tmp_path, server.port, "alice")
    bob = Bob(server.port, interval=0.01)
    bob.start()
    try:
        wait_until(lambda: bob.sent >= 10, timeout=10, what="bob's first messages")
        alice.wait_for(f"<bob> m{bob.sent}")

        server.stop(sig)
        alice.wait_for("disconnected from")
        # Hold alice away (suspended) until bob has surely talked while she was gone:
        # left to the race between her backoff and bob's reconnect, a loaded machine
        # sometimes let her back first, and the scenario then had no gap to prove.
        pid = client_pid(alice)
        os.kill(pid, signal.SIGSTOP)
        try:
            server.start()  # same port, same history file
            wait_until(
                lambda: bob.sent_while_alice_away >= 20,
                timeout=15,
                what="bob talking while alice is away",
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        alice.wait_for("you joined #lobby", count=2, timeout=15)
        wait_until(
            lambda: bob.sent_since_alice_back >= 20,
            timeout=15,
            what="bob talking after alice is back",
        )
    finally:
        last = bob.finish()
    assert bob.error is None, bob.error
    assert bob.connections == 2
    # the scenario really had a gap: messages stored while alice was not connected
    assert bob.sent_while_alice_away >= 1

    alice.wait_for(f"<bob> m{last}", timeout=15)
    barrier(alice, "all caught up")
    assert_every_message_once_in_order(alice, last)
    alice.press("C-d")
    assert alice.exit_status() == 0


def test_skipped_gap_every_message_once_in_order(make_server, tmux, tmp_path) -> None:
    server: ChatdProcess = make_server(
        "--db",
        str(tmp_path / "h.db"),
        "--rate-limit",
        "0",
        "--out-soft-limit-bytes",
        "8192",
        "--out-high-water-bytes",
        "4096",
        "--out-low-water-bytes",
        "2048",
        "--send-buffer-bytes",
        "4096",
    )
    alice = client(tmux, tmp_path, server.port, "alice")
    pid = client_pid(alice)
    bob = JsonClient(server.port, timeout=10)
    bob.hello("bob")
    bob.join("#lobby")
    pad = " " + "x" * 60
    sent = 0

    def say(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            sent += 1
            bob.say("#lobby", f"m{sent}{pad}")
            bob.expect_frame(type="msg", text=f"m{sent}{pad}")

    say(5)
    alice.wait_for(f"<bob> m{sent} x")
    os.kill(pid, signal.SIGSTOP)
    try:
        # alice's kernel buffers fill up, then the server's buffer passes the soft limit
        deadline = time.monotonic() + 20
        while "skipping room messages" not in server.log():
            assert time.monotonic() < deadline, f"no skipping after {sent} messages"
            say(20)
        say(50)  # more while alice is still stopped: skipped, or queued behind the skip
    finally:
        os.kill(pid, signal.SIGCONT)
    say(100)  # while alice drains, fetches the gap, and after
    alice.wait_for("messages were skipped", timeout=15)
    wait_until(lambda: "caught up;" in server.log(), what="the server's skipped notice")
    alice.wait_for(f"<bob> m{sent} x", timeout=15)
    barrier(alice, "all caught up")
    bob.close()

    assert "disconnected from" not in alice.screen()  # the gap was filled, not reconnected
    assert_every_message_once_in_order(alice, sent)
    alice.press("C-d")
    assert alice.exit_status() == 0


def test_history_command_scrolls_back_on_the_real_server(make_server, tmux, tmp_path) -> None:
    server: ChatdProcess = make_server(
        "--db", str(tmp_path / "h.db"), "--rate-limit", "0", "--history-replay", "5"
    )
    bob = server.json_client("bob", "#lobby")
    for n in range(1, 31):
        bob.say("#lobby", f"m{n}")
        bob.expect_frame(type="msg", text=f"m{n}")
    alice = client(tmux, tmp_path, server.port, "alice")
    alice.wait_for("(earlier) <bob> m30")
    assert numbers_on(alice) == [26, 27, 28, 29, 30]

    alice.type("/history 10")
    alice.press("Enter")
    alice.wait_for("(earlier) <bob> m16")
    alice.type("/history")  # default 20: the 15 that are left
    alice.press("Enter")
    wait_until(lambda: 1 in numbers_on(alice), what="m1 on screen")
    alice.type("/history")
    alice.press("Enter")
    alice.wait_for("no earlier messages in #lobby")
    assert numbers_on(alice) == [26, 27, 28, 29, 30, *range(16, 26), *range(1, 16)]

    # live messages after scrolling back are still shown, once, not as earlier
    bob.say("#lobby", "m31")
    alice.wait_for("<bob> m31")
    assert not any("(earlier) <bob> m31" in line for line in alice.lines())
    bob.close()
    alice.press("C-d")
    assert alice.exit_status() == 0


def test_restart_gap_in_a_room_where_nothing_was_shown_yet(make_server, tmux, tmp_path) -> None:
    """alice joined a quiet room and has shown no message when the server restarts; more
    messages than the join replay holds are sent while she is away. She has no mid to ask
    ``after``, yet must still see all of them, not just the replayed tail."""
    server: ChatdProcess = make_server(
        "--db", str(tmp_path / "h.db"), "--rate-limit", "0", "--history-replay", "5"
    )
    alice = client(tmux, tmp_path, server.port, "alice")
    pid = client_pid(alice)
    os.kill(pid, signal.SIGSTOP)  # away for certain until bob is done
    try:
        server.stop()
        server.start()
        bob = server.json_client("bob", "#lobby")
        for n in range(1, 13):
            bob.say("#lobby", f"m{n}")
            bob.expect_frame(type="msg", text=f"m{n}")
    finally:
        os.kill(pid, signal.SIGCONT)
    alice.wait_for("you joined #lobby", count=2, timeout=15)
    bob.say("#lobby", "m13")
    alice.wait_for("<bob> m13", timeout=15)
    barrier(alice, "all caught up")
    bob.close()
    assert_every_message_once_in_order(alice, 13)
    alice.press("C-d")
    assert alice.exit_status() == 0
