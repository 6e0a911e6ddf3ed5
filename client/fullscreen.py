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
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import HSplit, Layout, VSplit, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.output import Output as PtOutput
from prompt_toolkit.styles import Style, merge_styles
from prompt_toolkit.widgets import TextArea

from client import render, ui
from client.values import Kind, Line
from client.views import Buffer, Member, Views

if TYPE_CHECKING:
    from client.app import ChatApp

__all__ = ["FullScreen", "run"]

logger = logging.getLogger(__name__)

MEMBERS_WIDTH = 18
AWAY_MARK = " (away)"  # after an away member's nick in the member list, when it fits
KEYS_HELP = (
    "full-screen keys: Alt-1..9 show a buffer, Ctrl-N/Ctrl-P next/previous, Alt-A next "
    "with activity, PageUp/PageDown scroll, Ctrl-R search this buffer (/search TEXT too), "
    "F2 member list, F5 reconnect now; /close closes a conversation"
)
INPUT_MAX_ROWS = 5  # rows the input line grows to for a multi-line paste
MEMBERS_MIN_WIDTH = 60  # narrower terminals show no member list (F2 or /who still work)
STYLE = merge_styles(
    [
        render.STYLE,
        Style.from_dict(
            {
                "bar": "bg:#303030 #d0d0d0",
                "bar.active": "bg:#5f87af #ffffff bold",
                "bar.unread": "bg:#303030 ansiyellow",
                "bar.mention": "bg:#303030 ansired bold",
                "members": "#a0a0a0",
                "members.away": "#6c6c6c italic",
                "members.rank": "ansigreen bold",
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
            multiline=False,
            prompt=self._prompt,
            history=ui.open_history(chat.opts.history_file),
            completer=ui.ChatCompleter(self.state),
            complete_while_typing=False,
            accept_handler=self._accept,
        )
        # multiline=False pins the window to one row; a pasted message shows its lines
        self.input.window.height = self._input_height
        self.input.buffer.on_text_changed += self._typed_while_searching
        self._draft: str | None = None  # the input line put aside while Ctrl-R searches
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
            if buffer.scroll:  # scrolled back: the view holds still as lines arrive
                buffer.scroll += len(self._wrapped(line, buffer))
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
        rows = self.app.output.get_size().rows - 2 - bool(self.views.topic(self.state))
        rows -= self._input_height()  # one row, or a few while a paste waits
        return max(rows, 1)

    def _bar(self) -> StyleAndTextTuples:
        bar: StyleAndTextTuples = [*self.views.bar(self._width())]
        return bar

    def _status(self) -> StyleAndTextTuples:
        status = render.toolbar_fragments(self.state, self._width(), self.views.current.nick)
        buffer = self.views.current
        if buffer.scroll:  # WeeChat's -MORE(n)-: PageDown to follow again
            below = self._lines_below(buffer)
            more = f"{below} more below" if below else "scrolled back"
            status += [("class:bottom-toolbar.key", " | "), ("class:bottom-toolbar.down", more)]
        return status

    def _prompt(self) -> StyleAndTextTuples:
        if self.views.filter is not None:
            return [("class:info", f"search {self.views.current.title}"), ("", "> ")]
        return [("class:room", self.views.current.title), ("", "> ")]

    def _input_height(self) -> int:
        """One row; a pasted message shows its lines (a few) before it is sent."""
        return min(self.input.text.count("\n") + 1, INPUT_MAX_ROWS)

    def _members(self) -> StyleAndTextTuples:
        return member_fragments(self.views.member_rows(self.state), MEMBERS_WIDTH - 1)

    def _wrapped(self, line: Line, buffer: Buffer) -> list[StyleAndTextTuples]:
        """The rows ``line`` takes in ``buffer``'s message area."""
        width = self._width() - 1
        if self._members_shown():
            width -= MEMBERS_WIDTH
        room = buffer.title if buffer.key.startswith("#") else None
        return _rows(render.wrap(render.fragments(line, room), width))

    def _lines_below(self, buffer: Buffer) -> int:
        """How many lines lie wholly below the view of a scrolled-back buffer."""
        rows = count = 0
        for line in reversed(self.views.shown_lines()):
            rows += len(self._wrapped(line, buffer))
            if rows > buffer.scroll:
                break
            count += 1
        return count

    def _messages(self) -> StyleAndTextTuples:
        buffer = self.views.current
        height = self._height()
        rows: list[StyleAndTextTuples] = []
        need = height + buffer.scroll
        for line in reversed(self.views.shown_lines()):
            rows[:0] = self._wrapped(line, buffer)
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
            # a conversation: nothing to tell the server
            self.views.close(self.views.active, self.state)
            self.refresh()
            return False
        if text.strip().lower() == "/help":
            self.show([Line(Kind.INFO, KEYS_HELP)])
        self._typed.put_nowait(text)
        return False  # clear the line

    # ------------------------------------------------------------------ Ctrl-R

    def _start_search(self) -> None:
        """Ctrl-R: the message area shows only the lines of the shown buffer that hold
        what is typed; the half-typed line is put aside and comes back afterwards."""
        self._draft = self.input.text
        self.views.filter = ""
        self.views.current.scroll = 0
        self.input.buffer.reset()

    def _end_search(self) -> None:
        self.views.filter = None
        self.views.current.scroll = 0
        draft, self._draft = self._draft or "", None
        self.input.buffer.reset()
        self.input.buffer.insert_text(draft)

    def _typed_while_searching(self, buffer: object) -> None:
        if self.views.filter is not None:
            self.views.filter = self.input.text
            self.views.current.scroll = 0

    def _search_bindings(self, kb: KeyBindings, searching: Condition) -> None:
        """Ctrl-R starts (or ends) a search; Enter, Escape or Ctrl-C end it."""

        @kb.add("c-r")
        def _(event: KeyPressEvent) -> None:
            if self.views.filter is None:
                self._start_search()
            else:
                self._end_search()

        @kb.add("enter", filter=searching)
        @kb.add("escape", filter=searching)
        @kb.add("c-c", filter=searching)
        def _(event: KeyPressEvent) -> None:
            self._end_search()

    def _bindings(self) -> KeyBindings:
        kb = KeyBindings()
        views, state = self.views, self.state
        searching = Condition(lambda: self.views.filter is not None)
        self._search_bindings(kb, searching)
        ui.add_paste_enter(kb, lambda text: self.show([Line(Kind.INFO, text)]), ~searching)

        @kb.add("c-d")
        def _(event: KeyPressEvent) -> None:
            if not self.input.text:
                self._typed.put_nowait(None)

        @kb.add("c-c", filter=~searching)
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


def member_fragments(rows: list[Member], width: int) -> StyleAndTextTuples:
    """The member list: ``@`` operators, ``+`` voiced (the highest rank shown), then the
    nick; an away member is dimmed and marked ``(away)`` when that fits."""
    out: StyleAndTextTuples = []
    for n, (nick, rank, away) in enumerate(rows):
        if n:
            out.append(("", "\n"))
        mark = rank[:1] or " "
        out.append(("class:members.rank", mark))
        name = ui_cut(nick, width - 1)
        if away:
            suffix = AWAY_MARK if len(name) + len(AWAY_MARK) <= width - 1 else ""
            out.append(("class:members.away", name + suffix))
        else:
            out.append(("class:members", name))
    return out


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
