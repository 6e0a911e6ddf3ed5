"""Does announcing slow the chat loop? Ping round trips with and without ``--announce``.

``python -m bench.discovery_latency [--pings N] [--rounds R]`` (root: it makes two
network namespaces, bench/netns.py, and removes them). In each round, for each mode
(``--no-announce``, then announcing), a fresh chatd runs in the first namespace on
0.0.0.0; a browser in the second namespace asks for ``_chatd._tcp`` without pause (so
the announcer's thread answers queries the whole time); a pinger beside the server
sends N JSON pings one after the other over 127.0.0.1 and times each round trip.
Multicast stays on the veth link between the two namespaces (169.254.77.0/24).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from bench.chatd_process import ChatdProcess
from bench.netns import Lan

_PINGER = """
import json, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile("rb")
s.sendall(b'{"op":"hello","nick":"pinger"}\\n')
line = f.readline()
while line and b'"welcome"' not in line:
    line = f.readline()
out = []
for _ in range(n):
    t = time.perf_counter_ns()
    s.sendall(b'{"op":"ping"}\\n')
    line = f.readline()
    while line and b'"pong"' not in line:
        line = f.readline()
    out.append(time.perf_counter_ns() - t)
print(" ".join(map(str, out)))
"""

_BROWSER = """
import time
from zeroconf import DNSOutgoing, DNSQuestion, IPVersion, Zeroconf
from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_ANY, _TYPE_PTR
zc = Zeroconf(interfaces=["169.254.77.2"], ip_version=IPVersion.V4Only)
end = time.monotonic() + 900
while time.monotonic() < end:  # a query every 10 ms: the announcer answers all along
    out = DNSOutgoing(_FLAGS_QR_QUERY)
    out.add_question(DNSQuestion("_chatd._tcp.local.", _TYPE_PTR, _CLASS_IN))
    out.add_question(DNSQuestion("bench._chatd._tcp.local.", _TYPE_ANY, _CLASS_IN))
    zc.send(out)
    time.sleep(0.01)
"""


def _pct(samples: list[int], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] / 1000


def run(pings: int, rounds: int) -> dict[str, list[int]]:
    lan = Lan(f"b{os.getpid() % 10000}")
    results: dict[str, list[int]] = {"off": [], "on": []}
    try:
        lan.spawn(1, sys.executable, "-c", _BROWSER, log=Path("/tmp/chatd-bench-browser.log"))
        for _ in range(rounds):
            for mode, flag in (("off", "--no-announce"), ("on", "--announce")):
                server = ChatdProcess(
                    "--host", "0.0.0.0", "--server-name", "bench", "--rate-limit", "0", flag,
                    "--log-level", "info", wrap=lan.wrap(0),
                )  # fmt: skip
                try:
                    if mode == "on":  # wait until it is announced (and so answering)
                        deadline = time.monotonic() + 20
                        while "announcing bench" not in server.log():
                            if time.monotonic() > deadline:
                                raise RuntimeError("not announced:\n" + server.log())
                            time.sleep(0.1)
                    done = lan.run(
                        0, sys.executable, "-c", _PINGER, str(server.port), str(pings), timeout=300
                    )
                    results[mode] += [int(x) for x in done.stdout.split()]
                finally:
                    server.stop()
    finally:
        lan.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    results = run(args.pings, args.rounds)
    print(f"ping round trip over 127.0.0.1, {args.rounds} x {args.pings} pings per mode (µs)")
    print(f"{'announcing':<12}{'p50':>8}{'p99':>8}{'p99.9':>8}{'max':>9}{'mean':>8}")
    for mode in ("off", "on"):
        s = results[mode]
        print(
            f"{mode:<12}{_pct(s, 50):8.1f}{_pct(s, 99):8.1f}{_pct(s, 99.9):8.1f}"
            f"{max(s) / 1000:9.1f}{statistics.fmean(s) / 1000:8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
