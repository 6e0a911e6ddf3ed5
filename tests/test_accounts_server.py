"""Accounts and nick hold against a real chatd process, in JSON, text and IRC.

Every client talks to 127.0.0.1 over real sockets; "alice's Wi-Fi drops" is a TCP reset
(SO_LINGER 0), which the server sees as a drop without quit. See docs/accounts.md.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, ChatdProcess, JsonClient, RawClient, wait_until
from test_irc_server import IrcClient, Tmux

PASSWORD = "alice-s3cret-pw"


def drop(client: RawClient) -> None:
    """The connection dies without a quit (a reset, as when Wi-Fi goes)."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()


def hello(server: ChatdProcess, nick: str, **fields: Any) -> tuple[JsonClient, dict[str, Any]]:
    """A JSON client's hello; returns the client and the welcome or error frame."""
    client = JsonClient(server.port)
    client.send_json(op="hello", nick=nick, **fields)
    answer = client.expect(lambda line: '"welcome"' in line or '"error"' in line)
    import json

    return client, json.loads(answer)


def registered(server: ChatdProcess, nick: str, password: str = PASSWORD) -> JsonClient:
    client, welcome = hello(server, nick)
    assert welcome["type"] == "welcome", welcome
    client.send_json(op="register", password=password, id="r")
    assert client.expect_frame(type="account", id="r")["event"] == "registered"
    return client


def leave(client: JsonClient) -> None:
    """A proper goodbye (a plain close is a drop: the nick would be held)."""
    client.send_json(op="quit")
    client.read_until_closed()
    client.close()


def members(server: ChatdProcess, room: str) -> list[str]:
    probe = server.json_client(f"probe{time.monotonic_ns() % 100000}")
    probe.send_json(op="who", room=room)
    got = probe.expect_frame(type="who")["members"]
    probe.send_json(op="quit")
    probe.close()
    return got  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the takeover


def test_takeover_without_accounts_the_token_wins(make_server) -> None:
    server = make_server("--rate-limit", "0")
    alice, welcome = hello(server, "alice")
    token = welcome["resume"]
    assert len(token) >= 20
    alice.join("#office")
    bob = server.json_client("bob", "#office")
    drop(alice)
    time.sleep(0.05)  # (not a wait for a condition: give the server a turn to see the RST)
    wait_until(lambda: "alice" in members(server, "#office"), what="alice still listed")
    # mallory, 0.4 ms later and for as long as the hold lasts: refused
    mallory, refused = hello(server, "alice")
    assert refused["code"] == "nick_taken" and "held" in refused["message"]
    mallory.send_json(op="hello", nick="mallory")
    mallory.expect_frame(type="welcome")
    mallory.send_json(op="nick", nick="alice", id="n")
    assert mallory.expect_frame(type="error", id="n")["code"] == "nick_taken"
    # bob's private message is kept for alice, and bob is told
    bob.send_json(op="msg", to="alice", text="the door code is 4711", id="m")
    bob.expect_frame(type="privmsg", id="m")
    assert "disconnected" in bob.expect_frame(type="notice", nick="alice")["text"]
    # alice comes back with her token: rooms, the message; bob sees no quit and no join
    back, welcome2 = hello(server, "alice", resume=token)
    assert welcome2["type"] == "welcome" and welcome2["resumed"] is True
    assert welcome2["resume"] != token
    assert back.expect_frame(type="joined", room="#office")["members"].count("alice") == 1
    assert back.expect_frame(type="privmsg")["text"] == "the door code is 4711"
    bob.send_json(op="ping", id="p")
    seen = []
    while (frame := bob.read_frame()) is not None and frame.get("id") != "p":
        seen.append(frame["type"])
    assert "quit" not in seen and "join" not in seen, seen
    mallory.send_json(op="ping", id="p")
    mallory_saw = []
    while (frame := mallory.read_frame()) is not None and frame.get("id") != "p":
        mallory_saw.append(frame)
    assert not any("4711" in str(f) for f in mallory_saw)


