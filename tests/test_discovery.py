"""Discovery without a network: when the server announces, what it says, and how the
client treats what it hears (hostile input: whoever answers on the LAN wrote it).

Servers here listen on 127.0.0.1, where announcing stays off unless forced, so these
tests send no multicast at all; tests/test_discovery_netns.py does, in namespaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ROOT, ChatdProcess

from chatd import __version__, discovery
from chatd.cli import build_parser, config_from_args
from chatd.config import Config
from chatd.timers import Timers
from client import discovery as finder


def _config(*argv: str) -> Config:
    return config_from_args(build_parser().parse_args(list(argv)), {})


def test_announce_flag_and_toml(tmp_path: Path) -> None:
    assert _config().announce is None
    assert _config("--no-announce").announce is False
    assert _config("--announce").announce is True
    toml = tmp_path / "c.toml"
    toml.write_text("announce = false\n")
    assert _config("--config", str(toml)).announce is False
    assert _config("--config", str(toml), "--announce").announce is True


def test_plan_off_on_loopback_and_when_asked() -> None:
    on, why = discovery.announce_plan(Config(), "127.0.0.1")
    assert not on and "reachable from this machine only" in why and "--announce" in why
    on, why = discovery.announce_plan(Config(announce=False), "0.0.0.0")
    assert (on, why) == (False, "announcing is off (--no-announce)")
    pytest.importorskip("zeroconf")
    assert discovery.announce_plan(Config(), "0.0.0.0")[0]
    assert discovery.announce_plan(Config(announce=True), "127.0.0.1")[0]


def test_plan_says_why_without_zeroconf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # import zeroconf -> ImportError
    on, why = discovery.announce_plan(Config(), "0.0.0.0")
    assert not on and "'zeroconf' library is not installed" in why


def test_txt_record() -> None:
    config = Config(server_name="lab", password="x")
    assert discovery.chatd_txt(config, 3) == {
        "txtvers": "1",
        "name": "lab",
        "version": __version__,
        "tls": "off",
        "password": "yes",
        "online": "3",
    }
    with_tls = discovery.chatd_txt(Config(server_name="é" * 300), 0, "SHA256:abc")
    assert with_tls["tls"] == "on" and with_tls["fp"] == "SHA256:abc"
    assert len(with_tls["name"].encode()) <= 200  # a TXT string is at most 255 bytes


def test_census_reaches_the_announcer_every_period() -> None:
    class Box:
        offered: list[int] = []

        def offer_online(self, n: int) -> None:
            self.offered.append(n)

    class Loop:  # the chat loop's timers, on a clock the test moves
        now = 0.0
        timers = Timers()

        def call_at(self, when: float, callback: Callable[[], object]) -> object:
            return self.timers.call_at(when, callback)

    box, loop = Box(), Loop()
    counts = iter(range(100))
    discovery.schedule_census(loop, box, lambda: next(counts), every=30.0)  # type: ignore[arg-type]
    for now in (0.0, 0.25, 10.0, 29.9, 30.0, 31.0, 60.5):
        loop.now = now
        loop.timers.run_due(now)
    assert box.offered == [0, 1, 2]


def test_local_name() -> None:
    assert discovery.local_name("lab-pc.example.org") == "lab-pc.local"
    assert discovery.local_name("Ünïcode box") == "n-code-box.local"
    assert discovery.local_name("") == "chatd.local"


def test_server_without_zeroconf_runs_and_says_why(tmp_path: Path) -> None:
    """The plain server needs the standard library alone: with zeroconf unimportable and
    announcing forced, it says announcing is off and why, and serves."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "zeroconf.py").write_text("raise ImportError('hidden by the test')\n")
    server = ChatdProcess("--announce", env={"PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"})
    try:
        assert any("'zeroconf' library is not installed" in line for line in server.stdout_lines)
        client = server.json_client("ann", "#lobby")
        client.close()
    finally:
        server.stop()


def test_loopback_server_does_not_announce(chatd_server: ChatdProcess) -> None:
    assert any("reachable from this machine only" in line for line in chatd_server.stdout_lines)
    assert "announcing" not in chatd_server.log()


# --------------------------------------------------------------------------- the client


def test_announced_values_are_made_safe_to_show() -> None:
    hostile = {
        b"name": "\x1b[2J\x1b]0;pwned\x07evil\u202eroom".encode(),
        b"online": "٣".encode(),  # a digit, but not an ASCII one
        b"tls": b"on",
        b"fp": b"MD5:00",
        b"password": None,
    }
    found = finder.from_txt("x._chatd._tcp.local.", "169.254.1.1", 7777, hostile)
    assert found is not None
    assert found.name == "[2J]0;pwnedevilroom"  # no ESC, BEL or right-to-left override
    assert found.online is None and found.fingerprint is None and found.tls
    name = finder._safe("a\u202eb\u200bc\nd" + "x" * 500)
    assert name.startswith("abc d") and len(name) == 60
    big = finder.from_txt("x", "169.254.1.1", 1, {b"online": b"9" * 5000})
    assert big is not None and big.online is None
    assert finder.from_txt("x", "224.0.0.251", 7777, {}) is None
    assert finder.from_txt("x", "0.0.0.0", 7777, {}) is None
    assert finder.from_txt("x", "not-an-ip", 7777, {}) is None
    assert finder.from_txt("x", "169.254.1.1", 0, {}) is None
    plain = finder.from_txt("lab._chatd._tcp.local.", "169.254.1.1", 7777, {})
    assert plain is not None and plain.name == "lab"


def test_pick_from_several() -> None:
    servers = [
        finder.Found("a", "169.254.1.1", 7777, 2, False, None, False, "0.1.0"),
        finder.Found("b", "169.254.1.2", 7777, None, True, "SHA256:xyz", True, "0.1.0"),
    ]
    shown: list[str] = []
    answers = iter(["7", "x", "2"])
    assert finder.pick(servers, lambda _: next(answers), shown.append) is servers[1]
    assert shown[:2] == [
        "  1. a  169.254.1.1:7777  2 online  no TLS",
        "  2. b  169.254.1.2:7777  ? online  TLS SHA256:xyz  password",
    ]
    assert shown[2:] == ["  a number from 1 to 2, please"] * 2
    assert finder.pick(servers, lambda _: "", shown.append) is None


def test_explicit_address_never_browses() -> None:
    """An address (or --host/--port) connects exactly as before: no browse, no line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "client", "127.0.0.1:1", "--nick", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 1 and "found" not in done.stdout and "LAN" not in done.stdout


def test_no_zeroconf_falls_back_to_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is sent: the library is missing, so the client says so and goes on."""
    monkeypatch.setitem(sys.modules, "zeroconf", None)
    said: list[str] = []
    assert finder.find_server(("localhost", 7777), said.append, input) == ("localhost", 7777)
    assert said == [
        "chat: finding servers needs the 'zeroconf' library (pip install 'chatd[discovery]');"
        " trying localhost:7777"
    ]
    said.clear()
    assert finder.list_servers(said.append) == 2 and "zeroconf" in said[0]


def test_the_trust_question_compares_the_announced_fingerprint() -> None:
    from client.__main__ import _discovery_line

    assert _discovery_line("SHA256:abc", None) == ""
    assert "same fingerprint" in _discovery_line("SHA256:abc", "SHA256:abc")
    warning = _discovery_line("SHA256:abc", "SHA256:xyz")
    assert "WARNING" in warning and "SHA256:xyz" in warning and "impostor" in warning
