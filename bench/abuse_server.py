"""Abuse scenarios of issue 10 that live in the transport and the server loop: a crash
in one loop turn (``Room``), tiny lines, password guessing, a burst crowd from one
address, big replies.

Each ``run_*`` function takes its scale and returns its figures; tests/test_abuse_server.py
calls it at a size that runs in seconds and asserts on the figures, ``make stress``
(bench/stress_server.py) at a larger size.

To put several clients' input into *one* loop turn (the crash of finding 1 needs a
neighbour to leave in the same turn as the bad line), ``one_turn`` stops the server
process with SIGSTOP, lets every client send, and continues it: its next ``select()``
returns them all at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.abuse_tools import RssSampler, Swarm
from bench.chatd_process import ChatdProcess, JsonClient, RawClient, many_sockets, wait_until


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@contextmanager
def one_turn(server: ChatdProcess) -> Iterator[None]:
    """Everything sent inside the block reaches the server in one loop turn."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: _state(server.pid) == "T", what="the server to stop")
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def alive(server: ChatdProcess, client: JsonClient, token: str) -> None:
    """The process runs and answers ``client``'s ping."""
    assert server.proc is not None and server.proc.poll() is None, server.log()[-3000:]
    client.send_json(op="ping", id=token)
    client.expect_frame(type="pong", id=token)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


class Room:
    """An observer that stays, a sender, and an attacker that is replaced when it leaves."""

    def __init__(self, server: ChatdProcess) -> None:
        self.server = server
        self.observer = server.json_client("obs", "#r")
        self.sender = server.json_client("sender", "#r")
        self.attacker = server.json_client("att", "#r")
        self.count = 0

    def fresh(self, nick: str, *rooms: str) -> JsonClient:
        self.count += 1
        return self.server.json_client(f"{nick}{self.count}", *rooms)

    def run(self, fields: dict[str, str]) -> None:
        line = "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}\n"
        leaver = self.fresh("leaver", "#r")
        joiner = self.fresh("joiner")
        marker = f"marker {self.count}"
        with one_turn(self.server):
            leaver.close()
            joiner.send_json(op="join", room="#r")
            self.attacker.send(line.encode())
            self.sender.send_json(op="say", room="#r", text=marker, id=self.count)
        got = self.observer.expect(lambda text: marker in text, timeout=10)
        assert json.loads(got)["text"] == marker
        self.sender.expect_frame(type="msg", text=marker, id=self.count)
        alive(self.server, self.observer, f"alive {self.count}")
        joiner.expect_frame(type="joined", room="#r")
        alive(self.server, joiner, "joined")
        joiner.close()
        # The attacker may have quit, changed nick or left #r: start a new one.
        self.attacker.close()
        self.attacker = self.fresh("att", "#r")


