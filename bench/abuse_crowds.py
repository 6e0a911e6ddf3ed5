"""Abuse scenarios about crowds of connections (issue 6): slowloris tricklers, connect and
leave churn, descriptor exhaustion, ten thousand connections.

Each ``run_*`` function takes its scale as arguments and returns the figures it
measured; tests/test_abuse.py calls it at a size that runs in seconds and asserts on the
figures, ``make stress`` (bench/stress.py) at a larger size. Counts and deadlines are
bounded everywhere; waits poll for a condition with a deadline.
"""

from __future__ import annotations

import socket
import statistics
import time
from typing import Any

from bench.abuse_tools import (
    RssSampler,
    Swarm,
    chat_round_trip,
    frame,
    reset,
)
from bench.chatd_process import ChatdProcess, many_sockets, wait_until


def run_slowloris(
    server: ChatdProcess, tricklers: int, chatters: int, register_timeout: float
) -> dict[str, Any]:
    """``tricklers`` connections send one byte at a time and never end a line, while
    ``chatters`` JSON clients chat in one room; returns latencies, RSS and close times."""
    rss = RssSampler(server)
    fds_before = server.fd_count()
    crowd = Swarm(many_sockets(server.port, tricklers))
    opened = time.monotonic()
    room = "#slowloris"
    talkers = [server.json_client(f"talker{i}", room) for i in range(chatters)]
    latencies: list[float] = []
    deadline = opened + register_timeout + 5
    rounds = 0
    while len(crowd.closed) < tricklers and time.monotonic() < deadline:
        crowd.send_all(b"x")  # one more byte of a nickname that never ends
        latencies.append(chat_round_trip(talkers, rounds % chatters, room, f"r{rounds}"))
        crowd.pump(0.05)
        rounds += 1
    timeout_lines = sum(1 for lines in crowd.lines if any(b"timeout" in x for x in lines))
    close_times = [t - opened for t in crowd.closed.values()]
    crowd.close()
    # The talkers stay, the tricklers' descriptors must all be given back.
    wait_until(lambda: server.fd_count() <= fds_before + chatters, 5, "tricklers' fds freed")
    for i in range(3):  # and the room still works
        latencies.append(chat_round_trip(talkers, i, room, f"after{i}"))
    for talker in talkers:
        talker.close()
    return {
        "tricklers": tricklers,
        "closed": len(crowd.closed),
        "told_timeout": timeout_lines,
        "first_close_s": min(close_times, default=float("nan")),
        "last_close_s": max(close_times, default=float("nan")),
        "rounds": rounds,
        "latency_p50_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
        "rss_growth_kib": rss.stop(),
    }


def run_churn(server: ChatdProcess, cycles: int, batch: int = 100) -> dict[str, Any]:  # noqa: C901
    """Connect/register/join/disconnect ``cycles`` times in batches, ending each
    connection one of six ways; returns the cleanup figures."""
    fds_before = server.fd_count()
    rss = RssSampler(server)
    observer = server.json_client("churn_observer", "#churn0")
    ways = ["quit", "close", "reset", "reset_mid_line", "reset_mid_write", "reset_unregistered"]
    count = {way: 0 for way in ways}
    start = time.monotonic()
    nicks: list[str] = []
    for base in range(0, cycles, batch):
        size = min(batch, cycles - base)
        socks = many_sockets(server.port, size)
        swarm = Swarm(socks)
        plan = [ways[(base + i) % len(ways)] for i in range(size)]
        for i, s in enumerate(socks):
            nick = f"churn{base + i}"
            if plan[i] != "reset_unregistered":
                nicks.append(nick)
                s.send(
                    frame(op="hello", nick=nick)
                    + frame(op="join", room=f"#churn{i % 7}")
                    + frame(op="join", room=f"#c{base + i}")
                )
            else:
                s.send(b'{"op":"hel')  # mid-line, before a nick

        def batch_joined(swarm: Swarm = swarm, plan: list[str] = plan) -> bool:
            return all(
                way == "reset_unregistered"
                or sum(b'"history_end"' in x for x in swarm.lines[i]) == 2
                for i, way in enumerate(plan)
            )

        swarm.pump_until(batch_joined, 10, "batch joined")
        for i, s in enumerate(socks):
            way = plan[i]
            count[way] += 1
            if way == "quit":
                s.send(frame(op="quit", reason="bye"))
            elif way == "close":
                s.close()
            elif way in ("reset", "reset_unregistered"):
                reset(s)
            elif way == "reset_mid_line":
                s.send(b'{"op":"say","room":"#churn0","text":"half a li')
                reset(s)
            elif way == "reset_mid_write":
                # Ask for plenty of output and vanish before reading it: the server is
                # writing when the RST comes.
                s.send(frame(op="who", room="#churn0") * 200)
                reset(s)
        swarm.sel.close()
        for s in socks:
            s.close()
        # The observer drains its join/quit traffic so it is never a slow consumer.
        while True:
            observer.send_json(op="ping", id=base)
            if observer.expect_frame(type="pong", id=base):
                break
    elapsed = time.monotonic() - start
    wait_until(lambda: server.fd_count() <= fds_before + 1, 10, "descriptors back to baseline")
    fds_after = server.fd_count()
    observer.send_json(op="rooms")
    rooms = observer.expect_frame(type="rooms")["rooms"]
    # Every nick must be free again: one connection takes each in turn with `nick`.
    taker = server.json_client("churn_taker")
    taken = 0
    for lo in range(0, len(nicks), 500):
        chunk = nicks[lo : lo + 500]
        taker.send(b"".join(frame(op="nick", nick=n) for n in chunk))
        for n in chunk:
            reply = taker.expect_frame(timeout=10)
            while reply["type"] != "nick" and reply["type"] != "error":
                reply = taker.expect_frame(timeout=10)
            if reply["type"] == "nick" and reply["new"] == n:
                taken += 1
    taker.close()
    observer.close()
    return {
        "cycles": cycles,
        "seconds": elapsed,
        "per_s": cycles / elapsed,
        "ways": count,
        "fds_before": fds_before,
        "fds_after": fds_after,
        "rooms_left": [r["room"] for r in rooms],
        "nicks_reusable": taken,
        "nicks_used": len(nicks),
        "rss_growth_kib": rss.stop(),
    }


