"""The IRC listener against a real chatd process: raw IRC lines, then real IRC clients.

Everything talks to 127.0.0.1 on ports the server picked (``--irc-port 0``); every wait
polls with a deadline. The client-library test needs the ``irc`` package (PyPI; the
``irc`` extra of pyproject.toml) and is skipped without it; the terminal-client test needs
WeeChat (``weechat-headless``) and is skipped without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ChatdProcess, JsonClient, RawClient, wait_until


class IrcClient(RawClient):
    """Raw IRC lines over a socket; answers nothing by itself."""

    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def read_line(self, timeout: float | None = None) -> str | None:
        line = super().read_line(timeout)
        if line is not None:
            assert line.endswith("\r"), f"not CRLF-terminated: {line!r}"
            line = line[:-1]
        return line

    def register(self, nick: str, *caps: str, password: str | None = None) -> list[str]:
        if caps:
            self.send_line("CAP LS 302")
            self.send_line("CAP REQ :" + " ".join(caps))
        if password is not None:
            self.send_line(f"PASS {password}")
        self.send_line(f"NICK {nick}")
        self.send_line(f"USER {nick} 0 * :{nick} the tester")
        if caps:
            self.send_line("CAP END")
        welcome = []
        while True:
            line = self.expect(lambda line: True)
            welcome.append(line)
            if re.match(r":\S+ (376|422) ", line):
                return welcome

    def join(self, room: str) -> list[str]:
        self.send_line(f"JOIN {room}")
        got = []
        while True:
            line = self.expect(lambda line: True)
            got.append(line)
            if " 366 " in line and room.lower() in line.lower():
                return got


@pytest.fixture
def server() -> Iterator[ChatdProcess]:
    proc = ChatdProcess("--rate-limit", "0", "--server-name", "irc.test", irc=True)
    try:
        yield proc
    finally:
        proc.stop()


def irc(server: ChatdProcess) -> IrcClient:
    assert server.irc_port
    return IrcClient(server.irc_port)


def test_listener_is_announced_and_registration_works(server: ChatdProcess) -> None:
    assert any(line.strip().endswith("(irc)") for line in server.stdout_lines)
    client = irc(server)
    welcome = client.register("ann", "server-time", "echo-message")
    assert welcome[0].startswith(":irc.test CAP * LS :")
    assert welcome[1] == ":irc.test CAP * ACK :server-time echo-message"
    assert welcome[2] == ":irc.test 001 ann :Welcome to chatd on irc.test, ann"
    assert any("CASEMAPPING=rfc1459" in line for line in welcome)
    client.send_line("PING :lag-check")
    assert client.expect(lambda line: "PONG" in line) == ":irc.test PONG irc.test :lag-check"
    client.send_line("QUIT :done")
    assert client.expect(lambda line: True).startswith("ERROR :Closing link: ann")
    assert client.read_until_closed() == []


def test_irc_json_and_text_users_see_each_other(server: ChatdProcess) -> None:
    ann = irc(server)
    ann.register("ann")
    ann.join("#lobby")
    jay = JsonClient(server.port)
    jay.hello("jay")
    jay.join("#lobby")
    ann.expect(lambda line: line == ":jay!jay@chatd JOIN #lobby")
    tex = server.text_client("tex")
    ann.expect(lambda line: line == ":tex!tex@chatd JOIN #lobby")
    jay.expect_frame(type="join", nick="tex")

    # messages, each in its own protocol
    ann.send_line("PRIVMSG #lobby :hello from irc")
    jay.expect_frame(type="msg", **{"from": "ann", "text": "hello from irc"})
    tex.expect(lambda line: "#lobby <ann> hello from irc" in line)
    jay.say("#lobby", "hello from json")
    ann.expect(lambda line: line == ":jay!jay@chatd PRIVMSG #lobby :hello from json")
    tex.send_line("hello from text")
    ann.expect(lambda line: line == ":tex!tex@chatd PRIVMSG #lobby :hello from text")
    tex.send_line("/me waves")
    ann.expect(lambda line: line == ":tex!tex@chatd PRIVMSG #lobby :\x01ACTION waves\x01")
    ann.send_line("PRIVMSG #lobby :\x01ACTION nods\x01")
    tex.expect(lambda line: "#lobby * ann nods" in line)
    ann.send_line("PRIVMSG jay :private word")
    jay.expect_frame(type="privmsg", to="jay", text="private word")

    # topics
    ann.send_line("TOPIC #lobby :set from irc")
    jay.expect_frame(type="topic", topic="set from irc", by="ann")
    tex.expect(lambda line: "ann set the topic: set from irc" in line)
    jay.send_json(op="topic", room="#lobby", topic="set from json")
    ann.expect(lambda line: line == ":jay!jay@chatd TOPIC #lobby :set from json")

    # nick changes
    ann.send_line("NICK anna")
    ann.expect(lambda line: line == ":ann!ann@chatd NICK :anna")
    jay.expect_frame(type="nick", old="ann", new="anna")
    tex.send_line("/nick texas")
    ann.expect(lambda line: line == ":tex!tex@chatd NICK :texas")

    # parts and quits
    jay.send_json(op="part", room="#lobby", reason="brb")
    ann.expect(lambda line: line == ":jay!jay@chatd PART #lobby :brb")
    ann.send_line("PART #lobby :leaving too")
    ann.expect(lambda line: line == ":anna!anna@chatd PART #lobby :leaving too")
    tex.expect(lambda line: "anna left (leaving too)" in line)
    ann.send_line("JOIN #lobby")
    tex.expect(lambda line: "anna joined" in line)
    tex.send_line("/quit gone")
    ann.expect(lambda line: line == ":texas!texas@chatd QUIT :Quit: gone")
    ann.send_line("QUIT :me too")
    ann.expect(lambda line: line.startswith("ERROR"))
    for client in (ann, jay, tex):
        client.close()


def test_long_json_text_is_split_for_irc_within_512_bytes(server: ChatdProcess) -> None:
    ann = irc(server)
    ann.register("ann", "server-time", "message-tags")
    ann.join("#a")
    jay = server.json_client("jay", "#a")
    text = " ".join(f"w{i:04d}" for i in range(300)) + "\nand a second line"
    jay.say("#a", text)
    got: list[str] = []
    while not got or not got[-1].endswith("and a second line"):
        got.append(ann.expect(lambda line: "PRIVMSG" in line))
    assert len(got) >= 4
    for line in got:
        assert line.startswith("@time=") and ";msgid=" in line.split(" ")[0]
        assert len(line.split(" ", 1)[1].encode()) + 2 <= 512
    words = " ".join(line.split(" PRIVMSG #a :", 1)[1] for line in got).split()
    assert words == text.split()


def test_history_replay_reaches_irc_users(server: ChatdProcess) -> None:
    pytest.importorskip("chatd.history", reason="this chatd has no history store yet")
    jay = server.json_client("jay", "#hist")
    jay.say("#hist", "said before")
    jay.expect_frame(type="msg", text="said before")
    timed = irc(server)
    timed.register("tim", "server-time")
    got = timed.join("#hist")
    while "End of history" not in got[-1]:
        got.append(timed.expect(lambda line: True))
    [replayed] = [line for line in got if "PRIVMSG" in line]
    assert replayed.startswith("@time=") and replayed.endswith(" PRIVMSG #hist :said before")
    plain = irc(server)
    plain.register("pat")
    plain.join("#hist")
    replayed = plain.expect(lambda line: "PRIVMSG" in line)
    assert re.search(r"PRIVMSG #hist :\[\d{4}-\d\d-\d\d \d\d:\d\d\] said before$", replayed)
    plain.expect(lambda line: "NOTICE #hist :End of history" in line)


def test_framing_limits_and_bad_bytes_on_the_irc_port(server: ChatdProcess) -> None:
    ann = irc(server)
    ann.register("ann")
    ann.join("#a")
    jay = server.json_client("jay", "#a")
    ann.send(b"PRIVMSG #a :" + b"x" * 5000 + b"\r\n")
    assert " 417 ann " in ann.expect(lambda line: " 417 " in line)
    ann.send(b"PRIVMSG #a :caf\xe9 cr\xe8me\r\n")  # a Latin-1 client
    jay.expect_frame(type="msg", text="café crème")
    ann.send_line("FROBNICATE now")
    assert (
        ann.expect(lambda line: " 421 " in line) == ":irc.test 421 ann FROBNICATE :Unknown command"
    )
    ann.send_line("PRIVMSG #a :still fine")
    jay.expect_frame(type="msg", text="still fine")


def test_password_and_registration_timeout(make_server: type[ChatdProcess], tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("sesame\n")
    proc = make_server(
        "--password-file", str(secret), "--register-timeout-seconds", "0.5", irc=True
    )
    assert proc.irc_port
    wrong = IrcClient(proc.irc_port)
    wrong.send_line("PASS nope")
    wrong.send_line("NICK ann")
    wrong.send_line("USER ann 0 * :ann")
    assert " 464 * " in wrong.expect(lambda line: " 464 " in line)
    right = IrcClient(proc.irc_port)
    assert any(" 001 bob " in line for line in right.register("bob", password="sesame"))
    idle = IrcClient(proc.irc_port)
    idle.send_line("NICK slow")
    assert idle.expect(lambda line: line.startswith("ERROR")).startswith("ERROR :Closing link")
    assert idle.read_until_closed() == []
    wrong.close()
    right.close()


# --------------------------------------------------------------------------- a real client library


def test_the_irc_package_client_talks_to_chatd(server: ChatdProcess) -> None:
    irc_client = pytest.importorskip("irc.client", reason="pip install irc (the 'irc' extra)")
    reactor = irc_client.Reactor()
    seen: list[tuple[str, str, str]] = []
    welcomed = threading.Event()

    def on_welcome(conn: object, event: object) -> None:
        welcomed.set()
        conn.join("#lib")  # type: ignore[attr-defined]

    def on_any(conn: object, event: object) -> None:
        args = getattr(event, "arguments", None) or [""]
        seen.append((event.type, str(event.target), str(args[0])))  # type: ignore[attr-defined]

    connection = reactor.server().connect(
        "127.0.0.1", server.irc_port, "libbot", ircname="library bot"
    )
    connection.add_global_handler("welcome", on_welcome)
    for kind in ("join", "pubmsg", "privmsg", "action", "namreply", "topic", "nick", "part"):
        reactor.add_global_handler(kind, on_any)

    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            reactor.process_once(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(welcomed.is_set, what="001 from chatd")
        wait_until(
            lambda: getattr(connection.features, "casemapping", None) == "rfc1459",
            what="the library to read 005 (it follows 001: reading at once raced)",
        )
        wait_until(lambda: ("join", "#lib", "") in seen, what="own JOIN echo")
        jay = server.json_client("jay", "#lib")
        jay.say("#lib", "hello library")
        wait_until(lambda: ("pubmsg", "#lib", "hello library") in seen, what="pubmsg")
        reactor.scheduler.execute_after(0, lambda: connection.privmsg("#lib", "hi jay"))
        jay.expect_frame(type="msg", **{"from": "libbot", "text": "hi jay"})
        reactor.scheduler.execute_after(0, lambda: connection.action("#lib", "beeps"))
        jay.expect_frame(type="msg", action=True, text="beeps")
        jay.send_json(op="msg", to="libbot", text="psst")
        wait_until(lambda: ("privmsg", "libbot", "psst") in seen, what="privmsg")
        reactor.scheduler.execute_after(0, lambda: connection.nick("libbot2"))
        jay.expect_frame(type="nick", old="libbot", new="libbot2")
        wait_until(lambda: connection.get_nickname() == "libbot2", what="library sees new nick")
        reactor.scheduler.execute_after(0, lambda: connection.quit("bye"))
        jay.expect_frame(type="quit", nick="libbot2")
        jay.close()
    finally:
        stop.set()
        thread.join(5)
        connection.close()


# --------------------------------------------------------------------------- real clients


@pytest.mark.e2e
@pytest.mark.skipif(
    not shutil.which("weechat-headless"),
    reason="WeeChat not installed (apt-get install weechat-headless)",
)
def test_weechat_chats_with_a_json_user(server: ChatdProcess, tmp_path: Path) -> None:
    """WeeChat's own IRC plugin, driven through its FIFO, read through its channel log."""
    home = tmp_path / "weechat"
    setup = (
        '/set logger.file.flush_delay 0;/set irc.look.display_join_message "";'
        f"/server add chatd 127.0.0.1/{server.irc_port} -notls -nicks=weebob "
        "-autojoin=#wee;/connect chatd"
    )
    proc = subprocess.Popen(
        ["weechat-headless", "--dir", str(home), "-r", setup],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        fifo = home / f"weechat_fifo_{proc.pid}"
        log = home / "logs" / "irc.chatd.#wee.weechatlog"
        jay = server.json_client("jay", "#wee")
        jay.expect_frame(type="join", room="#wee", nick="weebob", timeout=20)
        wait_until(fifo.exists, what="WeeChat's FIFO")
        jay.say("#wee", "hello weechat")
        wait_until(
            lambda: log.exists() and "jay\thello weechat" in log.read_text(),
            timeout=10,
            what="the message in WeeChat's log",
        )
        with fifo.open("w") as pipe:
            pipe.write("irc.chatd.#wee *hello json, from weechat\n")
        jay.expect_frame(type="msg", **{"from": "weebob", "text": "hello json, from weechat"})
        with fifo.open("w") as pipe:
            pipe.write("irc.chatd.#wee */me waves\n")
        jay.expect_frame(type="msg", action=True, text="waves")
        jay.send_json(op="topic", room="#wee", topic="weechat topic")
        wait_until(lambda: "weechat topic" in log.read_text(), timeout=10, what="topic")
        with fifo.open("w") as pipe:
            pipe.write("irc.server.chatd */quit bye from weechat\n")
        jay.expect_frame(type="quit", nick="weebob", reason="bye from weechat")
        jay.close()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-J", "-t", self.name, "-S", "-200")

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", self.name, "-l", text)
        self.run("send-keys", "-t", self.name, "Enter")


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("irssi"), reason="irssi not installed (apt-get install irssi)")
@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux not installed")
def test_irssi_in_tmux_chats_with_a_json_user(server: ChatdProcess, tmp_path: Path) -> None:
    name = f"chatd-irssi-{time.monotonic_ns()}"
    tmux = Tmux(name)
    (tmp_path / "irssi").mkdir()
    tmux.run(
        "new-session",
        "-d",
        "-s",
        name,
        "-x",
        "160",
        "-y",
        "50",
        f"irssi --home={tmp_path / 'irssi'} -c 127.0.0.1 -p {server.irc_port} -n irbob",
    )
    try:
        jay = server.json_client("jay", "#irs")
        wait_until(
            lambda: "Welcome to chatd on irc.test, irbob" in tmux.screen(),
            timeout=20,
            what="irssi registered",
        )
        assert "chatd has no user modes" not in tmux.screen()  # irssi's MODE +i is quiet
        tmux.type("/join #irs")
        jay.expect_frame(type="join", room="#irs", nick="irbob", timeout=10)
        jay.say("#irs", "hello irssi")
        wait_until(
            lambda: re.search(r"< ?jay> hello irssi", tmux.screen()),
            timeout=10,
            what="jay's message on irssi's screen",
        )
        tmux.type("hello json, from irssi")
        jay.expect_frame(type="msg", **{"from": "irbob", "text": "hello json, from irssi"})
        tmux.type("/nick irbob2")
        jay.expect_frame(type="nick", old="irbob", new="irbob2")
        tmux.type("/who #irs")  # irssi shows a 352 as: channel nick flags hops user@host [real]
        tmux.type("/lusers")
        tmux.type("/window 1")  # both answers go to the status window
        wait_until(
            lambda: (
                re.search(r"#irs\s+jay\s+H\s+0\s+jay@chatd \[jay\]", tmux.screen())
                and "There are 0 users and 2 invisible on 1 servers" in tmux.screen()
            ),
            timeout=10,
            what="WHO #irs and LUSERS on irssi's screen",
        )
        tmux.type("/window 2")
        jay.send_json(op="part", room="#irs", reason="see you")
        wait_until(
            lambda: "jay [jay@chatd] has left #irs [see you]" in tmux.screen(),
            timeout=10,
            what="the part on irssi's screen",
        )
        tmux.type("/quit bye from irssi")

        def irbob_gone() -> bool:
            jay.send_json(op="whois", nick="irbob2")
            while True:
                frame = jay.read_frame()
                assert frame is not None
                if frame["type"] in ("whois", "error"):
                    return bool(frame["type"] == "error" and frame["code"] == "no_such_nick")

        wait_until(irbob_gone, timeout=10, interval=0.1, what="irssi's QUIT")
        jay.close()
    finally:
        tmux.run("kill-session", "-t", name)