def test_takeover_with_an_account_after_the_hold_the_password_wins(make_server) -> None:
    server = make_server("--rate-limit", "0", "--nick-hold-seconds", "0.5")
    alice = registered(server, "alice")
    alice.join("#office")
    bob = server.json_client("bob", "#office")
    drop(alice)
    # within the hold
    mallory, refused = hello(server, "alice")
    assert refused["code"] in ("nick_taken", "nick_registered")
    # after the hold: the others see alice go, and the nick is still not mallory's
    bob.expect_frame(type="quit", nick="alice")
    mallory.send_json(op="hello", nick="alice", id="again")
    assert mallory.expect_frame(type="error", id="again")["code"] == "nick_registered"
    mallory.send_json(op="hello", nick="aIice", id="look-alike")  # capital i for l
    assert mallory.expect_frame(type="error", id="look-alike")["code"] == "nick_registered"
    mallory.send_json(op="hello", nick="alice", account_password="guess123", id="g")
    assert mallory.expect_frame(type="error", id="g")["code"] == "bad_login"
    bob.send_json(op="msg", to="alice", text="the door code is 4711", id="m")
    assert bob.expect_frame(type="error", id="m")["code"] == "no_such_nick"
    # alice logs in with her password, from a new connection
    back, welcome = hello(server, "alice", account_password=PASSWORD)
    assert welcome["type"] == "welcome" and welcome["account"] == "alice"
    bob.send_json(op="msg", to="alice", text="the door code is 4711")
    got = back.expect_frame(type="privmsg")
    assert got["text"] == "the door code is 4711" and got["from"] == "bob"
    mallory.send_json(op="ping", id="p")
    while (frame := mallory.read_frame()) is not None and frame.get("id") != "p":
        assert "4711" not in str(frame)
    assert PASSWORD not in server.log() and "guess123" not in server.log()


def test_password_login_resumes_a_held_session(make_server) -> None:
    server = make_server("--rate-limit", "0")
    alice = registered(server, "alice")
    alice.join("#a")
    bob = server.json_client("bob", "#a")
    drop(alice)
    back, welcome = hello(server, "alice", account="alice", account_password=PASSWORD)
    assert welcome["resumed"] is True and welcome["account"] == "alice"
    back.expect_frame(type="joined", room="#a")
    back.say("#a", "back")
    frame = bob.expect_frame(type="msg", text="back")
    assert frame["account"] == "alice"
    bob.say("#a", "hi")
    assert "account" not in back.expect_frame(type="msg", text="hi")


# --------------------------------------------------------------------------- JSON account ops


def test_json_identify_passwd_unregister(make_server) -> None:
    server = make_server("--rate-limit", "0")
    leave(registered(server, "alice"))
    # a registered nick cannot be taken by somebody else...
    other, refused = hello(server, "alice")
    assert refused["code"] in ("nick_registered", "nick_taken")
    other.send_json(op="hello", nick="ally")
    other.expect_frame(type="welcome")
    other.send_json(op="nick", nick="alice", id="n")
    assert other.expect_frame(type="error", id="n")["code"] in ("nick_registered", "nick_taken")
    # ...but its owner can log in later under another nick, and change and drop it
    me, _ = hello(server, "alice_away")
    me.send_json(op="identify", account="alice", password=PASSWORD, id="i")
    assert me.expect_frame(type="account", id="i") == {
        "type": "account",
        "account": "alice",
        "event": "identified",
        "id": "i",
    }
    me.send_json(op="passwd", password="wrong-password", new_password="x" * 10, id="w")
    assert me.expect_frame(type="error", id="w")["code"] == "bad_login"
    me.send_json(op="passwd", password=PASSWORD, new_password="a-new-password", id="p")
    assert me.expect_frame(type="account", id="p")["event"] == "password_changed"
    me.send_json(op="unregister", password="a-new-password", id="u")
    assert me.expect_frame(type="account", id="u") == {
        "type": "account",
        "account": None,
        "event": "dropped",
        "id": "u",
    }
    wait_until(lambda: hello(server, "alice")[1]["type"] == "welcome", what="nick free")
    log = server.log()
    for secret in (PASSWORD, "a-new-password", "wrong-password"):
        assert secret not in log