def run_tiny_lines(server: ChatdProcess, clients: int) -> dict[str, Any]:
    """``clients`` registered JSON clients each send one 64 KiB packet of ``xy\\n`` (21,845
    lines, each a bad_json error at the rate limit); returns the server's RSS growth."""
    start_kib = server.rss_kib()
    crowd = Swarm(many_sockets(server.port, clients))
    crowd.send_all(lambda i: b'{"op":"hello","nick":"tiny%d"}\n' % i)
    crowd.pump_until(
        lambda: all(any(b'"welcome"' in line for line in lines) for lines in crowd.lines),
        30,
        "every client registered",
    )
    registered_kib = server.rss_kib()
    rss = RssSampler(server)
    packet = b"xy\n" * (65536 // 3)
    for i in range(clients):
        crowd.send_pumping(i, packet)
    crowd.pump_until(
        lambda: all(any(b"bad_json" in line for line in lines) for lines in crowd.lines),
        30,
        "every packet read",
    )
    deadline = time.monotonic() + 1.0  # let it run a second at the rate limit
    while time.monotonic() < deadline:
        crowd.pump(0.05)
    packets_kib = rss.stop()
    crowd.close()
    return {
        "clients": clients,
        "registered_kib": registered_kib - start_kib,
        "packets_kib": packets_kib,
        "total_kib": registered_kib - start_kib + packets_kib,
    }


def run_password_guessing(
    server: ChatdProcess, seconds: float, source: str = "127.0.0.1"
) -> dict[str, Any]:
    """One client guesses as fast as the server answers: reconnecting after each close,
    3 wrong passwords per connection, for ``seconds``. Meanwhile, at the end, somebody
    on another address logs in with the right one. Returns guesses/s and that login's
    time."""
    guesses = connections = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        guesser = JsonClient(server.port, source=source, timeout=seconds + 5)
        connections += 1
        for i in range(3):
            guesser.send_json(op="hello", nick=f"g{i}", password=f"guess{guesses + i}")
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                got = guesser.read_frame(remaining)
            except AssertionError:  # held past the end of the run
                break
            if got is None:
                break
            if got.get("code") == "bad_password":
                guesses += 1
        guesser.close()
    elapsed = time.monotonic() - start
    # The guesser's address is out of guesses now; another address is not.
    held = JsonClient(server.port, source=source)
    held.send_json(op="hello", nick="held", password="sesame")
    login_start = time.monotonic()
    right = JsonClient(server.port, source="127.0.0.2")
    right.hello("right", password="sesame")
    login_s = time.monotonic() - login_start
    held.expect_frame(type="welcome")  # the right password gets in there too, in turn
    held_s = time.monotonic() - login_start
    right.close()
    held.close()
    return {
        "seconds": elapsed,
        "guesses": guesses,
        "connections": connections,
        "guesses_per_s": guesses / elapsed,
        "right_login_s": login_s,
        "held_login_s": held_s,
    }


def ping_rtt(client: JsonClient, token: str) -> float:
    start = time.monotonic()
    client.send_json(op="ping", id=token)
    client.expect_frame(type="pong", id=token, timeout=30)
    return time.monotonic() - start


def run_burst_crowd(server: ChatdProcess, clients: int, lines: int) -> dict[str, Any]:
    """``clients`` connections from 127.0.0.1 register, join one room and each send
    ``lines`` messages at once, while a user on 127.0.0.2 pings; returns its ping times."""
    victim = JsonClient(server.port, source="127.0.0.2")
    victim.hello("victim")
    quiet = [ping_rtt(victim, f"q{i}") for i in range(20)]
    counts = [0] * clients

    def on_line(i: int, line: bytes) -> None:
        if b'"type":"msg"' in line:
            counts[i] += 1

    crowd = Swarm(many_sockets(server.port, clients), on_line=on_line)
    welcomed: set[int] = set()

    def on_register(i: int, line: bytes) -> None:
        if b'"welcome"' in line:
            welcomed.add(i)

    crowd.on_line = on_register
    crowd.send_all(lambda i: b'{"op":"hello","nick":"b%d"}\n{"op":"join","room":"#burst"}\n' % i)
    crowd.pump_until(
        lambda: len(welcomed) + len(crowd.closed) >= clients, 30, "every client answered"
    )
    admitted = sorted(welcomed)
    # Wait until the last one's join is done (every admitted one sees it).
    crowd.on_line = on_line
    last = b'{"op":"ping","id":"ready"}\n'
    crowd.send_all(last)
    crowd.pump(0.2)
    burst = b"".join(b'{"op":"say","room":"#burst","text":"burst %d"}\n' % n for n in range(lines))
    expected = len(admitted) * lines
    start = time.monotonic()
    crowd.send_all(burst)
    loaded: list[float] = []
    deadline = start + 60
    while time.monotonic() < deadline and any(counts[i] < expected for i in admitted):
        crowd.pump(0.005)
        loaded.append(ping_rtt(victim, f"l{len(loaded)}"))
    elapsed = time.monotonic() - start
    crowd.close()
    victim.close()
    loaded = loaded or [0.0]
    return {
        "clients": clients,
        "admitted": len(admitted),
        "refused": len(crowd.closed),
        "deliveries": expected * len(admitted),
        "burst_s": elapsed,
        "quiet_p90_s": sorted(quiet)[int(len(quiet) * 0.9)],
        "loaded_p50_s": sorted(loaded)[len(loaded) // 2],
        "loaded_p90_s": sorted(loaded)[int(len(loaded) * 0.9)],
        "pings": len(loaded),
    }


PIPELINED = 100  # history requests in one packet: 100 pages of 64 KiB, 6.4 MB


CONTROLS = "".join(chr(c) for c in range(1, 32) if chr(c) not in "\t\n\r")  # -> U+FFFD


def fill_room(server: ChatdProcess, room: str, count: int, text: str) -> None:
    """``count`` messages of ``text`` in ``room``, said in text mode (raw control characters
    fit a line there; JSON would escape each as 6 bytes). The server has no rate limit."""
    writer = server.text_client("writer")
    writer.send_line(f"/join {room}")
    writer.expect(lambda line: f"You joined {room}" in line)
    batch = (text.encode() + b"\n") * count + b"/ping\n"
    view = memoryview(batch)
    while view:  # send while reading our own echoes, or the server stops reading us
        writer.sock.settimeout(30)
        view = view[writer.sock.send(view[:65536]) :]
        writer.sock.settimeout(0.001)
        try:
            while writer.sock.recv(1 << 20):
                pass
        except (TimeoutError, BlockingIOError):
            pass
    writer.expect(lambda line: "pong" in line, 60)
    writer.close()


def run_big_replies(server: ChatdProcess, messages: int, rooms: int) -> dict[str, Any]:
    """Replies the server sizes itself, to clients that read at full speed: a history of
    ``messages`` messages of 2,000 control characters (JSON, text), the list of ``rooms``
    rooms with 300-character topics (JSON, text), a join replay to an IRC client."""
    noisy = (CONTROLS * 100)[:2000]  # stored as 6 KB of U+FFFD
    fill_room(server, "#big", messages, noisy)
    got: dict[str, Any] = {}
    # JSON history: pages marked "more", followed until the range is done.
    reader = server.json_client("reader", "#big")
    mids: list[int] = []
    pages, size, before = 0, 0, None
    while True:
        reader.send_json(op="history", room="#big", limit=500, before=before, id=pages)
        line = reader.expect(lambda text: '"type":"history"' in text, timeout=30)
        size += len(line.encode())
        page = json.loads(line)
        pages += 1
        mids = [m["mid"] for m in page["messages"]] + mids
        if not page.get("more") or len(mids) >= min(messages, 500):
            break
        before = page["messages"][0]["mid"]
    got |= {"history_pages": pages, "history_messages": len(mids), "history_bytes": size}
    got["history_in_order"] = mids == sorted(set(mids))
    alive(server, reader, "after history")
    # Pipelined: PIPELINED requests of a full page each in one packet, read by a client
    # at a steady 4 MB/s (a Wi-Fi laptop) with a small receive window (little in flight).
    piper = JsonClient(server.port, rcvbuf=16384)
    piper.hello("piper")
    piper.join("#big")
    piper.send(
        b"".join(
            json.dumps({"op": "history", "room": "#big", "limit": 500, "id": f"p{i}"}).encode()
            + b"\n"
            for i in range(PIPELINED)
        )
    )
    got["pipelined_s"] = read_paced(piper, b'"type":"history"', PIPELINED, 4_000_000)
    alive(server, piper, "after pipelined history")
    # Text mode: one reply, the newest that fit, and a line saying so.
    texter = server.text_client("texter")
    texter.send_line("/join #big")
    texter.expect(lambda line: "You joined #big" in line)
    texter.send_line("/history 500")
    got["text_history_note"] = texter.expect(lambda line: "fit in one reply" in line, 30)
    texter.send_line("/ping")  # still connected, still answered
    texter.expect(lambda line: "pong" in line, 30)
    # The rooms list: rooms with long topics, shortened to fit.
    owner = server.json_client("owner")
    topic = (CONTROLS * 20)[:300]
    batch = b"".join(
        json.dumps({"op": "join", "room": f"#room{i}"}).encode()
        + b"\n"
        + json.dumps({"op": "topic", "room": f"#room{i}", "topic": topic}).encode()
        + b"\n"
        for i in range(rooms)
    )
    for start in range(0, len(batch), 32768):
        owner.send(batch[start : start + 32768])
        owner.sock.settimeout(0.01)
        try:
            while owner.sock.recv(1 << 20):
                pass
        except TimeoutError:
            pass
        owner.sock.settimeout(5)
    alive(server, owner, "rooms made")
    reader.send_json(op="rooms", id="list")
    listing = reader.expect(lambda text: '"type":"rooms"' in text, timeout=30)
    frame = json.loads(listing)
    got |= {"rooms_listed": len(frame["rooms"]), "rooms_omitted": frame.get("omitted", 0)}
    got["rooms_bytes"] = len(listing.encode())
    alive(server, reader, "after rooms")
    texter.send_line("/rooms")
    texter.expect(lambda line: "more room" in line, 30)
    alive_text(texter)
    # IRC: the join replay is the newest messages that fit.
    irc = RawClient(server.irc_port or 0, timeout=30)
    irc.send(b"NICK ircr\r\nUSER ircr 0 * :r\r\nJOIN #big\r\n")
    end = irc.expect(lambda line: "End of history" in line or "ERROR" in line)
    got["irc_replay_note"] = end
    got["irc_replay_bytes"] = sum(len(line.encode()) + 1 for line in irc.lines)
    irc.send(b"PING :still\r\n")
    irc.expect(lambda line: "PONG" in line and "still" in line)
    got["cut"] = server.log().count("slow consumer")
    return got


def read_paced(client: RawClient, marker: bytes, count: int, rate: float) -> float:
    """Read at ``rate`` bytes/s until ``marker`` has been seen ``count`` times; seconds."""
    start = time.monotonic()
    seen, tail, total = 0, b"", 0
    client.sock.settimeout(30)
    while seen < count:
        chunk = client.sock.recv(16384)
        assert chunk, f"cut off after {seen} of {count} replies"
        total += len(chunk)
        data = tail + chunk
        seen += data.count(marker) - tail.count(marker)
        tail = data[-len(marker) :]
        pause = start + total / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing a reader, not waiting for the server
    return time.monotonic() - start


def alive_text(client: RawClient) -> None:
    client.send_line("/ping")
    client.expect(lambda line: "pong" in line, 30)