def test_server_pings_a_silent_irc_client_and_drops_a_dead_one() -> None:
    proc = ChatdProcess(
        "--idle-ping-seconds",
        "0.5",
        "--idle-drop-seconds",
        "2",
        "--server-name",
        "irc.test",
        irc=True,
    )
    try:
        alive = irc(proc)
        alive.register("alive")
        dead = irc(proc)
        dead.register("dead")
        json_user = proc.json_client("quiet", "#a")  # JSON peers are never pinged
        assert alive.expect(lambda line: line.startswith("PING"), timeout=5) == "PING :irc.test"
        alive.send_line("PONG :irc.test")
        dead.expect(lambda line: line.startswith("PING"), timeout=5)
        lines = dead.read_until_closed(timeout=10)  # never answers: dropped
        assert any(line.startswith("ERROR") and "ping timeout" in line for line in lines), lines
        wait_until(lambda: "ping timeout" in proc.log(), what="the drop to be logged")
        alive.expect(lambda line: line.startswith("PING"), timeout=5)  # pinged again
        alive.send_line("PING :still-here")
        assert alive.expect(lambda line: "PONG" in line).endswith("still-here")
        json_user.send_json(op="ping", id=1)
        assert json_user.expect_frame(type="pong", id=1)  # no ping frame came before it
        assert not [line for line in json_user.lines if '"ping"' in line]
    finally:
        proc.stop()


