"""Moderation over real sockets, in all three protocols, and ``chatd ctl``.

A real chatd process on 127.0.0.1 (port 0), a history file in tmp_path (bans and founders
must survive a restart), JSON, text-mode and IRC clients. docs/moderation.md.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, ChatdProcess, JsonClient, RawClient, wait_until
from test_irc_server import IrcClient

PASSWORD = "correct horse"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChatdProcess]:
    opers = tmp_path / "opers"
    opers.write_text("boss hunter2hunter2\n")
    opers.chmod(0o600)
    proc = ChatdProcess(
        "--rate-limit",
        "0",
        "--db",
        str(tmp_path / "chat.db"),
        "--oper-password-file",
        str(opers),
        "--server-name",
        "irc.test",
        irc=True,
    )
    try:
        yield proc
    finally:
        proc.stop()


def founder(server: ChatdProcess, nick: str, room: str) -> JsonClient:
    """A JSON user who registers an account and founds ``room``."""
    client = JsonClient(server.port)
    client.hello(nick)
    client.send_json(op="register", password=PASSWORD, id="r")
    assert client.expect_frame(type="account", id="r")["event"] == "registered"
    joined = client.join(room)
    assert joined.get("ops") == [nick], joined
    return client


def irc_user(server: ChatdProcess, nick: str, *caps: str) -> IrcClient:
    assert server.irc_port
    client = IrcClient(server.irc_port)
    client.register(nick, *caps)
    return client


def text_user(server: ChatdProcess, nick: str, room: str) -> RawClient:
    client = server.text_client(nick)
    client.send_line(f"/join {room}")
    client.expect(lambda line: f"You joined {room}" in line)
    return client


def test_a_json_op_bans_an_irc_user_and_a_text_user_sees_it(server: ChatdProcess) -> None:
    ada = founder(server, "ada", "#ops")
    bob = irc_user(server, "bob")
    names = bob.join("#ops")
    assert any(re.search(r" 353 bob = #ops :@ada bob$", line) for line in names), names
    tex = text_user(server, "tex", "#ops")
    ada.send_json(op="ban", room="#ops", mask="bob", reason="spam", id="b")
    assert ada.expect_frame(type="mode", id="b")["args"] == ["bob!*@*"]
    bob.expect(lambda line: line == ":ada!ada@chatd MODE #ops +b bob!*@*")
    tex.expect(lambda line: line == "#ops -- ada set mode +b bob!*@*")
    ada.send_json(op="kick", room="#ops", nick="bob", reason="bye", id="k")
    bob.expect(lambda line: line == ":ada!ada@chatd KICK #ops bob :bye")
    tex.expect(lambda line: line == "#ops -- bob was kicked by ada (bye)")
    # back in, under another nick: the ban named bob's address too
    bob.send_line("NICK bobby")
    bob.expect(lambda line: " NICK " in line)
    bob.send_line("JOIN #ops")
    assert re.match(r":irc.test 474 bobby #ops :", bob.expect(lambda line: " 474 " in line))
    # the list, in IRC's form
    bob.send_line("MODE #ops +b")
    assert bob.expect(lambda line: " 367 " in line).startswith(
        ":irc.test 367 bobby #ops bob!*@* ada "
    )
    bob.expect(lambda line: " 368 bobby #ops " in line)


def test_a_muted_users_message_reaches_no_one(server: ChatdProcess) -> None:
    ada = founder(server, "ada", "#quiet")
    bob = irc_user(server, "bob")
    bob.join("#quiet")
    tex = text_user(server, "tex", "#quiet")
    tex.send_line("/mute bob 10m calm down")
    tex.expect(lambda line: "not_operator" in line)  # tex is no operator
    ada.send_json(op="mute", room="#quiet", mask="bob", duration=600, id="m")
    ada.expect_frame(type="mode", id="m")
    tex.expect(lambda line: line == "#quiet -- ada set mode +q bob!*@*")
    bob.send_line("PRIVMSG #quiet :SPAM SPAM")
    assert "muted" in bob.expect(lambda line: " 404 bob #quiet " in line)
    ada.send_json(op="say", room="#quiet", text="marker")
    assert "marker" in tex.expect(lambda line: "<" in line)  # nothing of bob's came first
    frame = ada.expect_frame(type="msg")
    assert frame["text"] == "marker"
    # an operator in text mode lifts the mute
    ada.send_json(op="mode", target="#quiet", modes="+o", args=["tex"], id="o")
    ada.expect_frame(type="mode", id="o")
    tex.expect(lambda line: line == "#quiet -- ada set mode +o tex")
    tex.send_line("/unmute bob")
    bob.expect(lambda line: line == ":tex!tex@chatd MODE #quiet -q bob!*@*")
    bob.send_line("PRIVMSG #quiet :sorry")
    assert ada.expect_frame(type="msg")["text"] == "sorry"


def test_a_server_ban_ends_a_held_session_at_once(server: ChatdProcess) -> None:
    """A user who dropped without quit is held (her nick and rooms kept for the nick hold,
    60 s here; docs/accounts.md). A server ban that matches her ends the hold now, as a
    kill does: the room sees her quit at once, her nick is free, her token resumes nothing.
    (The cluster's case: tests/test_cluster_together.py.)"""
    boss = server.json_client("boss", "#hall")
    boss.send_json(op="oper", name="boss", password="hunter2hunter2", id="o")
    boss.expect_frame(type="oper", id="o")
    eve = JsonClient(server.port, source="127.0.0.2")  # her own address, for the mask
    token = eve.hello("eve")["resume"]
    eve.join("#hall")
    boss.expect_frame(type="join", nick="eve")
    eve.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    eve.sock.close()  # a reset, no quit: a drop

    probe = JsonClient(server.port)  # from 127.0.0.1: not matched by the ban

    def held() -> bool:  # the server has seen the drop and holds eve's nick
        probe.send_json(op="hello", nick="eve")
        refused = probe.expect_frame(type="error")
        assert refused["code"] == "nick_taken", refused
        return "held" in refused["message"]

    wait_until(held, what="eve's nick held")
    boss.send_json(op="ban", server=True, mask="*!*@127.0.0.2", reason="spam", id="b")
    boss.send_json(op="who", room="#hall", id="w")
    assert boss.expect_frame(type="who", id="w")["members"] == ["boss"]
    quits = [json.loads(x) for x in boss.lines if '"quit"' in x]
    assert [q["nick"] for q in quits] == ["eve"], boss.lines
    # the nick is free at once for someone else
    probe.send_json(op="hello", nick="eve")
    assert not probe.expect_frame(type="welcome").get("resumed")
    # and her token resumes nothing: not from another address, not from hers
    for source in ("127.0.0.3", "127.0.0.2"):
        back = JsonClient(server.port, source=source)
        back.send_json(op="hello", nick="eve", resume=token)
        answer = back.expect_frame()
        assert answer["type"] == "error", answer
        assert answer["code"] == ("banned" if source == "127.0.0.2" else "nick_taken"), answer
        back.close()


def test_bans_modes_founders_and_the_log_survive_a_restart(server: ChatdProcess) -> None:
    ada = founder(server, "ada", "#keep")
    ada.send_json(op="ban", room="#keep", mask="evil", id="b")
    ada.expect_frame(type="mode", id="b")
    ada.send_json(op="mode", target="#keep", modes="+m", id="m")
    ada.expect_frame(type="mode", id="m")
    ada.send_json(op="quit")
    ada.read_until_closed()
    server.restart()
    evil = JsonClient(server.port)
    evil.hello("evil")
    evil.send_json(op="join", room="#keep", id="j")
    assert evil.expect_frame(type="error", id="j")["code"] == "banned"
    ada = JsonClient(server.port)
    ada.hello("ada", account_password=PASSWORD)
    joined = ada.join("#keep")
    assert joined.get("ops") == ["ada"]  # still the founder
    ada.send_json(op="mode", target="#keep", id="q")
    assert ada.expect_frame(type="mode", id="q")["modes"] == "+mnt"
    ada.send_json(op="modlog", room="#keep", id="l")
    entries = ada.expect_frame(type="modlog", id="l")["entries"]
    assert [e["target"] for e in entries] == ["+b evil!*@*", "+m"]


def test_irc_operator_powers_and_numerics(server: ChatdProcess) -> None:
    ann = irc_user(server, "ann", "multi-prefix")
    welcome_isupport = ann.register  # (already registered above; check 005 below)
    del welcome_isupport
    ann.send_line("OPER boss wrong")
    ann.expect(lambda line: line == ":irc.test 464 ann :Password incorrect")
    ann.send_line("OPER boss hunter2hunter2")
    ann.expect(lambda line: line == ":irc.test 381 ann :You are now an IRC operator")
    ann.expect(lambda line: line == ":ann!ann@chatd MODE ann :+o")
    ann.send_line("MODE ann")
    ann.expect(lambda line: line == ":irc.test 221 ann +io")
    ann.send_line("LUSERS")
    ann.expect(lambda line: line == ":irc.test 252 ann 1 :operator(s) online")
    ann.join("#plain")  # an unregistered room: only a server operator acts in it
    joe = irc_user(server, "joe")
    joe.join("#plain")
    joe.send_line("MODE #plain +o joe")
    joe.expect(lambda line: line.startswith(":irc.test 482 joe #plain :"))
    ann.send_line("MODE #plain +ov joe joe")
    joe.expect(lambda line: line == ":ann!ann@chatd MODE #plain +ov joe joe")
    ann.send_line("NAMES #plain")
    ann.expect(lambda line: line == ":irc.test 353 ann = #plain :ann @+joe")
    joe.send_line("NAMES #plain")
    joe.expect(lambda line: line == ":irc.test 353 joe = #plain :ann @joe")  # no multi-prefix
    ann.send_line("MODE #plain +it")
    joe.expect(lambda line: line == ":ann!ann@chatd MODE #plain +it")
    ann.send_line("MODE #plain")
    ann.expect(lambda line: line == ":irc.test 324 ann #plain +int")
    ann.send_line("WHOIS joe")
    assert ann.expect(lambda line: " 338 " in line) == (
        ":irc.test 338 ann joe 127.0.0.1 :Is actually using host"
    )
    ann.send_line("KILL joe :enough")
    joe.expect(lambda line: line == "ERROR :Closing link: killed by ann: enough")
    ann.expect(lambda line: line == ":joe!joe@chatd QUIT :Quit: killed by ann: enough")
    ann.send_line("KICK #plain nobody")
    ann.expect(lambda line: line == ":irc.test 441 ann nobody #plain :They aren't on that channel")


def test_irc_topic_lock_invite_and_key(server: ChatdProcess) -> None:
    ada = founder(server, "ada", "#lock")
    bob = irc_user(server, "bob")
    bob.join("#lock")
    bob.send_line("TOPIC #lock :mine")
    bob.expect(lambda line: line.startswith(":irc.test 482 bob #lock :"))
    ada.send_json(op="mode", target="#lock", modes="+ik", args=["sesame"], id="m")
    ada.expect_frame(type="mode", id="m")
    cy = irc_user(server, "cy")
    cy.send_line("JOIN #lock")
    cy.expect(lambda line: line.startswith(":irc.test 473 cy #lock :"))
    bob.send_line("INVITE cy #lock")
    bob.expect(lambda line: line.startswith(":irc.test 482 bob #lock :"))
    ada.send_json(op="invite", nick="cy", room="#lock", id="i")
    ada.expect_frame(type="invite", id="i")
    cy.expect(lambda line: line == ":ada!ada@chatd INVITE cy :#lock")
    cy.join("#lock")  # the invitation stands in for the key too
    dee = irc_user(server, "dee")
    dee.send_line("JOIN #lock")
    dee.expect(lambda line: " 473 " in line)


def test_isupport_and_myinfo_tell_the_truth(server: ChatdProcess) -> None:
    assert server.irc_port
    client = IrcClient(server.irc_port)
    welcome = client.register("ivy")
    tokens = " ".join(line for line in welcome if " 005 " in line).split()
    assert "PREFIX=(ov)@+" in tokens and "CHANMODES=bq,k,,imnt" in tokens and "MODES=6" in tokens
    (myinfo,) = [line for line in welcome if " 004 " in line]
    assert myinfo.split()[-3:] == ["io", "bikmnoqtv", "bkoqv"]


# ------------------------------------------------------------------ chatd ctl


def ctl(server: ChatdProcess, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", "ctl", "--db", str(tmp / "chat.db"), *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_ctl_against_a_running_server(server: ChatdProcess, tmp_path: Path) -> None:
    ada = founder(server, "ada", "#room")
    bob = irc_user(server, "bob")
    bob.join("#room")
    who = ctl(server, tmp_path, "who")
    assert who.returncode == 0, who.stderr
    assert re.search(r"^bob\t-\t127\.0\.0\.1\t#room$", who.stdout, re.M), who.stdout
    rooms = ctl(server, tmp_path, "rooms")
    assert "#room\t2\t+nt\tfounder: ada" in rooms.stdout
    stats = ctl(server, tmp_path, "--json", "stats")
    figures = json.loads(stats.stdout)
    assert figures["connections"] == 2 and figures["store_bytes"] > 0
    assert {"messages_per_second", "slow_consumers"} <= set(figures)
    kick = ctl(server, tmp_path, "kick", "#room", "bob", "from", "the", "console")
    assert kick.returncode == 0, kick.stderr
    bob.expect(lambda line: line == ":console!console@chatd KICK #room bob :from the console")
    ada.expect_frame(type="kick", nick="bob", by="console")
    announce = ctl(server, tmp_path, "announce", "restart", "at", "noon")
    assert announce.returncode == 0
    bob.expect(lambda line: "Announcement from console: restart at noon" in line)
    ban = ctl(server, tmp_path, "ban", "--duration", "1h", "$a:mallory", "spam")
    assert ban.returncode == 0 and "banned from the server" in ban.stdout
    refused = ctl(server, tmp_path, "kick", "#room", "nobody")
    assert refused.returncode == 1 and "not_in_that_room" in refused.stderr
    log = ctl(server, tmp_path, "modlog")
    assert "console: kick bob in #room (from the console)" in log.stdout
    assert "console: server ban $a:mallory (spam)" in log.stdout
    # the log (and the rooms and bans) are in `chatd backup`'s copy of the file
    copy = tmp_path / "backup.db"
    backup = subprocess.run(
        [sys.executable, "-m", "chatd", "backup", "--db", str(tmp_path / "chat.db"), str(copy)],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert backup.returncode == 0, backup.stderr
    with sqlite3.connect(copy) as db:
        actions = [row[0] for row in db.execute("SELECT action FROM chatd_modlog")]
        assert "kick" in actions and "server ban" in actions
        assert db.execute("SELECT founder FROM chatd_rooms").fetchall() == [("ada",)]


def test_ctl_reload_rereads_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "chatd.toml"
    conf.write_text('motd = "old news"\n')
    server = ChatdProcess("--config", str(conf), "--db", str(tmp_path / "chat.db"))
    try:
        conf.write_text('motd = "fresh news"\noperators = ["ada"]\n')
        reload = ctl(server, tmp_path, "reload")
        assert reload.returncode == 0, reload.stderr
        assert "motd" in reload.stdout and "operators" in reload.stdout
        client = JsonClient(server.port)
        assert client.hello("zed")["motd"] == ["fresh news"]
        conf.write_text("motd = [not toml\n")
        broken = ctl(server, tmp_path, "reload")
        assert broken.returncode == 1 and "bad_config" in broken.stderr
    finally:
        server.stop()


def test_ctl_socket_is_owner_only_and_refuses_another_user(
    server: ChatdProcess, tmp_path: Path
) -> None:
    path = str(tmp_path / "chat.db") + ".ctl"
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    os.chmod(tmp_path, 0o755)  # so that only the socket's own mode stands in the way
    probe = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1])\n"
        "except PermissionError:\n    print('refused')\nelse:\n    print('connected')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, path], capture_output=True, text=True, timeout=20
    )
    assert result.stdout.strip() == "refused", result.stderr
    # and the owner (root here) still gets in
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