def run_fd_exhaustion(
    server: ChatdProcess, limit: int, extra: int, measure_s: float
) -> dict[str, Any]:
    """Open ``limit + extra`` connections against a server whose RLIMIT_NOFILE is
    ``limit``; measure its CPU while saturated; then free them and check recovery."""
    fds_idle = server.fd_count()
    assert extra <= limit - 2 * fds_idle, "the waiting ones must fit once the others leave"
    socks = many_sockets(server.port, limit + extra)  # the kernel completes them all
    swarm = Swarm(socks)
    swarm.send_all(lambda i: frame(op="hello", nick=f"fd{i}"))
    swarm.pump_until(
        lambda: server.fd_count() >= limit - 1 and "accept failed" in server.log(),
        10,
        "the server to run out of descriptors",
    )

    def welcomed() -> list[int]:
        return [i for i, lines in enumerate(swarm.lines) if any(b'"welcome"' in x for x in lines)]

    # Saturated: the listening socket stays readable. Measure CPU over a few seconds.
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    deadline = t0 + measure_s
    while time.monotonic() < deadline:
        swarm.pump(0.1)
    cpu_share = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    served = welcomed()
    # Recovery: the served ones leave; the ones waiting in the backlog get their turn.
    for i in served:
        swarm.sel.unregister(socks[i])
        swarm.closed[i] = time.monotonic()
        socks[i].close()
    waiting = [i for i in range(len(socks)) if i not in swarm.closed]
    swarm.pump_until(lambda: set(waiting) <= set(welcomed()), 15, "the waiting ones served")
    newcomer = server.json_client("after_exhaustion", "#back")
    newcomer.close()
    swarm.close()
    wait_until(lambda: server.fd_count() <= fds_idle, 10, "descriptors back to idle")
    return {
        "nofile": limit,
        "opened": len(socks),
        "served_while_full": len(served),
        "waiting": len(waiting),
        "cpu_share_saturated": cpu_share,
        "fds_idle": fds_idle,
        "fds_after": server.fd_count(),
    }


def run_many(server: ChatdProcess, clients: int, rooms: int) -> dict[str, Any]:
    """``clients`` JSON connections, each joined to one of ``rooms`` rooms; one message
    per room is fanned out; returns timings and how many got it."""
    rss = RssSampler(server, interval=0.1)
    start = time.monotonic()
    # Connect in waves the server has accepted before the next: 5,000 SYNs at once
    # overflow the kernel's accept queue (SOMAXCONN, 4096), and the overflow then waits
    # for SYN-ACK retransmits (1 s, 3 s, 7 s ...), which measures the kernel, not chatd.
    socks: list[socket.socket] = []
    base_fds = server.fd_count()
    while len(socks) < clients:
        socks += many_sockets(server.port, min(1000, clients - len(socks)), timeout=30)
        wanted = base_fds + len(socks)
        wait_until(lambda: server.fd_count() >= wanted, 30, "accepted")  # noqa: B023 (used at once)
    connected_s = time.monotonic() - start
    joined = [False] * clients
    got_msg = [0] * clients
    tails = [b""] * clients

    def on_data(i: int, chunk: bytes) -> None:
        # Scan raw chunks (a marker may straddle two of them): 5,000 clients receive
        # hundreds of join events each, too many lines to parse one by one in a test.
        data = tails[i] + chunk
        tails[i] = data[-64:]
        if b'"history_end"' in data:
            joined[i] = True
        if b'"text":"fan-out ' in data:
            got_msg[i] = 1

    swarm = Swarm(socks, on_data=on_data)
    cpu0 = server.cpu_seconds()
    swarm.send_all(
        lambda i: frame(op="hello", nick=f"m{i}") + frame(op="join", room=f"#many{i % rooms}")
    )
    swarm.pump_until(lambda: all(joined), 60, "everyone joined")
    joined_s = time.monotonic() - start
    join_cpu_s = server.cpu_seconds() - cpu0
    assert not swarm.closed, f"{len(swarm.closed)} connections were closed"
    t0 = time.monotonic()
    for r in range(rooms):  # one speaker per room: one message fanned out to its members
        socks[r].send(frame(op="say", room=f"#many{r}", text=f"fan-out {r}"))
    swarm.pump_until(lambda: all(got_msg), 30, "the fan-out delivered to all")
    fanout_s = time.monotonic() - t0
    figures = {
        "clients": clients,
        "rooms": rooms,
        "connect_s": connected_s,
        "register_join_s": joined_s,
        "server_cpu_join_s": join_cpu_s,
        "fanout_s": fanout_s,
        "delivered": sum(1 for n in got_msg if n == 1),
        "server_fds": server.fd_count(),
        "rss_growth_kib": rss.stop(),
    }
    swarm.close()
    return figures
