"""The terminal client's side of accounts and the nick hold (client/core.py, pure)."""

from __future__ import annotations

import json
from typing import Any

from client.core import ChatState, Output


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def feed(state: ChatState, *lines: str) -> Output:
    out = Output()
    for line in lines:
        out.extend(state.server_line(line))
    return out


def test_the_client_presents_its_resume_token_on_every_reconnect() -> None:
    state = ChatState("alice", "#lobby", server="h:1")
    assert state.connected().frames == [{"op": "hello", "nick": "alice"}]
    feed(state, frame(type="welcome", nick="alice", server="s", motd=[], resume="tok-1"))
    state.disconnected("connection reset")
    assert state.connected().frames == [{"op": "hello", "nick": "alice", "resume": "tok-1"}]
    out = feed(
        state,
        frame(type="welcome", nick="alice", server="s", motd=[], resume="tok-2", resumed=True),
    )
    assert any("kept your session" in line.text for line in out.lines)
    state.disconnected("again")
    assert state.connected().frames[0]["resume"] == "tok-2"  # the newest token


def test_register_identify_and_who_is_logged_in() -> None:
    state = ChatState("alice", "#lobby", server="h:1")
    state.connected()
    feed(state, frame(type="welcome", nick="alice", server="s", motd=[], resume="t"))
    assert state.user_input("/register hunter2-pw").frames == [
        {"op": "register", "password": "hunter2-pw"}
    ]
    assert state.user_input("/identify ada pw-of-ada").frames == [
        {"op": "identify", "password": "pw-of-ada", "account": "ada"}
    ]
    assert state.user_input("/identify").frames == []
    assert state.user_input("/passwd old-password new-password").frames == [
        {"op": "passwd", "password": "old-password", "new_password": "new-password"}
    ]
    assert state.user_input("/unregister my-password").frames == [
        {"op": "unregister", "password": "my-password"}
    ]
    feed(state, frame(type="account", account="alice", event="registered"))
    assert ("nick", "alice (alice)") in state.toolbar()
    out = feed(state, frame(type="whois", nick="bob", rooms=[], away=None, account="bob"))
    assert "logged in as bob" in out.lines[0].text
    out = feed(state, frame(type="whois", nick="eve", rooms=[], away=None, account=None))
    assert "not logged in" in out.lines[0].text


def test_password_lines_never_reach_the_input_history_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from client.ui import open_history

    path = tmp_path / "history"
    history = open_history(path)
    for line in (
        "hello",
        "/register sekrit-pw",
        "/IDENTIFY ada sekrit-pw",
        "/passwd a b",
        "/me hi",
    ):
        history.append_string(line)
    stored = path.read_text()
    assert "hello" in stored and "/me hi" in stored and "sekrit" not in stored
    assert "/passwd" not in stored
