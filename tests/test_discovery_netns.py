"""LAN discovery across a LAN of the test's own: servers in one network namespace, the
client (and other browsers) in another, joined by a veth pair (tests/netns.py).

The veth ends carry IPv4 link-local addresses (169.254.77.1 and .2) inside namespaces the
test creates and deletes; multicast DNS (224.0.0.251:5353) stays on that one link, so no
packet leaves the test's namespaces. Needs root and iproute2 (skipped otherwise, with the
reason); the avahi test also needs avahi-daemon, avahi-browse and dbus-daemon.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, ChatdProcess, wait_until
from netns import Lan, lan_or_skip

pytest.importorskip("zeroconf", reason="discovery needs the 'zeroconf' library")
pytestmark = pytest.mark.slow

ENV = {"PYTHONPATH": str(ROOT)}
SERVER_ADDR, CLIENT_ADDR = Lan.ADDRESSES


@pytest.fixture
def lan(request: pytest.FixtureRequest) -> Iterator[Lan]:
    made = lan_or_skip(f"{os.getpid() % 10000}{request.node.name[5:8]}")
    servers: list[ChatdProcess] = []
    made.servers = servers  # type: ignore[attr-defined]
    try:
        yield made
    finally:
        for server in servers:
            server.stop()
        made.close()


def serve(lan: Lan, name: str, *flags: str) -> ChatdProcess:
    """chatd in the server namespace, on every interface (so on the veth link)."""
    server = ChatdProcess(
        "--host", "0.0.0.0", "--server-name", name, *flags, irc=True, wrap=lan.wrap(0)
    )
    lan.servers.append(server)  # type: ignore[attr-defined]
    return server


def chat_list(lan: Lan) -> list[str]:
    done = lan.run(1, sys.executable, "-m", "client", "--list", env=ENV)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.stdout.splitlines()


def list_until(lan: Lan, wanted: Callable[[list[str]], bool], timeout: float = 30) -> list[str]:
    """``chat --list`` (2 s each) until its lines satisfy ``wanted``; the last lines."""
    deadline = time.monotonic() + timeout
    lines = chat_list(lan)
    while not wanted(lines) and time.monotonic() < deadline:
        lines = chat_list(lan)
    assert wanted(lines), f"chat --list never showed what was expected: {lines}"
    return lines


def listed(lines: list[str], name: str) -> str | None:
    return next((line for line in lines if line.split("  ")[0] == name), None)


_WATCH = """
import sys, time
from zeroconf import IPVersion, ServiceBrowser, Zeroconf
zc = Zeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
def seen(zeroconf, service_type, name, state_change):
    print(state_change.name, name, flush=True)
ServiceBrowser(zc, "_chatd._tcp.local.", handlers=[seen])
time.sleep(120)
"""


def watch(lan: Lan, log: Path) -> Callable[[str], bool]:
    """A long-lived browser in the client namespace (another process): it keeps what it
    saw cached, so only a goodbye packet makes it report a server Removed at once."""
    lan.spawn(1, sys.executable, "-c", _WATCH, CLIENT_ADDR, log=log)
    return lambda line: line in log.read_text().splitlines()


def test_client_in_another_namespace_lists_the_server(lan: Lan) -> None:
    server = serve(lan, "alpha")
    assert any("announcing on the LAN" in line for line in server.stdout_lines)
    line = list_until(lan, lambda lines: listed(lines, "alpha") is not None)
    assert listed(line, "alpha") == f"alpha  {SERVER_ADDR}:{server.port}  0 online  no TLS"


def test_two_servers_are_listed_and_a_stopped_one_disappears(lan: Lan, tmp_path: Path) -> None:
    saw = watch(lan, tmp_path / "watch.log")
    alpha = serve(lan, "alpha")
    beta = serve(lan, "beta", "--password-file", str(_password(tmp_path)))
    lines = list_until(lan, lambda ls: bool(listed(ls, "alpha") and listed(ls, "beta")))
    assert listed(lines, "alpha") == f"alpha  {SERVER_ADDR}:{alpha.port}  0 online  no TLS"
    assert listed(lines, "beta") == f"beta  {SERVER_ADDR}:{beta.port}  0 online  no TLS  password"
    wait_until(lambda: saw("Added beta._chatd._tcp.local."), timeout=10)
    beta.stop()
    # The watcher had beta cached for its TTL (75 minutes): only the goodbye removes it.
    wait_until(lambda: saw("Removed beta._chatd._tcp.local."), timeout=10)
    assert "announcement withdrawn" in beta.log()
    lines = chat_list(lan)
    assert listed(lines, "alpha") and not listed(lines, "beta")
    assert not saw("Removed alpha._chatd._tcp.local.")


def test_no_announce_announces_nothing(lan: Lan, tmp_path: Path) -> None:
    saw = watch(lan, tmp_path / "watch.log")
    quiet = serve(lan, "quiet", "--no-announce")
    serve(lan, "loud")  # a control: the browse works, so quiet's absence means something
    lines = list_until(lan, lambda ls: listed(ls, "loud") is not None)
    wait_until(lambda: saw("Added loud._chatd._tcp.local."), timeout=10)
    assert not listed(lines, "quiet")
    assert not saw("Added quiet._chatd._tcp.local.")
    assert "announcing" not in quiet.log()
    assert "chatd: announcing is off (--no-announce)\n" in quiet.stdout_lines


def _chat_in_tmux(lan: Lan, tmp_path: Path) -> tuple[Any, Any]:
    """The real client in a terminal (tmux), in the client namespace, with no address."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    from test_e2e_client import Pane, Tmux

    command = " ".join(
        shlex.quote(part)
        for part in [
            *lan.wrap(1),
            "env",
            f"CHAT_STATE_DIR={tmp_path / 'state'}",
            f"PYTHONPATH={ROOT}",
            sys.executable,
            "-m",
            "client",
            "--nick",
            "bob",
            "--line",  # line mode keeps the "found" line on screen; full screen redraws it
        ]
    )
    tmux = Tmux()
    return tmux, Pane(tmux, "bob", command, tmp_path)


