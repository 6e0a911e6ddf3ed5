"""The prompt_toolkit shell, with pipe input and a dummy output: no real terminal."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput, create_output

from client import moderation, render, ui
from client.core import ChatState, Kind, Line, irc_fold

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 5) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def keys() -> Iterator[PipeInput]:
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        yield pipe


def online() -> ChatState:
    state = ChatState("alice", "#lobby", server="h:1")
    state.connected()
    state.server_line(json.dumps({"type": "welcome", "nick": "alice", "server": "s", "motd": []}))
    for room in ("#lobby", "#lounge"):
        state.user_input(f"/join {room}")  # the client accepts only joins it asked for
        state.server_line(
            json.dumps(
                {"type": "joined", "room": room, "topic": "", "members": ["alice", "bob", "bonnie"]}
            )
        )
    state.current = irc_fold("#lobby")
    state.known_rooms.add("#lisp")
    return state


# --------------------------------------------------------------------------- typing


def test_typing_a_line(keys: PipeInput) -> None:
    keys.send_text("hello there\r")
    assert run(ui.make_session(online()).prompt_async()) == "hello there"


def test_ctrl_c_clears_the_line(keys: PipeInput) -> None:
    keys.send_text("draft\x03real\r")
    assert run(ui.make_session(online()).prompt_async()) == "real"


def test_ctrl_c_on_an_empty_line_says_how_to_leave(keys: PipeInput) -> None:
    said: list[str] = []
    keys.send_text("draft\x03\x03real\r")  # clears the draft, then hints on the empty line
    assert run(ui.make_session(online(), on_notice=said.append).prompt_async()) == "real"
    assert said == [ui.LEAVE_HINT]


def test_a_typed_escape_sequence_is_no_traceback(keys: PipeInput) -> None:
    """ESC [31m looks like a mouse event to prompt_toolkit's parser; its handler raised."""
    keys.send_text("\x1b[31m\x1b[<1;2mok\r")
    session = ui.make_session(online())
    assert run(session.prompt_async(set_exception_handler=False)) == "ok"


def test_ctrl_d_on_empty_line_ends_input(keys: PipeInput) -> None:
    keys.send_text("\x04")
    with pytest.raises(EOFError):
        run(ui.make_session(online()).prompt_async())


def test_bracketed_paste_keeps_newlines_in_one_line(keys: PipeInput) -> None:
    keys.send_text("\x1b[200~first\nsecond\x1b[201~\r")
    assert run(ui.make_session(online()).prompt_async()) == "first\nsecond"


def test_a_paste_without_brackets_waits_for_its_own_enter(keys: PipeInput) -> None:
    """Lines that arrive faster than anyone types are not sent line by line."""
    said: list[str] = []

    async def scenario() -> str:
        session = ui.make_session(online(), on_notice=said.append)
        keys.send_text("one\rtwo\rthree\r")  # one read: a paste
        prompt = asyncio.ensure_future(session.prompt_async())
        deadline = asyncio.get_running_loop().time() + 5
        while not said:
            assert asyncio.get_running_loop().time() < deadline and not prompt.done()
            await asyncio.sleep(0.01)
        await asyncio.sleep(ui.PASTE_WINDOW * 2)
        assert not prompt.done()  # asked, not sent
        keys.send_text("\r")
        return await prompt

    assert run(scenario()) == "one\ntwo\nthree"
    assert said == [ui.PASTE_QUESTION.format(lines=3)]


def test_f5_asks_to_reconnect_now(keys: PipeInput) -> None:
    retries: list[bool] = []
    keys.send_text("\x1b[15~x\r")  # F5
    assert (
        run(ui.make_session(online(), on_retry=lambda: retries.append(True)).prompt_async()) == "x"
    )
    assert retries == [True]


def test_typing_enter_sends_at_once(keys: PipeInput) -> None:
    keys.send_text("hello")
    keys.send_text("\r")
    assert run(ui.make_session(online()).prompt_async()) == "hello"


def test_ctrl_n_and_ctrl_p_switch_rooms(keys: PipeInput) -> None:
    state = online()
    steps: list[int] = []

    def cycle(step: int) -> None:
        steps.append(step)
        state.cycle_room(step)

    keys.send_text("\x0e")  # Ctrl-N
    keys.send_text("x\r")
    session = ui.make_session(state, on_cycle=cycle)
    assert run(session.prompt_async()) == "x"
    assert steps == [1] and state.current_room and state.current_room.name == "#lounge"
    keys.send_text("\x10y\r")  # Ctrl-P
    assert run(session.prompt_async()) == "y"
    assert state.current_room and state.current_room.name == "#lobby"


def test_message_arriving_mid_line_keeps_the_draft(keys: PipeInput) -> None:
    state = online()

    async def scenario() -> str:
        session = ui.make_session(state)
        shell = ui.Ui(state, session)

        async def traffic() -> None:
            keys.send_text("half ")
            for _ in range(100):  # until the prompt has read the half line
                await asyncio.sleep(0.01)
                if session.default_buffer.text == "half ":
                    break
            for n in range(20):
                shell.show([Line(Kind.MSG, f"incoming {n}", ts=0, room="#lobby", nick="bob")])
            await asyncio.sleep(0.05)
            assert session.default_buffer.text == "half "
            assert session.default_buffer.cursor_position == len("half ")
            keys.send_text("typed\r")

        peer = asyncio.create_task(traffic())
        line = await session.prompt_async()
        await peer
        return line

    assert run(scenario()) == "half typed"


# --------------------------------------------------------------------------- history


def test_up_recalls_earlier_input(keys: PipeInput) -> None:
    history = InMemoryHistory()
    session = ui.make_session(online(), history=history)
    keys.send_text("first\r")
    assert run(session.prompt_async()) == "first"
    keys.send_text("second\r")
    assert run(session.prompt_async()) == "second"
    keys.send_text("\x1b[A\x1b[A\r")  # Up, Up
    assert run(session.prompt_async()) == "first"


def test_history_survives_a_restart(keys: PipeInput, tmp_path: Path) -> None:
    path = tmp_path / "state" / "history"
    keys.send_text("remember me\r")
    assert run(ui.make_session(online(), history=ui.open_history(path)).prompt_async())
    assert path.exists()
    keys.send_text("\x1b[A\r")
    again = ui.make_session(online(), history=ui.open_history(path))
    assert run(again.prompt_async()) == "remember me"


def test_history_path_honours_the_environment(tmp_path: Path) -> None:
    assert ui.history_path({"CHAT_STATE_DIR": "/x"}) == Path("/x/history")
    assert ui.history_path({"XDG_STATE_HOME": "/s"}) == Path("/s/chatd/history")
    assert ui.history_path({}) == Path.home() / ".local/state/chatd/history"


def test_unwritable_history_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert isinstance(ui.open_history(blocker / "sub" / "history"), InMemoryHistory)
    assert isinstance(ui.open_history(tmp_path / "ok" / "history"), FileHistory)


# --------------------------------------------------------------------------- completion


def complete(state: ChatState, text: str) -> list[str]:
    completer = ui.ChatCompleter(state)
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("/jo", ["/join "]),
        ("/h", ["/history ", "/help "]),
        (
            "/",
            [
                f"/{name} "
                for name in (
                    "join",
                    "part",
                    "switch",
                    "msg",
                    "me",
                    "nick",
                    "who",
                    "rooms",
                    "topic",
                    "history",
                    "away",
                    "whois",
                    "register",
                    "identify",
                    "passwd",
                    "unregister",
                    "reconnect",
                    *moderation.USAGE,  # kick ban unban mute unmute op deop voice mode invite oper
                    "quit",
                    "help",
                )
            ],
        ),
        ("/zzz", []),
        ("b", ["bob: ", "bonnie: "]),
        ("bon", ["bonnie: "]),
        ("hi BO", ["bob", "bonnie"]),
        ("hi al", []),  # never oneself
        ("/join #l", ["#lobby", "#lounge", "#lisp"]),
        ("/switch #lo", ["#lobby", "#lounge"]),
        ("", []),
        ("text ", []),
    ],
)
def test_completion(typed: str, expected: list[str]) -> None:
    assert complete(online(), typed) == expected