def test_full_server_refuses_an_irc_client_with_an_error_line() -> None:
    proc = ChatdProcess("--max-clients", "1", "--server-name", "irc.test", irc=True)
    try:
        first = irc(proc)
        first.register("first")
        late = irc(proc)
        lines = late.read_until_closed(timeout=5)
        assert lines and lines[0].startswith("ERROR :") and "server is full" in lines[0]
    finally:
        proc.stop()


def test_list_cut_at_the_reply_budget_says_how_many_rooms_are_missing() -> None:
    """LIST is cut at max_reply_bytes like the rooms list of the other modes; the IRC
    client is told so (a server NOTICE before 323), not left to believe it saw them all."""
    proc = ChatdProcess(
        "--rate-limit", "0", "--server-name", "irc.test", "--max-reply-bytes", "1536", irc=True
    )
    try:
        client = irc(proc)
        client.register("lister")
        for i in range(20):
            client.join(f"#room{i:02d}")
        client.send_line("LIST")
        listed, notices = [], []
        while True:
            line = client.expect(lambda line: True)
            if " 322 " in line:
                listed.append(line.split()[3])
            elif " NOTICE lister :" in line:
                notices.append(line.split(" :", 1)[1])
            elif " 323 " in line:
                break
        assert 0 < len(listed) < 20, listed
        assert notices == [f"... and {20 - len(listed)} more rooms (list cut at 1.5 KiB)"]
        # Under the budget: no such notice.
        client.send_line("PART #room00,#room01,#room02,#room03,#room04,#room05,#room06")
        client.send_line("PART #room07,#room08,#room09,#room10,#room11,#room12,#room13")
        client.send_line("LIST")
        lines: list[str] = []
        while not lines or " 323 " not in lines[-1]:
            lines.append(client.expect(lambda line: True))
        assert sum(" 322 " in line for line in lines) == 6, lines
        assert not any("more room" in line for line in lines), lines
    finally:
        proc.stop()


