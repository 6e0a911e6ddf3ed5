"""Room history: every ``say``/``me`` the hub accepted, in SQLite (stdlib ``sqlite3``).

The server appends each :class:`~chatd.model.Store`'s message during a loop turn and
calls :meth:`SqliteHistory.commit` once per turn, **before** it flushes any socket: one
transaction per turn, however many messages it carried. That ordering is the whole
durability argument (docs/history.md has it in full):

- A client can only have received a message whose transaction has committed.
- ``journal_mode=WAL`` with ``synchronous=NORMAL``: when ``COMMIT`` returns, the frames
  are in the WAL file, written with ``write()`` — in the operating system's page cache.
  Killing the process (even SIGKILL) cannot take them back; the next open replays the WAL.
  Only a power cut or kernel crash could lose the last turns' messages (FULL would fsync
  every commit to cover that; it is not the promise we make, and it costs a disk flush
  per turn on the one thread that serves everybody).
- ``locking_mode=EXCLUSIVE``: the file is locked from the first transaction until the
  process exits, so a second chatd on the same file fails at startup instead of handing
  out the same ``mid``s. (It also means WAL needs no ``-shm`` file.)

Message ids are the table's ``INTEGER PRIMARY KEY``; the server resumes the sequence from
:meth:`SqliteHistory.last_mid` + 1, so ``mid``s keep increasing across restarts. A ``mid``
handed out but never committed (the process died in between) was never sent to anyone,
so reusing it after a restart is harmless.

The schema carries its version in ``PRAGMA user_version``; :data:`_MIGRATIONS` upgrades
an older file one step at a time, and a file from a newer chatd is refused.

This module does I/O (it is the shell's store, not part of the sans-I/O core) but it
never touches a socket or a clock.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from chatd.model import MAX_MID, Message
from chatd.names import fold

__all__ = [
    "HistoryError",
    "SqliteHistory",
    "open_store",
    "default_path",
    "MEMORY",
    "SCHEMA_VERSION",
]

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
SCHEMA_VERSION = 1
_KIND = {False: "say", True: "me"}


class HistoryError(Exception):
    """The history database cannot be used; the message names the file and says why."""


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


# _MIGRATIONS[v] turns a version-v file into a version-(v + 1) one. Version 0 is a new,
# empty file. A later release appends _MIGRATIONS[1] and bumps SCHEMA_VERSION.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _create_v1}


def default_path() -> Path:
    """Where history lives when ``--db`` is not given: the user's data directory."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chatd" / "history.db"


def open_store(path: str) -> SqliteHistory:
    """Open (creating or migrating) the history at ``path``.

    Args:
        path: a file name; ``""`` for :func:`default_path` (its directory is created);
            ``":memory:"`` for history that lasts as long as this process.

    Raises:
        HistoryError: the file cannot be created, read or written, is not a chatd
            history database, is corrupt, is in use by another chatd, or comes from a
            newer chatd. The message names the file.
    """
    if path == "":
        target = default_path()
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(
                f"cannot create the history directory {target.parent}: {exc.strerror}"
            ) from None
        path = str(target)
    return SqliteHistory(path)


