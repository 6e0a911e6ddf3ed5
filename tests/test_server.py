"""The real server over real sockets on 127.0.0.1: both modes, fan-out, bad input, limits.

Each test starts its own ``python -m chatd`` on port 0. Nothing sleeps for a fixed time:
every wait polls for a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from helpers import ROOT, ChatdProcess, JsonClient, RawClient, many_sockets, wait_until


def test_banner_then_text_and_json_users_share_a_room(chatd_server: ChatdProcess) -> None:
    raw = chatd_server.raw()
    banner = raw.read_line()
    assert banner and banner.startswith("***") and not banner.startswith("{")
    raw.close()

    alice = chatd_server.text_client("alice")
    bob = chatd_server.json_client("bob", "#lobby")
    alice.expect(lambda line: "-- bob joined" in line)
    bob.send_json(op="say", room="#lobby", text="hi alice", id=3)
    echo = bob.expect_frame(type="msg", id=3)  # the sender gets its own message, with its id
    assert echo["from"] == "bob" and isinstance(echo["mid"], int) and echo["ts"] > 0
    assert alice.expect(lambda line: "<bob> hi alice" in line).startswith("[")
    alice.send_line("hello bob")
    heard = bob.expect_frame(type="msg", **{"from": "alice"})
    assert heard["text"] == "hello bob" and heard["mid"] > echo["mid"]


def test_fan_out_reaches_each_room_and_only_it(chatd_server: ChatdProcess) -> None:
    alice = chatd_server.json_client("alice", "#a", "#b")
    bob = chatd_server.json_client("bob", "#a")
    carol = chatd_server.json_client("carol", "#b")
    alice.say("#a", "for a")
    alice.say("#b", "for b")
    assert bob.expect_frame(type="msg")["text"] == "for a"
    assert carol.expect_frame(type="msg")["text"] == "for b"
    bob.send_json(op="ping", id="p")
    assert bob.expect_frame(type="pong", id="p")  # nothing from #b arrived before it
    assert not [line for line in bob.lines if "for b" in line]


def test_nick_change_private_message_who_rooms_topic(chatd_server: ChatdProcess) -> None:
    alice = chatd_server.json_client("alice", "#a")
    bob = chatd_server.json_client("bob", "#a")
    bob.send_json(op="nick", nick="robert")
    assert alice.expect_frame(type="nick") == {"type": "nick", "old": "bob", "new": "robert"}
    assert bob.expect_frame(type="nick")["new"] == "robert"
    alice.send_json(op="msg", to="ROBERT", text="psst")
    assert bob.expect_frame(type="privmsg")["text"] == "psst"
    assert alice.expect_frame(type="privmsg")["to"] == "robert"
    alice.send_json(op="who", room="#a", id=1)
    assert alice.expect_frame(type="who", id=1)["members"] == ["alice", "robert"]
    bob.send_json(op="topic", room="#a", topic="lunch")
    assert alice.expect_frame(type="topic") == {
        "type": "topic",
        "room": "#a",
        "topic": "lunch",
        "by": "robert",
    }
    alice.send_json(op="rooms")
    assert alice.expect_frame(type="rooms")["rooms"] == [
        {"room": "#a", "members": 2, "topic": "lunch"}
    ]
    alice.send_json(op="msg", to="nobody", text="x")
    assert alice.expect_frame(type="error")["code"] == "no_such_nick"


def test_lines_split_across_reads_and_glued_in_one_read(chatd_server: ChatdProcess) -> None:
    bob = chatd_server.json_client("bob", "#a")
    alice = JsonClient(chatd_server.port)
    for byte in b'{"op":"hello","nick":"alice"}\n':  # one byte per segment
        alice.send(bytes([byte]))
    alice.expect_frame(type="welcome")
    alice.join("#a")
    burst = b"".join(
        json.dumps({"op": "say", "room": "#a", "text": f"m{i}"}).encode() + b"\n"
        for i in range(200)
    )
    alice.send(burst)  # 200 lines in one write
    texts = [bob.expect_frame(type="msg")["text"] for _ in range(200)]
    assert texts == [f"m{i}" for i in range(200)]


def test_bad_input_is_answered_and_the_connection_stays_usable(chatd_server: ChatdProcess) -> None:
    watcher = chatd_server.json_client("watcher", "#a")
    bob = chatd_server.json_client("bob", "#a")
    bob.send(b"this is not json\n")
    assert bob.expect_frame(type="error")["code"] == "bad_json"
    bob.send(b'{"op":"say","room":"#a","text":"caf\xe9"}\n')
    assert bob.expect_frame(type="error")["code"] == "bad_encoding"
    bob.send(b'{"op":"fly","id":5}\n')
    assert bob.expect_frame(type="error") == {
        "type": "error",
        "code": "unknown_op",
        "message": "unknown op 'fly'; see docs/protocol.md",
        "id": 5,
    }
    bob.send(b'{"op":"say","room":"#a","text":7}\n')
    assert bob.expect_frame(type="error")["code"] == "bad_request"
    # 10 MB without a newline, then the newline: one error, memory bounded, still usable.
    rss_before = chatd_server.rss_kib()
    chunk = b"z" * 65536
    for _ in range(160):
        bob.send(chunk)
    bob.send(b"\n")
    assert bob.expect_frame(type="error")["code"] == "line_too_long"
    assert chatd_server.rss_kib() - rss_before < 8 * 1024
    bob.send(b'{"op":"say","room":"#a","text":"\\u001b[2Jstill here\\u0007"}\n')
    got = watcher.expect_frame(type="msg")
    assert got["text"] == "\ufffd[2Jstill here\ufffd"  # no escape reaches anyone's terminal


def test_text_mode_errors_are_lines_of_their_own(chatd_server: ChatdProcess) -> None:
    alice = chatd_server.text_client("alice")
    alice.send_line("/dance")
    assert alice.expect(lambda line: line.startswith("!!!")).startswith("!!! unknown_op")
    alice.send(b"caf\xe9\n")
    assert "bad_encoding" in alice.expect(lambda line: line.startswith("!!!"))
    alice.send_line("/help")
    alice.expect(lambda line: "/join #room" in line)
    other = RawClient(chatd_server.port)
    other.send_line("alice")  # taken: told, and may try again
    assert "nick_taken" in other.expect(lambda line: line.startswith("!!!"))
    other.send_line("9bad")
    assert "bad_nick" in other.expect(lambda line: line.startswith("!!!"))
    other.send_line("alice2")
    other.expect(lambda line: "You joined #lobby" in line)


def test_half_closed_client_gets_its_replies_then_is_closed(make_server) -> None:
    # No nick hold: the departure is announced at once (the hold: test_accounts_server)
    chatd_server = make_server("--nick-hold-seconds", "0")
    watcher = chatd_server.json_client("watcher", "#lobby")
    piped = RawClient(chatd_server.port)  # like: printf 'bob\nhello\n' | nc host port
    piped.send(b"bob\nhello from a pipe\n")
    piped.sock.shutdown(socket.SHUT_WR)
    lines = piped.read_until_closed()
    assert any("<bob> hello from a pipe" in line for line in lines)
    assert watcher.expect_frame(type="msg")["text"] == "hello from a pipe"
    assert watcher.expect_frame(type="quit")["nick"] == "bob"


def test_reset_mid_line_is_cleaned_up_and_announced(make_server) -> None:
    # No nick hold: the departure is announced at once (the hold: test_accounts_server)
    chatd_server = make_server("--nick-hold-seconds", "0")
    watcher = chatd_server.json_client("watcher", "#a")
    victim = chatd_server.json_client("victim", "#a", "#b")
    victim.send(b'{"op":"say","room":"#a","te')  # mid-line
    victim.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    victim.sock.close()  # RST
    assert watcher.expect_frame(type="quit")["nick"] == "victim"
    again = chatd_server.json_client("victim", "#b")  # the nick and rooms were freed
    again.send_json(op="who", room="#b")
    assert again.expect_frame(type="who")["members"] == ["victim"]


def test_slow_consumer_is_skipped_then_dropped_while_others_flow(
    make_server: type[ChatdProcess],
) -> None:
    server = make_server(
        "--rate-limit",
        "0",
        "--out-soft-limit-bytes",
        "20000",
        "--out-hard-limit-bytes",
        "400000",
        "--out-high-water-bytes",
        "8000",
        "--out-low-water-bytes",
        "4000",
        "--out-soft-limit-seconds",
        "1",
    )
    fast = server.json_client("fast", "#a")
    slow = JsonClient(server.port, rcvbuf=4096)
    slow.hello("slow")
    slow.join("#a")
    talker = server.json_client("talker", "#a")
    text = "x" * 200
    sent = 0
    dropped = False
    # Talk until the never-reading client is cut off (over the soft limit for 1 s: room
    # messages are skipped for it meanwhile); the fast reader must get everything.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not dropped:
        for _ in range(50):
            talker.say("#a", f"{sent:06d}{text}")
            sent += 1
        for i in range(sent - 50, sent):
            assert fast.expect_frame(type="msg")["text"].startswith(f"{i:06d}")
            talker.expect_frame(type="msg")  # the talker reads its echoes, or it is paused too
        dropped = "slow consumer" in server.log()
    assert dropped, "the never-reading client was never disconnected"
    assert "slow_consumers" in server.log() or "disconnected as a slow consumer" in server.log()


def test_reader_that_falls_behind_is_told_what_it_missed(make_server: type[ChatdProcess]) -> None:
    server = make_server(
        "--rate-limit",
        "0",
        "--out-soft-limit-bytes",
        "20000",
        "--out-hard-limit-bytes",
        "10000000",
        "--out-high-water-bytes",
        "8000",
        "--out-low-water-bytes",
        "4000",
    )
    talker = server.json_client("talker", "#a")
    lagger = JsonClient(server.port, rcvbuf=4096)
    lagger.hello("lagger")
    lagger.join("#a")
    text = "x" * 200
    sent = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "reading slowly" not in server.log():
        for _ in range(50):
            talker.say("#a", f"{sent:06d}{text}")
            sent += 1
        for _ in range(50):
            talker.expect_frame(type="msg")
    assert "reading slowly" in server.log()
    for _ in range(50):  # a little more while it is over the limit: these are skipped
        talker.say("#a", f"late{text}")
        talker.expect_frame(type="msg")
    skipped = lagger.expect_frame(type="skipped", timeout=10)  # it reads again, drains
    assert skipped["count"] >= 50
    frames = [json.loads(line) for line in lagger.lines if line.startswith("{")]
    mids = [f["mid"] for f in frames if f.get("type") == "msg"]
    assert mids == sorted(mids)  # what it did get is in order


def test_max_clients_rejects_with_server_full(make_server: type[ChatdProcess]) -> None:
    server = make_server("--max-clients", "3")
    keep = [server.raw() for _ in range(3)]
    for client in keep:
        client.read_line()
    extra = server.raw()
    lines = extra.read_until_closed()
    assert any("server_full" in line for line in lines)
    assert json.loads(lines[-1])["code"] == "server_full"
    keep[0].close()
    wait_until(lambda: "closed" in server.log(), what="the server to notice the close")
    again = server.raw()
    assert (again.read_line() or "").startswith("***")  # a free slot again


def test_registration_timeout(make_server: type[ChatdProcess]) -> None:
    server = make_server("--register-timeout-seconds", "0.3")
    idle = server.raw()
    lines = idle.read_until_closed(timeout=5)
    assert any("timeout" in line for line in lines)
    trickler = server.raw()
    trickler.send(b"al")  # never finishes its nick
    assert any("timeout" in line for line in trickler.read_until_closed(timeout=5))


def test_password_json_and_text(make_server: type[ChatdProcess], tmp_path: object) -> None:
    server = make_server(env={"CHATD_PASSWORD": "sesame"})
    client = JsonClient(server.port)
    client.send_json(op="hello", nick="alice")
    assert client.expect_frame(type="error")["code"] == "bad_password"
    client.send_json(op="hello", nick="alice", password="wrong")
    assert client.expect_frame(type="error")["code"] == "bad_password"
    client.send_json(op="hello", nick="alice", password="nope")
    client.expect_frame(type="error")
    assert client.read_until_closed() == []  # three failures: closed
    ok = JsonClient(server.port)
    assert ok.hello("alice", password="sesame")["nick"] == "alice"
    text = RawClient(server.port)
    text.send_line("bob")
    text.expect(lambda line: "password" in line)
    text.send_line("sesame")
    text.expect(lambda line: "You joined #lobby" in line)


def test_rate_limit_slows_a_flooder_without_losing_anything(
    make_server: type[ChatdProcess],
) -> None:
    server = make_server("--rate-limit", "40", "--rate-burst", "5")
    watcher = server.json_client("watcher", "#a")
    flooder = server.json_client("flooder", "#a")
    started = time.monotonic()
    flooder.send(
        b"".join(
            json.dumps({"op": "say", "room": "#a", "text": f"f{i}"}).encode() + b"\n"
            for i in range(45)
        )
    )
    texts = [watcher.expect_frame(type="msg")["text"] for _ in range(45)]
    elapsed = time.monotonic() - started
    assert texts == [f"f{i}" for i in range(45)]  # nothing lost, nothing reordered
    # 40 of the 45 had to wait for tokens at 40/s: the flooder was slowed, not dropped.
    assert elapsed >= 0.8
    block = "line one\nline two\nline three"
    flooder.send_json(op="say", room="#a", text=block)  # a pasted block is one message
    assert watcher.expect_frame(type="msg")["text"] == block


def test_graceful_shutdown_tells_everyone(make_server: type[ChatdProcess]) -> None:
    server = make_server()
    alice = server.json_client("alice", "#a")
    text_user = server.text_client("bob")
    assert server.stop(signal.SIGINT) == 0
    assert alice.expect_frame(type="shutdown")["reason"]
    assert alice.read_until_closed() == []
    assert any("shutting down" in line for line in text_user.read_until_closed())


@pytest.mark.slow
def test_six_hundred_simultaneous_connections(make_server: type[ChatdProcess]) -> None:
    # 600 clients on 127.0.0.1 standing for many hosts: no per-address limit.
    server = make_server("--rate-limit", "0", "--max-clients-per-ip", "0")
    count = 600
    socks = many_sockets(server.port, count)
    try:
        for i, s in enumerate(socks):
            room = f"#r{i % 3}"
            s.sendall(
                json.dumps({"op": "hello", "nick": f"u{i}"}).encode()
                + b"\n"
                + json.dumps({"op": "join", "room": room}).encode()
                + b"\n"
                + json.dumps({"op": "join", "room": "#all"}).encode()
                + b"\n"
            )
        readers = [RawClient.__new__(RawClient) for _ in socks]
        for reader, s in zip(readers, socks, strict=True):
            reader.sock, reader.timeout, reader._buf, reader.lines = s, 10.0, b"", []
        for reader in readers:
            reader.expect(lambda line: '"history_end"' in line and "#all" in line)
        speaker = server.json_client("speaker", "#all")
        speaker.say("#all", "hello everyone")
        for reader in readers:
            reader.expect(lambda line: "hello everyone" in line)
        assert server.fd_count() >= count
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: server.fd_count() < 50, timeout=10, what="descriptors to be released")


def test_help_and_bad_configuration(tmp_path: object) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "chatd", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == 0
    for flag in ("--port", "--max-line-bytes", "--rate-limit", "--password-file", "--config"):
        assert flag in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "chatd", "--max-line-bytes", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert bad.returncode == 2 and "max_line_bytes must be at least 1" in bad.stderr
    config = tmp_path / "chatd.toml"  # type: ignore[operator]
    config.write_text("max_clients = 'many'\n")
    bad = subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert bad.returncode == 2 and "max_clients must be a int" in bad.stderr


def test_toml_config_is_applied(make_server: type[ChatdProcess], tmp_path: object) -> None:
    config = tmp_path / "chatd.toml"  # type: ignore[operator]
    config.write_text('max_line_bytes = 64\nserver_name = "labchat"\n')
    server = make_server("--config", str(config))
    client = JsonClient(server.port)
    assert client.hello("alice")["server"] == "labchat"
    client.send(b'{"op":"say","room":"#a","text":"' + b"y" * 80 + b'"}\n')
    assert client.expect_frame(type="error")["code"] == "line_too_long"


def test_request_ids_go_only_on_the_senders_copy_in_a_burst(chatd_server: ChatdProcess) -> None:
    alice = chatd_server.json_client("alice", "#a")
    bob = chatd_server.json_client("bob", "#a")
    carol = chatd_server.json_client("carol", "#a")
    for client, name in ((alice, "a"), (bob, "b")):
        client.send(
            b"".join(
                json.dumps(
                    {"op": "say", "room": "#a", "text": f"{name}{i}", "id": f"{name}{i}"}
                ).encode()
                + b"\n"
                for i in range(20)
            )
        )
    for client, own in ((alice, "alice"), (bob, "bob"), (carol, None)):
        frames = [client.expect_frame(type="msg") for _ in range(40)]
        for frame in frames:
            if frame["from"] == own:
                assert frame["id"] == frame["text"]
            else:
                assert "id" not in frame
        for sender in ("alice", "bob"):
            texts = [f["text"] for f in frames if f["from"] == sender]
            assert texts == [f"{sender[0]}{i}" for i in range(20)]


def test_second_sigint_exits_at_once_during_a_long_shutdown(
    make_server: type[ChatdProcess],
) -> None:
    server = make_server(
        "--rate-limit",
        "0",
        "--shutdown-grace-seconds",
        "60",
        "--close-linger-seconds",
        "60",
        "--send-buffer-bytes",
        "4096",
        "--out-soft-limit-bytes",
        "10000000",
        "--out-hard-limit-bytes",
        "20000000",
    )
    sleeper = JsonClient(server.port, rcvbuf=4096)  # never reads: its goodbye cannot flush
    sleeper.hello("sleeper")
    sleeper.join("#a")
    talker = server.json_client("talker", "#a")
    for i in range(300):
        talker.say("#a", f"{i:04d}" + "x" * 400)
        talker.expect_frame(type="msg")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    wait_until(lambda: "shutting down" in server.log(), what="the graceful shutdown to start")
    assert server.proc.poll() is None  # still flushing for the sleeper (grace: 60 s)
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=10) == 1  # the second Ctrl-C does not wait


def test_away_marks_reach_room_members(chatd_server: ChatdProcess) -> None:
    """JSON: an away change is announced to the room; joined and who list who is away."""
    alice = chatd_server.json_client("alice", "#lobby")
    bob = chatd_server.json_client("bob", "#lobby")
    try:
        bob.send_json(op="away", message="lunch")
        bob.expect_frame(type="away", away=True)
        alice.expect_frame(type="away_change", nick="bob", away=True)
        carol = chatd_server.json_client("carol")
        joined = carol.join("#lobby")
        assert joined["away"] == ["bob"]
        alice.send_json(op="who", room="#lobby")
        assert alice.expect_frame(type="who")["away"] == ["bob"]
        bob.send_json(op="away")
        alice.expect_frame(type="away_change", nick="bob", away=False)
        carol.expect_frame(type="away_change", nick="bob", away=False)
        alice.send_json(op="who", room="#lobby")
        assert "away" not in alice.expect_frame(type="who")
        carol.close()
    finally:
        alice.close()
        bob.close()