def test_room_message_reaches_every_irc_user_whoever_joined_first(server: ChatdProcess) -> None:
    # IRC users with the same capabilities share one encoding of a room message; the
    # sender's own copy (not echoed without echo-message) must not become everyone's.
    users = [irc(server) for _ in range(3)]
    for user, nick in zip(users, ("ann", "bob", "cat"), strict=True):
        user.register(nick)
        user.join("#same")
    for user in users[:2]:
        user.expect(lambda line: "JOIN" in line and "cat" in line)
    users[0].send_line("PRIVMSG #same :from the first joiner")
    for user in users[1:]:
        assert user.expect(lambda line: "PRIVMSG #same" in line).endswith(":from the first joiner")
    users[2].send_line("PRIVMSG #same :from the last joiner")
    for user in users[:2]:
        assert user.expect(lambda line: "PRIVMSG #same" in line).endswith(":from the last joiner")


def test_private_action_from_irc_reaches_json_and_text_users_as_an_action(
    server: ChatdProcess,
) -> None:
    ann = irc(server)
    ann.register("ann")
    bob = server.json_client("bob")
    cat = server.text_client("cat")
    ann.send_line("PRIVMSG bob :\x01ACTION waves\x01")
    frame = bob.expect_frame(type="privmsg")
    assert frame["text"] == "waves" and frame["action"] is True
    ann.send_line("PRIVMSG cat :\x01ACTION nods\x01")
    assert cat.expect(lambda line: "[msg]" in line).endswith("ann -> cat: * ann nods")
    bob.send_json(op="msg", to="ann", text="bows", action=True)
    assert ann.expect(lambda line: "PRIVMSG ann" in line).endswith(":\x01ACTION bows\x01")


