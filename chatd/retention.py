"""Retention: prune the oldest room messages in small batches, and shrink the file.

Two rules, both off by default (docs/history.md says why):

- ``history_max_age``: messages older than this are removed;
- ``history_max_per_room``: a room keeps at most this many messages.

Either way only the *oldest* messages go, so what remains of a room is always a suffix
of its history: paging and gap fills stay correct, and per room the highest pruned id is
recorded (table ``pruned``) so that a gap fill reaching below it is told where history
now starts. The server calls :func:`prune` on a timer; each call deletes at most
``batch`` rows in one transaction (atomic: a SIGKILL in the middle loses nothing that
should stay) and returns the freed pages to the filesystem (``incremental_vacuum``; the
file is in ``auto_vacuum=INCREMENTAL`` mode, see :mod:`chatd.history`).

Per-room counts live in memory (one int per room that has history), loaded once at
startup with one scan of the room index, so checking the cap costs nothing per message.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

from chatd.historyfile import describe

if TYPE_CHECKING:
    from chatd.history import SqliteHistory

__all__ = ["prune", "count_rooms", "PRUNE_BATCH"]

logger = logging.getLogger(__name__)

# Rows deleted per call. Measured on the development VM: ~2 ms per full batch of 500
# (delete, bookkeeping, vacuum, commit), small enough to hide between loop turns.
PRUNE_BATCH = 500


def count_rooms(store: SqliteHistory) -> None:
    """Load the per-room message counts (one scan of the room index)."""
    counts = store.room_counts
    counts.clear()
    for key, count in store.db.execute("SELECT room_key, count(*) FROM messages GROUP BY room_key"):
        counts[key] = count
    store.over_cap = {key for key, count in counts.items() if count > store.max_per_room}


def prune(store: SqliteHistory, now: float, batch: int = PRUNE_BATCH) -> int:
    """Delete at most ``batch`` of the oldest expired messages; return how many.

    ``now`` is wall-clock seconds (the age rule's reference). Messages queued but not
    yet committed are untouched (they are the newest anyway).

    Raises:
        HistoryError: the write failed (then nothing was deleted).
    """
    if not (store.max_age or store.max_per_room) or batch <= 0:
        return 0
    db = store.db
    removed: dict[str, int] = {}  # room_key -> highest mid removed now
    deleted = 0
    try:
        db.execute("BEGIN IMMEDIATE")
        if store.max_age:
            deleted += _prune_age(store, now - store.max_age, batch, removed)
        while store.max_per_room and store.over_cap and deleted < batch:
            deleted += _prune_room(store, batch - deleted, removed)
        if deleted:
            db.executemany(
                "INSERT INTO pruned (room_key, upto) VALUES (?, ?) ON CONFLICT (room_key) "
                "DO UPDATE SET upto = max(upto, excluded.upto)",
                removed.items(),
            )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('last_mid', ?) ON CONFLICT (key) "
                "DO UPDATE SET value = max(value, excluded.value)",
                (max(removed.values()),),
            )
            _vacuum(db)
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if store.max_per_room:
            count_rooms(store)  # the in-memory counts ran ahead of the rolled-back delete
        raise describe(store.path, exc) from None
    store.pruned += deleted
    return deleted


def _vacuum(db: sqlite3.Connection) -> None:
    """Give every free page back to the filesystem (at the next checkpoint).

    ``PRAGMA incremental_vacuum`` reports each page it frees as an empty result row, and
    Python's ``execute`` steps a statement only until its first row: one page per call.
    """
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    for _ in range(free):
        db.execute("PRAGMA incremental_vacuum(1)")


def _prune_age(store: SqliteHistory, cutoff: float, batch: int, removed: dict[str, int]) -> int:
    """The oldest messages (by mid) while their timestamp is before ``cutoff``."""
    rows = store.db.execute(
        "SELECT mid, room_key, ts FROM messages ORDER BY mid LIMIT ?", (batch,)
    ).fetchall()
    last = None
    counts = store.room_counts if store.max_per_room else None
    for mid, key, ts in rows:
        if ts >= cutoff:
            break
        last = mid
        removed[key] = max(removed.get(key, 0), mid)
        if counts is not None and key in counts:
            counts[key] -= 1
    if last is None:
        return 0
    return int(store.db.execute("DELETE FROM messages WHERE mid <= ?", (last,)).rowcount)


def _prune_room(store: SqliteHistory, budget: int, removed: dict[str, int]) -> int:
    """The oldest messages of one room over the per-room cap."""
    key = next(iter(store.over_cap))
    excess = store.room_counts.get(key, 0) - store.max_per_room
    if excess <= 0:
        store.over_cap.discard(key)
        return 0
    count = min(excess, budget)
    row = store.db.execute(
        "SELECT max(mid) FROM (SELECT mid FROM messages WHERE room_key = ? ORDER BY mid LIMIT ?)",
        (key, count),
    ).fetchone()
    if row[0] is None:
        store.over_cap.discard(key)
        return 0
    gone = store.db.execute(
        "DELETE FROM messages WHERE room_key = ? AND mid <= ?", (key, row[0])
    ).rowcount
    removed[key] = max(removed.get(key, 0), row[0])
    store.room_counts[key] -= gone
    if store.room_counts[key] <= store.max_per_room:
        store.over_cap.discard(key)
    return int(gone)