def test_chat_without_an_address_joins_the_one_server_found(lan: Lan, tmp_path: Path) -> None:
    server = serve(lan, "alpha")
    list_until(lan, lambda lines: listed(lines, "alpha") is not None)
    tmux, pane = _chat_in_tmux(lan, tmp_path)
    try:
        pane.wait_for(f"chat: found alpha  {SERVER_ADDR}:{server.port}", timeout=15)
        pane.wait_for("you joined #lobby", timeout=15)
    finally:
        tmux.close()
    assert f"connected from {CLIENT_ADDR}" in server.log()


def test_chat_without_an_address_asks_which_of_several(lan: Lan, tmp_path: Path) -> None:
    alpha, beta = serve(lan, "alpha"), serve(lan, "beta")
    list_until(lan, lambda ls: bool(listed(ls, "alpha") and listed(ls, "beta")))
    tmux, pane = _chat_in_tmux(lan, tmp_path)
    try:
        pane.wait_for("chat: 2 chatd servers answered on the LAN:", timeout=15)
        pane.wait_for(f"  1. alpha  {SERVER_ADDR}:{alpha.port}  0 online  no TLS")
        pane.wait_for(f"  2. beta  {SERVER_ADDR}:{beta.port}  0 online  no TLS")
        pane.wait_for("Which server (1-2, Enter for none)?")
        pane.type("2")
        pane.press("Enter")
        pane.wait_for("you joined #lobby", timeout=15)
    finally:
        tmux.close()
    assert f"connected from {CLIENT_ADDR}" in beta.log()
    assert f"connected from {CLIENT_ADDR}" not in alpha.log()


def test_a_failing_announcer_never_stops_the_server(lan: Lan) -> None:
    """No multicast-capable address at all (a namespace with only lo): the announcer
    thread fails, says so, and the server goes on serving."""
    bare = f"{lan.ns[0]}-bare"
    subprocess.run(["ip", "netns", "add", bare], check=True, capture_output=True)
    server: ChatdProcess | None = None
    try:
        subprocess.run(["ip", "-n", bare, "link", "set", "lo", "up"], check=True)
        server = ChatdProcess("--host", "0.0.0.0", "--announce", wrap=["ip", "netns", "exec", bare])
        wait_until(lambda: "announcing failed" in server.log(), timeout=10)  # type: ignore[union-attr]
        probe = (
            "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
            " print(s.recv(200).decode())"
        )
        done = subprocess.run(
            ["ip", "netns", "exec", bare, sys.executable, "-c", probe, str(server.port)],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert "*** chatd on" in done.stdout
        assert server.proc is not None and server.proc.poll() is None
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["ip", "netns", "del", bare], capture_output=True)


