"""The abuse scenarios of the tests (bench/abuse_*.py) at a larger scale, for a person to watch.

    python -m bench.stress              # every scenario, stress size (a few minutes)
    python -m bench.stress --quick      # the sizes the test suite uses
    python -m bench.stress --only churn --only flood

Each scenario starts its own chatd on 127.0.0.1 (port 0), runs the same ``run_*``
function as the test, checks the same promises, and prints one line; a summary table
follows. Everything is bounded: counts are fixed and every wait has a deadline. Exit
status 1 if any scenario broke a promise.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import abuse_crowds, abuse_text, abuse_traffic, stress_server
from bench import abuse_tools as abuse
from bench.abuse_tools import MiB, raise_nofile_or_exit
from bench.chatd_process import ChatdProcess


def slowloris(quick: bool) -> tuple[dict[str, Any], list[str]]:
    n, timeout = (200, 2.0) if quick else (1000, 3.0)
    raise_nofile_or_exit(n + 500)
    server = ChatdProcess(*abuse.MANY_HOSTS, "--register-timeout-seconds", str(timeout))
    try:
        got = abuse_crowds.run_slowloris(
            server, tricklers=n, chatters=10 if quick else 20, register_timeout=timeout
        )
        abuse.server_healthy(server)
    finally:
        server.stop()
    return got, [
        f"{got['closed']}/{n} tricklers closed at {got['first_close_s']:.1f}-"
        f"{got['last_close_s']:.1f}s (timeout {timeout:g}s)",
        f"chat latency p50 {got['latency_p50_s'] * 1000:.1f} ms, "
        f"max {got['latency_max_s'] * 1000:.0f} ms",
        f"RSS +{got['rss_growth_kib'] / MiB:.1f} MiB",
    ] if got["closed"] == n and got["rss_growth_kib"] < 32 * MiB else ["FAIL"]


def endless(quick: bool) -> tuple[dict[str, Any], list[str]]:
    mb = 50 if quick else 500
    server = ChatdProcess("--rate-limit", "0")
    try:
        got = abuse_traffic.run_endless_line(server, mb, "json")
        abuse.server_healthy(server)
    finally:
        server.stop()
    ok = got["rss_growth_kib"] < 8 * MiB
    return got, [
        f"{mb} MB without a newline at {got['mb_per_s']:.0f} MB/s",
        f"RSS +{got['rss_growth_kib'] / MiB:.2f} MiB (bound 8 MiB)",
        "line_too_long, then usable",
    ] if ok else ["FAIL"]


def slow_consumers(quick: bool) -> tuple[dict[str, Any], list[str]]:
    readers, sleepers = (20, 50) if quick else (40, 300)
    raise_nofile_or_exit(readers + sleepers + 500)
    server = ChatdProcess(*abuse_traffic.SLOW_LIMITS)
    try:
        got = abuse_traffic.run_slow_consumers(
            server, readers=readers, sleepers=sleepers, messages=40
        )
        abuse.server_healthy(server)
    finally:
        server.stop()
    ok = got["cut_hard"] + got["cut_soft_time"] == sleepers - 1 and got["woke_got_skipped"]
    return got, [
        f"{sleepers} sleepers: {got['cut_hard']} cut at the hard limit, "
        f"{got['cut_soft_time']} after the soft-limit time, 1 woke and got 'skipped'",
        f"readers {got['base_per_s']:.0f}/s alone, {got['load_per_s']:.0f}/s beside them",
        f"p99 {got['base_p99_s'] * 1000:.0f} -> {got['load_p99_s'] * 1000:.0f} ms; "
        f"RSS +{got['rss_growth_kib'] / MiB:.1f} MiB",
    ] if ok else ["FAIL"]


def churn(quick: bool) -> tuple[dict[str, Any], list[str]]:
    cycles = 2400 if quick else 12000
    server = ChatdProcess(
        *abuse.MANY_HOSTS,
        "--rate-limit",
        "0",
        "--register-timeout-seconds",
        "5",
        "--nick-hold-seconds",
        "0",
    )
    try:
        got = abuse_crowds.run_churn(server, cycles=cycles)
        abuse.server_healthy(server)
    finally:
        server.stop()
    ok = (
        got["fds_after"] <= got["fds_before"] + 1
        and got["rooms_left"] == ["#churn0"]
        and got["nicks_reusable"] == got["nicks_used"]
    )
    return got, [
        f"{cycles} cycles at {got['per_s']:.0f}/s, 1/6 each way of leaving",
        f"fds {got['fds_before']} -> {got['fds_after']} (+observer), rooms left "
        f"{got['rooms_left']}, {got['nicks_reusable']} nicks reusable",
        f"RSS +{got['rss_growth_kib'] / MiB:.1f} MiB",
    ] if ok else ["FAIL"]


def fd_exhaustion(quick: bool) -> tuple[dict[str, Any], list[str]]:
    limit, extra = (64, 40) if quick else (512, 400)  # the waiting must fit once others leave
    server = ChatdProcess(
        *abuse.MANY_HOSTS,
        "--rate-limit",
        "0",
        "--register-timeout-seconds",
        "60",
        preexec=abuse._low_nofile(limit),
    )
    try:
        got = abuse_crowds.run_fd_exhaustion(server, limit, extra=extra, measure_s=3.0)
        abuse.server_healthy(server)
    finally:
        server.stop()
    ok = got["cpu_share_saturated"] < 0.2
    return got, [
        f"RLIMIT_NOFILE {limit}, {got['opened']} clients: "
        f"{got['served_while_full']} served, {got['waiting']} waiting",
        f"CPU while saturated {got['cpu_share_saturated'] * 100:.1f}% of a core",
        "recovered: every waiting client served",
    ] if ok else ["FAIL"]


def flood(quick: bool) -> tuple[dict[str, Any], list[str]]:
    count = 70 if quick else 230  # 200 past the burst: 20 s at 10/s
    server = ChatdProcess()
    try:
        got = abuse_traffic.run_flood(
            server, flood=count, chatters=4 if quick else 10, rate=10, burst=30
        )
        abuse.server_healthy(server)
    finally:
        server.stop()
    ok = got["arrived"] == count and got["in_order"]
    return got, [
        f"{count} pipelined: all arrived in order over {got['seconds']:.1f}s "
        f"({got['rate_seen']:.1f}/s past the burst)",
        f"others' latency p50 {got['latency_p50_s'] * 1000:.1f} ms, "
        f"max {got['latency_max_s'] * 1000:.0f} ms",
    ] if ok else ["FAIL"]


def many(quick: bool) -> tuple[dict[str, Any], list[str]]:
    clients, rooms = (5000, 10) if quick else (10000, 20)
    raise_nofile_or_exit(clients + 500)
    server = ChatdProcess(
        *abuse.MANY_HOSTS, "--rate-limit", "0", "--max-clients", str(clients + 100)
    )
    try:
        got = abuse_crowds.run_many(server, clients=clients, rooms=rooms)
        abuse.server_healthy(server)
    finally:
        server.stop()
    ok = got["delivered"] == clients
    return got, [
        f"{clients} connections in {got['connect_s']:.1f}s; registered and joined "
        f"{rooms} rooms by {got['register_join_s']:.1f}s "
        f"(server CPU {got['server_cpu_join_s']:.1f}s)",
        f"fan-out delivered to {got['delivered']} in {got['fanout_s'] * 1000:.0f} ms; "
        f"RSS +{got['rss_growth_kib'] / MiB:.0f} MiB",
    ] if ok else ["FAIL"]


def paste(quick: bool) -> tuple[dict[str, Any], list[str]]:
    """Issue 10, finding 4: IRC bytes of one pasted block, and of a join replay, with
    the line limit (after) and with it raised to 1000 lines (the server before it)."""
    pastes = 50 if quick else 200
    got: dict[str, Any] = {}
    for when, lines in (("before", 1000), ("after", 0)):
        flags = ["--rate-limit", "0"] + (["--max-message-lines", str(lines)] if lines else [])
        server = ChatdProcess(*flags, irc=True)
        try:
            figures = abuse_text.run_paste(server, pastes=pastes, max_lines=lines or 40)
            abuse.server_healthy(server)
        finally:
            server.stop()
        got.update({f"{when}_{key}": value for key, value in figures.items()})
    ok = got["after_thousand_refused"] and got["after_joiner_survived"]
    return got, [
        f"'x\\n'*1000: {got['before_thousand_irc_bytes'] / 1024:.0f} KiB of PRIVMSGs per IRC "
        "member -> refused (too_many_lines), none sent",
        f"largest paste allowed: {got['before_worst_lines']} lines, "
        f"{got['before_worst_irc_bytes'] / 1024:.0f} KiB per IRC member -> "
        f"{got['after_worst_lines']} lines, {got['after_worst_irc_bytes'] / 1024:.1f} KiB; "
        f"costs {got['after_worst_tokens']} tokens (was 1)",
        f"replay of the last 50 to an IRC joiner: "
        f"{got['before_replay_irc_bytes'] / 1024:.0f} KiB -> "
        f"{got['after_replay_irc_bytes'] / 1024:.0f} KiB",
    ] if ok else ["FAIL"]


def irc_targets(quick: bool) -> tuple[dict[str, Any], list[str]]:
    """Issue 10 finding 5: IRC lines with many targets (JOIN of 50 rooms, JOIN 0)."""
    seconds = 4.0 if quick else 8.0
    # The default rate limit (10/s, burst 30) and history in a file, as a real server.
    db = Path(tempfile.mkdtemp()) / "stress.db"
    server = ChatdProcess("--db", str(db), irc=True)
    try:
        got = run_irc_targets(server, clients=4, rooms=50, seconds=seconds)
        abuse.server_healthy(server)
    finally:
        server.stop()
    # The promise: a JOIN costs a token per room, so at 10/s (burst 30) each client joins
    # at most 30 + 10 * seconds rooms (+ one line in debt), and each join is seen by at
    # most every client. When a line cost one token, 20x more got through.
    bound = 4 * 4 * (30 + 10 * seconds + 50)
    if got["joins_seen"] > bound:
        return got, ["FAIL"]
    return got, [
        f"{got['clients']} IRC clients looping JOIN of {got['rooms']} rooms + JOIN 0 for "
        f"{seconds:g}s: {got['joins_seen']} JOIN lines read back",
        f"server CPU {got['server_cpu_s']:.2f}s in {seconds:g}s; "
        f"others' ping p50 {got['ping_p50_s'] * 1000:.1f} ms, "
        f"max {got['ping_max_s'] * 1000:.0f} ms",
    ]


def run_irc_targets(
    server: ChatdProcess, clients: int, rooms: int, seconds: float
) -> dict[str, Any]:
    """``clients`` IRC users pipeline ``JOIN #a,#b,…`` then ``JOIN 0`` for ``seconds``
    while a JSON user pings; returns the server's CPU time and the ping latencies."""
    assert server.irc_port
    join = ("JOIN " + ",".join(f"#t{k}" for k in range(rooms)) + "\r\nJOIN 0\r\n").encode()
    socks = []
    for i in range(clients):
        sock = socket.create_connection(("127.0.0.1", server.irc_port), timeout=5)
        sock.sendall(f"NICK multi{i}\r\nUSER multi{i} 0 * :m\r\n".encode())
        socks.append(sock)
    stop = threading.Event()
    sent = [0] * clients
    joins = [0] * clients

    def drain(k: int) -> None:  # read everything, count our own JOINs
        sock, tail = socks[k], b""
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            chunk = tail + data
            joins[k] += chunk.count(b" JOIN #t")  # ours and the others'

            tail = chunk[-16:]

    def flood(k: int) -> None:
        socks[k].settimeout(0.5)
        while not stop.is_set():
            try:
                socks[k].sendall(join)
                sent[k] += 2
            except TimeoutError:
                continue  # the server stopped reading us: the rate limit works
            except OSError:
                return

    pinger = server.json_client("pinger")
    threads = [threading.Thread(target=drain, args=(k,), daemon=True) for k in range(clients)]
    threads += [threading.Thread(target=flood, args=(k,), daemon=True) for k in range(clients)]
    cpu_before = server.cpu_seconds()
    for t in threads:
        t.start()
    pings: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        pinger.send_json(op="ping", id=len(pings))
        pinger.expect_frame(type="pong", timeout=10)
        pings.append(time.monotonic() - start)
        time.sleep(0.05)
    cpu = server.cpu_seconds() - cpu_before
    stop.set()
    for t in threads:
        t.join(2)
    for sock in socks:
        sock.close()
    pinger.close()
    return {
        "clients": clients,
        "rooms": rooms,
        "lines_sent": sum(sent),
        "joins_seen": sum(joins),
        "server_cpu_s": cpu,
        "ping_p50_s": statistics.median(pings),
        "ping_max_s": max(pings),
    }


