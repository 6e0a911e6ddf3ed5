"""``chatd backup PATH`` and ``chatd export --room '#x'``: copies a person can take while
the server runs.

Both open the history file read-only, next to the running server (SQLite's WAL mode lets
readers work while the server writes):

- ``backup`` uses SQLite's online backup API: every page is copied inside one read
  transaction, so the copy is one consistent moment of the live file, whatever the server
  commits meanwhile. It is written to ``PATH.partial`` and renamed when complete, so a
  ``PATH`` that exists is always a whole backup.
- ``export`` writes one room's messages, oldest first, to stdout: JSON lines (the
  protocol's ``msg`` fields) or plain text for people.

Restoring is: stop chatd, copy the backup over the history file (removing its
``-wal``/``-shm`` files), start chatd (docs/history.md). Message ids are time-based, so
they keep increasing after a restore.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
import tomllib
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from chatd.history import default_path
from chatd.names import fold, valid_room

__all__ = ["main", "backup", "export"]


class ToolError(Exception):
    """A clear, one-line reason the tool cannot do its job."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatd", description="Tools for chatd's room history (safe while chatd runs)."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", metavar="PATH", help="the history file (default: the server's default)"
    )
    common.add_argument(
        "--config", metavar="FILE", help="take the history file from this TOML file's 'db'"
    )
    tools = parser.add_subparsers(dest="tool", required=True)
    backup_cmd = tools.add_parser(
        "backup", parents=[common], help="copy the live history file to PATH (a new file)"
    )
    backup_cmd.add_argument("path", metavar="PATH", help="where to write the copy")
    export_cmd = tools.add_parser(
        "export", parents=[common], help="write one room's messages to stdout, oldest first"
    )
    export_cmd.add_argument("--room", required=True, help="the room, e.g. '#general'")
    export_cmd.add_argument(
        "--format", choices=("jsonl", "text"), default="jsonl", help="default: jsonl"
    )
    return parser


def _db_path(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                value = tomllib.load(fh).get("db", "")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ToolError(f"cannot read config file {args.config}: {exc}") from None
        if value:
            return str(value)
    return str(default_path())


def _open_live(path: str) -> sqlite3.Connection:
    """The history file, read-only, beside a server that may be writing it."""
    if not os.path.isfile(path):
        raise ToolError(f"history database {path} does not exist")
    try:
        db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=5)
        db.execute("SELECT count(*) FROM messages").fetchone()
    except sqlite3.Error as exc:
        raise ToolError(f"history database {path} cannot be read: {exc}") from None
    return db


def backup(source: str, target: str) -> tuple[int, int]:
    """Copy ``source`` to the new file ``target``; return (messages, highest mid).

    Raises:
        ToolError: the source cannot be read or the target written (or exists).
    """
    if os.path.exists(target):
        raise ToolError(f"{target} exists; choose a new name (a backup never overwrites)")
    if os.path.abspath(target) == os.path.abspath(source):
        raise ToolError("the backup must not be the history file itself")
    src = _open_live(source)
    partial = target + ".partial"
    try:
        Path(partial).unlink(missing_ok=True)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # all pages in one step: one consistent snapshot
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            count, top = dst.execute(
                "SELECT count(*), coalesce(max(mid), 0) FROM messages"
            ).fetchone()
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
        if check != "ok":
            raise ToolError(f"the copy failed its integrity check: {check}")
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.rename(partial, target)
    except (sqlite3.Error, OSError) as exc:
        Path(partial).unlink(missing_ok=True)
        raise ToolError(f"cannot write the backup {target}: {exc}") from None
    finally:
        src.close()
    return int(count), int(top)


def export(source: str, room: str, fmt: str, out: TextIO | None = None) -> int:
    """Write ``room``'s messages to ``out`` (stdout); return how many.

    Raises:
        ToolError: a bad room name or an unreadable file.
    """
    if not valid_room(room):
        raise ToolError(f"{room!r} is not a room name (# then 1-32 characters)")
    stream = out if out is not None else sys.stdout
    db = _open_live(source)
    count = 0
    try:
        rows = db.execute(
            "SELECT mid, room, sender, text, ts, kind FROM messages WHERE room_key = ? "
            "ORDER BY mid",
            (fold(room),),
        )
        for mid, name, sender, text, ts, kind in rows:
            if fmt == "jsonl":
                obj = {"mid": mid, "room": name, "from": sender, "text": text, "ts": ts}
                if kind == "me":
                    obj["action"] = True
                line = json.dumps(obj, ensure_ascii=False)
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
                body = text.replace("\n", "\n" + " " * 20)
                line = (
                    f"{stamp} * {sender} {body}" if kind == "me" else f"{stamp} <{sender}> {body}"
                )
            print(line, file=stream)
            count += 1
    except sqlite3.Error as exc:
        raise ToolError(f"history database {source} cannot be read: {exc}") from None
    finally:
        db.close()
    return count


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        source = _db_path(args)
        if args.tool == "backup":
            count, top = backup(source, args.path)
            print(f"chatd: backed up {count} messages (ids up to {top}) to {args.path}")
        else:
            count = export(source, args.room, args.format)
            if not count:
                print(f"chatd: no messages for {args.room} in {source}", file=sys.stderr)
    except ToolError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `chatd export ... | head`
        return 0
    return 0
