"""Retention cost: time per pruning batch, and the file's size after an hour of traffic.

Store-level and on a clock we control: an hour of messages at ``--rate`` per second is
written the way the server writes them (one commit per loop turn of ``--per-commit``
messages, timestamps advancing with the simulated clock), and pruning runs the way the
server runs it (a batch per 0.25 s sweep while there is a backlog, else once a second).
Prints the batch times and the file sizes with and without retention.

    python -m bench.retention [--rate 200] [--seconds 3600] [--max-age 15m]
                              [--max-per-room 0] [--rooms 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from chatd.config import parse_duration
from chatd.history import SqliteHistory, open_store
from chatd.model import Message
from chatd.retention import PRUNE_BATCH, prune

TEXT = "a typical chat line of about sixty characters, give or take."


def size_of(path: Path) -> int:
    return sum(
        os.path.getsize(f"{path}{suffix}")
        for suffix in ("", "-wal")
        if os.path.exists(f"{path}{suffix}")
    )


def run(args: argparse.Namespace, path: Path, retention: bool) -> tuple[list[float], int, int]:
    max_age = parse_duration(args.max_age) if retention else 0.0
    store: SqliteHistory = open_store(
        str(path), max_age=max_age, max_per_room=args.max_per_room if retention else 0
    )
    start = 1_795_000_000.0
    mid = int(start * 1000) << 10
    batches: list[float] = []
    backlog = False
    for second in range(args.seconds):
        now = start + second
        for i in range(args.rate):
            ts = now + i / args.rate
            mid = max(mid + 1, int(ts * 1000) << 10)
            store.append(Message(f"#room{i % args.rooms}", "alice", TEXT, ts, mid))
            if (i + 1) % args.per_commit == 0:
                store.commit()
        store.commit()
        for _ in range(4 if backlog else 1):  # sweeps: 4 per second with a backlog
            began = time.perf_counter()
            rows = prune(store, now + 1)
            if rows:
                batches.append(time.perf_counter() - began)
            backlog = rows >= PRUNE_BATCH
            if not backlog:
                break
    store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    count = store.db.execute("SELECT count(*) FROM messages").fetchone()[0]
    size = size_of(path)
    store.close()
    return batches, size, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=200, help="messages per second")
    parser.add_argument("--seconds", type=int, default=3600, help="simulated seconds")
    parser.add_argument("--max-age", default="15m")
    parser.add_argument("--max-per-room", type=int, default=0)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--per-commit", type=int, default=20, help="messages per loop turn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        off_batches, off_size, off_count = run(args, Path(tmp) / "off.db", retention=False)
        on_batches, on_size, on_count = run(args, Path(tmp) / "on.db", retention=True)
    total = args.rate * args.seconds
    print(
        f"{total} messages ({args.rate}/s for {args.seconds} s, {len(TEXT)}-character texts, "
        f"{args.rooms} rooms); retention: max-age {args.max_age}, "
        f"max-per-room {args.max_per_room or 'off'}"
    )
    print(f"  no retention:   {off_count:>8} messages kept, file {off_size / 1e6:8.1f} MB")
    print(f"  with retention: {on_count:>8} messages kept, file {on_size / 1e6:8.1f} MB")
    if on_batches:
        ms = sorted(t * 1000 for t in on_batches)
        print(
            f"  pruning: {len(ms)} batches (<= {PRUNE_BATCH} rows each); per batch "
            f"median {statistics.median(ms):.2f} ms, p99 {ms[int(len(ms) * 0.99)]:.2f} ms, "
            f"max {ms[-1]:.2f} ms"
        )


if __name__ == "__main__":
    main()