def test_tab_completes_in_the_prompt(keys: PipeInput) -> None:
    session = ui.make_session(online())

    async def until(text: str) -> None:  # completion runs asynchronously
        while session.default_buffer.text != text:
            await asyncio.sleep(0.01)

    async def typist() -> None:
        keys.send_text("/jo\t")
        await until("/join ")
        keys.send_text("#lob\t")
        await until("/join #lobby")
        keys.send_text("\r")

    async def scenario() -> str:
        task = asyncio.create_task(typist())
        line = await session.prompt_async()
        await task
        return line

    assert run(scenario()) == "/join #lobby"


# --------------------------------------------------------------------------- rendering


def plain(fragments: render.Fragments) -> str:
    return "".join(fragment[1] for fragment in fragments)


def test_line_layout_by_kind() -> None:
    def colour(nick: str) -> str:
        return "ansiblue"

    ts = 0.0
    cases = [
        (Line(Kind.MSG, "hi", ts=ts, room="#lobby", nick="bob"), "<bob> hi"),
        (Line(Kind.MSG, "hi", ts=ts, room="#dev", nick="bob"), "#dev <bob> hi"),
        (Line(Kind.OWN, "me", ts=ts, room="#lobby", nick="alice", own=True), "<alice> me"),
        (Line(Kind.ACTION, "waves", ts=ts, room="#lobby", nick="bob"), "* bob waves"),
        (
            Line(Kind.PRIVATE, "psst", ts=ts, nick="bob", target="alice"),
            "[msg] <bob -> alice> psst",
        ),
        (Line(Kind.SYSTEM, "carol joined #lobby", ts=ts, room="#lobby"), "-- carol joined"),
        (Line(Kind.INFO, "connected"), "*** connected"),
        (Line(Kind.ERROR, "nick_taken: no"), "!!! nick_taken: no"),
        (Line(Kind.MSG, "old", ts=ts, room="#lobby", nick="bob", earlier=True), "(earlier) <bob>"),
        (Line(Kind.MSG, "a\nb", ts=ts, room="#lobby", nick="bob"), "<bob> a\n    b"),
    ]
    for line, shown in cases:
        text = plain(render.fragments(line, "#lobby", colour))
        assert shown in text, (line, text)
        if line.ts is not None:
            assert text.startswith("[") and text[6:8] == "] "
    rendered = render.fragments(cases[0][0], "#lobby", colour)
    assert ("fg:ansiblue bold", "bob") in rendered
    assert "#lobby" not in plain(rendered)  # the current room is not repeated


