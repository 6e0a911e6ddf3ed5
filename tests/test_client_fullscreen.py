"""The full-screen shell (client.fullscreen) with pipe input and a dummy output: keys in,
state and lines typed out, no real terminal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.layout.dimension import to_dimension
from prompt_toolkit.output import DummyOutput

from client import app, fullscreen, ui

T = TypeVar("T")


def online(chat: app.ChatApp) -> None:
    state = chat.state
    state.connected()
    state.server_line(json.dumps({"type": "welcome", "nick": "alice", "server": "s"}))
    state.server_line(
        json.dumps({"type": "joined", "room": "#lobby", "topic": "", "members": ["alice", "bob"]})
    )


def said(chat: app.ChatApp, text: str, mid: int) -> None:
    frame = {"type": "msg", "room": "#lobby", "from": "bob", "text": text, "ts": 1.0, "mid": mid}
    assert chat.ui is not None
    chat.ui.show(chat.state.server_line(json.dumps(frame)).lines)


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"no {what}"
        await asyncio.sleep(0.01)


def drive(scenario: Callable[[fullscreen.FullScreen, PipeInput], Awaitable[T]]) -> T:
    """Run the full-screen application on a pipe; ``scenario`` types and looks."""

    async def main() -> T:
        opts = app.Options(host="h", port=1, nick="alice", room="#lobby", history_file=None)
        chat = app.ChatApp(opts)
        online(chat)
        with create_pipe_input() as pipe:
            screen = fullscreen.FullScreen(chat, pipe, DummyOutput())
            chat.ui = screen
            screen.show([])
            task = asyncio.ensure_future(screen.app.run_async())
            try:
                return await asyncio.wait_for(scenario(screen, pipe), 10)
            finally:
                screen.app.exit()
                await asyncio.wait({task}, timeout=5)

    return asyncio.run(main())


def texts(screen: fullscreen.FullScreen) -> list[str]:
    return [line.text for line in screen.views.current.lines]


def test_a_paste_without_brackets_is_asked_about_first() -> None:
    async def scenario(screen: fullscreen.FullScreen, keys: PipeInput) -> Any:
        keys.send_text("one\rtwo\rthree\r")  # one read: a paste
        question = ui.PASTE_QUESTION.format(lines=3)
        await until(lambda: question in texts(screen), "question")
        await asyncio.sleep(ui.PASTE_WINDOW * 2)
        assert screen._typed.empty()  # asked, not sent
        rows = to_dimension(screen.input.window.height).preferred
        assert rows == 4  # the pasted lines are in view, and the cursor's row after them
        keys.send_text("\r")
        return await screen.read_line()

    assert drive(scenario) == "one\ntwo\nthree"


def test_typed_lines_go_out_one_by_one() -> None:
    async def scenario(screen: fullscreen.FullScreen, keys: PipeInput) -> Any:
        keys.send_text("hello")
        keys.send_text("\r")
        first = await screen.read_line()
        keys.send_text("again\r")
        return first, await screen.read_line()

    assert drive(scenario) == ("hello", "again")


def test_ctrl_r_shows_the_matching_lines_and_gives_the_draft_back() -> None:
    async def scenario(screen: fullscreen.FullScreen, keys: PipeInput) -> Any:
        chat = screen.chat
        for mid, text in enumerate(["the Build is green", "lunch?", "build again"], 1):
            said(chat, text, mid)
        keys.send_text("half typed")
        await until(lambda: screen.input.text == "half typed", "the draft")
        keys.send_text("\x12")  # Ctrl-R
        keys.send_text("build")
        await until(lambda: screen.views.filter == "build", "the search")
        shown = [line.text for line in screen.views.shown_lines()]
        assert shown == ["the Build is green", "build again"]
        drawn = "".join(t for _, t, *_ in screen._messages())
        assert "lunch?" not in drawn and "build again" in drawn
        assert "search" in "".join(t for _, t, *_ in screen._prompt())
        keys.send_text("\r")  # Enter leaves the search
        await until(lambda: screen.views.filter is None, "the end of the search")
        assert screen.input.text == "half typed" and screen._typed.empty()
        assert "lunch?" in "".join(t for _, t, *_ in screen._messages())
        return True

    assert drive(scenario)


def test_help_names_the_full_screen_keys() -> None:
    async def scenario(screen: fullscreen.FullScreen, keys: PipeInput) -> Any:
        keys.send_text("/help\r")
        line = await screen.read_line()
        return line, texts(screen)

    line, shown = drive(scenario)
    assert line == "/help" and fullscreen.KEYS_HELP in shown
