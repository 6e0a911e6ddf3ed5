"""Abuse scenarios about traffic (issue 6): an endless line, slow consumers beside
readers at full speed, a pipelined flood.

Like :mod:`bench.abuse_crowds` (which says how the ``run_*`` functions are used by the
tests and by ``make stress``).
"""

from __future__ import annotations

import json
import random
import socket
import statistics
import time
from typing import Any

from bench.abuse_tools import (
    MANY_HOSTS,
    RssSampler,
    Swarm,
    chat_round_trip,
    frame,
    percentile,
    strict_loads,
)
from bench.chatd_process import ChatdProcess, JsonClient, RawClient, wait_until


def run_endless_line(server: ChatdProcess, megabytes: int, mode: str) -> dict[str, Any]:
    """Send ``megabytes`` MB without a newline, then a newline and a real request."""
    client = RawClient(server.port, timeout=10)
    if mode == "json":
        client.send(frame(op="hello", nick="endless"))
        client.expect(lambda line: '"welcome"' in line)
    rss = RssSampler(server, interval=0.01)
    chunk = b"A" * (1 << 20)
    start = time.monotonic()
    for _ in range(megabytes):
        client.send(chunk)  # blocks whenever the server reads slower: streamed, not buffered
    elapsed = time.monotonic() - start
    client.send(b"\n")
    if mode == "json":
        client.send(frame(op="ping", id="still-there"))
        error = strict_loads(client.expect(lambda line: line.startswith("{")))
        assert error["type"] == "error" and error["code"] == "line_too_long", error
        pong = strict_loads(client.expect(lambda line: line.startswith("{")))
        assert pong == {"type": "pong", "id": "still-there"}, pong
    else:  # nobody has picked a mode yet: told in text, then free to pick a nick
        client.expect(lambda line: "line_too_long" in line)
        client.send_line("endless")
        client.expect(lambda line: "You joined #lobby" in line)
    growth = rss.stop()
    client.close()
    return {
        "mode": mode,
        "sent_mb": megabytes,
        "seconds": elapsed,
        "mb_per_s": megabytes / elapsed,
        "rss_growth_kib": growth,
    }


# Every sleeper goes over the soft limit early in the loaded chat, and its soft-limit timer
# runs from then on, concurrently with the test's next steps (the rest of the chat, the
# waker, the private-message flood). Those steps must end before it fires, or a sleeper
# meant for the hard limit (or the waker) is cut by the timer first: on a busy 2-core
# machine they took over 4 s. The window is wide so that they fit; the test checks that
# they did (a clear failure, not a wrong count).
SLOW_SOFT_SECONDS = 15.0
SLOW_LIMITS = (
    *MANY_HOSTS,
    "--nick-hold-seconds",  # cut sleepers must leave the room now, not after the hold
    "0",
    "--out-high-water-bytes",
    "8192",
    "--out-low-water-bytes",
    "2048",
    "--out-soft-limit-bytes",
    "16384",
    "--out-hard-limit-bytes",
    "65536",
    "--out-soft-limit-seconds",
    f"{SLOW_SOFT_SECONDS:g}",
    "--rate-limit",
    "0",
    # Without this the kernel takes ~3 MB per sleeper before chatd sees any.
    "--send-buffer-bytes",
    "32768",
)


CUT_HARD = "closed: slow consumer: output buffer over the hard limit"


CUT_SOFT_TIME = "closed: slow consumer: over the soft limit for"