def test_policy_required_and_closed_registration(make_server, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    add_account(db, "ada", "ada-password")
    server = make_server("--db", str(db), "--accounts", "required", "--registration", "closed")
    _, refused = hello(server, "bob")
    assert refused["code"] == "account_required"
    ada, welcome = hello(server, "ada", account_password="ada-password")
    assert welcome["account"] == "ada"
    ada.send_json(op="register", password="whatever-pw", id="r")
    assert ada.expect_frame(type="error", id="r")["code"] in (
        "registration_closed",
        "already_registered",
    )
    off = make_server("--accounts", "off")
    user, _ = hello(off, "ada")
    user.send_json(op="register", password="whatever-pw", id="r")
    assert user.expect_frame(type="error", id="r")["code"] == "accounts_off"


# --------------------------------------------------------------------------- text mode


def test_text_mode_register_then_the_login_prompt(make_server) -> None:
    server = make_server("--rate-limit", "0")
    nc = server.text_client("alice")
    nc.send_line(f"/register {PASSWORD}")
    nc.expect(lambda line: "Account alice registered" in line)
    nc.send_line("/quit")
    nc.read_until_closed()
    again = RawClient(server.port)
    again.send_line("alice")
    again.expect(lambda line: "nick_registered" in line)
    again.expect(lambda line: "Type the password of account alice" in line)
    again.send_line("not-it-at-all")
    again.expect(lambda line: "bad_login" in line)
    again.send_line(PASSWORD)
    again.expect(lambda line: "You are logged in as alice" in line)
    again.expect(lambda line: "You joined #lobby" in line)
    again.send_line("/whois alice")
    again.expect(lambda line: "logged in as alice" in line)
    assert PASSWORD not in server.log() and "not-it-at-all" not in server.log()


def test_text_mode_identify_and_usage(make_server) -> None:
    server = make_server("--rate-limit", "0")
    leave(registered(server, "alice"))
    nc = server.text_client("someone")
    nc.send_line("/identify")
    nc.expect(lambda line: "usage: /identify" in line)
    nc.send_line(f"/identify alice {PASSWORD}")
    nc.expect(lambda line: "You are logged in as alice" in line)


# --------------------------------------------------------------------------- IRC


def sasl_plain(account: str, password: str) -> str:
    return base64.b64encode(f"{account}\0{account}\0{password}".encode()).decode()


def test_irc_sasl_plain_raw_lines(make_server) -> None:
    server = make_server("--rate-limit", "0", irc=True)
    leave(registered(server, "alice"))
    irc = IrcClient(server.irc_port)  # type: ignore[arg-type]
    irc.send_line("CAP LS 302")
    assert "sasl" in irc.expect(lambda line: " CAP * LS " in line)
    irc.send_line("CAP REQ :sasl account-tag")
    irc.expect(lambda line: " ACK " in line)
    irc.send_line("NICK alice")
    irc.send_line("USER alice 0 * :Alice")
    irc.send_line("AUTHENTICATE PLAIN")
    irc.expect(lambda line: line == "AUTHENTICATE +")
    irc.send_line("AUTHENTICATE " + sasl_plain("alice", "wrong-password"))
    irc.expect(lambda line: " 904 " in line)
    irc.send_line("AUTHENTICATE PLAIN")
    irc.expect(lambda line: line == "AUTHENTICATE +")
    irc.send_line("AUTHENTICATE " + sasl_plain("alice", PASSWORD))
    assert " alice " in irc.expect(lambda line: " 900 " in line)
    irc.expect(lambda line: " 903 " in line)
    irc.send_line("CAP END")
    irc.expect(lambda line: " 001 alice " in line)
    irc.send_line("JOIN #irc")
    irc.expect(lambda line: " 366 " in line)
    json_user = server.json_client("jay", "#irc")
    irc.send_line("PRIVMSG #irc :from a logged-in IRC user")
    assert json_user.expect_frame(type="msg")["account"] == "alice"
    json_user.say("#irc", "plain")
    line = irc.expect(lambda line: "PRIVMSG #irc :plain" in line)
    assert "account=" not in line  # jay is not logged in
    irc.send_line("WHOIS alice")
    assert "is logged in as" in irc.expect(lambda line: " 330 " in line)
    assert PASSWORD not in server.log()


def test_irc_nickserv_register_identify_and_pass(make_server) -> None:
    server = make_server("--rate-limit", "0", irc=True)
    irc = IrcClient(server.irc_port)  # type: ignore[arg-type]
    irc.register("carol")
    irc.send_line(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
    irc.expect(lambda line: " 900 " in line)
    irc.expect(lambda line: line.startswith(":NickServ!") and "registered" in line)
    irc.send_line("QUIT :bye")
    # another IRC user: the nick is refused (433), NickServ IDENTIFY gets it
    other = IrcClient(server.irc_port)  # type: ignore[arg-type]
    other.send_line("NICK carol")
    other.send_line("USER carol 0 * :Carol")
    assert "registered" in other.expect(lambda line: " 433 " in line)
    other.send_line("NICK carol_")
    other.expect(lambda line: " 001 carol_ " in line)
    other.send_line("PRIVMSG NickServ :IDENTIFY carol wrong-password")
    other.expect(lambda line: line.startswith(":NickServ!") and "wrong" in line)
    other.send_line(f"PRIVMSG NickServ :IDENTIFY carol {PASSWORD}")
    other.expect(lambda line: " 900 " in line)
    other.send_line("NICK carol")
    other.expect(lambda line: "NICK" in line and ":carol" in line and "carol_!" in line)
    # PASS account:password at registration (ergo's form)
    third = IrcClient(server.irc_port)  # type: ignore[arg-type]
    third.register("carol2", password=f"carol:{PASSWORD}")
    third.send_line("WHOIS carol2")
    assert " carol " in third.expect(lambda line: " 330 " in line)


def test_the_irc_package_logs_in_with_sasl(make_server) -> None:
    irc_client = pytest.importorskip("irc.client", reason="pip install irc (the 'irc' extra)")
    server = make_server("--rate-limit", "0", irc=True)
    leave(registered(server, "libbot"))
    reactor = irc_client.Reactor()
    welcomed = threading.Event()
    logged_in: list[str] = []
    failed: list[str] = []
    reactor.add_global_handler("welcome", lambda c, e: welcomed.set())
    reactor.add_global_handler("loggedin", lambda c, e: logged_in.append(str(e.arguments)))
    reactor.add_global_handler("login_failed", lambda c, e: failed.append(str(e.arguments)))
    connection = reactor.server().connect(
        "127.0.0.1",
        server.irc_port,
        "libbot",
        password=PASSWORD,
        sasl_login="libbot",
    )
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            reactor.process_once(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(welcomed.is_set, what="001 after SASL")
        assert logged_in and not failed, (logged_in, failed)
        jay = server.json_client("jay")
        jay.send_json(op="whois", nick="libbot", id="w")
        assert jay.expect_frame(type="whois", id="w")["account"] == "libbot"
    finally:
        stop.set()
        thread.join(5)
        connection.close()


# --------------------------------------------------------------------------- the CLI


def chatd_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def add_account(db: Path, name: str, password: str) -> None:
    result = chatd_cli("account", "--db", str(db), "add", name, stdin=password + "\n")
    assert result.returncode == 0, result.stderr


def test_cli_manages_accounts_while_the_server_runs(make_server, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    add_account(db, "ada", "ada-password")  # server stopped (file new)
    server = make_server("--db", str(db), "--rate-limit", "0")
    add_account(db, "bea", "bea-password")  # server running
    config = tmp_path / "chatd.toml"
    config.write_text(f'db = "{db}"\n')
    listed = chatd_cli("account", "--config", str(config), "list")
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["ada", "bea"]
    _, welcome = hello(server, "bea", account_password="bea-password")
    assert welcome["account"] == "bea"
    again = chatd_cli("account", "--db", str(db), "add", "ada", stdin="whatever-pw\n")
    assert again.returncode == 1 and "exists" in again.stderr
    short = chatd_cli("account", "--db", str(db), "add", "cy", stdin="short\n")
    assert short.returncode != 0 and "8 to 200" in short.stderr
    changed = chatd_cli("account", "--db", str(db), "passwd", "ada", stdin="ada-new-password\n")
    assert changed.returncode == 0, changed.stderr
    _, old = hello(server, "ada", account_password="ada-password")
    assert old["code"] == "bad_login"
    _, new = hello(server, "ada", account_password="ada-new-password")
    assert new["account"] == "ada"
    deleted = chatd_cli("account", "--db", str(db), "delete", "bea")
    assert deleted.returncode == 0
    assert chatd_cli("account", "--db", str(db), "delete", "bea").returncode == 1
    # history and accounts survive a restart in the one file
    server.restart()
    _, after = hello(server, "ada", account_password="ada-new-password")
    assert after["account"] == "ada"
    for text in (listed.stdout, changed.stdout, server.log()):
        assert "password" not in text.replace("password changed", "")


# --------------------------------------------------------------------------- brute force


def guess_for(server: ChatdProcess, seconds: float) -> dict[str, float]:
    """One address guesses alice's password as fast as it can for ``seconds``."""
    counts = {"bad_login": 0, "throttled": 0, "connections": 0}
    start = time.monotonic()
    client: JsonClient | None = None
    while time.monotonic() - start < seconds:
        if client is None:
            client = JsonClient(server.port)
            client.send_json(op="hello", nick=f"guesser{counts['connections']}")
            client.expect_frame(type="welcome")
            counts["connections"] += 1
        client.send_json(op="identify", account="alice", password="guess-1234")
        frame = client.expect_frame(type="error")
        counts[frame["code"]] = counts.get(frame["code"], 0) + 1
        if frame["code"] == "bad_login" and counts["bad_login"] % 3 == 0:
            client.read_until_closed()  # closed after max_password_failures
            client = None
    elapsed = time.monotonic() - start
    return {**counts, "seconds": elapsed, "guesses_per_s": counts["bad_login"] / elapsed}


def test_brute_force_from_one_address_is_throttled(make_server) -> None:
    server = make_server("--rate-limit", "0")
    leave(registered(server, "alice"))
    got = guess_for(server, 3.0)
    print("brute force, one address:", got)
    # The per-address budget (password_guess_burst 10, then 1 a second) and alice's own
    # delay (doubling to 2 s). A bound from the elapsed time, not a speed assertion.
    assert got["bad_login"] <= 10 + got["seconds"] * 1.0 + 1, got
    assert got["throttled"] > got["bad_login"], got
    # meanwhile the owner, from another address, gets in within the account's cap (2 s)
    start = time.monotonic()
    owner = from_address(server, "127.0.0.2")
    owner.send_json(op="hello", nick="alice_", account="alice", account_password=PASSWORD)

    def logged_in() -> bool:
        frame = owner.expect(lambda line: '"welcome"' in line or '"error"' in line)
        if '"welcome"' in frame:
            return True
        assert '"throttled"' in frame, frame  # only slowed, never refused for good
        owner.send_json(op="hello", nick="alice_", account="alice", account_password=PASSWORD)
        return False

    wait_until(logged_in, timeout=5, interval=0.3, what="the owner gets in")
    print(f"owner from another address got in after {time.monotonic() - start:.2f}s")


def from_address(server: ChatdProcess, source: str) -> JsonClient:
    """A JSON client whose connection comes from ``source`` (another loopback address)."""
    client = JsonClient.__new__(JsonClient)
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", server.port))
    client.sock, client.timeout, client._buf, client.lines = sock, 5.0, b"", []
    return client


# --------------------------------------------------------------------------- real IRC clients


@pytest.mark.e2e
@pytest.mark.skipif(
    not shutil.which("weechat-headless"),
    reason="WeeChat not installed (apt-get install weechat-headless)",
)
def test_weechat_logs_in_with_sasl(make_server, tmp_path: Path) -> None:
    server = make_server("--rate-limit", "0", irc=True)
    leave(registered(server, "weealice"))
    jay = server.json_client("jay", "#wee")  # in the room first, to see weealice join
    home = tmp_path / "weechat"
    setup = (
        "/set logger.file.flush_delay 0;"
        f"/server add chatd 127.0.0.1/{server.irc_port} -notls -nicks=weealice "
        f"-sasl_mechanism=plain -sasl_username=weealice -sasl_password={PASSWORD} "
        "-autojoin=#wee;/connect chatd"
    )
    proc = subprocess.Popen(
        ["weechat-headless", "--dir", str(home), "-r", setup],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        jay.expect_frame(type="join", room="#wee", nick="weealice", timeout=20)
        jay.send_json(op="whois", nick="weealice", id="w")
        assert jay.expect_frame(type="whois", id="w", timeout=20)["account"] == "weealice"
        fifo = home / f"weechat_fifo_{proc.pid}"
        wait_until(fifo.exists, timeout=20, what="WeeChat's FIFO")
        log = home / "logs" / "irc.chatd.#wee.weechatlog"  # WeeChat has the #wee buffer
        wait_until(lambda: log.exists() and "has joined" in log.read_text(), timeout=20)
        with fifo.open("w") as pipe:
            pipe.write("irc.chatd.#wee *signed message\n")
        got = jay.expect_frame(type="msg", text="signed message", timeout=20)
        assert got["from"] == "weealice" and got["account"] == "weealice"
        with fifo.open("w") as pipe:
            pipe.write("irc.server.chatd */quit bye\n")
        jay.expect_frame(type="quit", nick="weealice", timeout=20)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert PASSWORD not in server.log()


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("irssi"), reason="irssi not installed (apt-get install irssi)")
@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux not installed")
def test_irssi_in_tmux_logs_in_with_sasl(make_server, tmp_path: Path) -> None:
    server = make_server("--rate-limit", "0", irc=True)
    leave(registered(server, "iralice"))
    name = f"chatd-irssi-sasl-{time.monotonic_ns()}"
    tmux = Tmux(name)
    (tmp_path / "irssi").mkdir()
    tmux.run(
        "new-session", "-d", "-s", name, "-x", "160", "-y", "50",
        f"irssi --home={tmp_path / 'irssi'} -n iralice",
    )  # fmt: skip
    try:
        wait_until(lambda: "Irssi" in tmux.screen(), timeout=20, what="irssi started")
        tmux.type(
            "/network add -sasl_username iralice -sasl_password "
            f"{PASSWORD} -sasl_mechanism PLAIN chatdnet"
        )
        tmux.type(f"/server add -network chatdnet 127.0.0.1 {server.irc_port}")
        tmux.type("/connect chatdnet")
        wait_until(
            lambda: "SASL authentication succeeded" in tmux.screen(),
            timeout=20,
            what="irssi's SASL login",
        )
        jay = server.json_client("jay")
        wait_until(lambda: whois_account(jay, "iralice") == "iralice", timeout=10, what="logged in")
        tmux.type("/quit bye")
    finally:
        tmux.run("kill-session", "-t", name)


def whois_account(client: JsonClient, nick: str) -> str | None:
    client.send_json(op="whois", nick=nick, id="wa")
    frame = client.expect(lambda line: '"id":"wa"' in line.replace(" ", ""))
    import json

    return json.loads(frame).get("account")  # type: ignore[no-any-return]


def test_token_takes_over_a_connection_the_server_thinks_alive(make_server) -> None:
    """Half-open TCP: alice's laptop came back on another network before the server
    noticed the old connection was dead. Her token moves the session at once."""
    server = make_server("--rate-limit", "0")
    old, welcome = hello(server, "alice")
    old.join("#a")
    bob = server.json_client("bob", "#a")
    new, back = hello(server, "alice", resume=welcome["resume"])
    assert back["resumed"] is True
    new.expect_frame(type="joined", room="#a")
    assert "taken over" in old.expect_frame(type="notice")["text"]
    old.read_until_closed()
    bob.say("#a", "still there?")
    new.expect_frame(type="msg", text="still there?")
    bob.send_json(op="ping", id="p")
    while (frame := bob.read_frame()) is not None and frame.get("id") != "p":
        assert frame["type"] not in ("quit", "join"), frame
