"""Issue 12, the parts that need no server process: schema migration, retention, file
identity, the read-only state in the hub, duration parsing, backup and export on files.

Real files under ``tmp_path``; the server-process fault tests are in
``test_storage_faults.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from chatd.backup import ToolError, backup
from chatd.config import Config, ConfigError, parse_duration
from chatd.history import SqliteHistory, open_store
from chatd.history_schema import SCHEMA_VERSION
from chatd.hub import Hub
from chatd.model import (
    Deliver,
    Error,
    Hello,
    Join,
    Message,
    Notice,
    PrivateMessage,
    PrivMsg,
    Say,
    Store,
)
from chatd.retention import PRUNE_BATCH, prune
from chatd.storekeeper import CHECK_SECONDS, RETRY_SECONDS, StoreKeeper

DAY = 86400.0
NOW = 1_795_000_000.0


def msg(mid: int, room: str = "#r", ts: float = NOW, text: str | None = None) -> Message:
    return Message(room, "alice", text if text is not None else f"m{mid}", ts, mid)


def fill(store: SqliteHistory, rows: list[Message], per_commit: int = 1000) -> None:
    for i, m in enumerate(rows, 1):
        store.append(m)
        if i % per_commit == 0:
            store.commit()
    store.commit()


def all_mids(store: SqliteHistory, room: str = "#r") -> list[int]:
    return [r[0] for r in store.db.execute("SELECT mid FROM messages ORDER BY mid")]


def file_pages(path: Path) -> int:
    return path.stat().st_size // 4096


# --------------------------------------------------------------------------- migration


def make_v1_file(path: Path, mids: range) -> None:
    """A history file as chatd wrote it before issue 12 (schema 1, no auto_vacuum)."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE messages (mid INTEGER PRIMARY KEY, room_key TEXT NOT NULL, "
        "room TEXT NOT NULL, sender TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL, "
        "kind TEXT NOT NULL CHECK (kind IN ('say', 'me')))"
    )
    db.execute("CREATE INDEX messages_by_room ON messages (room_key, mid)")
    db.executemany(
        "INSERT INTO messages VALUES (?, '#r', '#r', 'alice', ?, ?, 'say')",
        [(mid, f"m{mid}", NOW - DAY + mid) for mid in mids],
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def test_a_schema_1_file_is_migrated_keeping_every_message(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_v1_file(path, range(1, 301))
    store = open_store(str(path))
    db = store.db
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # converted: pruning shrinks
    modlog = db.execute("SELECT count(*) FROM chatd_modlog").fetchone()  # 2 -> 3: moderation
    assert modlog == (0,)
    assert all_mids(store) == list(range(1, 301))
    assert db.execute("SELECT value FROM meta WHERE key = 'last_mid'").fetchone() == (300,)
    assert store.last_mid() == 300
    store.close()


def test_last_mid_survives_pruning_everything(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "h.db"), max_age=DAY)
    fill(store, [msg(mid, ts=NOW - 2 * DAY) for mid in range(1, 51)])
    while prune(store, NOW):
        pass
    assert all_mids(store) == []
    assert store.last_mid() == 50  # the highest id ever held, not max(mid) of nothing
    store.close()
    assert open_store(str(tmp_path / "h.db")).last_mid() == 50


# --------------------------------------------------------------------------- retention


def test_age_pruning_removes_the_oldest_in_batches_and_the_file_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = open_store(str(path), max_age=30 * DAY)
    old = [msg(mid, "#a" if mid % 2 else "#b", NOW - 40 * DAY, "x" * 400) for mid in range(1, 3001)]
    new = [msg(mid, "#a", NOW - DAY, "y" * 400) for mid in range(3001, 3101)]
    fill(store, old + new)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = file_pages(path)
    batches = []
    while (count := prune(store, NOW)) > 0:
        batches.append(count)
    assert batches[0] == PRUNE_BATCH and sum(batches) == 3000  # small batches, all of it
    assert all_mids(store) == list(range(3001, 3101))  # only the expired prefix went
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert file_pages(path) < before / 10, (before, file_pages(path))
    # Where each room's history now starts, for gap fills that reach below it:
    assert store.start("#a", None, 0, 100, 500) == 3001  # after=0 asked for pruned ids
    assert store.start("#a", None, 3001, 99, 500) is None  # above the pruned part
    assert store.start("#b", None, 5, 0, 500) == 3001  # everything of #b is gone
    assert store.start("#a", None, None, 100, 500) == 3001  # scrolled back to the start
    assert store.start("#a", None, None, 50, 50) is None  # a full page: not there yet
    assert store.start("#never", None, 0, 0, 50) is None  # nothing was pruned there
    store.close()


def test_per_room_cap_keeps_the_newest_of_each_room(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    store = open_store(path, max_per_room=100)
    fill(store, [msg(mid, "#big" if mid % 10 else "#small") for mid in range(1, 2001)])
    while prune(store, NOW):
        pass
    big = [m.mid for m in store.query("#big", None, 0, 500)]
    small = [m.mid for m in store.query("#small", None, 0, 500)]
    assert big == [mid for mid in range(1, 2001) if mid % 10][-100:]
    assert small == list(range(10, 2001, 10))[-100:]
    store.close()
    # The counts are rebuilt at startup: a reopened store goes on capping.
    store = open_store(path, max_per_room=50)
    fill(store, [msg(3000, "#small")])
    while prune(store, NOW):
        pass
    assert len(store.query("#small", None, 0, 500)) == 50
    assert store.query("#small", None, None, 1)[0].mid == 3000
    store.close()


def test_age_pruning_only_ever_removes_a_prefix(tmp_path: Path) -> None:
    """A message stamped late (the clock stepped) stops pruning there: what remains is
    always the newest part, so "history starts at M" stays true."""
    store = open_store(str(tmp_path / "h.db"), max_age=30 * DAY)
    stamps = [NOW - 40 * DAY] * 10 + [NOW] + [NOW - 40 * DAY] * 10
    fill(store, [msg(mid, ts=ts) for mid, ts in enumerate(stamps, 1)])
    while prune(store, NOW):
        pass
    assert all_mids(store) == list(range(11, 22))
    store.close()


def test_retention_off_prunes_nothing(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "h.db"))
    fill(store, [msg(mid, ts=0.0) for mid in range(1, 11)])
    assert prune(store, NOW) == 0 and store.prune(NOW) == 0
    assert len(all_mids(store)) == 10


# --------------------------------------------------------------------------- file identity


def test_check_file_notices_a_deleted_or_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = open_store(str(path))
    assert store.check_file() is None
    path.unlink()
    problem = store.check_file()
    assert problem is not None and str(path) in str(problem) and "deleted" in str(problem)
    assert problem.reason == "the history file was deleted"
    assert store.probe() is not None  # still failed: nothing is written to a lost file
    other = tmp_path / "other.db"
    open_store(str(other)).close()
    other.rename(path)
    problem = store.check_file()
    assert problem is not None and "replaced" in str(problem) and str(path) in str(problem)
    store.close()


def test_keeper_writes_nothing_while_failed(tmp_path: Path) -> None:
    """A deleted file still takes writes (into an inode nobody will open again): once the
    keeper has seen the failure, queued messages are handed back, not committed."""
    path = tmp_path / "h.db"
    store = open_store(str(path))
    keeper = StoreKeeper(store, 0.0)
    keeper.append(Store(msg(1), 1, "r1"))
    assert keeper.commit() == []
    path.unlink()
    assert keeper.upkeep(CHECK_SECONDS, NOW) == "failed"
    late = Store(msg(2), 1, "r2")
    keeper.append(late)
    assert keeper.commit() == [late]  # refused: the server takes it out of the deliveries
    assert store.pending == 0 and store.stored == 1
    assert keeper.upkeep(CHECK_SECONDS + RETRY_SECONDS, NOW) is None  # still gone
    store.close()


def test_close_never_raises(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "h.db"))
    store.append(msg(1))
    store.append(msg(1))  # the same mid twice: the commit on close fails
    store.close()  # logged, not raised