def chat_at_full_speed(
    server: ChatdProcess, readers: Swarm, room: str, messages: int, tag: str
) -> dict[str, Any]:
    """Every reader says ``messages`` messages as fast as the room carries them: closed
    loop, each sends its next message the moment its previous one comes back (what a
    client typing at machine speed does). Returns latency and throughput as seen."""
    n = len(readers.socks)
    got = [0] * n
    said = [0] * n
    skipped = [0] * n
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    prefix = f"{tag}:".encode()
    pad = "p" * 400

    def say(i: int) -> None:
        key = f"{tag}:{i}:{said[i]}"
        said[i] += 1
        sent_at[key] = time.monotonic()
        readers.socks[i].send(frame(op="say", room=room, text=f"{key}|{pad}"))

    def on_line(i: int, line: bytes) -> None:
        if prefix in line and b'"msg"' in line:
            key = json.loads(line)["text"].split("|")[0]
            got[i] += 1
            latencies.append(time.monotonic() - sent_at[key])
            if key.split(":")[1] == str(i) and said[i] < messages:
                say(i)  # my own message is back: the next one
        elif b'"skipped"' in line:
            skipped[i] += 1

    readers.on_line = on_line
    start = time.monotonic()
    for i in range(n):
        say(i)
    readers.pump_until(lambda: min(got) >= n * messages, 30, f"{tag}: all deliveries")
    elapsed = time.monotonic() - start
    assert got == [n * messages] * n, got
    assert skipped == [0] * n, "a reader that keeps up must never be skipped"
    return {
        "deliveries": sum(got),
        "seconds": elapsed,
        "per_s": sum(got) / elapsed,
        "latency_p50_s": statistics.median(latencies),
        "latency_p99_s": percentile(latencies, 99),
    }


def run_slow_consumers(
    server: ChatdProcess, readers: int, sleepers: int, messages: int
) -> dict[str, Any]:
    room = "#busy"
    fds_before = server.fd_count()
    rss = RssSampler(server)
    socks = []
    for i in range(readers):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(frame(op="hello", nick=f"reader{i}") + frame(op="join", room=room))
        socks.append(s)
    swarm = Swarm(socks)
    swarm.pump_until(
        lambda: all(any(b'"history_end"' in x for x in lines) for lines in swarm.lines),
        10,
        "readers joined",
    )
    baseline = chat_at_full_speed(server, swarm, room, messages, "base")

    # The sleepers: tiny receive window, registered and joined, and then never read.
    sleeping = []
    for i in range(sleepers):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        s.sendall(frame(op="hello", nick=f"sleeper{i}") + frame(op="join", room=room))
        sleeping.append(s)
    swarm.on_line = lambda i, line: None
    swarm.pump_until(lambda: _members(server, room) == readers + sleepers, 10, "sleepers joined")
    loaded_start = time.monotonic()
    loaded = chat_at_full_speed(server, swarm, room, messages, "load")
    log = server.log()
    skipping = log.count("is reading slowly")

    # One sleeper wakes up and reads: it is told how many messages it missed.
    waker = sleeping.pop(0)
    seen = b""
    deadline = time.monotonic() + 10
    # Until it is told, or the deadline: a pause in the bytes is not the end of them (the
    # server flushes the rest when it next runs, which can take a while on a busy machine).
    while b'"skipped"' not in seen and time.monotonic() < deadline:
        waker.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = waker.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        seen = seen[-4096:] + chunk
    woke_skipped = b'"skipped"' in seen

    # Private messages are never skipped: they push the rest past the hard limit, at once.
    flood_start = time.monotonic()
    text = "q" * 1900
    target = sleepers // 2
    for i in range(1, target + 1):
        for _ in range(40):  # 40 x ~2 KB > 64 KiB hard limit
            swarm.send_pumping(0, frame(op="msg", to=f"sleeper{i}", text=text))
            # Reader 0 gets an echo of every private message it sends: it must read them
            # as it goes, or it is the one cut at the hard limit (seen once in CI: reset).
            swarm.pump(0)

    def all_cut_hard() -> bool:
        log = server.log()
        cut_early = log.count(CUT_SOFT_TIME)
        assert not cut_early, (
            f"{cut_early} sleepers were cut by the {SLOW_SOFT_SECONDS:g} s soft-limit timer "
            f"before the test could wake or flood them: its steps took "
            f"{time.monotonic() - loaded_start:.1f} s"
        )
        return log.count(CUT_HARD) >= target

    swarm.pump_until(all_cut_hard, 15, "sleepers cut at the hard limit")
    hard_cut_s = time.monotonic() - flood_start
    steps_s = time.monotonic() - loaded_start
    # The others are over the soft limit and are cut when out_soft_limit_seconds pass.
    swarm.pump_until(
        lambda: _members(server, room) == readers + 1,
        SLOW_SOFT_SECONDS + 15,
        "every sleeper disconnected",
    )
    log = server.log()
    figures = {
        "readers": readers,
        "sleepers": sleepers,
        "messages_each": messages,
        "base_per_s": baseline["per_s"],
        "load_per_s": loaded["per_s"],
        "base_p99_s": baseline["latency_p99_s"],
        "load_p99_s": loaded["latency_p99_s"],
        "base_p50_s": baseline["latency_p50_s"],
        "load_p50_s": loaded["latency_p50_s"],
        "skipping_logged": skipping,
        "woke_got_skipped": woke_skipped,
        "cut_hard": log.count(CUT_HARD),
        "cut_soft_time": log.count(CUT_SOFT_TIME),
        "hard_cut_s": hard_cut_s,
        "steps_s": steps_s,
        "rss_growth_kib": rss.stop(),
    }
    for s in sleeping:
        s.close()
    waker.close()
    swarm.close()
    wait_until(lambda: server.fd_count() <= fds_before, 5, "descriptors freed")
    return figures


