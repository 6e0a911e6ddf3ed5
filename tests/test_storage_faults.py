"""Issue 12's proof: real faults under real ``python -m chatd`` processes.

- a 1 MiB tmpfs that fills (needs root to mount; skipped, saying why, otherwise), in the
  default read-only mode and with ``--on-storage-failure stop``;
- the database file deleted, or replaced, under a running server;
- SIGKILL while retention is pruning;
- a backup taken during a flood, then restored.

Each checks that no acknowledged message is lost (every message a client received is in
history afterwards, and nothing refused is) and that ids only increase. No fixed sleeps:
every wait polls a condition with a deadline.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, ChatdProcess, JsonClient, RawClient, wait_until

from chatd.history import open_store
from chatd.model import Message, Store
from chatd.storekeeper import FLAP_SECONDS, RETRY_SECONDS, StoreKeeper

DAY = 86400.0


# --------------------------------------------------------------------------- helpers


def mount_tmpfs(directory: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs these as root)")
    directory.mkdir(exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "fs"
    mount_tmpfs(mnt, "size=1m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_up(directory: Path) -> Path:
    """Write a file until the filesystem says ENOSPC; return it (delete it to free)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def run_chatd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def stored(path: Path, room: str = "#r") -> dict[int, str]:
    """mid -> text of everything in the file (the server must be stopped)."""
    store = open_store(str(path))
    try:
        return {m.mid: m.text for m in store.query(room, None, 0, 10**6)}
    finally:
        store.close()