class SqliteHistory:
    """The server's :class:`~chatd.server.HistoryStore`, on one SQLite connection.

    Not thread-safe, and need not be: the server has one thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._pending: list[tuple[int, str, str, str, str, float, str]] = []
        self.commits = 0  # transactions written (observability; tests read it)
        self.stored = 0  # messages written
        try:
            # timeout=0: nobody else may hold the lock; waiting would only hide that.
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._db = sqlite3.connect(path, timeout=0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from None
        except HistoryError:
            self._db.close()
            raise

    def _error(self, exc: sqlite3.Error) -> HistoryError:
        name = getattr(exc, "sqlite_errorname", "")
        what = {
            "SQLITE_CANTOPEN": "cannot open it (is the path a directory, or its directory "
            "missing or not writable?)",
            "SQLITE_NOTADB": "it is not an SQLite database (or it is corrupt)",
            "SQLITE_CORRUPT": "the database is corrupt",
            "SQLITE_BUSY": "it is in use by another process (another chatd?)",
            "SQLITE_READONLY": "it is read-only",
            "SQLITE_PERM": "permission denied",
            "SQLITE_FULL": "the disk is full",
            "SQLITE_IOERR": "an I/O error occurred",
        }.get("_".join(name.split("_")[:2]), "")  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
        return HistoryError(
            f"history database {self.path}: {what or exc}" + (f" ({exc})" if what else "")
        )

    def _setup(self) -> None:
        db = self._db
        if self.path != MEMORY:
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise HistoryError(
                    f"history database {self.path}: cannot use WAL journaling (got {mode!r})"
                )
        db.execute("PRAGMA synchronous = NORMAL")
        # BEGIN IMMEDIATE takes the write lock now: a read-only file, a full disk or a
        # second chatd fail here, at startup, not at the first message.
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise HistoryError(
                    f"history database {self.path} has schema version {version}, newer than "
                    f"this chatd understands ({SCHEMA_VERSION}); upgrade chatd"
                )
            if version == 0:
                tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise HistoryError(
                        f"history database {self.path} is an SQLite file but "
                        f"not a chatd history database; refusing to touch it"
                    )
            for step in range(version, SCHEMA_VERSION):
                logger.info("history %s: migrating schema %d -> %d", self.path, step, step + 1)
                _MIGRATIONS[step](db)
            # A write even when nothing changed, so a read-only file is caught now.
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writing

    def append(self, message: Message) -> None:
        """Queue ``message`` for the next :meth:`commit` (nothing touches the disk)."""
        self._pending.append(
            (
                message.mid,
                fold(message.room),
                message.room,
                message.sender,
                message.text,
                message.ts,
                _KIND[message.action],
            )
        )

    def commit(self) -> None:
        """Write every queued message in one transaction. Cheap when nothing is queued.

        Raises:
            HistoryError: the write failed (disk full, I/O error). The queued messages
                stay queued, so the caller must not deliver them.
        """
        if not self._pending:
            return
        db = self._db
        try:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO messages (mid, room_key, room, sender, text, ts, kind) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                self._pending,
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise self._error(exc) from None
        self.commits += 1
        self.stored += len(self._pending)
        self._pending.clear()

    # ------------------------------------------------------------------ reading

    def last_mid(self) -> int:
        """The highest stored ``mid`` (0 when empty): the server continues after it."""
        self.commit()
        row = self._db.execute("SELECT max(mid) FROM messages").fetchone()
        return int(row[0] or 0)

    def recent(self, room: str, limit: int) -> list[Message]:
        """The last ``limit`` messages of ``room``, oldest first, marked as history."""
        return self.query(room, None, None, limit)

    def query(self, room: str, before: int | None, after: int | None, limit: int) -> list[Message]:
        """Messages of ``room`` with ``after < mid < before``, oldest first, at most ``limit``.

        With ``after`` the *first* ``limit`` messages after it are returned (a client
        filling a gap pages forward from the last mid it showed); otherwise the *last*
        ``limit`` before ``before`` (or the newest), which is what scrolling back wants.
        ``room`` is the name the messages are returned under (the room's current name;
        lookup ignores case).
        """
        self.commit()
        if limit <= 0:
            return []
        if after is not None and after >= MAX_MID:
            return []
        if before is not None and before > MAX_MID:
            before = None
        where = ["room_key = ?"]
        args: list[object] = [fold(room)]
        if before is not None:
            where.append("mid < ?")
            args.append(before)
        if after is not None:
            where.append("mid > ?")
            args.append(after)
        order = "ASC" if after is not None else "DESC"
        sql = (
            f"SELECT mid, sender, text, ts, kind FROM messages WHERE {' AND '.join(where)} "
            f"ORDER BY mid {order} LIMIT ?"
        )
        try:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        if order == "DESC":
            rows.reverse()
        return [
            Message(room, sender, text, ts, mid, action=kind == "me", history=True)
            for mid, sender, text, ts, kind in rows
        ]

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Commit what is queued, checkpoint the WAL into the main file, and close."""
        try:
            self.commit()
            if self.path != MEMORY:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            logger.warning("history %s: checkpoint on close failed: %s", self.path, exc)
        finally:
            self._db.close()

    def __repr__(self) -> str:
        return (
            f"<SqliteHistory {self.path} pending={len(self._pending)} "
            f"stored={self.stored} commits={self.commits}>"
        )
