"""The full-screen client (``chat --full-screen``): a buffer per room and conversation.

Layout, top to bottom: the room bar (``1:server 2:#lobby(3) 3:bob(1!)``), the shown
buffer's messages beside its member list (F2 toggles it), the status bar, the input line.
All state lives in :class:`client.views.Views` and :class:`client.core.ChatState`; this
module only draws them and maps keys:

PageUp/PageDown scroll the buffer; Ctrl-N/Ctrl-P and Alt-1..9 switch buffers; Alt-A
jumps to the next buffer with activity; F5 reconnects now; Ctrl-C clears the line (on an
empty line, says how to leave); Ctrl-D on an empty line quits. Text typed in a private
buffer goes to that person.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prompt_toolkit.application import Application
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import HSplit, Layout, VSplit, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.output import Output as PtOutput
from prompt_toolkit.styles import Style, merge_styles
from prompt_toolkit.widgets import TextArea

from client import ui
from client.values import Kind, Line
from client.views import Views

if TYPE_CHECKING:
    from client.app import ChatApp

__all__ = ["FullScreen", "run"]

logger = logging.getLogger(__name__)

MEMBERS_WIDTH = 18
MEMBERS_MIN_WIDTH = 60  # narrower terminals show no member list (F2 or /who still work)
STYLE = merge_styles(
    [
        ui.STYLE,
        Style.from_dict(
            {
                "bar": "bg:#303030 #d0d0d0",
                "bar.active": "bg:#5f87af #ffffff bold",
                "bar.unread": "bg:#303030 ansiyellow",
                "bar.mention": "bg:#303030 ansired bold",
                "members": "#a0a0a0",
                "topic": "bg:#262626 #bcbcbc italic",
            }
        ),
    ]
)


def _rows(frags: StyleAndTextTuples) -> list[StyleAndTextTuples]:
    """Split fragments into rows at their newlines."""
    rows: list[StyleAndTextTuples] = [[]]
    for style, text, *_ in frags:
        parts = text.split("\n")
        for n, part in enumerate(parts):
            if n:
                rows.append([])
            if part:
                rows[-1].append((style, part))
    return rows


class FullScreen:
    """The shell: an Application drawing :class:`Views`; lines typed come out of
    :meth:`read_line`."""

    def __init__(self, chat: ChatApp, input: Input | None, output: PtOutput | None) -> None:
        self.chat = chat
        self.state = chat.state
        self.views = Views()
        self._typed: asyncio.Queue[str | None] = asyncio.Queue()
        self.input = TextArea(
            height=1,
            multiline=False,
            prompt=self._prompt,
            history=ui.open_history(chat.opts.history_file),
            accept_handler=self._accept,
        )
        members = Window(
            FormattedTextControl(self._members),
            width=lambda: MEMBERS_WIDTH if self._members_shown() else 0,
            style="class:members",
        )
        layout = HSplit(
            [
                Window(FormattedTextControl(self._bar), height=1, style="class:bar"),
                Window(
                    FormattedTextControl(lambda: [("class:topic", self.views.topic(self.state))]),
                    height=lambda: 1 if self.views.topic(self.state) else 0,
                    style="class:topic",
                ),
                VSplit([Window(FormattedTextControl(self._messages), wrap_lines=False), members]),
                Window(FormattedTextControl(self._status), height=1, style="class:bottom-toolbar"),
                self.input,
            ]
        )
        self.app: Application[None] = Application(
            layout=Layout(layout, focused_element=self.input),
            key_bindings=self._bindings(),
            style=STYLE,
            full_screen=True,
            mouse_support=False,
            input=input,
            output=output,
        )

    # ------------------------------------------------------------------ Shell

    def show(self, lines: Iterable[Line]) -> None:
        self.views.sync(self.state)
        ring = False
        for line in lines:
            buffer = self.views.route(line, self.state)
            ring = ring or (line.mention and buffer.key != self.views.active)
        if ring:
            self.app.output.bell()
        self.refresh()

    def refresh(self) -> None:
        self.views.sync(self.state)
        if self.app.is_running:
            self.app.invalidate()

    def flush(self) -> None:
        self.refresh()

    def stop(self) -> None:
        self._typed.put_nowait(None)

    async def read_line(self) -> str:
        text = await self._typed.get()
        if text is None:
            raise EOFError
        return text

    # ------------------------------------------------------------------ drawing

    def _members_shown(self) -> bool:
        if self._width() < MEMBERS_MIN_WIDTH:  # a narrow terminal keeps its columns
            return False
        return self.views.show_members and bool(self.views.members(self.state))

    def _width(self) -> int:
        return self.app.output.get_size().columns

    def _height(self) -> int:
        rows = self.app.output.get_size().rows - 3 - bool(self.views.topic(self.state))
        return max(rows, 1)

    def _bar(self) -> StyleAndTextTuples:
        bar: StyleAndTextTuples = [*self.views.bar(self._width())]
        return bar

    def _status(self) -> StyleAndTextTuples:
        return ui.toolbar_fragments(self.state, self._width())

    def _prompt(self) -> StyleAndTextTuples:
        return [("class:room", self.views.current.title), ("", "> ")]

    def _members(self) -> StyleAndTextTuples:
        names = self.views.members(self.state)
        text = "\n".join(" " + ui_cut(name, MEMBERS_WIDTH - 1) for name in names)
        return [("class:members", text)]

    def _messages(self) -> StyleAndTextTuples:
        buffer = self.views.current
        width = self._width() - 1
        if self._members_shown():
            width -= MEMBERS_WIDTH
        height = self._height()
        room = buffer.title if buffer.key.startswith("#") else None
        rows: list[StyleAndTextTuples] = []
        need = height + buffer.scroll
        for line in reversed(buffer.lines):
            rows[:0] = _rows(ui.wrap(ui.fragments(line, room), width))
            if len(rows) >= need:
                break
        else:
            buffer.scroll = min(buffer.scroll, max(len(rows) - height, 0))  # the top
        end = len(rows) - buffer.scroll
        shown = rows[max(end - height, 0) : end]
        out: StyleAndTextTuples = [("", "\n")] * (height - len(shown))  # bottom-aligned
        for n, row in enumerate(shown):
            if n:
                out.append(("", "\n"))
            out.extend(row)
        return out

    # ------------------------------------------------------------------ input

    def _accept(self, buffer: object) -> bool:
        text = self.input.text
        nick = self.views.current.nick
        if nick is not None and text.strip() and not text.startswith("/"):
            text = f"/msg {nick} {text}"
        elif text.startswith("/search"):
            term = text[len("/search") :].strip()
            found = self.views.search(term) if term else []
            lines = [
                Line(
                    Kind.INFO,
                    f"{len(found)} lines with {term!r}:" if term else "usage: /search TEXT",
                )
            ]
            lines += [
                Line(Kind.INFO, f"  {line.nick + ': ' if line.nick else ''}{line.text}")
                for line in found
            ]
            self.show(lines)
            return False
        elif text.startswith("/close") and nick is not None:
            self.views.close(self.views.active)  # a conversation: nothing to tell the server
            self.refresh()
            return False
        self._typed.put_nowait(text)
        return False  # clear the line

    def _bindings(self) -> KeyBindings:
        kb = KeyBindings()
        views, state = self.views, self.state

        @kb.add("c-d")
        def _(event: KeyPressEvent) -> None:
            if not self.input.text:
                self._typed.put_nowait(None)

        @kb.add("c-c")
        def _(event: KeyPressEvent) -> None:
            if not self.input.text:
                self.show([Line(Kind.INFO, ui.LEAVE_HINT)])
            self.input.buffer.reset()

        @kb.add("pageup")
        def _(event: KeyPressEvent) -> None:
            views.scroll(max(self._height() - 2, 1))

        @kb.add("pagedown")
        def _(event: KeyPressEvent) -> None:
            views.scroll(-max(self._height() - 2, 1))

        @kb.add("c-n")
        def _(event: KeyPressEvent) -> None:
            views.cycle(1, state)

        @kb.add("c-p")
        def _(event: KeyPressEvent) -> None:
            views.cycle(-1, state)

        for number in range(1, 10):

            @kb.add("escape", str(number))
            def _(event: KeyPressEvent, number: int = number) -> None:
                views.jump(number, state)

        @kb.add("escape", "a")
        def _(event: KeyPressEvent) -> None:
            views.next_active(state)

        @kb.add("f2")
        def _(event: KeyPressEvent) -> None:
            views.show_members = not views.show_members

        @kb.add("f5")
        def _(event: KeyPressEvent) -> None:
            self.chat.retry_now()

        ui.guard_mouse(kb)
        return kb


def ui_cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


async def run(chat: ChatApp, input: Input | None = None, output: PtOutput | None = None) -> int:
    """The full-screen counterpart of :meth:`ChatApp.run`."""
    from client.app import QUIT_LINGER, _log_exception

    lines = await chat.start()
    screen = FullScreen(chat, input, output)
    chat.ui = screen
    asyncio.get_running_loop().set_exception_handler(_log_exception)
    screen.show(chat._early)
    reader = asyncio.create_task(chat.link_task(lines))
    reader.add_done_callback(chat._link_task_done)
    app_task = asyncio.create_task(screen.app.run_async(set_exception_handler=False))
    try:
        await chat.input_loop(screen.read_line)
        if chat.link is not None and not reader.done():
            await asyncio.wait({reader}, timeout=QUIT_LINGER)
    finally:
        reader.cancel()
        if chat.link is not None:
            await chat.link.close()
        if screen.app.is_running and not screen.app.is_done:
            screen.app.exit()
        await asyncio.wait({app_task}, timeout=5)
    return 1 if chat.crashed else 0