def test_styles_differ_by_kind() -> None:
    own = render.fragments(Line(Kind.OWN, "x", ts=0, nick="alice", own=True), None)
    other = render.fragments(Line(Kind.MSG, "x", ts=0, nick="bob"), None)
    system = render.fragments(Line(Kind.SYSTEM, "x", ts=0), None)
    error = render.fragments(Line(Kind.ERROR, "x"), None)
    mention = render.fragments(Line(Kind.MSG, "x", ts=0, nick="bob", mention=True), None)
    assert ("class:own", "alice") in own
    assert any(style.startswith("fg:") for style, *_ in other)
    assert any(style == "class:system" for style, *_ in system)
    assert error[0][0] == "class:error"
    assert ("class:mention", "x") in mention


def test_nick_colour_is_stable_and_spread() -> None:
    assert render.nick_colour("bob") == render.nick_colour("bob") == render.nick_colour("Bob")
    colours = {render.nick_colour(f"user{n}") for n in range(50)}
    assert len(colours) > 5 and colours <= set(render.NICK_PALETTE)


def test_markup_and_escapes_are_printed_literally() -> None:
    buffer = io.StringIO()
    line = Line(Kind.MSG, "<b>bold</b> &lt; {x}", ts=0, room="#r", nick="<i>evil</i>")
    with create_app_session(output=create_output(stdout=buffer)):
        from prompt_toolkit import print_formatted_text

        print_formatted_text(FormattedText(render.fragments(line, "#r")), style=render.STYLE)
    assert "<b>bold</b> &lt; {x}" in buffer.getvalue()
    assert "<i>evil</i>" in buffer.getvalue()


def test_show_prints_a_burst_at_once_and_rings_on_mention() -> None:
    buffer = io.StringIO()
    state = online()

    class Bell(DummyOutput):
        rung = 0

        def bell(self) -> None:
            Bell.rung += 1

    async def scenario() -> None:
        with (
            create_pipe_input() as pipe,
            create_app_session(input=pipe, output=create_output(stdout=buffer)),
        ):
            session = ui.make_session(state, output=Bell())
            shell = ui.Ui(state, session)
            shell.show([Line(Kind.MSG, "one", ts=0, room="#lobby", nick="bob")])
            shell.show([Line(Kind.MSG, "alice!", ts=0, room="#lobby", nick="bob", mention=True)])
            assert "one" not in buffer.getvalue()  # coalesced until the burst ends
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    run(scenario())
    assert "<bob> one" in buffer.getvalue() and "<bob> alice!" in buffer.getvalue()
    assert Bell.rung == 1


def test_toolbar_shows_state() -> None:
    text = plain(render.toolbar_fragments(online()))
    for part in ("connected", "h:1", "alice", "#lobby", "3 here"):
        assert part in text
