"""Issue 10, findings 4, 6 and 7, against a real chatd process on 127.0.0.1.

- 4: a paste of many lines is refused above ``max_message_lines``, and a long one costs
  rate-limit tokens by its size while other users are not slowed;
- 6: look-alike rooms, invisible-only messages, bidi controls, fake text-mode lines;
- 7: on a password server, ``nc`` users who mistype the password are asked for it again,
  and no line typed at the password prompt is ever shown to anybody.

Also: a busy IRC port is reported as the IRC port. The pure rules are in test_names.py.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import ROOT, ChatdProcess, JsonClient, RawClient, wait_until
from test_irc_server import IrcClient

from bench.abuse_text import irc_member, run_paste

BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
PASTE_40 = "\n".join(f"line {i}" for i in range(40))


@pytest.fixture
def irc_server() -> Iterator[ChatdProcess]:
    proc = ChatdProcess("--rate-limit", "0", "--server-name", "irc.test", irc=True)
    try:
        yield proc
    finally:
        proc.stop()


def privmsgs(client: IrcClient, room: str, until: str) -> list[str]:
    """PRIVMSG texts to ``room`` read until one equal to ``until`` (included)."""
    texts = []
    while True:
        line = client.expect(lambda line: f" PRIVMSG {room} :" in line)
        texts.append(line.split(f" PRIVMSG {room} :", 1)[1])
        if texts[-1] == until:
            return texts


# ============================================================================ 4. many lines


def test_a_paste_of_a_thousand_lines_is_refused_and_reaches_nobody(
    irc_server: ChatdProcess,
) -> None:
    paster = irc_server.json_client("paster", "#p")
    watcher = irc_member(irc_server, "watcher", "#p")
    paster.send_json(op="say", room="#p", text="x\n" * 1000, id=1)
    error = paster.expect_frame(type="error", id=1)
    assert error["code"] == "too_many_lines", error
    assert "limit is 40" in error["message"]
    paster.send_json(op="say", room="#p", text=PASTE_40, id=2)
    paster.expect_frame(type="msg", id=2)
    paster.say("#p", "done")
    # The refused paste produced no line at all; the 40-line one is 40 PRIVMSGs.
    texts = privmsgs(watcher, "#p", "done")
    assert texts == [*PASTE_40.split("\n"), "done"], texts[:5]


def test_max_message_lines_is_a_flag(make_server: type[ChatdProcess]) -> None:
    server = make_server("--rate-limit", "0", "--max-message-lines", "3")
    paster = server.json_client("paster", "#p")
    paster.send_json(op="say", room="#p", text="a\nb\nc", id=1)
    paster.expect_frame(type="msg", id=1)
    paster.send_json(op="say", room="#p", text="a\nb\nc\nd", id=2)
    assert paster.expect_frame(type="error", id=2)["code"] == "too_many_lines"


def test_a_long_paste_costs_more_tokens_and_nobody_else_waits(
    make_server: type[ChatdProcess],
) -> None:
    """Two 40-line pastes cost 10 tokens each: with a burst of 12 the paster's next line
    waits (20 - 12 tokens at 2/s, about 4.5 s), while a bystander who speaks after it is
    served at once. Without the cost the pastes would take 2 tokens and the probe would
    have been executed in the same loop turn as the pastes, before the bystander spoke."""
    server = make_server("--rate-limit", "2", "--rate-burst", "12")
    listener = server.json_client("listener", "#p")
    bystander = server.json_client("bystander", "#p")
    paster = server.json_client("paster", "#p")
    paste = json.dumps({"op": "say", "room": "#p", "text": PASTE_40})
    probe = json.dumps({"op": "say", "room": "#p", "text": "probe"})
    paster.send(f"{paste}\n{paste}\n{probe}\n".encode())
    for _ in range(2):
        listener.expect_frame(type="msg", text=PASTE_40)
    # Both pastes were executed, so the probe (same packet) has been read too.
    bystander.say("#p", "after")
    seen: list[str] = []
    while not seen or seen[-1] != "probe":
        seen.append(listener.expect_frame(type="msg", timeout=15)["text"])
    assert seen == ["after", "probe"], seen  # the paster waited; the bystander did not
    paster.send_json(op="ping", id="still")
    paster.expect_frame(type="pong", id="still", timeout=10)  # paused, never cut


def test_paste_figures_for_irc_members_and_joiners(irc_server: ChatdProcess) -> None:
    got = run_paste(irc_server, pastes=50, max_lines=40)
    print("paste:", got)
    assert got["thousand_refused"] and got["thousand_irc_bytes"] < 200, got  # just marker1
    assert got["worst_lines"] == 40 and got["worst_tokens"] == 10, got
    assert got["joiner_survived"], got
    # 50 worst-case messages replayed stay well under the hard output limit (1 MiB).
    assert got["replay_irc_bytes"] < 512 * 1024, got


# ============================================================================ 6. look-alikes


def test_look_alike_rooms_are_refused_and_other_spellings_join_the_room(
    irc_server: ChatdProcess,
) -> None:
    alice = irc_server.json_client("alice", "#lobby")
    bob = irc_server.json_client("bob")
    cases = {
        "nbsp": "#lob\u00a0by",
        "hair space": "#lob\u200aby",
        "hangul filler": "#lob\u3164by",
        "cyrillic o": "#l\u043ebby",
    }
    for what, room in cases.items():
        bob.send_json(op="join", room=room, id=what)
        error = bob.expect_frame(type="error", id=what)
        assert error["code"] == "bad_room", (what, error)
    for what, room in {
        "fullwidth": "#\uff4c\uff4f\uff42\uff42\uff59",
        "nfd": "#cafe\u0301",
    }.items():
        bob.send_json(op="join", room=room, id=what)
        joined = bob.expect_frame(type="joined", id=what)
        assert joined["room"] == {"fullwidth": "#lobby", "nfd": "#caf\u00e9"}[what]
    assert alice.expect_frame(type="join", room="#lobby")["nick"] == "bob"
    text = RawClient(irc_server.port)
    text.send_line("carol")
    text.expect(lambda line: "You joined #lobby" in line)
    text.send_line("/join #caf\u00e9")  # the same room, typed composed
    assert "2 members: bob, carol" in text.expect(lambda line: "You joined #caf\u00e9" in line)
    text.send_line("/join #l\u043ebby")
    assert text.expect(lambda line: line.startswith("!!!")).startswith("!!! bad_room")
    irc = irc_member(irc_server, "dave", "#lobby")
    irc.send_line("JOIN #\uff4c\uff4f\uff42\uff42\uff59")  # already there: the same room
    irc.send_line("JOIN #lob\u3164by")
    refused = irc.expect(lambda line: " 403 " in line)
    assert "invisible" in refused and not any(" JOIN #lob" in line for line in irc.lines[-3:])


def test_a_nick_that_looks_like_another_is_refused(irc_server: ChatdProcess) -> None:
    alice = irc_server.json_client("alice")
    mallory = JsonClient(irc_server.port)
    mallory.send_json(op="hello", nick="aIice")
    error = mallory.expect_frame(type="error")
    assert error["code"] == "nick_taken" and "looks too much like" in error["message"]
    alice.send_json(op="quit")  # a plain close would be a drop: the nick is held (accounts)
    alice.close()

    def welcomed() -> bool:  # free once the server has seen alice leave
        mallory.send_json(op="hello", nick="aIice")
        frame = mallory.read_frame()
        return frame is not None and frame["type"] == "welcome"

    wait_until(welcomed, what="aIice free after alice left")


def test_a_zero_width_message_is_refused_and_shows_nowhere(irc_server: ChatdProcess) -> None:
    listener = irc_server.json_client("listener", "#z")
    sender = irc_server.json_client("sender", "#z")
    sender.send_json(op="say", room="#z", text="\u200b\u200c\u200d\u2060\ufeff\u3164", id=1)
    assert sender.expect_frame(type="error", id=1)["code"] == "bad_request"
    sender.say("#z", "visible")
    assert listener.expect_frame(type="msg")["text"] == "visible"


def test_bidi_controls_are_neutralised_for_json_text_and_irc(irc_server: ChatdProcess) -> None:
    sender = irc_server.json_client("sender", "#lobby")
    json_reader = irc_server.json_client("jreader", "#lobby")
    text_reader = irc_server.text_client("treader")
    irc_reader = irc_member(irc_server, "ireader", "#lobby")
    evil = "invoice\u202egnp.exe \u2066x\u2069 \u202a\u202b\u202c\u202d \u2067\u2068"
    sender.say("#lobby", evil)
    sender.send_json(op="topic", room="#lobby", topic="\u202eevil topic")
    got = [
        json_reader.expect_frame(type="msg")["text"],
        text_reader.expect(lambda line: "<sender>" in line),
        irc_reader.expect(lambda line: " PRIVMSG #lobby :" in line),
        json_reader.expect_frame(type="topic")["topic"],
        text_reader.expect(lambda line: "set the topic" in line),
        irc_reader.expect(lambda line: " TOPIC #lobby :" in line),
    ]
    for line in got:
        assert not BIDI.search(line) and "\ufffd" in line, repr(line)
    assert "invoice\ufffdgnp.exe" in got[0]


def test_text_mode_continuation_lines_cannot_pass_for_messages(
    irc_server: ChatdProcess,
) -> None:
    reader = irc_server.text_client("reader")
    mallory = irc_server.json_client("mallory", "#lobby")
    # A first line that shows as empty, then lines dressed as a message, a notice, an error.
    fake = " \n[12:04] #x <admin> you are banned, type your password\n*** Server notice\n!!! x"
    mallory.say("#lobby", fake)
    mallory.say("#lobby", "end")
    lines: list[str] = []
    while not lines or not lines[-1].endswith("<mallory> end"):
        lines.append(reader.expect(lambda line: True))
    start = next(i for i, line in enumerate(lines) if "<mallory>" in line)
    message = lines[start:-1]
    assert re.fullmatch(r"\[\d\d:\d\d\] #lobby <mallory> +", message[0]), message
    assert len(message) == 4, message
    for line in message[1:]:
        assert line.startswith("    | "), message
    # Nothing but the real first line starts the way a message or a notice does.
    assert all(not re.match(r"\s*(\[\d\d:\d\d\]|\*\*\*|!!!)", line) for line in message[1:])


# ============================================================================ 7. nc login


def test_nc_wrong_password_then_right_one_keeps_the_nick_and_shows_no_password(
    make_server: type[ChatdProcess],
) -> None:
    server = make_server("--rate-limit", "0", env={"CHATD_PASSWORD": "secret"})
    watcher = RawClient(server.port)
    for line in ("watcher", "secret"):
        watcher.send_line(line)
    watcher.expect(lambda line: "You joined #lobby" in line)
    watcher_json = JsonClient(server.port)
    watcher_json.hello("jwatcher", password="secret")
    watcher_json.join("#lobby")

    eve = RawClient(server.port)
    eve.send_line("eve")
    eve.expect(lambda line: "password" in line)
    eve.send_line("bad_password")
    assert eve.expect(lambda line: line.startswith("!!!")).startswith("!!! bad_password")
    # It says what it expects next, and keeps the nick.
    assert "password for eve" in eve.expect(lambda line: line.startswith("***"))
    eve.send_line("secret")
    eve.expect(lambda line: "Welcome to" in line and "eve!" in line)
    eve.expect(lambda line: "You joined #lobby" in line)
    eve.send_line("hello from eve")
    watcher.expect(lambda line: "<eve> hello from eve" in line)
    watcher_json.expect_frame(type="msg", text="hello from eve")
    for seen in (watcher.lines, watcher_json.lines):
        assert any("eve" in line and "join" in line for line in seen), seen
        assert not any("secret" in line or "bad_password" in line for line in seen), seen


def test_nc_password_prompt_takes_any_line_as_the_password(
    make_server: type[ChatdProcess],
) -> None:
    """After a wrong password, lines that look like a nick or a command are still only
    passwords: none becomes a nick, none is said to a room."""
    server = make_server("--rate-limit", "0", "--max-password-failures", "5",
                         env={"CHATD_PASSWORD": "secret"})  # fmt: skip
    watcher = server.json_client("watcher", "#lobby", password="secret")
    eve = RawClient(server.port)
    for line in ("eve", "oops", "mallory", "/nick bob"):
        eve.send_line(line)
    for _ in range(3):
        eve.expect(lambda line: "password for eve" in line)
    eve.send_line("secret")
    eve.expect(lambda line: "Welcome to" in line and "eve!" in line)
    assert watcher.expect_frame(type="join")["nick"] == "eve"
    assert not any(word in line for line in watcher.lines for word in ("oops", "mallory", "bob"))


def test_nc_taken_nick_after_the_right_password_asks_for_a_nick(
    make_server: type[ChatdProcess],
) -> None:
    server = make_server("--rate-limit", "0", env={"CHATD_PASSWORD": "secret"})
    eve = server.json_client("eve", password="secret")
    late = RawClient(server.port)
    for line in ("eve", "secret"):
        late.send_line(line)
    assert late.expect(lambda line: line.startswith("!!!")).startswith("!!! nick_taken")
    assert "nickname" in late.expect(lambda line: line.startswith("***"))
    for line in ("eve2", "secret"):
        late.send_line(line)
    late.expect(lambda line: "Welcome to" in line and "eve2!" in line)
    eve.close()


# ============================================================================ also


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("which", ["native", "irc"])
def test_a_busy_port_is_named_in_the_error(which: str) -> None:
    busy = _busy_port()
    port = busy.getsockname()[1]
    try:
        ports = ["--port", str(port), "--irc-port", "0"]
        if which == "irc":
            ports = ["--port", "0", "--irc-port", str(port)]
        done = subprocess.run(
            [sys.executable, "-m", "chatd", "--host", "127.0.0.1", "--db", ":memory:", *ports],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
    finally:
        busy.close()
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port} ({which})" in done.stderr, done.stderr
