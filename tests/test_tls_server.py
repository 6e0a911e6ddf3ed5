"""TLS against a real chatd process: one port for TLS and plain, IRC over TLS, trust on
first use, abuse (stalled and garbage handshakes, a flood of half-open ones), and a relay
that proves nothing readable crosses the wire."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ChatdProcess, JsonClient, RawClient, wait_until
from test_e2e_client import Pane, Tmux

from chatd.streams import TLS_RECORD_HANDSHAKE
from chatd.tls import client_context, fingerprint
from client import net, trust

pytest.importorskip("cryptography")


class TlsJsonClient(JsonClient):
    """A JSON line client over TLS (the handshake is done in the constructor)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        super().__init__(port, timeout=timeout)
        self.tls = client_context().wrap_socket(self.sock, server_hostname="localhost")
        self.sock = self.tls
        der = self.tls.getpeercert(binary_form=True)
        assert der is not None
        self.fingerprint = fingerprint(der)


def tls_server(tmp_path: Path, *args: str, **kw: Any) -> ChatdProcess:
    """A chatd with TLS on, its generated certificate kept under ``tmp_path``."""
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), **kw.pop("env", {})}
    return ChatdProcess("--tls", "on", *args, env=env, **kw)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChatdProcess]:
    proc = tls_server(tmp_path, "--irc-tls-port", "0", "--tls-handshake-seconds", "1", irc=True)
    yield proc
    proc.stop()


def test_generated_certificate_is_private_and_its_fingerprint_printed(
    server: ChatdProcess, tmp_path: Path
) -> None:
    directory = tmp_path / "data" / "chatd"
    for name in ("tls-cert.pem", "tls-key.pem"):
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    client = TlsJsonClient(server.port)
    assert server.fingerprint is not None and server.fingerprint.startswith("SHA256:")
    assert client.fingerprint == server.fingerprint
    client.close()
    server.restart()  # the same key on the next start
    again = TlsJsonClient(server.port)
    assert again.fingerprint == client.fingerprint == server.fingerprint
    again.close()


def test_tls_plain_and_irc_tls_users_chat_on_one_server(server: ChatdProcess) -> None:
    ann = TlsJsonClient(server.port)
    assert ann.tls.version() in ("TLSv1.2", "TLSv1.3")
    ann.hello("ann")
    ann.join("#mix")
    bob = server.json_client("bob", "#mix")  # plain JSON, same port
    nc = RawClient(server.port)  # a person in nc: greeted once the sniffing window ends
    nc.expect(lambda line: "Type the nickname" in line)
    nc.send_line("carl")
    nc.expect(lambda line: "You joined #lobby" in line)
    nc.send_line("/join #mix")
    nc.expect(lambda line: "You joined #mix" in line)

    irc = RawClient(server.irc_tls_port or 0)
    irc.sock = client_context().wrap_socket(irc.sock)
    irc.send(b"NICK dora\r\nUSER dora 0 * :Dora\r\n")
    irc.expect(lambda line: " 001 dora " in line)
    irc.send(b"JOIN #mix\r\n")
    irc.expect(lambda line: "366" in line)

    ann.say("#mix", "from tls")
    bob.expect_frame(type="msg", text="from tls")
    nc.expect(lambda line: "from tls" in line)
    irc.expect(lambda line: "PRIVMSG #mix :from tls" in line)
    bob.say("#mix", "from plain")
    ann.expect_frame(type="msg", text="from plain")
    irc.expect(lambda line: "PRIVMSG #mix :from plain" in line)
    nc.send_line("from nc")
    ann.expect_frame(type="msg", text="from nc")
    irc.send(b"PRIVMSG #mix :from irc over tls\r\n")
    ann.expect_frame(type="msg", text="from irc over tls")
    bob.expect_frame(type="msg", text="from irc over tls")
    nc.expect(lambda line: "from irc over tls" in line)
    ann.send_json(op="quit")
    assert ann.read_until_closed() is not None  # an orderly close (close_notify) ends it


def test_irc_library_client_over_tls(server: ChatdProcess) -> None:
    irc_client = pytest.importorskip("irc.client")
    irc_connection = pytest.importorskip("irc.connection")
    reactor = irc_client.Reactor()
    seen: list[str] = []
    welcomed = threading.Event()
    context = client_context()
    factory = irc_connection.Factory(
        wrapper=lambda sock: context.wrap_socket(sock, server_hostname="localhost")
    )
    connection = reactor.server().connect(
        "127.0.0.1", server.irc_tls_port, "libtls", connect_factory=factory
    )

    def on_welcome(c: Any, e: Any) -> None:
        welcomed.set()
        c.join("#lib")

    connection.add_global_handler("welcome", on_welcome)
    reactor.add_global_handler("pubmsg", lambda c, e: seen.append(e.arguments[0]))
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: [reactor.process_once(0.05) for _ in iter(stop.is_set, True)], daemon=True
    )
    thread.start()
    try:
        wait_until(welcomed.is_set, what="001 over TLS")
        jay = server.json_client("jay", "#lib")
        jay.say("#lib", "hello tls library")
        wait_until(lambda: "hello tls library" in seen, what="pubmsg over TLS")
        reactor.scheduler.execute_after(0, lambda: connection.privmsg("#lib", "hi from irc lib"))
        jay.expect_frame(type="msg", **{"from": "libtls", "text": "hi from irc lib"})
    finally:
        stop.set()
        thread.join(5)
        connection.close()