def _password(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("sesame\n")
    return path


# --------------------------------------------------------------------------- avahi

_AVAHI_CONF = """[server]
host-name=avahi-browser
use-ipv4=yes
use-ipv6=no
allow-interfaces={link}
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
publish-addresses=no
publish-hinfo=no
publish-workstation=no
"""


def test_avahi_browse_sees_chatd_and_irc(lan: Lan, tmp_path: Path) -> None:
    """A third-party browser: Avahi, with a D-Bus bus and daemon of its own inside the
    client namespace (avahi-browse talks to avahi-daemon over D-Bus)."""
    for tool in ("avahi-daemon", "avahi-browse", "dbus-daemon"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian: avahi-daemon, avahi-utils, dbus)")
    run_dir = Path("/run/avahi-daemon")  # its pid file: private to this namespace's mounts
    run_dir.mkdir(exist_ok=True)
    bus = tmp_path / "bus"
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={bus}"}
    lan.spawn(
        1,
        "dbus-daemon",
        "--session",
        f"--address=unix:path={bus}",
        "--nofork",
        log=tmp_path / "dbus.log",
    )
    wait_until(bus.exists, timeout=10)
    conf = tmp_path / "avahi.conf"
    conf.write_text(_AVAHI_CONF.format(link=lan.links[1]))
    avahi_log = tmp_path / "avahi.log"
    # ip netns exec gives each command a mount namespace of its own (slave to ours): a
    # tmpfs on the pid file's directory keeps any avahi-daemon of the machine unaffected.
    daemon = f"avahi-daemon -f {shlex.quote(str(conf))} --no-drop-root --no-chroot --no-rlimits"
    lan.spawn(
        1,
        "sh",
        "-c",
        f"mount -t tmpfs tmpfs {run_dir} && exec {daemon}",
        log=avahi_log,
        env=env,
    )
    wait_until(lambda: "Server startup complete" in avahi_log.read_text(), timeout=15)
    server = serve(lan, "alpha")

    def browse(service: str) -> list[list[str]]:
        done = lan.run(1, "avahi-browse", "-rtpk", service, timeout=20, env=env)
        return [line.split(";") for line in done.stdout.splitlines() if line.startswith("=")]

    deadline = time.monotonic() + 30
    chatd = browse("_chatd._tcp")
    while not chatd and time.monotonic() < deadline:
        chatd = browse("_chatd._tcp")
    assert chatd, avahi_log.read_text()
    _, _, _, name, kind, _, _, address, port, txt = chatd[0]
    assert (name, kind, address, int(port)) == ("alpha", "_chatd._tcp", SERVER_ADDR, server.port)
    record = dict(re.findall(r'"([^"=]+)=([^"]*)"', txt))
    assert record == {
        "txtvers": "1",
        "name": "alpha",
        "version": record["version"],
        "tls": "off",
        "password": "no",
        "online": "0",
    }
    irc: list[list[str]] = []
    while not irc and time.monotonic() < deadline:
        irc = browse("_irc._tcp")
    assert irc
    _, _, _, name, kind, _, _, address, port, _ = irc[0]
    assert (name, kind, address, int(port)) == ("alpha", "_irc._tcp", SERVER_ADDR, server.irc_port)


_CENSUS = """
import sys, time
from chatd import discovery
from chatd.config import Config
config = Config(server_name="census")
announcer = discovery.Announcer(
    "census",
    [sys.argv[1]],
    [discovery.Service(discovery.CHATD_TYPE, 7777, discovery.chatd_txt(config, 0))],
    lambda online: discovery.chatd_txt(config, online),
)
announcer.start()
while not announcer.registered:
    time.sleep(0.05)
announcer.offer_online(5)  # as the loop's census hook does, every CENSUS_SECONDS
time.sleep(120)
"""


def test_the_head_count_handed_over_is_re_announced(lan: Lan, tmp_path: Path) -> None:
    """The loop's census crosses to the announcer thread and into the TXT record (the
    announcer alone, so the test need not wait CENSUS_SECONDS for the loop's hook)."""
    lan.spawn(0, sys.executable, "-c", _CENSUS, SERVER_ADDR, log=tmp_path / "census.log", env=ENV)
    lines = list_until(lan, lambda ls: listed(ls, "census") is not None)
    deadline = time.monotonic() + 20
    while "5 online" not in (listed(lines, "census") or "") and time.monotonic() < deadline:
        lines = chat_list(lan)
    assert listed(lines, "census") == f"census  {SERVER_ADDR}:7777  5 online  no TLS"


def test_nothing_found_says_so_and_falls_back_to_localhost(lan: Lan) -> None:
    done = lan.run(1, sys.executable, "-m", "client", "--list", env=ENV)
    assert (done.returncode, done.stdout) == (1, "no chatd server answered on the LAN in 2 s\n")
    probe = (
        "from client import discovery;"
        "print(discovery.find_server(('localhost', 7777), print, input))"
    )
    done = lan.run(1, sys.executable, "-c", probe, env=ENV)
    assert done.stdout.splitlines() == [
        "chat: no chatd server answered on the LAN in 2 s; trying localhost:7777",
        "('localhost', 7777)",
    ]


def test_a_tls_servers_fingerprint_is_announced_and_listed(lan: Lan, tmp_path: Path) -> None:
    """With TLS on, the fingerprint chatd prints is in the announcement and in the list,
    so a person can tell the real room from an impostor announcing the same name."""
    server = serve(lan, "secure", "--tls", "on", "--db", str(tmp_path / "h.db"))
    assert server.fingerprint and server.fingerprint.startswith("SHA256:")
    lines = list_until(lan, lambda ls: listed(ls, "secure") is not None)
    line = listed(lines, "secure")
    assert line is not None and f"TLS {server.fingerprint}" in line, lines