def test_a_line_with_many_targets_costs_a_rate_limit_token_per_target() -> None:
    # Rate 1/s, burst 6: registering takes 2 tokens (NICK, USER). A JOIN of 24 rooms then
    # costs 24, leaving the bucket 20 in debt: the next line waits ~20 s. Before, the
    # JOIN cost one token and the PING was answered at once.
    proc = ChatdProcess(
        "--rate-limit", "1", "--rate-burst", "6", "--server-name", "irc.test", irc=True
    )
    try:
        ann, bob = irc(proc), irc(proc)
        ann.register("ann")
        bob.register("bob")
        rooms = [f"#r{k}" for k in range(24)]
        ann.send_line("JOIN " + ",".join(rooms))
        ann.send_line("PING :after-the-joins")
        for room in rooms:  # all 24 joins are served: the line is charged, not cut
            ann.expect(lambda line: f" 366 ann {room} " in line)  # noqa: B023 (used at once)
        bob.send_line("JOIN #r0")  # a neighbour with tokens left is served at once
        bob.send_line("PING :bob")
        bob.expect(lambda line: line == ":irc.test PONG irc.test :bob")
        ann.expect(lambda line: line == ":bob!bob@chatd JOIN #r0")
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            try:
                ann.read_line(left)
            except AssertionError:  # nothing more within the second, as it should be
                break
        assert not any("PONG" in line for line in ann.lines), "the JOIN cost one token"
    finally:
        proc.stop()