# --------------------------------------------------------------------------- abuse


def client_hello() -> bytes:
    """A real ClientHello, as the first flight of a TLS client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(incoming, outgoing, server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_stalled_handshake_is_cut_like_a_slowloris(server: ChatdProcess) -> None:
    stall = RawClient(server.port)
    stall.send(client_hello()[:20])  # a TLS client that stops in the middle of its hello
    wait_until(lambda: "handshake timeout" in server.log(), timeout=10, what="cut")
    assert stall.read_until_closed(timeout=5) == []
    silent = RawClient(server.port)  # a full hello, then nothing: the server waits for us
    silent.send(client_hello())
    assert silent.sock.recv(1)[:1] == bytes((TLS_RECORD_HANDSHAKE,))  # its ServerHello
    wait_until(lambda: server.log().count("handshake timeout") >= 2, timeout=10, what="cut")
    silent.close()


@pytest.mark.parametrize(
    "garbage",
    [b"\x16garbage after the first byte\n" * 3, b"\x16\x03\x01\x00\x05hello", b"\x16" * 5000],
)
def test_garbage_after_0x16_closes_only_that_connection(
    server: ChatdProcess, garbage: bytes
) -> None:
    bob = server.json_client("bob", "#g")
    bad = RawClient(server.port)
    bad.send(garbage)
    data = b""
    while True:  # at most an alert (0x15), then the end: never a plain-text line
        try:
            chunk = bad.sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    assert data[:1] in (b"", b"\x15"), data
    wait_until(lambda: "broke its stream" in server.log(), what="a logged stream error")
    assert "Traceback" not in server.log()
    bob.say("#g", "still here")
    bob.expect_frame(type="msg", text="still here")


def test_half_open_handshake_flood_while_others_chat(tmp_path: Path) -> None:
    server = tls_server(
        tmp_path, "--tls-handshake-seconds", "2", "--rate-limit", "0", "--max-clients-per-ip", "0"
    )
    try:
        hello = client_hello()
        flood = []
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(hello[: 1 + i % (len(hello) - 1)])  # every length of a cut hello
            flood.append(sock)
        ann = TlsJsonClient(server.port)
        ann.hello("ann")
        ann.join("#busy")
        bob = server.json_client("bob", "#busy")
        for n in range(20):
            ann.say("#busy", f"tick {n}")
            bob.expect_frame(type="msg", text=f"tick {n}")
        wait_until(
            lambda: server.log().count("handshake timeout") >= 200,
            timeout=15,
            what="the flood cut by the handshake deadline",
        )
        assert server.fd_count() < 64  # every half-open one closed: the two chatters stay
        bob.say("#busy", "after the flood")
        ann.expect_frame(type="msg", text="after the flood")
        for sock in flood:
            sock.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------- policy


def test_require_tls_refuses_plain_logins_with_a_clear_line(tmp_path: Path) -> None:
    server = tls_server(tmp_path, "--require-tls", irc=True)
    try:
        nc = RawClient(server.port)  # says nothing: refused once the sniff window ends
        lines = nc.read_until_closed()
        assert any("openssl s_client" in line and "ncat --ssl" in line for line in lines)
        program = RawClient(server.port)  # speaks at once: refused too, nothing registered
        program.send(b'{"op": "hello", "nick": "sneaky"}\n')
        assert not any("welcome" in line for line in program.read_until_closed())
        irc = RawClient(server.irc_port or 0)
        irc.send(b"NICK plain\r\nUSER p 0 * :p\r\n")
        said = irc.read_until_closed()  # turned away at accept, before any registration
        assert any(line.startswith("ERROR :") and "requires TLS" in line for line in said)
        ann = TlsJsonClient(server.port)
        assert ann.hello("ann")["type"] == "welcome"
    finally:
        server.stop()


def test_without_cryptography_the_plain_server_starts_and_says_why(tmp_path: Path) -> None:
    hidden = tmp_path / "hide"
    (hidden / "cryptography").mkdir(parents=True)
    (hidden / "cryptography" / "__init__.py").write_text("raise ImportError('hidden')\n")
    from helpers import ROOT

    server = ChatdProcess(
        "--tls",
        "auto",
        env={"PYTHONPATH": f"{hidden}:{ROOT}", "XDG_DATA_HOME": str(tmp_path / "d")},
    )
    try:
        said = "".join(server.stdout_lines)
        assert "TLS is off" in said and "cryptography" in said
        bob = server.json_client("bob")
        assert bob.sock is not None
    finally:
        server.stop()


# --------------------------------------------------------------------------- the wire


class Relay:
    """A TCP relay on 127.0.0.1 that keeps every byte it carries, both ways."""

    def __init__(self, target: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target
        self.wire = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            far = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                with self.lock:
                    self.wire += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("use_tls", [True, False], ids=["tls", "plain-control"])
def test_password_and_message_never_cross_the_wire_in_clear(tmp_path: Path, use_tls: bool) -> None:
    password, secret = "hunter2-pass-Zq9", "the launch code is 4242-Zq9"
    server = tls_server(tmp_path, env={"CHATD_PASSWORD": password})
    relay = Relay(server.port)
    try:
        bob = server.json_client("bob", "#s", password=password)
        client = TlsJsonClient(relay.port) if use_tls else JsonClient(relay.port)
        client.hello("ann", password=password)
        client.join("#s")
        client.say("#s", secret)
        bob.expect_frame(type="msg", text=secret)
        bob.say("#s", secret + " (reply)")
        client.expect_frame(type="msg", text=secret + " (reply)")
        client.close()
        with relay.lock:
            wire = bytes(relay.wire)
        assert len(wire) > 500
        found = [word for word in (password, secret, "hunter2", "launch") if word.encode() in wire]
        if use_tls:
            assert found == [], f"{found} readable on the wire"
        else:  # the control: the relay does see a plain-text conversation
            assert password.encode() in wire and secret.encode() in wire
    finally:
        relay.close()
        server.stop()


# --------------------------------------------------------------------------- the client's trust


_NICKS = itertools.count(1)


def open_link(port: int, policy: trust.Policy, known: trust.KnownServers) -> net.Link:
    # A new nick each time: a nick just left is held a while for its owner (accounts).
    nick = f"tofu{next(_NICKS)}"

    async def go() -> net.Link:
        link = await trust.open_link("127.0.0.1", port, 5.0, policy, known, None)
        await link.send({"op": "hello", "nick": nick})
        first = ""
        async for line in link.lines():
            if line.startswith("{"):
                first = line
                break
        assert json.loads(first)["type"] == "welcome"
        await link.close()
        return link

    return asyncio.run(go())


def test_client_trust_first_use_remember_verify_and_refuse_a_change(tmp_path: Path) -> None:
    server = tls_server(tmp_path)
    known = trust.KnownServers(tmp_path / "state" / "known_servers")
    key = f"127.0.0.1:{server.port}"
    try:
        with pytest.raises(trust.TrustError, match="was not accepted"):
            open_link(server.port, trust.Policy(), known)  # nobody to ask: refused
        assert known.get(key) is None
        with pytest.raises(trust.TrustError, match="not the SHA256:wrong"):
            open_link(server.port, trust.Policy(fingerprint="SHA256:wrong"), known)
        link = open_link(server.port, trust.Policy(fingerprint=server.fingerprint), known)
        assert link.transport == "tls"
        assert known.get(key) == server.fingerprint
        assert (tmp_path / "state" / "known_servers").stat().st_mode & 0o777 == 0o600
        assert open_link(server.port, trust.Policy(), known).transport == "tls"  # silently
        # The server gets a new key: the client refuses, loudly, and says what to do.
        for name in ("tls-cert.pem", "tls-key.pem"):
            (tmp_path / "data" / "chatd" / name).unlink()
        server.restart()
        assert server.fingerprint != known.get(key)
        with pytest.raises(trust.TrustError) as info:
            open_link(server.port, trust.Policy(trust=True), known)
        message = str(info.value)
        assert "HAS CHANGED" in message and str(known.path) in message
        assert server.fingerprint is not None and server.fingerprint in message
        # A server that offered TLS before is never used in plain text with a password.
        server.restart("--tls", "off")
        with pytest.raises(trust.TrustError, match="offered TLS before"):
            open_link(server.port, trust.Policy(), known)
        with pytest.raises(trust.TrustError, match="offered TLS before"):
            open_link(server.port, trust.Policy(plain=True, has_password=True), known)
        assert open_link(server.port, trust.Policy(plain=True), known).transport == "plain"
        # A server never met over TLS, without TLS: plain text, and the client says so.
        assert open_link(server.port, trust.Policy(), trust.KnownServers(None)).transport == (
            "plain"
        )
    finally:
        server.stop()


# --------------------------------------------------------------------------- a real IRC client


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("irssi"), reason="irssi not installed (apt-get install irssi)")
@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux not installed")
def test_irssi_over_tls_in_tmux(server: ChatdProcess, tmp_path: Path) -> None:
    tmux = Tmux()
    home = tmp_path / "irssi"
    home.mkdir()
    tmux.run("new-session", "-d", "-s", "irssi", "-x", "160", "-y", "50", "-c", str(tmp_path))
    pane = Pane.__new__(Pane)  # the pane of a program that is not the chat client
    pane.tmux, pane.target = tmux, "irssi"
    tmux.run("respawn-pane", "-k", "-t", "irssi", f"irssi --home={home} -n irtls")
    try:
        pane.wait_for("Irssi", timeout=20)
        pane.type(f"/connect -tls -notls_verify 127.0.0.1 {server.irc_tls_port}")
        pane.press("Enter")
        pane.wait_for("irtls", timeout=20)
        jay = server.json_client("jay")

        def whois_answered() -> bool:
            jay.send_json(op="whois", nick="irtls")
            frame = jay.read_frame()
            return frame is not None and frame["type"] == "whois"

        wait_until(
            whois_answered,
            timeout=20,
            interval=0.2,
            what="irssi registered over TLS",
        )
        jay.join("#irs")
        pane.type("/join #irs")
        pane.press("Enter")
        jay.expect_frame(type="join", room="#irs", nick="irtls", timeout=10)
        jay.say("#irs", "hello irssi over tls")
        pane.wait_for("hello irssi over tls")
        pane.type("hello json, from irssi over tls")
        pane.press("Enter")
        jay.expect_frame(type="msg", **{"from": "irtls", "text": "hello json, from irssi over tls"})
        assert "TLS handshake" not in server.log()
    finally:
        tmux.close()


@pytest.mark.timeout(30)  # readline() on openssl's output has no deadline of its own
@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl command not installed")
def test_openssl_s_client_as_the_refusal_line_says(tmp_path: Path) -> None:
    """What --require-tls tells nc users to run really works, on the same port."""
    server = tls_server(tmp_path, "--require-tls")
    proc = subprocess.Popen(
        ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{server.port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        bob = TlsJsonClient(server.port)
        bob.hello("bob")
        bob.join("#lobby")
        assert "Type the nickname" in proc.stdout.readline()
        proc.stdin.write("ossluser\n")
        proc.stdin.flush()
        bob.expect_frame(type="join", room="#lobby", nick="ossluser")
        bob.say("#lobby", "hello openssl")
        for _ in range(20):
            if "hello openssl" in proc.stdout.readline():
                break
        else:
            raise AssertionError("openssl s_client never showed the message")
        proc.stdin.write("hello from s_client\n")
        proc.stdin.flush()
        bob.expect_frame(type="msg", text="hello from s_client")
    finally:
        proc.kill()
        proc.wait()
        server.stop()


def test_a_tls_reader_that_stops_is_cut_as_a_slow_consumer(tmp_path: Path) -> None:
    """The output limits count TLS bytes as they count plain ones: a TLS client that stops
    reading is skipped, then cut after the soft-limit time; a TLS reader that keeps up gets
    everything."""
    server = tls_server(
        tmp_path,
        "--out-soft-limit-bytes",
        "131072",
        "--out-hard-limit-bytes",
        "262144",
        "--out-soft-limit-seconds",
        "2",
        "--send-buffer-bytes",
        "4096",
        "--rate-limit",
        "0",
    )
    try:
        sleeper = RawClient(server.port, rcvbuf=4096)
        sleeper.sock = client_context().wrap_socket(sleeper.sock)
        sleeper.send(b'{"op":"hello","nick":"sleepy"}\n{"op":"join","room":"#flood"}\n')
        reader = TlsJsonClient(server.port)
        reader.hello("reader")
        reader.join("#flood")
        text = "y" * 1500
        for batch in range(0, 300, 10):  # the reader says it all, and reads it all back
            for n in range(batch, batch + 10):
                reader.say("#flood", f"{n} {text}")
            for n in range(batch, batch + 10):
                reader.expect_frame(type="msg", text=f"{n} {text}")
        wait_until(
            lambda: "disconnected as a slow consumer" in server.log(),
            timeout=10,
            what="the sleeper cut as a slow consumer",
        )
        log = server.log()
        assert "#1 127.0.0.1" in log and "is reading slowly" in log  # skipped first
        assert "closed: slow consumer: over the soft limit for 2s" in log
        assert log.count("disconnected as a slow consumer") == 1  # the sleeper (#1) alone
        assert re.search(r"#1 \S+ disconnected as a slow consumer", log)
    finally:
        server.stop()
