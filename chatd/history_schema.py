"""The history file's schema: its tables, its version, and the steps up from older files.

The version lives in ``PRAGMA user_version``. :data:`MIGRATIONS` turns a version-v file
into a version-(v + 1) one, one step at a time, inside the startup transaction; version 0
is a new, empty file, and a file from a newer chatd is refused. Other features append
their own steps (moderation's tables are step 2 -> 3, :mod:`chatd.moderation_store`).

:func:`prepare` is everything :class:`chatd.history.SqliteHistory` does to a freshly
opened connection before the first message: journaling, the write lock test, the
migrations, and the one-time switch to incremental vacuum that retention needs.

Like :mod:`chatd.history`, this does I/O on the database and nothing else.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from chatd.historyfile import HistoryError
from chatd.moderation_store import create_tables

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "prepare"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3


def _create_v1(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE messages (
            mid      INTEGER PRIMARY KEY,        -- the wire mid; server-wide, increasing
            room_key TEXT NOT NULL,              -- the room name folded (rfc1459), for lookup
            room     TEXT NOT NULL,              -- the room name as shown when it was said
            sender   TEXT NOT NULL,
            text     TEXT NOT NULL,
            ts       REAL NOT NULL,              -- wall-clock seconds since the epoch
            kind     TEXT NOT NULL CHECK (kind IN ('say', 'me'))
        )""")
    db.execute("CREATE INDEX messages_by_room ON messages (room_key, mid)")


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Time-based ids and retention: remember the highest id ever held, and per room the
    highest id pruned (where its history now starts)."""
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute(
        "INSERT INTO meta (key, value) SELECT 'last_mid', coalesce(max(mid), 0) FROM messages"
    )
    db.execute("CREATE TABLE pruned (room_key TEXT PRIMARY KEY, upto INTEGER NOT NULL)")


# MIGRATIONS[v] turns a version-v file into a version-(v + 1) one, inside the startup
# transaction. Version 0 is a new, empty file. To add a table: append
# MIGRATIONS[SCHEMA_VERSION] and bump SCHEMA_VERSION.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _create_v1, 1: _v1_to_v2}
# 2 -> 3: moderation's rooms, bans and audit log (chatd/moderation_store.py)
MIGRATIONS[2] = create_tables


def prepare(db: sqlite3.Connection, path: str, *, wal: bool) -> None:
    """Set up the connection to the history at ``path`` and bring its schema up to date.

    Args:
        db: the connection, in autocommit mode (``isolation_level=None``).
        path: the file, for messages.
        wal: use WAL journaling (a file; not for ``":memory:"``).

    Raises:
        HistoryError: WAL journaling is refused, the file comes from a newer chatd, or it
            is some other program's SQLite file.
        sqlite3.Error: the file cannot be written (read-only, full, locked, corrupt).
    """
    # Before the first table exists this makes the file shrink as pruning frees pages
    # (an older file is converted below, once).
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if wal:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise HistoryError(f"history database {path}: cannot use WAL journaling (got {mode!r})")
    db.execute("PRAGMA synchronous = NORMAL")
    # BEGIN IMMEDIATE takes the write lock now: a read-only file, a full disk or a
    # writer in another process fail here, at startup, not at the first message.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"history database {path} has schema version {version}, newer than "
                f"this chatd understands ({SCHEMA_VERSION}); upgrade chatd"
            )
        if version == 0:
            # (chatd.accounts_store may have made its table first: chatd account add)
            tables = db.execute(
                "SELECT count(*) FROM sqlite_master WHERE tbl_name NOT IN "
                "('chatd_accounts', 'chatd_rooms', 'chatd_bans', 'chatd_modlog')"
            ).fetchone()[0]
            if tables:
                raise HistoryError(
                    f"history database {path} is an SQLite file but "
                    f"not a chatd history database; refusing to touch it"
                )
        for step in range(version, SCHEMA_VERSION):
            logger.info("history %s: migrating schema %d -> %d", path, step, step + 1)
            MIGRATIONS[step](db)
        # A write even when nothing changed, so a read-only file is caught now.
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        # A file from before retention: rewrite it once so that pruning can shrink it.
        logger.info("history %s: converting to incremental vacuum (once)", path)
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")