def stored_live(path: Path, up_to: int) -> int:
    """How many messages with mid <= ``up_to`` the file holds, read beside a running
    server."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(
            db.execute("SELECT count(*) FROM messages WHERE mid <= ?", (up_to,)).fetchone()[0]
        )
    finally:
        db.close()


def flood(sender: JsonClient, texts: list[str]) -> tuple[dict[str, int], set[str]]:
    """Send every text with its own request id; return (text -> mid acknowledged,
    texts refused with storage_unavailable). Every request gets exactly one answer."""
    for i, text in enumerate(texts):
        sender.send_json(op="say", room="#r", text=text, id=i)
    acked: dict[str, int] = {}
    refused: set[str] = set()
    while len(acked) + len(refused) < len(texts):
        frame = sender.read_frame(timeout=15)
        assert frame is not None, "the sender was cut off"
        if frame.get("id") is None or frame["type"] not in ("msg", "error"):
            continue
        text = texts[frame["id"]]
        assert text not in acked and text not in refused, f"answered twice: {text}"
        if frame["type"] == "msg":
            acked[text] = frame["mid"]
        else:
            assert frame["code"] == "storage_unavailable", frame
            refused.add(text)
    return acked, refused


def drain(client: JsonClient) -> list[dict[str, Any]]:
    """Every frame up to the answer to a ping (so everything sent before has arrived)."""
    client.send_json(op="ping", id="sync")
    frames: list[dict[str, Any]] = []
    while True:
        frame = client.read_frame(timeout=10)
        assert frame is not None
        if frame.get("type") == "pong" and frame.get("id") == "sync":
            return frames
        frames.append(frame)


def fetch_all(client: JsonClient, room: str = "#r") -> list[int]:
    """Every mid the server has for ``room``, paging forward (pages are also cut at
    max_reply_bytes, marked ``more``)."""
    got: list[int] = []
    after = 0
    while True:
        client.send_json(op="history", room=room, after=after, limit=500, id="all")
        reply = client.expect_frame(type="history", id="all")
        got += [m["mid"] for m in reply["messages"]]
        if len(reply["messages"]) < 500 and not reply.get("more"):
            return got
        after = got[-1]


def notices(frames: list[dict[str, Any]], code: str) -> int:
    return sum(1 for f in frames if f.get("type") == "notice" and f.get("code") == code)


class Irc(RawClient):
    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def register(self, nick: str, room: str) -> None:
        self.send_line(f"NICK {nick}")
        self.send_line(f"USER {nick} 0 * :{nick}")
        self.expect(lambda line: bool(re.match(r":\S+ (376|422) ", line)))
        self.send_line(f"JOIN {room}")
        self.expect(lambda line: " 366 " in line)


# --------------------------------------------------------------------------- disk full


def test_full_disk_turns_read_only_then_recovers_by_itself(
    make_server: Any, small_fs: Path
) -> None:
    db = small_fs / "history.db"
    server = make_server("--db", str(db), "--rate-limit", "0", irc=True)
    alice = server.json_client("alice", "#r")
    bob = server.json_client("bob", "#r")
    text_user = server.text_client("tex")
    assert server.irc_port
    irc = Irc(server.irc_port)
    irc.register("ircy", "#r")
    before, _ = flood(alice, [f"before {i}" for i in range(20)])
    assert len(before) == 20
    drain(bob)
    filler = fill_up(small_fs)

    texts = [f"flood {i} " + "x" * 200 for i in range(400)]
    acked, refused = flood(alice, texts)
    assert refused, "the disk filled up but every message was accepted"
    seen_by_bob = drain(bob)
    bob_texts = [f["text"] for f in seen_by_bob if f["type"] == "msg"]
    # Store before deliver: bob saw exactly the acknowledged messages, none refused.
    assert bob_texts == [t for t in texts if t in acked]
    assert notices(seen_by_bob, "storage_unavailable") == 1  # told once
    drain(alice)
    alice_frames = [json.loads(line) for line in alice.lines if line.startswith("{")]
    assert notices(alice_frames, "storage_unavailable") == 1
    text_user.expect(lambda line: "cannot be stored right now" in line)
    irc.expect(lambda line: " NOTICE " in line and "cannot be stored right now" in line)

    # Everything else keeps working: private messages, history reads, joins, newcomers.
    alice.send_json(op="msg", to="bob", text="psst", id="pm")
    assert bob.expect_frame(type="privmsg", text="psst")["from"] == "alice"
    assert set(fetch_all(bob)) == set(before.values()) | set(acked.values())
    bob.send_json(op="join", room="#elsewhere")
    bob.expect_frame(type="history_end", room="#elsewhere")
    carol = JsonClient(server.port)
    carol.send_json(op="hello", nick="carol")
    carol.expect_frame(type="notice", code="storage_unavailable")

    filler.unlink()  # room again: chatd notices by itself
    bob.expect_frame(type="notice", code="storage_available", timeout=15)
    irc.expect(lambda line: "stored and delivered again" in line)
    after, refused_after = flood(alice, ["after recovery"])
    assert not refused_after
    everything = [*before.values(), *acked.values()]
    assert after["after recovery"] > max(everything)  # ids only increase

    assert server.stop() == 0
    log = server.log()
    assert str(db) in log and "disk is full" in log and "Traceback" not in log
    kept = stored(db)
    assert set(kept) == set(everything) | {after["after recovery"]}  # nothing acked lost
    assert not set(kept.values()) & refused  # nothing refused stored


def test_full_disk_with_stop_tells_everyone_and_exits_3(make_server: Any, small_fs: Path) -> None:
    db = small_fs / "history.db"
    server = make_server("--db", str(db), "--rate-limit", "0", "--on-storage-failure", "stop")
    alice = server.json_client("alice", "#r")
    bob = server.json_client("bob", "#r")
    filler = fill_up(small_fs)
    texts = [f"flood {i} " + "x" * 200 for i in range(400)]
    for i, text in enumerate(texts):
        try:
            alice.send_json(op="say", room="#r", text=text, id=i)
        except OSError:
            break  # the server is gone
    bob_frames = []
    while (frame := bob.read_frame(timeout=15)) is not None:
        bob_frames.append(frame)
    assert bob_frames[-1]["type"] == "shutdown", bob_frames[-3:]
    assert "storage failed" in bob_frames[-1]["reason"]
    assert server.proc.wait(15) == 3
    log = server.log()
    assert "stopping (nothing unstored was sent)" in log and str(db) in log
    assert "stopped;" in log and "Traceback" not in log
    filler.unlink()
    kept = stored(db)
    bob_texts = {f["text"] for f in bob_frames if f["type"] == "msg"}
    assert bob_texts <= set(kept.values())  # everything bob received was stored


def test_a_disk_hovering_at_full_is_probed_less_often(small_fs: Path) -> None:
    """Store level, on the keeper's own clock: each failure soon after a recovery
    doubles the probe interval (fewer notices to everyone), and a calm spell resets it."""
    store = open_store(str(small_fs / "history.db"))
    keeper = StoreKeeper(store, 0.0)
    mid = 0

    def say(now: float) -> list[Store]:
        nonlocal mid
        keeper.upkeep(now, 0.0)
        for _ in range(20):
            mid += 1
            keeper.append(Store(Message("#r", "a", "z" * 1500, 0.0, mid)))
        return keeper.commit()

    intervals = []
    now = 0.0
    for _ in range(3):
        filler = fill_up(small_fs)
        while not say(now):  # WAL space left over may take a few turns to use up
            now += 0.25
        intervals.append(keeper.retry_seconds)
        filler.unlink()
        now += keeper.retry_seconds
        assert keeper.upkeep(now, 0.0) == "recovered"
    assert intervals == [RETRY_SECONDS, 2 * RETRY_SECONDS, 4 * RETRY_SECONDS]
    filler = fill_up(small_fs)
    now += FLAP_SECONDS + 1  # calm for a while: back to the short interval
    while not say(now):
        now += 0.25
    assert keeper.retry_seconds == RETRY_SECONDS
    filler.unlink()
    store.close()


# --------------------------------------------------------------------------- startup


def test_startup_on_a_full_or_read_only_filesystem_is_a_clear_error(tmp_path: Path) -> None:
    full = tmp_path / "full"
    mount_tmpfs(full, "size=1m")
    readonly = tmp_path / "ro"
    try:
        filler = fill_up(full)
        # 100 KiB free: SQLite could still create the file, and the first messages would
        # fit; the startup check refuses anyway, before the disk fills at run time.
        os.truncate(filler, filler.stat().st_size - 100 * 1024)
        result = run_chatd("--db", str(full / "history.db"))
        assert result.returncode == 2, result
        assert "is full (100 KiB free" in result.stderr and str(full) in result.stderr
        assert "Traceback" not in result.stderr
        mount_tmpfs(readonly, "size=1m,ro")
        result = run_chatd("--db", str(readonly / "history.db"))
        assert result.returncode == 2, result
        assert "read-only" in result.stderr and str(readonly) in result.stderr
    finally:
        for mnt in (full, readonly):
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


# --------------------------------------------------------------------------- deleted file


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_deleted_or_replaced_database_is_a_storage_failure(
    make_server: Any, tmp_path: Path, how: str
) -> None:
    db = tmp_path / "history.db"
    server = make_server("--db", str(db), "--rate-limit", "0")
    alice = server.json_client("alice", "#r")
    bob = server.json_client("bob", "#r")
    first, _ = flood(alice, [f"m{i}" for i in range(10)])
    if how == "deleted":
        db.unlink()
    else:
        other = tmp_path / "other.db"
        open_store(str(other)).close()
        other.replace(db)
    bob.expect_frame(type="notice", code="storage_unavailable", timeout=10)
    wait_until(lambda: f"history database {db} was {how}" in server.log(), what="the log line")
    _, refused = flood(alice, ["into the void"])
    assert refused == {"into the void"}
    alice.send_json(op="msg", to="bob", text="still here")
    bob.expect_frame(type="privmsg", text="still here")
    assert server.stop() == 0
    server.start()  # a new (or the replacing) file: ids still increase
    alice = server.json_client("alice", "#r")
    later, _ = flood(alice, ["new file"])
    assert later["new file"] > max(first.values())


# --------------------------------------------------------------------------- pruning


def test_sigkill_during_pruning_loses_nothing_that_should_stay(
    make_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "history.db"
    store = open_store(str(db))
    old = 20000
    now = __import__("time").time()
    for mid in range(1, old + 1):
        store.append(Message("#r", "old", f"old {mid}", now - 40 * DAY + mid, mid))
    store.close()
    server = make_server("--db", str(db), "--rate-limit", "0", "--history-max-age", "30d")
    alice = server.json_client("alice", "#r")
    acked: dict[str, int] = {}
    wait_until(lambda: stored_live(db, old) < old, timeout=20, what="pruning to start")
    i = 0
    while stored_live(db, old) > old // 2:  # talk while it prunes; kill half-way
        got, refused = flood(alice, [f"live {i}"])
        assert not refused
        acked.update(got)
        i += 1
    os.kill(server.pid, signal.SIGKILL)
    server.stop()
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    kept = stored(db)
    old_left = sorted(mid for mid in kept if mid <= old)
    assert 0 < len(old_left) < old
    assert old_left == list(range(old_left[0], old + 1))  # only a prefix was pruned
    assert set(acked.values()) <= set(kept)  # every acknowledged message survived
    server.start()
    alice = server.json_client("alice", "#r")
    later, _ = flood(alice, ["after the kill"])
    assert later["after the kill"] > max(kept)


def test_gap_fill_into_pruned_history_is_told_where_it_starts(
    make_server: type[ChatdProcess],
) -> None:
    server = make_server("--rate-limit", "0", "--history-max-per-room", "5")
    alice = server.json_client("alice", "#r")
    acked, _ = flood(alice, [f"m{i}" for i in range(12)])
    mids = sorted(acked.values())

    def page() -> dict[str, Any]:
        alice.send_json(op="history", room="#r", after=mids[0], limit=50, id="gap")
        return alice.expect_frame(type="history", id="gap")

    def pruned_page() -> dict[str, Any] | None:
        reply = page()
        return reply if len(reply["messages"]) == 5 else None

    reply = wait_until(pruned_page, timeout=10, what="pruning down to 5")
    assert [m["mid"] for m in reply["messages"]] == mids[-5:]
    assert reply["start"] == mids[-5]  # the ids it asked for are gone; history starts here
    alice.send_json(op="history", room="#r", after=mids[-3], limit=50, id="tail")
    assert "start" not in alice.expect_frame(type="history", id="tail")  # nothing pruned there


# --------------------------------------------------------------------------- backup


def test_backup_during_a_flood_then_restore(make_server: Any, tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    server = make_server("--db", str(db), "--rate-limit", "0")
    senders = [server.json_client(f"s{i}", "#r") for i in range(3)]
    reader = server.json_client("reader", "#r")
    per_sender = 400
    for n in range(per_sender):
        for i, sender in enumerate(senders):
            sender.send_json(op="say", room="#r", text=f"s{i} {n} " + "y" * 100)
    seen: list[int] = []
    while len(seen) < 300:
        frame = reader.read_frame(timeout=10)
        assert frame is not None
        if frame["type"] == "msg":
            seen.append(frame["mid"])
    acked_before_backup = set(seen)
    backup = tmp_path / "backup.db"
    tool = subprocess.Popen(
        [sys.executable, "-m", "chatd", "backup", str(backup), "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    while len(seen) < 3 * per_sender:  # the flood goes on meanwhile
        frame = reader.read_frame(timeout=10)
        assert frame is not None
        if frame["type"] == "msg":
            seen.append(frame["mid"])
    out, err = tool.communicate(timeout=30)
    assert tool.returncode == 0, err
    assert "backed up" in out
    assert seen == sorted(seen)
    in_backup = stored(backup)
    assert acked_before_backup <= set(in_backup)  # the backup holds all it should
    assert set(in_backup) <= set(seen)  # and only real messages

    assert server.stop() == 0
    for suffix in ("", "-wal", "-shm"):  # restore: stop, copy back, start
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, db)
    server.start()
    alice = server.json_client("alice", "#r")
    assert fetch_all(alice) == sorted(in_backup)
    later, _ = flood(alice, ["after restore"])
    assert later["after restore"] > max(seen)  # ids keep increasing past the lost tail