def _members(server: ChatdProcess, room: str) -> int:
    """Member count of ``room`` via a short-lived JSON client and the ``rooms`` op."""
    probe = JsonClient(server.port)
    try:
        probe.hello(f"probe{random.randrange(10**9)}")
        probe.send_json(op="rooms")
        rooms = probe.expect_frame(type="rooms")["rooms"]
    finally:
        probe.close()
    return next((r["members"] for r in rooms if r["room"] == room), 0)


def run_flood(
    server: ChatdProcess, flood: int, chatters: int, rate: float, burst: int
) -> dict[str, Any]:
    """One client pipelines ``flood`` messages at once; ``chatters`` others keep talking.
    Returns arrival order and timing as a listener saw them, and chat latency."""
    room = "#flood"
    listener = server.json_client("flood_listener", room)
    talkers = [server.json_client(f"calm{i}", room) for i in range(chatters)]
    flooder = server.json_client("flooder", room)
    # A pasted block is one message; 21 lines cost 6 tokens (chatd/ratelimit.py).
    lines = [
        frame(op="say", room=room, text=f"flood {k}" + ("\nmore" * 20 if k % 10 == 0 else ""))
        for k in range(flood)
    ]
    start = time.monotonic()
    flooder.send(b"".join(lines))  # as fast as the socket takes it

    def flood_seen() -> list[int]:  # RawClient.lines keeps every line read, in order
        return [
            int(strict_loads(x)["text"].split()[1])
            for x in listener.lines
            if x.startswith('{"type":"msg"') and '"text":"flood ' in x
        ]

    latencies: list[float] = []
    duration = float("nan")
    k = 0
    while time.monotonic() < start + flood / rate + 10:
        latencies.append(chat_round_trip(talkers + [listener], k % chatters, room, f"calm{k}"))
        k += 1
        try:  # whatever else the listener has now (flood frames)
            while listener.read_line(0.02) is not None:
                pass
        except AssertionError:
            pass
        if len(flood_seen()) >= flood:
            duration = time.monotonic() - start
            break
    seq = flood_seen()
    for c in (listener, flooder, *talkers):
        c.close()
    return {
        "flood": flood,
        "arrived": len(seq),
        "in_order": seq == list(range(flood)),
        "seconds": duration,
        "rate_seen": (flood - burst) / duration if duration else 0,
        "latency_p50_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
        "rounds": len(latencies),
    }