# --------------------------------------------------------------------------- the hub


def registered_hub() -> Hub:
    hub = Hub(Config(history_replay=0))
    for cid, nick in ((1, "alice"), (2, "bob")):
        hub.connect(cid, NOW)
        hub.handle(cid, Hello(nick), NOW)
        hub.handle(cid, Join("#r"), NOW)
    hub.connect(3, NOW)  # not registered yet
    return hub


def test_hub_read_only_refuses_room_messages_and_tells_everyone_once() -> None:
    hub = registered_hub()
    down = hub.set_storage_down("the disk is full")
    assert len(down) == 1 and isinstance(down[0], Deliver)
    assert down[0].cids == (1, 2)  # the registered, once each
    notice = down[0].event
    assert isinstance(notice, Notice) and notice.code == "storage_unavailable"
    assert "the disk is full" in notice.text
    assert hub.set_storage_down("the disk is full") == []  # told once, not again
    refused = hub.handle(1, Say("#r", "hello", rid=7), NOW)
    assert len(refused) == 1 and isinstance(refused[0], Deliver)
    assert isinstance(refused[0].event, Error)
    assert refused[0] == Deliver(
        (1,), Error("storage_unavailable", refused[0].event.message), rid=7
    )
    # Private messages, which are not stored, still work.
    private = hub.handle(1, PrivMsg("bob", "psst"), NOW)
    assert any(isinstance(a, Deliver) and isinstance(a.event, PrivateMessage) for a in private)
    # A newcomer is told at registration.
    welcome = hub.handle(3, Hello("carol"), NOW)
    assert any(isinstance(a, Deliver) and a.event == notice for a in welcome)
    up = hub.set_storage_down(None)
    assert len(up) == 1 and isinstance(up[0].event, Notice)  # type: ignore[attr-defined]
    assert up[0].event.code == "storage_available"  # type: ignore[attr-defined]
    assert up[0].cids == (1, 2, 3)  # type: ignore[attr-defined]
    assert any(isinstance(a, Store) for a in hub.handle(1, Say("#r", "back"), NOW))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("", 0),
        ("0", 0),
        ("30d", 30 * DAY),
        ("12h", 43200),
        ("90m", 5400),
        ("45s", 45),
        ("2w", 14 * DAY),
        ("3600", 3600),
        ("1.5h", 5400),
        (" 7D ", 7 * DAY),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30x", "-1d", "d", "1e9d", "nan", "inf", "1 d", "0x10"])
