"""The known_servers file on its own: what it keeps, what it skips, where it cannot write."""

from __future__ import annotations

from pathlib import Path

from client.trust import KnownServers, changed_warning, server_key


def test_remember_and_read_back_keeping_other_servers(tmp_path: Path) -> None:
    known = KnownServers(tmp_path / "state" / "known_servers")
    assert known.get("a:1") is None
    known.remember("a:1", "SHA256:aaa")
    known.remember("b:2", "SHA256:bbb")
    known.remember("a:1", "SHA256:new")  # replaced, not appended
    assert known.get("a:1") == "SHA256:new" and known.get("b:2") == "SHA256:bbb"
    text = known.path.read_text() if known.path else ""
    assert text.count("a:1") == 1
    assert known.path is not None and known.path.stat().st_mode & 0o777 == 0o600


def test_comments_and_junk_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "known_servers"
    path.write_text("# a comment\n\njunk\nhost:7777 SHA256:xyz extra words\n#c:1 SHA256:no\n")
    known = KnownServers(path)
    assert known.get("host:7777") == "SHA256:xyz"
    assert known.get("junk") is None and known.get("#c:1") is None


def test_an_unwritable_state_directory_is_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    known = KnownServers(blocker / "known_servers")
    known.remember("a:1", "SHA256:aaa")  # logged, not raised
    assert known.get("a:1") is None


def test_no_file_keeps_nothing() -> None:
    known = KnownServers(None)
    known.remember("a:1", "SHA256:aaa")
    assert known.get("a:1") is None


def test_names_and_warning() -> None:
    assert server_key("::1", 7777) == "[::1]:7777"
    assert server_key("host", 1) == "host:1"
    text = changed_warning("h:1", "SHA256:old", "SHA256:new", Path("/x/known_servers"))
    assert "HAS CHANGED" in text and "SHA256:new" in text and "/x/known_servers" in text
