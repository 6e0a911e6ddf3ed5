"""The history file's health: errors that name it, its filesystem, its identity.

- :class:`HistoryError` and :func:`describe`: every failure names the file and carries a
  short ``reason`` fit to show to users;
- :func:`check_directory`: at startup, a read-only or (nearly) full filesystem is refused;
- :func:`check_identity`: one ``stat`` tells whether the file at the path is still the one
  chatd opened (a deleted or replaced file is a storage failure, see chatd.storekeeper).
"""

from __future__ import annotations

import os
import sqlite3

__all__ = [
    "HistoryError",
    "describe",
    "free_bytes",
    "check_directory",
    "check_identity",
    "MIN_FREE_BYTES",
]

# Below this much free space the file's filesystem counts as full: at startup chatd
# refuses to start, and in the read-only state it does not try to write again yet.
# 256 KiB is ~60 WAL frames: room for a few busy turns, not a promise of more.
MIN_FREE_BYTES = 256 * 1024


class HistoryError(Exception):
    """The history database cannot be used; the message names the file and says why.

    ``reason`` is the short cause without the path ("the disk is full"), fit to show to
    users.
    """

    def __init__(self, message: str, reason: str = "the history database cannot be used") -> None:
        super().__init__(message)
        self.reason = reason


def describe(path: str, exc: sqlite3.Error) -> HistoryError:
    """A :class:`HistoryError` for ``exc`` that names ``path`` and says what it means."""
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
        f"history database {path}: {what or exc}" + (f" ({exc})" if what else ""),
        what or "the history database cannot be written",
    )


def free_bytes(directory: str) -> int | None:
    """Bytes an unprivileged writer may still use on ``directory``'s filesystem."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def check_directory(path: str) -> None:
    """Refuse a database whose directory is on a read-only or full filesystem.

    Raises:
        HistoryError: naming the directory and saying which.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.statvfs(directory)
    except OSError:
        return  # a missing directory: opening the file says so, naming it
    if st.f_flag & os.ST_RDONLY:
        raise HistoryError(
            f"history database {path}: the filesystem holding {directory} is mounted "
            f"read-only; remount it read-write or choose another --db",
            "the filesystem is read-only",
        )
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        raise HistoryError(
            f"history database {path}: the filesystem holding {directory} is full "
            f"({free // 1024} KiB free, chatd needs at least {MIN_FREE_BYTES // 1024} KiB); "
            f"free some space or choose another --db",
            "the disk is full",
        )


def check_identity(path: str, identity: tuple[int, int] | None) -> HistoryError | None:
    """Is the file at ``path`` still the one opened (``identity``: st_dev, st_ino)?

    A deleted or replaced file would swallow every later message into a file nobody
    will ever open again, so the server treats it as a storage failure.
    """
    if identity is None:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return HistoryError(
            f"history database {path} was deleted (or moved away) while chatd "
            f"was using it; room messages are refused until it is back, or restart "
            f"chatd to start a new file there",
            "the history file was deleted",
        )
    except OSError as exc:
        return HistoryError(
            f"history database {path} cannot be checked: {exc.strerror}",
            "the history file cannot be reached",
        )
    if (st.st_dev, st.st_ino) != identity:
        return HistoryError(
            f"history database {path} was replaced by another file while chatd "
            f"was using it; room messages are refused until the original is back, or "
            f"restart chatd to use the new file",
            "the history file was replaced",
        )
    return None