def test_bad_durations_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="history_max_age"):
        Config(history_max_age=text)


def test_on_storage_failure_is_checked() -> None:
    assert Config().on_storage_failure == "readonly"
    Config(on_storage_failure="stop")
    with pytest.raises(ConfigError, match="on_storage_failure"):
        Config(on_storage_failure="panic")
    with pytest.raises(ConfigError, match="history_max_per_room"):
        Config(history_max_per_room=-1)


# --------------------------------------------------------------------------- backup, export


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_backup_is_a_whole_new_file_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = open_store(str(path))
    fill(store, [msg(mid) for mid in range(1, 101)])  # the store stays open, as in a server
    count, top = backup(str(path), str(tmp_path / "copy.db"))
    assert (count, top) == (100, 100)
    assert not (tmp_path / "copy.db.partial").exists()
    copy = open_store(str(tmp_path / "copy.db"))
    assert [m.mid for m in copy.query("#r", None, 0, 500)] == list(range(1, 101))
    copy.close()
    with pytest.raises(ToolError, match="exists"):
        backup(str(path), str(tmp_path / "copy.db"))
    with pytest.raises(ToolError, match="does not exist"):
        backup(str(tmp_path / "missing.db"), str(tmp_path / "new.db"))
    result = run_tool("backup", str(tmp_path / "copy.db"), "--db", str(path))
    assert result.returncode == 2 and "exists" in result.stderr and "Traceback" not in result.stderr
    store.close()


def test_export_jsonl_and_text(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = open_store(str(path))
    fill(
        store,
        [
            msg(1, "#Chat", text="hello"),
            Message("#chat", "bob", "waves", NOW + 1, 2, action=True),
            msg(3, "#other", text="elsewhere"),
            msg(4, "#chat", text="two\nlines"),
        ],
    )
    result = run_tool("export", "--room", "#CHAT", "--db", str(path))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [m["mid"] for m in lines] == [1, 2, 4]
    assert lines[1] == {
        "mid": 2,
        "room": "#chat",
        "from": "bob",
        "text": "waves",
        "ts": NOW + 1,
        "action": True,
    }
    result = run_tool("export", "--room", "#chat", "--format", "text", "--db", str(path))
    text = result.stdout.splitlines()
    assert text[0].endswith("<alice> hello") and text[1].endswith("* bob waves")
    assert text[2].endswith("<alice> two") and text[3].strip() == "lines"
    result = run_tool("export", "--room", "no room", "--db", str(path))
    assert result.returncode == 2 and "not a room name" in result.stderr
    result = run_tool("export", "--room", "#empty", "--db", str(path))
    assert result.returncode == 0 and result.stdout == "" and "no messages" in result.stderr
    store.close()
