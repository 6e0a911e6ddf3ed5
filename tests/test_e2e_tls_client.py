"""The real client in tmux against a real TLS server: trust on first use, as a person
sees it. Ask, accept, remember, verify silently, and refuse a changed key loudly."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ChatdProcess
from test_e2e_client import ROOT, Pane, Tmux

pytestmark = [pytest.mark.e2e]
pytest.importorskip("cryptography")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.close()


def chat(tmux: Tmux, tmp_path: Path, port: int, nick: str, *flags: str, name: str = "") -> Pane:
    state = tmp_path / "state"  # one person, one state directory, several runs
    command = (
        f"env CHAT_STATE_DIR={shlex.quote(str(state))} PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.quote(sys.executable)} -m client 127.0.0.1:{port} --nick {nick} "
        + " ".join(shlex.quote(flag) for flag in flags)
    )
    return Pane(tmux, name or nick, command, tmp_path)


def test_trust_on_first_use_in_the_real_client(tmux: Tmux, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ChatdProcess("--tls", "on", env={"XDG_DATA_HOME": str(data)})
    try:
        fp = server.fingerprint
        assert fp is not None
        first = chat(tmux, tmp_path, server.port, "ann")
        first.wait_for("is not known yet")
        first.wait_for(fp)  # the same form chatd printed at start-up
        first.wait_for("Trust this server and connect? [y/N]")
        first.type("y")
        first.press("Enter")
        first.wait_for("you joined #lobby")
        first.wait_for("here | tls")  # the toolbar says the link is encrypted
        known = (tmp_path / "state" / "known_servers").read_text()
        assert f"127.0.0.1:{server.port} {fp}" in known
        first.type("/quit")
        first.press("Enter")
        assert first.exit_status() == 0

        again = chat(tmux, tmp_path, server.port, "ann", name="again")
        again.wait_for("you joined #lobby")  # no question the second time
        assert "not known yet" not in again.screen()
        again.type("/quit")
        again.press("Enter")
        assert again.exit_status() == 0

        # The server's key changes (or someone is in the middle): refused, loudly.
        for name in ("tls-cert.pem", "tls-key.pem"):
            (data / "chatd" / name).unlink()
        server.restart()
        assert server.fingerprint != fp
        changed = chat(tmux, tmp_path, server.port, "ann", name="changed")
        changed.wait_for("HAS CHANGED")
        assert changed.exit_status() == 1
        screen = changed.screen().replace("\n", "")
        assert "known_servers" in screen and "Not connecting" in screen
        assert "you joined" not in screen
    finally:
        server.stop()


def test_plain_server_is_used_in_plain_text_and_the_toolbar_says_so(
    tmux: Tmux, tmp_path: Path
) -> None:
    server = ChatdProcess("--tls", "off")
    try:
        pane = chat(tmux, tmp_path, server.port, "bob")
        pane.wait_for("you joined #lobby")
        pane.wait_for("here | plain")
    finally:
        server.stop()