def test_the_irc_package_sees_who_lusers_names_and_myinfo(server: ChatdProcess) -> None:
    irc_client = pytest.importorskip("irc.client", reason="pip install irc (the 'irc' extra)")
    reactor = irc_client.Reactor()
    seen: dict[str, list[list[str]]] = {}

    def on_any(conn: object, event: object) -> None:
        kind = event.type  # type: ignore[attr-defined]
        seen.setdefault(kind, []).append([str(a) for a in event.arguments])  # type: ignore[attr-defined]

    connection = reactor.server().connect(
        "127.0.0.1", server.irc_port, "libbot", username="libuser", ircname="Library Bot"
    )
    kinds = ("myinfo", "luserclient", "luserme", "n_local", "n_global", "whoreply", "endofwho")
    for kind in (*kinds, "namreply", "endofnames", "welcome", "join"):
        reactor.add_global_handler(kind, on_any)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            reactor.process_once(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: "n_global" in seen and "welcome" in seen, what="welcome burst")
        assert seen["myinfo"][0][0] == "irc.test" and seen["myinfo"][0][2:] == [
            "io",
            "bikmnoqtv",
            "bkoqv",
        ]
        assert seen["luserclient"][0] == ["There are 0 users and 1 invisible on 1 servers"]
        assert seen["n_local"][0][:2] == ["1", "1"]
        jay = server.json_client("jay", "#lib", "#other")
        reactor.scheduler.execute_after(0, lambda: connection.join("#lib,#other"))
        wait_until(lambda: len(seen.get("endofnames", [])) == 2, what="two joins")
        seen.pop("namreply")
        seen.pop("endofnames")
        reactor.scheduler.execute_after(0, lambda: connection.names(["#lib", "#other"]))
        wait_until(lambda: len(seen.get("endofnames", [])) == 2, what="NAMES of two channels")
        assert [r[:2] for r in seen["namreply"]] == [["=", "#lib"], ["=", "#other"]]
        reactor.scheduler.execute_after(0, lambda: connection.who("#lib"))
        wait_until(lambda: "endofwho" in seen, what="WHO #lib")
        assert sorted(seen["whoreply"]) == [
            ["#lib", "jay", "chatd", "irc.test", "jay", "H", "0 jay"],
            ["#lib", "libuser", "chatd", "irc.test", "libbot", "H", "0 Library Bot"],
        ]
        jay.close()
    finally:
        stop.set()
        thread.join(5)
        connection.close()


def test_registration_with_empty_or_non_utf8_user_fields(server: ChatdProcess) -> None:
    client = irc(server)
    client.send_line("NICK ann")
    client.send_line("USER ann 0 * :")
    assert client.expect(lambda line: True) == ":irc.test 461 * USER :Not enough parameters"
    client.send(b"USER \xe4nn\xff 0 * :\xc4nn \xe9l\xe8ve\r\n")  # Latin-1, not UTF-8
    client.expect(lambda line: " 001 " in line)
    other = irc(server)
    other.register("bob")
    other.send_line("WHOIS ann")
    assert other.expect(lambda line: " 311 " in line) == (
        ":irc.test 311 bob ann nn chatd * :\u00c4nn \u00e9l\u00e8ve"
    )
    other.send_line("NOTICE ann :automated")
    client.send_line("AWAY :gone")
    client.expect(lambda line: " 306 " in line)
    other.send_line("NOTICE ann :are you there")
    other.send_line("PING :done")
    other.expect(lambda line: "PONG" in line)
    assert not any(" 301 " in line for line in other.lines), "a NOTICE was answered"
