"""Moderation on disk: registered rooms, bans and the audit log, in the history file.

Three tables beside the history's (docs/moderation.md): ``chatd_rooms`` (one row per
registered room: founder, modes, key, topic), ``chatd_bans`` (room bans and mutes,
``scope`` the folded room name; server bans with scope ``*``) and ``chatd_modlog``
(every moderation action: when, who, what, whom, where, why). They are created by the
history store's schema migration (version 2, :func:`create_tables`) and, for a
``:memory:`` database, by this store itself. Being in the same SQLite file, they are in
every backup of it.

Its own connection to the file, as :mod:`chatd.accounts_store` has: each change is one
short transaction, committed at once (moderation is rare; a kick is not worth losing).
A failed write is logged and the server goes on: the rules in memory still hold.

This module does I/O (it is part of the shell, not the pure hub).
"""

from __future__ import annotations

import logging
import sqlite3

from chatd.model import (
    Action,
    BanInfo,
    LogModeration,
    ModLogEntry,
    RoomState,
    SaveRoom,
    SaveServerBans,
)
from chatd.names import fold

__all__ = ["ModerationStore", "create_tables", "SERVER_SCOPE", "MODLOG_KEEP"]

logger = logging.getLogger(__name__)

SERVER_SCOPE = "*"
MODLOG_KEEP = 100_000  # newest audit entries kept; older ones are pruned
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS chatd_rooms (
        name_key TEXT PRIMARY KEY,   -- chatd.names.fold(name)
        name     TEXT NOT NULL,
        founder  TEXT NOT NULL,      -- the account that registered it
        modes    TEXT NOT NULL,      -- flag letters, e.g. "int"
        key      TEXT,               -- +k
        topic    TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS chatd_bans (
        scope    TEXT NOT NULL,      -- a folded room name, or '*' for the server
        kind     TEXT NOT NULL CHECK (kind IN ('b', 'q')),  -- ban or quiet (mute)
        mask     TEXT NOT NULL,
        by       TEXT NOT NULL,
        set_at   REAL NOT NULL,
        expires  REAL,               -- epoch seconds; NULL: until lifted
        reason   TEXT NOT NULL,
        account  TEXT,               -- the account / address of the user it named
        address  TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS chatd_bans_by_scope ON chatd_bans (scope)",
    """CREATE TABLE IF NOT EXISTS chatd_modlog (
        id       INTEGER PRIMARY KEY,
        ts       REAL NOT NULL,
        by       TEXT NOT NULL,
        action   TEXT NOT NULL,
        target   TEXT NOT NULL,
        room     TEXT NOT NULL,
        reason   TEXT NOT NULL
    )""",
)


def create_tables(db: sqlite3.Connection) -> None:
    """The history schema's migration 1 -> 2 (and this store's own set-up)."""
    for statement in _SCHEMA:
        db.execute(statement)


class ModerationStore:
    """Reads everything once at startup (:meth:`load`) and writes every change."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")  # as the history's: no fsync per kick
        create_tables(self._db)

    def close(self) -> None:
        self._db.close()

    def load(self) -> tuple[list[RoomState], list[BanInfo]]:
        """The registered rooms (with their bans and mutes) and the server's bans."""
        bans: dict[tuple[str, str], list[BanInfo]] = {}
        for scope, kind, *fields in self._db.execute(
            "SELECT scope, kind, mask, by, set_at, expires, reason, account, address "
            "FROM chatd_bans ORDER BY rowid"
        ):
            bans.setdefault((scope, kind), []).append(BanInfo(*fields))
        rooms = [
            RoomState(
                name,
                founder,
                modes,
                key,
                topic,
                tuple(bans.get((key_, "b"), ())),
                tuple(bans.get((key_, "q"), ())),
            )
            for key_, name, founder, modes, key, topic in self._db.execute(
                "SELECT name_key, name, founder, modes, key, topic FROM chatd_rooms"
            )
        ]
        return rooms, bans.get((SERVER_SCOPE, "b"), [])

    def carry_out(self, action: Action) -> None:
        try:
            with self._db:  # one transaction
                self._db.execute("BEGIN")
                match action:
                    case SaveRoom(state=state):
                        self._save_room(state)
                    case SaveServerBans(bans=bans):
                        self._save_bans(SERVER_SCOPE, "b", bans)
                    case LogModeration(entry=e):
                        self._log(e)
        except sqlite3.Error as exc:
            logger.error("moderation store %s: %s (the change holds until restart)", self.path, exc)

    def _save_room(self, state: RoomState) -> None:
        key = fold(state.name)
        self._db.execute(
            "INSERT OR REPLACE INTO chatd_rooms VALUES (?, ?, ?, ?, ?, ?)",
            (key, state.name, state.founder, state.modes, state.key, state.topic),
        )
        self._save_bans(key, "b", state.bans)
        self._save_bans(key, "q", state.quiets)

    def _save_bans(self, scope: str, kind: str, bans: tuple[BanInfo, ...]) -> None:
        self._db.execute("DELETE FROM chatd_bans WHERE scope = ? AND kind = ?", (scope, kind))
        self._db.executemany(
            "INSERT INTO chatd_bans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (scope, kind, b.mask, b.by, b.set_at, b.expires, b.reason, b.account, b.address)
                for b in bans
            ],
        )

    def _log(self, e: ModLogEntry) -> None:
        cursor = self._db.execute(
            "INSERT INTO chatd_modlog (ts, by, action, target, room, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (e.ts, e.by, e.action, e.target, e.room, e.reason),
        )
        if cursor.lastrowid is not None and cursor.lastrowid % 1000 == 0:
            self._db.execute(
                "DELETE FROM chatd_modlog WHERE id <= ?", (cursor.lastrowid - MODLOG_KEEP,)
            )

    def modlog(self, room: str | None, limit: int) -> tuple[ModLogEntry, ...]:
        """The newest ``limit`` entries (of ``room``), oldest first."""
        where, args = ("WHERE room = ?", (room,)) if room is not None else ("", ())
        try:
            rows = self._db.execute(
                f"SELECT ts, by, action, target, room, reason FROM chatd_modlog {where} "
                "ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            logger.error("moderation store %s: %s", self.path, exc)
            return ()
        return tuple(ModLogEntry(*row) for row in reversed(rows))
