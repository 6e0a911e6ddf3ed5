"""Room history (issue 4, server half): the SQLite store alone, then through real servers.

The store tests run in-process on files under ``tmp_path``. The socket tests start real
``python -m chatd`` processes (tests/helpers.py); restarts and SIGKILL are real too. No
fixed sleeps: everything waits for a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, ChatdProcess, JsonClient, RawClient, wait_until

from chatd import history_schema
from chatd.history import HistoryError, SqliteHistory, open_store
from chatd.history_schema import SCHEMA_VERSION
from chatd.model import Message

# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _close_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every test client a test opened, so no socket outlives its test."""
    opened: list[RawClient] = []
    original = RawClient.__init__

    def init(self: RawClient, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(RawClient, "__init__", init)
    yield
    for client in opened:
        client.close()


def msg(mid: int, room: str = "#r", text: str | None = None, action: bool = False) -> Message:
    return Message(
        room, "alice", text if text is not None else f"m{mid}", 1000.0 + mid, mid, action=action
    )


def filled(path: str, mids: range, room: str = "#r") -> SqliteHistory:
    store = open_store(path)
    for mid in mids:
        store.append(msg(mid, room))
    store.commit()
    return store


def mids_of(messages: list[Message]) -> list[int]:
    return [m.mid for m in messages]


def join_collect(client: JsonClient, room: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Join ``room``; return the ``joined`` frame and the replayed messages before
    ``history_end``, checking nothing else comes in between."""
    client.send_json(op="join", room=room)
    joined = client.expect_frame(type="joined", room=room)
    replayed: list[dict[str, Any]] = []
    while True:
        frame = client.read_frame()
        assert frame is not None, "closed during the replay"
        if frame["type"] == "history_end":
            assert frame["room"] == room
            return joined, replayed
        assert frame["type"] == "msg", frame
        replayed.append(frame)


def say_and_wait(client: JsonClient, room: str, texts: list[str]) -> list[int]:
    """Say each text and wait for the echo of each; return their mids."""
    for text in texts:
        client.say(room, text)
    return [client.expect_frame(type="msg", room=room, text=text)["mid"] for text in texts]


def fetch_all(client: JsonClient, room: str, limit: int = 500) -> list[dict[str, Any]]:
    """Every stored message of ``room``, paging forward with ``after``."""
    got: list[dict[str, Any]] = []
    after = 0
    while True:
        client.send_json(op="history", room=room, after=after, limit=limit, id="page")
        page = client.expect_frame(type="history", id="page")["messages"]
        got += page
        if len(page) < limit:
            return got
        after = page[-1]["mid"]


def history_error(client: JsonClient, **request: Any) -> dict[str, Any]:
    client.send_json(op="history", id="bad", **request)
    frame = client.expect_frame(id="bad")
    assert frame["type"] == "error", frame
    return frame


def run_chatd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run chatd expecting it to exit by itself (a startup failure)."""
    return subprocess.run(
        [sys.executable, "-m", "chatd", "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=15,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


# --------------------------------------------------------------------------- the store


def test_store_recent_oldest_first_marked_as_history(tmp_path: Path) -> None:
    store = filled(str(tmp_path / "h.db"), range(1, 11))
    store.append(msg(11, "#other"))
    recent = store.recent("#r", 3)
    assert mids_of(recent) == [8, 9, 10]
    assert all(m.history for m in recent)
    assert recent[0] == Message("#r", "alice", "m8", 1008.0, 8, history=True)
    assert mids_of(store.recent("#r", 100)) == list(range(1, 11))
    assert mids_of(store.recent("#other", 5)) == [11]  # pending messages are read too
    assert store.recent("#nobody", 5) == []
    assert store.recent("#r", 0) == []


def test_store_room_lookup_ignores_case_and_answers_under_the_asked_name(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "h.db"))
    store.append(msg(1, "#Chat[1]"))
    store.append(msg(2, "#chat{1}", action=True))  # rfc1459: [ ] fold to { }
    (first, second) = store.recent("#CHAT[1]", 10)
    assert (first.room, second.room) == ("#CHAT[1]", "#CHAT[1]")
    assert (first.action, second.action) == (False, True)


def test_store_query_before_after_limit(tmp_path: Path) -> None:
    store = filled(str(tmp_path / "h.db"), range(1, 21))
    assert mids_of(store.query("#r", None, None, 3)) == [18, 19, 20]
    assert mids_of(store.query("#r", 10, None, 3)) == [7, 8, 9]  # the last 3 before 10
    assert mids_of(store.query("#r", None, 10, 3)) == [11, 12, 13]  # the first 3 after 10
    assert mids_of(store.query("#r", 15, 10, 100)) == [11, 12, 13, 14]
    assert mids_of(store.query("#r", 15, 10, 2)) == [11, 12]
    assert store.query("#r", 5, 5, 10) == []
    assert store.query("#r", None, 20, 10) == []
    assert mids_of(store.query("#r", 0 + 3, None, 10)) == [1, 2]
    # Far beyond SQLite's 64-bit integers: still an answer, not an OverflowError.
    assert mids_of(store.query("#r", 10**30, None, 2)) == [19, 20]
    assert store.query("#r", None, 10**30, 2) == []


def test_store_one_transaction_per_commit(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "h.db"))
    store.commit()  # nothing queued: no transaction
    for mid in range(1, 101):
        store.append(msg(mid))
    store.commit()
    store.commit()
    assert (store.commits, store.stored) == (1, 100)


def test_store_mids_continue_across_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    store = filled(path, range(1, 6))
    assert store.last_mid() == 5
    store.close()
    store = open_store(path)
    assert store.last_mid() == 5
    assert mids_of(store.recent("#r", 10)) == [1, 2, 3, 4, 5]
    store.append(msg(6))
    store.close()  # close commits what is queued
    assert open_store(path).last_mid() == 6


def test_store_schema_is_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    open_store(str(path)).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental: pruning shrinks
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    moderation = {"chatd_rooms", "chatd_bans", "chatd_modlog"}  # (chatd.moderation_store)
    assert tables == {"messages", "meta", "pruned"} | moderation
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
    assert columns == ["mid", "room_key", "room", "sender", "text", "ts", "kind"]
    indexes = [row[1] for row in db.execute("PRAGMA index_list(messages)")]
    assert "messages_by_room" in indexes


def test_store_migration_hook_runs_each_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "h.db")
    filled(path, range(1, 4)).close()

    def to_v4(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0")

    monkeypatch.setattr(history_schema, "SCHEMA_VERSION", 4)
    monkeypatch.setitem(history_schema.MIGRATIONS, 3, to_v4)
    store = open_store(path)
    assert mids_of(store.recent("#r", 10)) == [1, 2, 3]
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert store._db.execute("SELECT edited FROM messages WHERE mid = 1").fetchone() == (0,)


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    open_store(str(path)).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(HistoryError, match=f"{path}.*schema version 99.*upgrade"):
        open_store(str(path))


def test_store_refuses_somebody_elses_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE accounts (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match=f"{path}.*not a chatd history database"):
        open_store(str(path))


@pytest.mark.parametrize("kind", ["garbage", "directory", "parent_is_a_file", "no_parent"])
def test_store_unusable_paths_raise_history_error_naming_the_file(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "h.db"
    if kind == "garbage":
        path.write_bytes(b"this is not an SQLite database\n" * 200)
    elif kind == "directory":
        path.mkdir()
    elif kind == "parent_is_a_file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "h.db"
    else:
        path = tmp_path / "missing" / "h.db"
    with pytest.raises(HistoryError, match=str(path)):
        open_store(str(path))


def test_store_truncated_database_raises_history_error(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = filled(str(path), range(1, 2001))
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * 4000 + data[4100:])  # smash the first pages
    with pytest.raises(HistoryError, match=str(path)):
        store = open_store(str(path))
        store.recent("#r", 10)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only files")
def test_store_read_only_file_raises_history_error(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    open_store(str(path)).close()
    path.chmod(0o444)
    with pytest.raises(HistoryError, match=str(path)):
        open_store(str(path))


def test_store_file_in_use_by_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    first = open_store(str(path))  # holds the exclusive lock while open
    with pytest.raises(HistoryError, match=f"{path}.*in use"):
        open_store(str(path))
    first.close()
    open_store(str(path)).close()


def test_store_default_path_is_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    store = open_store("")
    assert store.path == str(tmp_path / "data" / "chatd" / "history.db")
    assert Path(store.path).is_file()
    store.close()


def test_store_in_memory(tmp_path: Path) -> None:
    store = open_store(":memory:")
    assert store.last_mid() == 0
    store.append(msg(1))
    assert mids_of(store.recent("#r", 5)) == [1]
    store.close()


# --------------------------------------------------------------------------- via sockets


def test_join_replays_the_last_n_then_history_end(make_server: Any) -> None:
    server = make_server("--rate-limit", "0", "--history-replay", "3")
    alice = server.json_client("alice", "#r")
    mids = say_and_wait(alice, "#r", [f"line {i}" for i in range(5)])
    alice.send_json(op="me", room="#r", text="waves")
    mids.append(alice.expect_frame(type="msg", text="waves")["mid"])
    assert mids == sorted(mids) and len(set(mids)) == 6

    bob = JsonClient(server.port)
    bob.hello("bob")
    joined, replayed = join_collect(bob, "#r")
    assert joined["members"] == ["alice", "bob"]
    assert [m["mid"] for m in replayed] == mids[-3:]
    assert [m["text"] for m in replayed] == ["line 3", "line 4", "waves"]
    assert all(
        m["history"] is True and m["room"] == "#r" and m["from"] == "alice" for m in replayed
    )
    assert replayed[-1]["action"] is True
    # Live messages after the replay carry no history flag.
    alice.say("#r", "live")
    live = bob.expect_frame(type="msg", text="live")
    assert "history" not in live and live["mid"] > mids[-1]


def test_replay_zero_sends_no_history_on_join(make_server: Any) -> None:
    server = make_server("--rate-limit", "0", "--history-replay", "0")
    alice = server.json_client("alice", "#r")
    say_and_wait(alice, "#r", ["one"])
    bob = JsonClient(server.port)
    bob.hello("bob")
    bob.send_json(op="join", room="#r")
    bob.expect_frame(type="joined", room="#r")
    # No replay: history_end follows joined at once, so clients know the replay is over.
    assert bob.read_frame() == {"type": "history_end", "room": "#r"}
    bob.send_json(op="history", room="#r", id=1)  # the history itself is still there
    assert [m["text"] for m in bob.expect_frame(type="history")["messages"]] == ["one"]


def test_private_messages_are_not_stored(chatd_server: ChatdProcess) -> None:
    alice = chatd_server.json_client("alice", "#r")
    bob = chatd_server.json_client("bob", "#r")
    alice.send_json(op="msg", to="bob", text="secret")
    bob.expect_frame(type="privmsg", text="secret")
    say_and_wait(alice, "#r", ["public"])
    assert [m["text"] for m in fetch_all(bob, "#r")] == ["public"]


def test_history_op_before_after_limit(chatd_server: ChatdProcess) -> None:
    alice = chatd_server.json_client("alice", "#r")
    other = chatd_server.json_client("carol", "#other")
    mids = say_and_wait(alice, "#r", [f"t{i}" for i in range(10)])
    say_and_wait(other, "#other", ["elsewhere"])

    def history(**request: Any) -> list[int]:
        alice.send_json(op="history", room="#r", id=7, **request)
        reply = alice.expect_frame(type="history", id=7)
        assert reply["room"] == "#r"
        assert all(m["history"] is True for m in reply["messages"])
        return [m["mid"] for m in reply["messages"]]

    assert history() == mids  # default limit 50 > 10
    assert history(limit=3) == mids[-3:]
    assert history(before=mids[5], limit=2) == mids[3:5]
    assert history(after=mids[5], limit=2) == mids[6:8]
    assert history(after=mids[1], before=mids[4]) == mids[2:4]
    assert history(before=None, after=None, limit=500) == mids
    assert history(after=mids[-1]) == []
    assert history(before=2**63 - 1, limit=1) == mids[-1:]  # the largest mid there can be
    assert history(after=0, limit=1) == mids[:1]


def test_history_for_a_room_you_are_not_in(chatd_server: ChatdProcess) -> None:
    alice = chatd_server.json_client("alice", "#r")
    say_and_wait(alice, "#r", ["private to members"])
    eve = chatd_server.json_client("eve", "#elsewhere")
    assert history_error(eve, room="#r")["code"] == "not_in_room"
    assert history_error(eve, room="#nonexistent")["code"] in ("not_in_room", "no_such_room")
    alice.send_json(op="part", room="#r")
    alice.expect_frame(type="part", room="#r")
    assert history_error(alice, room="#r")["code"] == "not_in_room"


BAD_HISTORY_REQUESTS: list[dict[str, Any]] = [
    {"limit": 0},
    {"limit": -1},
    {"limit": 10**9},
    {"limit": 501},
    {"limit": 2.5},
    {"limit": "10"},
    {"limit": None, "before": "5"},
    {"before": 1.5},
    {"after": True},
    {"after": -1},
    {"before": 2**63},
    {"after": 10**30},
    {"before": [1]},
    {"after": {"mid": 3}},
    {"room": 7},
    {"room": None},
]


def test_history_bad_requests(chatd_server: ChatdProcess) -> None:
    alice = chatd_server.json_client("alice", "#r")
    for fields in BAD_HISTORY_REQUESTS:
        frame = history_error(alice, **{"room": "#r", **fields})
        assert frame["code"] == "bad_request", (fields, frame)
    alice.send_json(op="ping")  # the connection stayed usable throughout
    alice.expect_frame(type="pong")


def test_text_mode_shows_replay_as_earlier_and_history_command(chatd_server: ChatdProcess) -> None:
    alice = chatd_server.json_client("alice", "#lobby")
    say_and_wait(alice, "#lobby", ["first", "second", "third"])
    bob = chatd_server.text_client("bob")
    earlier = [bob.expect(lambda line: "(earlier)" in line) for _ in range(3)]
    assert [line.split("> ", 1)[1] for line in earlier] == ["first", "second", "third"]
    assert all("#lobby (earlier) <alice>" in line for line in earlier)
    bob.send_line("/history 2")
    lines = [bob.expect(lambda line: "(earlier)" in line) for _ in range(2)]
    assert [line.split("> ", 1)[1] for line in lines] == ["second", "third"]
    bob.send_line("/history 0")
    assert bob.expect(lambda line: line.startswith("!!!")).startswith("!!! bad_request")
    bob.send_line("/history lots")
    assert bob.expect(lambda line: line.startswith("!!!"))


def test_restart_keeps_history_and_mids_keep_increasing(make_server: Any, tmp_path: Path) -> None:
    db = str(tmp_path / "history.db")
    server = make_server("--rate-limit", "0", "--db", db)
    assert any(f"room history in {db}" in line for line in server.stdout_lines)
    alice = server.json_client("alice", "#r")
    texts = [f"before restart {i}" for i in range(20)]
    mids = say_and_wait(alice, "#r", texts)
    alice.close()
    assert server.stop(signal.SIGTERM) == 0

    server = make_server("--rate-limit", "0", "--db", db, "--history-replay", "50")
    bob = JsonClient(server.port)
    bob.hello("bob")
    _, replayed = join_collect(bob, "#R")  # room lookup ignores case
    assert [m["text"] for m in replayed] == texts
    assert [m["mid"] for m in replayed] == mids
    assert {m["room"] for m in replayed} == {"#R"}
    (new_mid,) = say_and_wait(bob, "#R", ["after restart"])
    assert new_mid > mids[-1]


def _mids_in(raw: bytes) -> set[int]:
    """The mids of the complete ``msg`` frames in ``raw`` (a cut-off last line is not
    a received message)."""
    mids = set()
    for line in raw.split(b"\n")[:-1]:
        if line.startswith(b"{"):
            frame = json.loads(line)
            if frame.get("type") == "msg":
                mids.add(frame["mid"])
    return mids


def test_sigkill_loses_nothing_any_client_received(make_server: Any, tmp_path: Path) -> None:
    """Store before deliver: whatever reached a client is in the database, even when the
    server dies with SIGKILL in the middle of heavy traffic.

    Sensitivity matters more than volume here. Every thread only moves raw bytes until
    the kill (JSON parsing would hold the GIL and delay it by milliseconds), and the
    watcher kills the moment it holds ``kill_after`` messages, while the server is still
    in the turn that sent them: a server that committed *after* sending is caught. (Checked
    by removing the commit at the top of ``Fanout.flush`` (the server's before_flush) and
    swapping the last two calls in ``Server.run_once``: this test then fails.)
    """
    db = str(tmp_path / "history.db")
    server = make_server("--rate-limit", "0", "--db", db)
    senders = [server.json_client(f"s{i}", "#load") for i in range(3)]
    watcher = server.json_client("watcher", "#load")
    # Senders keep sending blocks until the kill stops them (at most ``max_blocks``), so
    # traffic is still flowing when it lands even if the watcher is scheduled late. A
    # block (~66 KB) outsizes one recv() (64 KiB), so turns are big and their commits take
    # milliseconds: the window a commit-after-send server would leave open is wide.
    block_size, max_blocks, kill_after = 1500, 10, 200
    inboxes: dict[int, bytearray] = {}

    def drain(client: JsonClient) -> None:
        inbox = inboxes[id(client)] = bytearray(client._buf)
        client.sock.settimeout(10)
        try:
            while chunk := client.sock.recv(65536):
                inbox += chunk
        except OSError:
            pass  # a reset or a timeout: what was read so far counts

    def blast(client: JsonClient, name: str) -> None:
        try:
            for b in range(max_blocks):
                client.send(
                    "".join(
                        f'{{"op":"say","room":"#load","text":"{name} {b}.{n}"}}\n'
                        for n in range(block_size)
                    ).encode()
                )
        except OSError:
            pass  # the server died: that is the point

    # Each sender writes and reads at once (two threads on one socket), so neither side's
    # buffers stall the traffic: it is still flowing when the kill lands.
    threads = [
        threading.Thread(target=blast, args=(c, f"s{i}"), daemon=True)
        for i, c in enumerate(senders)
    ]
    threads += [threading.Thread(target=drain, args=(c,), daemon=True) for c in senders]
    for thread in threads:
        thread.start()
    raw = bytearray(watcher._buf)
    watcher.sock.settimeout(10)
    while raw.count(b'"type":"msg"') < kill_after:
        chunk = watcher.sock.recv(65536)
        assert chunk, "server closed the watcher"
        raw += chunk
    os.kill(server.pid, signal.SIGKILL)
    watcher._buf = bytes(raw)
    drain(watcher)  # bytes already on their way count as received too
    for thread in threads:
        thread.join(15)
    assert server.stop() == -signal.SIGKILL

    received = set().union(*(_mids_in(bytes(inbox)) for inbox in inboxes.values()))
    assert len(received) >= kill_after
    server = make_server("--rate-limit", "0", "--db", db)
    reader = server.json_client("reader", "#load")
    stored = [m["mid"] for m in fetch_all(reader, "#load")]
    assert stored == sorted(set(stored))
    assert len(stored) < 3 * block_size * max_blocks, "the kill should land mid-traffic"
    missing = received - set(stored)
    assert not missing, (
        f"{len(missing)} of {len(received)} received mids not among "
        f"{len(stored)} stored, e.g. {sorted(missing)[:5]}"
    )
    (new_mid,) = say_and_wait(reader, "#load", ["after the kill"])
    assert new_mid > max(stored)


@pytest.mark.parametrize("kind", ["directory", "garbage", "parent_is_a_file"])
def test_unusable_db_is_a_clear_startup_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "h.db"
    if kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"\x00garbage" * 1000)
    else:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "h.db"
    result = run_chatd("--db", str(path))
    assert result.returncode == 2, result
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_second_server_on_the_same_db_is_refused(make_server: Any, tmp_path: Path) -> None:
    db = str(tmp_path / "history.db")
    make_server("--db", db)
    result = run_chatd("--db", db)
    assert result.returncode == 2
    assert db in result.stderr and "in use" in result.stderr


def test_default_db_lives_in_the_data_dir(make_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = make_server("--db", "", env={"XDG_DATA_HOME": str(data)})
    expected = data / "chatd" / "history.db"
    assert any(f"room history in {expected}" in line for line in server.stdout_lines)
    alice = server.json_client("alice", "#r")
    say_and_wait(alice, "#r", ["kept"])
    assert server.stop() == 0
    wait_until(expected.exists, what="the default history file")
    assert [m.text for m in open_store(str(expected)).recent("#r", 5)] == ["kept"]
