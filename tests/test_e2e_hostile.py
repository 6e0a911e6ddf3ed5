"""End to end: the real client in a real terminal (tmux) against a hostile impostor.

The impostor (tests/hostile.py) runs in a thread of the test process on 127.0.0.1 port 0
and speaks no TLS (the client runs with --plain). It sends every frame that once crashed
the client, a message padded to spoof a system line, and then closes every later
connection right after its banner. The client must stay up, print no traceback, never
let a row start with the spoofed text, and back off.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import NASTY, HostileServer, expect, frame, opening
from test_e2e_client import ROOT, Pane, Tmux

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]

WIDTH = 100
SPOOF = "*** bob is now an operator; /msg bob your password"


@pytest.fixture
def tmux_server() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.close()


def rows(pane: Pane) -> list[str]:
    """The screen as the terminal shows it: rows, wrapped ones not joined (no -J)."""
    text = pane.tmux.run("capture-pane", "-p", "-S", "-", "-t", pane.target)
    return [row.rstrip() for row in text.splitlines()]


@pytest.mark.parametrize("mode", ["--line", "--full-screen"])
def test_hostile_server_in_a_real_terminal(tmux_server: Tmux, tmp_path: Path, mode: str) -> None:
    leave = threading.Event()

    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n > 1:  # every later connection: a banner, then closed
            writer.write(b"chatd impostor ready\n")
            await writer.drain()
            return
        await opening(reader, writer, members=("bob",))
        for line in NASTY:
            writer.write(line + b"\n")
        pad = " " * (WIDTH - len("[00:00] <bob> look"))
        writer.write(
            frame(
                type="msg",
                room="#lobby",
                text="look" + pad + SPOOF,
                ts=1.0,
                mid=60,
                **{"from": "bob"},
            )
        )
        writer.write(
            frame(type="msg", room="#lobby", text="still here", ts=1.0, mid=61, **{"from": "bob"})
        )
        await writer.drain()

        async def answer() -> None:
            while True:
                request = await expect(reader, "history")
                writer.write(frame(type="history", room="#lobby", id=request["id"], messages=[]))
                await writer.drain()

        answering = asyncio.create_task(answer())
        while not leave.is_set():
            await asyncio.sleep(0.05)
        answering.cancel()

    server = HostileServer(plan)
    port = server.start_in_thread()
    try:
        command = (
            f"env CHAT_STATE_DIR={shlex.quote(str(tmp_path / 'state'))} "
            f"PYTHONPATH={shlex.quote(str(ROOT))} "
            f"{shlex.quote(sys.executable)} -m client 127.0.0.1:{port} --nick alice {mode} --plain"
        )
        pane = Pane(tmux_server, "alice", command, tmp_path)
        pane.wait_for("<bob> still here", timeout=20)
        screen = rows(pane)
        text = "\n".join(screen)
        for needle in ("Traceback", "Unhandled exception", "Press ENTER"):
            assert needle not in text, text
        # the spoof is on screen, but on an indented row, never at column 0
        assert any(SPOOF[:20] in row for row in screen), text
        assert not any(row.startswith(SPOOF[:10]) for row in screen), text
        assert "you left #never" not in text

        leave.set()  # the impostor drops us; every later connection closes after its banner
        try:
            pane.wait_for("attempt 4", timeout=30)
        except AssertionError:
            print(pane.log_file.read_text()[-5000:])
            raise
        log = pane.log_file.read_text()
        delays = [float(d) for d in re.findall(r"reconnect attempt \d+ in ([\d.]+) s", log)]
        assert len(delays) >= 4 and all(b > a for a, b in zip(delays, delays[1:4], strict=False)), (
            delays
        )
        assert "Traceback" not in "\n".join(rows(pane))
        pane.press("C-d")
        assert pane.exit_status() == 0
        assert server.connections >= 4
    finally:
        server.stop_thread()
