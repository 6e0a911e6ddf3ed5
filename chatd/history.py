"""Room history: every ``say``/``me`` the hub accepted, in SQLite (stdlib ``sqlite3``).

The server appends each :class:`~chatd.model.Store`'s message during a loop turn and
calls :meth:`SqliteHistory.commit` before any byte of those messages is queued for a
socket: one transaction per batch, however many messages it carried. That ordering is
the whole durability argument (docs/history.md has it in full):

- A client can only have received a message whose transaction has committed.
- ``journal_mode=WAL`` with ``synchronous=NORMAL``: when ``COMMIT`` returns, the frames
  are in the WAL file, written with ``write()`` — in the operating system's page cache.
  Killing the process (even SIGKILL) cannot take them back; the next open replays the WAL.
- One chatd per file: the process holds an exclusive ``flock`` on ``PATH.lock`` while it
  runs, so a second chatd fails at startup. SQLite itself runs in its normal (shared)
  locking mode, so ``chatd backup`` and ``chatd export`` can read the live file.

Message ids are chosen by the hub (time-based, see :mod:`chatd.hub`); the store keeps the
highest id it ever held in ``meta`` (pruning cannot lower it), and the server resumes
after :meth:`SqliteHistory.last_mid`.

A failed commit raises :class:`HistoryError`; the queued messages stay queued until the
server takes them back with :meth:`SqliteHistory.drop_pending` (it refuses them to their
senders). :meth:`check_file` notices a deleted or replaced file, :meth:`probe` tells
when writing works again, and :mod:`chatd.retention` prunes old messages.

The schema, its version and the migrations that upgrade an older file one step at a time
are in :mod:`chatd.history_schema` (a file from a newer chatd is refused).

This module does I/O (it is the shell's store, not part of the sans-I/O core) but it
never touches a socket or a clock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path

from chatd.history_schema import prepare
from chatd.historyfile import (
    MIN_FREE_BYTES,
    HistoryError,
    check_directory,
    check_identity,
    describe,
    free_bytes,
)
from chatd.model import MAX_MID, Message
from chatd.names import fold

__all__ = [
    "HistoryError",
    "SqliteHistory",
    "open_store",
    "default_path",
    "check_directory",
    "MEMORY",
    "MIN_FREE_BYTES",
]

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
_KIND = {False: "say", True: "me"}


def default_path() -> Path:
    """Where history lives when ``--db`` is not given: the user's data directory."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chatd" / "history.db"


