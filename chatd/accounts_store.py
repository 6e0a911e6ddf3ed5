"""Accounts on disk: the ``chatd_accounts`` table, in the same SQLite file as history.

Its own connection to the file (not the history store's), so ``chatd account …`` can
add, list, change and delete accounts while the server runs: the file is in WAL mode,
writers wait for each other (busy timeout), and every change is one short transaction.
The server reads the table on every login and nick check, so a change made by the
command line counts from the next one.

The table is created with ``CREATE TABLE IF NOT EXISTS`` whoever opens the file first;
the history store's schema version (``user_version``) does not cover it, and the history
store tolerates it (docs/accounts.md). Only hash records are stored (chatd.passwords).

This module does I/O (it is part of the shell, not the pure hub).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from chatd.names import fold, nick_skeleton

__all__ = ["AccountStore", "Account", "AccountStoreError", "TABLE"]

TABLE = "chatd_accounts"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    name_key TEXT PRIMARY KEY,  -- chatd.names.fold(name): one account per folded nick
    skeleton TEXT NOT NULL,     -- chatd.names.nick_skeleton(name): no look-alike accounts
    name TEXT NOT NULL,
    secret BLOB NOT NULL,       -- chatd.passwords hash record, never a password
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_skeleton ON {TABLE} (skeleton)
"""
_BUSY_SECONDS = 5.0


class AccountStoreError(Exception):
    """The store could not be opened or written (the message says which file and why)."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    secret: bytes
    created: float


class AccountStore:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=_BUSY_SECONDS, isolation_level=None)
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise AccountStoreError(f"accounts in {path}: {exc}") from None

    def get(self, name: str) -> Account | None:
        row = self._read(
            f"SELECT name, secret, created FROM {TABLE} WHERE name_key = ?", (fold(name),)
        )
        return Account(row[0][0], bytes(row[0][1]), row[0][2]) if row else None

    def owner(self, nick: str) -> str | None:
        """The account registered under ``nick``, or under a nick that looks like it
        (``aIice`` for ``alice``): its spelling, or None."""
        row = self._read(
            f"SELECT name FROM {TABLE} WHERE name_key = ? OR skeleton = ? "
            "ORDER BY name_key = ? DESC LIMIT 1",
            (fold(nick), nick_skeleton(nick), fold(nick)),
        )
        return str(row[0][0]) if row else None

    def add(self, name: str, secret: bytes, now: float | None = None) -> bool:
        """Create an account; False if one by that name, or a look-alike, exists."""
        created = time.time() if now is None else now
        if self.owner(name) is not None:
            return False
        try:
            self._write(
                f"INSERT INTO {TABLE} (name_key, skeleton, name, secret, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (fold(name), nick_skeleton(name), name, secret, created),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def set_secret(self, name: str, secret: bytes) -> bool:
        sql = f"UPDATE {TABLE} SET secret = ? WHERE name_key = ?"
        return self._write(sql, (secret, fold(name))) == 1

    def delete(self, name: str) -> bool:
        return self._write(f"DELETE FROM {TABLE} WHERE name_key = ?", (fold(name),)) == 1

    def names(self) -> list[tuple[str, float]]:
        rows = self._read(f"SELECT name, created FROM {TABLE} ORDER BY name_key", ())
        return [(str(name), float(created)) for name, created in rows]

    def close(self) -> None:
        self._db.close()

    def _read(self, sql: str, args: tuple[object, ...]) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise AccountStoreError(f"accounts in {self.path}: {exc}") from None

    def _write(self, sql: str, args: tuple[object, ...]) -> int:
        """One statement in its own transaction; the number of rows it changed.

        Raises:
            sqlite3.IntegrityError: a duplicate name (the caller's business).
            AccountStoreError: anything else (busy past the timeout, disk full …).
        """
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                count = db.execute(sql, args).rowcount
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise AccountStoreError(f"accounts in {self.path}: {exc}") from None
        return int(count)