SCENARIOS: dict[str, Callable[[bool], tuple[dict[str, Any], list[str]]]] = {
    "slowloris": slowloris,
    "endless": endless,
    "slow_consumers": slow_consumers,
    "churn": churn,
    "fd_exhaustion": fd_exhaustion,
    "flood": flood,
    "many": many,
    "paste": paste,
    "irc_targets": irc_targets,
}
SCENARIOS.update(stress_server.SCENARIOS)  # issue 10: bench/stress_server.py


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stress",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the test suite's sizes")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="run just this scenario (repeatable)",
    )
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, float, list[str]]] = []
    for name in args.only or list(SCENARIOS):
        print(f"--- {name} ...", flush=True)
        start = time.monotonic()
        try:
            figures, summary = SCENARIOS[name](args.quick)
            verdict = "FAIL" if summary == ["FAIL"] else "ok"
            if verdict == "FAIL":
                summary = [f"{k}={v}" for k, v in figures.items()]
        except (AssertionError, RuntimeError, OSError) as exc:
            traceback.print_exc()
            verdict, summary = "FAIL", [str(exc).splitlines()[0][:200]]
        elapsed = time.monotonic() - start
        rows.append((name, verdict, elapsed, summary))
        print(f"    {verdict} in {elapsed:.1f}s: " + "; ".join(summary), flush=True)
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'scenario':<{width}}  result   time  figures")
    print(f"{'-' * width}  ------  -----  {'-' * 60}")
    for name, verdict, elapsed, summary in rows:
        print(f"{name:<{width}}  {verdict:<6}  {elapsed:4.0f}s  {summary[0]}")
        for line in summary[1:]:
            print(f"{'':<{width}}                 {line}")
    return 1 if any(r[1] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