def open_store(path: str, **options: int | float) -> SqliteHistory:
    """Open (creating or migrating) the history at ``path``.

    Args:
        path: a file name; ``""`` for :func:`default_path` (its directory is created);
            ``":memory:"`` for history that lasts as long as this process.
        options: passed to :class:`SqliteHistory` (retention settings).

    Raises:
        HistoryError: the file cannot be created, read or written, is not a chatd
            history database, is corrupt, is in use by another chatd, or comes from a
            newer chatd; or its filesystem is read-only or full. The message names it.
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
    if path != MEMORY:
        check_directory(path)
    return SqliteHistory(path, **options)  # type: ignore[arg-type]


class SqliteHistory:
    """The server's :class:`~chatd.server.HistoryStore`, on one SQLite connection.

    Args:
        path: the file, or ``":memory:"``.
        max_age: retention: messages older than this many seconds are pruned (0: kept).
        max_per_room: retention: a room keeps at most this many messages (0: all).

    Not thread-safe, and need not be: the server has one thread.
    """

    def __init__(self, path: str, max_age: float = 0.0, max_per_room: int = 0) -> None:
        self.path = path
        self.max_age = max_age
        self.max_per_room = max_per_room
        self._pending: list[tuple[int, str, str, str, str, float, str]] = []
        self.commits = 0  # transactions written (observability; tests read it)
        self.stored = 0  # messages written
        self.pruned = 0  # messages removed by retention
        # Per-room message counts, kept only when max_per_room is set (chatd.retention).
        self.room_counts: dict[str, int] = {}
        self.over_cap: set[str] = set()
        self._lock_fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._lock()
        try:
            # timeout: `chatd account` (chatd.accounts_store, same file) may hold the write
            # lock for one short transaction; another chatd is kept out by _lock.
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._db = sqlite3.connect(path, timeout=2.0, isolation_level=None)
        except sqlite3.Error as exc:
            self._unlock()
            raise describe(path, exc) from None
        try:
            prepare(self._db, path, wal=path != MEMORY)
        except sqlite3.Error as exc:
            self._abandon()
            raise describe(path, exc) from None
        except BaseException:
            self._abandon()
            raise
        self._identity = self._stat()
        if max_per_room:
            from chatd.retention import count_rooms

            count_rooms(self)

    @property
    def db(self) -> sqlite3.Connection:
        """The connection (for :mod:`chatd.retention` and tests)."""
        return self._db

    # ------------------------------------------------------------------ opening

    def _lock(self) -> None:
        """Take ``PATH.lock`` so that no second chatd uses the file (and its ids)."""
        if self.path == MEMORY:
            return
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise HistoryError(
                f"history database {self.path}: cannot open its lock file {lock_path}: "
                f"{exc.strerror} (is the directory missing or not writable?)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise HistoryError(
                f"history database {self.path}: it is in use by another process "
                f"(another chatd holds {lock_path})"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _abandon(self) -> None:
        self._db.close()
        self._unlock()

    def _stat(self) -> tuple[int, int] | None:
        if self.path == MEMORY:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

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

    @property
    def pending(self) -> int:
        """Messages queued and not yet committed."""
        return len(self._pending)

    def commit(self) -> None:
        """Write every queued message in one transaction. Cheap when nothing is queued.

        Raises:
            HistoryError: the write failed (disk full, I/O error). The queued messages
                stay queued, so the caller must not deliver them (see drop_pending).
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
            self._rollback()
            raise describe(self.path, exc) from None
        self.commits += 1
        self.stored += len(self._pending)
        if self.max_per_room:
            counts, cap = self.room_counts, self.max_per_room
            for row in self._pending:
                count = counts[row[1]] = counts.get(row[1], 0) + 1
                if count > cap:
                    self.over_cap.add(row[1])
        self._pending.clear()

    def drop_pending(self) -> list[int]:
        """Forget the queued messages after a failed commit; return their mids."""
        mids = [row[0] for row in self._pending]
        self._pending.clear()
        return mids

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # SQLite rolls back by itself after FULL/IOERR
            logger.debug("history %s: rollback failed: %s", self.path, exc)

    def prune(self, now: float) -> int:
        """One retention batch (see :mod:`chatd.retention`); 0 when retention is off."""
        if not (self.max_age or self.max_per_room):
            return 0
        from chatd.retention import prune

        return prune(self, now)

    # ------------------------------------------------------------------ health

    def check_file(self) -> HistoryError | None:
        """Is the file at ``path`` still the one this store has open? (one ``stat``)"""
        return check_identity(self.path, self._identity)

    def probe(self) -> HistoryError | None:
        """Can messages be stored again? None when a real write just worked.

        Checks the file's identity and the free space, then checkpoints the WAL into the
        main file and truncates it (so the next commit needs fresh space, as a real one
        would) and commits a one-row write.
        """
        problem = self.check_file()
        if problem is not None:
            return problem
        if self.path != MEMORY:
            free = free_bytes(os.path.dirname(os.path.abspath(self.path)))
            if free is not None and free < MIN_FREE_BYTES:
                return HistoryError(
                    f"history database {self.path}: still only {free // 1024} KiB free",
                    "the disk is full",
                )
        db = self._db
        try:
            if self.path != MEMORY:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_mid', ?)",
                (self.last_mid(),),
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            return describe(self.path, exc)
        return None

    # ------------------------------------------------------------------ reading

    def last_mid(self) -> int:
        """The highest ``mid`` ever stored (0 when none): the server continues after it."""
        row = self._db.execute(
            "SELECT max(coalesce((SELECT max(mid) FROM messages), 0), "
            "coalesce((SELECT value FROM meta WHERE key = 'last_mid'), 0))"
        ).fetchone()
        top = int(row[0] or 0)
        return max([top, *(row[0] for row in self._pending)])

    def recent(self, room: str, limit: int) -> list[Message]:
        """The last ``limit`` messages of ``room``, oldest first, marked as history."""
        return self.query(room, None, None, limit)

    def query(self, room: str, before: int | None, after: int | None, limit: int) -> list[Message]:
        """Messages of ``room`` with ``after < mid < before``, oldest first, at most ``limit``.

        With ``after`` the *first* ``limit`` messages after it are returned (a client
        filling a gap pages forward from the last mid it showed); otherwise the *last*
        ``limit`` before ``before`` (or the newest), which is what scrolling back wants.
        ``room`` is the name the messages are returned under (the room's current name;
        lookup ignores case). Queued messages are committed first.

        Raises:
            HistoryError: the file cannot be read (or the queued messages written).
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
            raise describe(self.path, exc) from None
        if order == "DESC":
            rows.reverse()
        return [
            Message(room, sender, text, ts, mid, action=kind == "me", history=True)
            for mid, sender, text, ts, kind in rows
        ]

    def start(
        self, room: str, before: int | None, after: int | None, got: int, limit: int
    ) -> int | None:
        """Where ``room``'s history now starts, if retention removed messages the request
        ``(after, before, limit)`` that returned ``got`` messages asked for; else None.

        A gap fill (``after``) asked for pruned ids when something above ``after`` was
        pruned; scrolling back (no ``after``) reached them when its page was not full.
        """
        key = fold(room)
        try:
            row = self._db.execute("SELECT upto FROM pruned WHERE room_key = ?", (key,)).fetchone()
            if row is None:
                return None
            upto = int(row[0])
            if after is not None and upto <= after:
                return None
            if after is None and got >= limit:
                return None
            if before is not None and (after if after is not None else 0) >= before:
                return None
            first = self._db.execute(
                "SELECT min(mid) FROM messages WHERE room_key = ?", (key,)
            ).fetchone()[0]
        except sqlite3.Error as exc:
            raise describe(self.path, exc) from None
        return int(first) if first is not None else upto + 1

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Commit what is queued, checkpoint the WAL into the main file, and close.

        Never raises: a failure is logged (the caller is on its way out, and a message
        that could not be committed was never delivered).
        """
        try:
            self.commit()
            if self.path != MEMORY:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except HistoryError as exc:
            logger.warning("%s; %d undelivered messages not stored", exc, len(self._pending))
        except sqlite3.Error as exc:
            logger.warning("history %s: checkpoint on close failed: %s", self.path, exc)
        finally:
            self._db.close()
            self._unlock()

    def __repr__(self) -> str:
        return (
            f"<SqliteHistory {self.path} pending={len(self._pending)} "
            f"stored={self.stored} commits={self.commits}>"
        )
