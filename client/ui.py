"""The client's terminal shell: prompt_toolkit in line mode.

Incoming lines are printed *above* the running prompt with ``print_formatted_text``
(inside ``patch_stdout``, entered by :mod:`client.app`), so whatever the user is typing
and the cursor position survive any number of arrivals.

Untrusted text only ever travels as the text half of ``(style, text)`` fragments in a
``FormattedText``: never through ``HTML()`` or ``ANSI()``, so markup or escape sequences
in a message are shown literally (and :func:`client.core.sanitize` has already replaced
control characters).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application.current import get_app
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Always, Filter
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.mouse import load_mouse_bindings
from prompt_toolkit.keys import Keys
from prompt_toolkit.output import Output
from prompt_toolkit.renderer import print_formatted_text as renderer_print_formatted_text
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth

from client.core import COMMANDS, ChatState, Kind, Line

__all__ = [
    "ChatCompleter",
    "Ui",
    "fragments",
    "history_path",
    "make_session",
    "nick_colour",
    "STYLE",
]

logger = logging.getLogger(__name__)

Fragments = StyleAndTextTuples  # (style, text) pairs, as prompt_toolkit types them

# Colours for other people's nicks: readable on dark and light backgrounds, none of them
# the colours reserved for errors (red) or one's own lines.
NICK_PALETTE = (
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansiyellow",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
    "ansigreen",
    "#d7875f",
    "#af87d7",
    "#5fafaf",
    "#87af5f",
)

STYLE = Style.from_dict(
    {
        "time": "#888888",
        "room": "bold",
        "own": "ansigreen bold",
        "action": "italic",
        "private": "ansibrightmagenta",
        "system": "#888888",
        "info": "ansicyan",
        "error": "ansired bold",
        "mention": "reverse",
        "earlier": "#888888 italic",
        "bottom-toolbar": "noreverse bg:#303030 #d0d0d0",
        "bottom-toolbar.up": "bg:#303030 ansigreen bold",
        "bottom-toolbar.down": "bg:#303030 ansired bold",
        "bottom-toolbar.key": "bg:#303030 #909090",
    }
)

# Keys closer together than this after an Enter-with-keys-waiting are one paste.
PASTE_WINDOW = 0.05
PASTE_QUESTION = "pasted {lines} lines: Enter sends them as one message, Ctrl-C throws them away"
LEAVE_HINT = "to leave, press Ctrl-D on an empty line or type /quit"

# Batches of incoming lines are printed together (one redraw per burst, not per line),
# but never more than this many at once so a flood still shows progress.
MAX_BATCH = 200


def nick_colour(nick: str) -> str:
    """A colour for ``nick`` that is the same in every run and on every machine."""
    return NICK_PALETTE[zlib.crc32(nick.lower().encode()) % len(NICK_PALETTE)]


def _clock(ts: float | None) -> str:
    try:
        return time.strftime("%H:%M", time.localtime(ts if ts is not None else time.time()))
    except (OverflowError, OSError, ValueError):  # the core validates ts; belt and braces
        return time.strftime("%H:%M")


# Continuation rows (a wrapped line, the next line of a multi-line message) start this far
# in. Nothing anybody sends can then start a row at column 0, where it could pass for a
# system line ("*** bob is now an operator") - the terminal's own wrap would put it there.
INDENT = 4
# A word shorter than this moves whole to the next row; a longer one is broken.
WORD_BREAK = 20


def wrap(frags: Fragments, width: int) -> Fragments:
    """Break ``frags`` into rows of at most ``width`` columns, each continuation row
    indented by :data:`INDENT` (a hanging indent, as WeeChat and irssi do). A row is
    broken at its last space when that is near its end, else mid-word."""
    width = max(width, INDENT + 8)
    out: Fragments = []
    col = 0
    for style, text, *_ in frags:
        piece: list[str] = []
        space = -1  # index in piece of the last space on the current row, or -1
        for ch in text:
            if ch == "\n":
                piece.append(ch)
                col, space = 0, -1
                continue
            w = get_cwidth(ch)
            if col + w > width:
                tail = piece[space + 1 :] if space >= 0 else []
                tail_width = sum(get_cwidth(c) for c in tail)
                if space >= 0 and tail_width < WORD_BREAK:
                    del piece[space:]  # the space itself becomes the break
                else:
                    tail, tail_width = [], 0
                piece.append("\n" + " " * INDENT)
                piece.extend(tail)
                col, space = INDENT + tail_width, -1
            if ch == " ":
                space = len(piece)
            piece.append(ch)
            col += w
        out.append((style, "".join(piece)))
    return out


def fragments(
    line: Line, current_room: str | None, colour: Callable[[str], str] = nick_colour
) -> Fragments:
    """How one line looks: ``[12:04] #room <bob> text``, styled by kind.

    The room is named only when it is not the current one; continuation lines of a
    multi-line message are indented by four spaces.
    """
    out: Fragments = []
    if line.kind in (Kind.INFO, Kind.ERROR):
        mark = "*** " if line.kind is Kind.INFO else "!!! "
        out.append((f"class:{line.kind.value}", mark + _indent(line.text)))
        return out
    out.append(("class:time", f"[{_clock(line.ts)}] "))
    if line.room and (current_room is None or line.room.lower() != current_room.lower()):
        out.append(("class:room", line.room + " "))
    if line.earlier:
        out.append(("class:earlier", "(earlier) "))
    text = _indent(line.text)
    body = "class:mention" if line.mention else ""
    nick = line.nick or "?"
    nick_style = "class:own" if line.own or line.kind is Kind.OWN else f"fg:{colour(nick)} bold"
    if line.kind is Kind.SYSTEM:
        out.append(("class:system", "-- " + text))
    elif line.kind is Kind.ACTION:
        out.append(("class:action", "* "))
        out.append((nick_style + " italic", nick))
        out.append((f"class:action {body}".strip(), " " + text))
    elif line.kind is Kind.PRIVATE:
        out.append(("class:private", "[msg] <"))
        out.append((nick_style, nick))
        out.append(("class:private", f" -> {line.target or '?'}> "))
        out.append((f"class:private {body}".strip(), text))
    else:
        out.append(("", "<"))
        out.append((nick_style, nick))
        out.append(("", "> "))
        out.append((body, text))
    return out


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


def toolbar_fragments(
    state: ChatState, width: int | None = None, conversation: str | None = None
) -> Fragments:
    """The bottom toolbar: connection state, server, nick, current room, members; it
    degrades to fit ``width`` (see :meth:`ChatState.toolbar`)."""
    out: Fragments = []
    for name, value in state.toolbar(width, conversation):
        if out:
            out.append(("class:bottom-toolbar.key", " | "))
        if name == "state":
            up = value == "connected"
            out.append((f"class:bottom-toolbar.{'up' if up else 'down'}", f" {value}"))
        elif name == "transport":  # tls (encrypted) or plain
            out.append((f"class:bottom-toolbar.{'up' if value == 'tls' else 'down'}", value))
        else:
            out.append(("class:bottom-toolbar", value))
    return out


# --------------------------------------------------------------------------- completion


class ChatCompleter(Completer):
    """Tab completion: ``/commands`` at the start, ``#rooms`` and nicks anywhere.

    A nick completed at the very start of the line gets ``": "`` appended, the way chat
    clients address someone.
    """

    def __init__(self, state: ChatState) -> None:
        self._state = state

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        word = before.split(" ")[-1].split("\n")[-1]
        at_start = len(word) == len(before)
        if at_start and word.startswith("/"):
            for command in COMMANDS:
                if ("/" + command.name).startswith(word.lower()):
                    yield Completion("/" + command.name + " ", -len(word), display=command.usage)
            return
        if word.startswith("#"):
            names = dict.fromkeys([*self._state.room_names(), *sorted(self._state.known_rooms)])
            yield from _matching(word, names, "")
            return
        if not word:
            return
        others = [m for m in self._state.members() if not self._state.is_me(m)]
        yield from _matching(word, others, ": " if at_start else "")


def _matching(word: str, names: Iterable[str], suffix: str) -> Iterator[Completion]:
    for name in names:
        if name.lower().startswith(word.lower()):
            yield Completion(name + suffix, -len(word), display=name)


# --------------------------------------------------------------------------- history


def history_path(env: dict[str, str] | None = None) -> Path:
    """Where input history is kept across runs.

    ``$CHAT_STATE_DIR`` (tests use it) or ``$XDG_STATE_HOME/chatd`` or
    ``~/.local/state/chatd``, plus ``history``.
    """
    env = dict(os.environ) if env is None else env
    if env.get("CHAT_STATE_DIR"):
        base = Path(env["CHAT_STATE_DIR"])
    elif env.get("XDG_STATE_HOME"):
        base = Path(env["XDG_STATE_HOME"]) / "chatd"
    else:
        base = Path.home() / ".local" / "state" / "chatd"
    return base / "history"


def open_history(path: Path | None) -> History:
    """A file history at ``path``; an in-memory one if that cannot be written."""
    if path is None:
        return InMemoryHistory()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
    except OSError as exc:
        logger.warning("input history not kept: cannot write %s: %s", path, exc)
        return InMemoryHistory()
    return _NoSecretsHistory(str(path))


class _NoSecretsHistory(FileHistory):
    """A file history that never writes a line carrying a password (/register …)."""

    def store_string(self, string: str) -> None:
        secret = ("/register", "/identify", "/passwd", "/unregister")
        if not string.lstrip().lower().startswith(secret):
            super().store_string(string)


# --------------------------------------------------------------------------- session


def _mouse_handler() -> Callable[[KeyPressEvent], object]:
    for binding in load_mouse_bindings().bindings:
        if binding.keys == (Keys.Vt100MouseEvent,):
            return binding.handler
    return lambda event: None


_MOUSE_HANDLER = _mouse_handler()


def guard_mouse(bindings: KeyBindings) -> None:
    """Bind prompt_toolkit's mouse handler, guarded: a typed ``ESC [31m`` looks like a
    mouse event to its parser, and its handler raised (a traceback over the chat)."""

    @bindings.add(Keys.Vt100MouseEvent)
    def _(event: KeyPressEvent) -> object:
        try:
            return _MOUSE_HANDLER(event)
        except (ValueError, KeyError, IndexError, TypeError):
            logger.info("ignored a malformed mouse event: %r", event.data)
            return None


def add_paste_enter(
    bindings: KeyBindings, on_notice: Callable[[str], None] | None, filter: Filter | None = None
) -> None:
    """Bind Enter: send the line, unless it is part of a paste the terminal did not
    bracket (irssi asks before sending one). Used by line mode and full screen alike."""
    paste: dict[str, Any] = {"at": float("-inf"), "asked": None}

    @bindings.add("enter", filter=Always() if filter is None else filter)
    def _(event: KeyPressEvent) -> None:
        """An Enter with more keys already waiting (no one types that fast), or one within
        PASTE_WINDOW of such an Enter with new text since, becomes a newline, and the
        paste waits for an Enter of its own (one message) or Ctrl-C."""
        buffer = event.current_buffer
        now = time.monotonic()
        queued = any(k.key != Keys.CPRResponse for k in event.app.key_processor.input_queue)
        answered = paste["asked"] == buffer.text  # nothing new since the question
        if queued or (now - paste["at"] < PASTE_WINDOW and not answered):
            buffer.insert_text("\n")
            paste["at"] = now
            if not queued:
                paste["asked"] = buffer.text
                if on_notice is not None:
                    lines = buffer.text.rstrip("\n").count("\n") + 1
                    on_notice(PASTE_QUESTION.format(lines=lines))
            return
        paste["asked"] = None
        if buffer.text.endswith("\n"):  # the Enter that ended a paste
            buffer.text = buffer.text.rstrip("\n")
        buffer.validate_and_handle()


def make_session(
    state: ChatState,
    history: History | None = None,
    on_cycle: Callable[[int], None] | None = None,
    on_retry: Callable[[], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    input: Input | None = None,
    output: Output | None = None,
) -> PromptSession[str]:
    """The prompt: completion, history, toolbar, and Ctrl-C/Ctrl-N/Ctrl-P bindings."""
    bindings = KeyBindings()

    @bindings.add("c-c")
    def _(event: KeyPressEvent) -> None:
        """Clear the line instead of raising KeyboardInterrupt; on an empty line, say how
        to leave (Ctrl-D or /quit)."""
        if not event.current_buffer.text and on_notice is not None:
            on_notice(LEAVE_HINT)
        event.current_buffer.reset()

    @bindings.add("c-n")
    def _(event: KeyPressEvent) -> None:
        """Next joined room."""
        if on_cycle is not None:
            on_cycle(1)

    @bindings.add("c-p")
    def _(event: KeyPressEvent) -> None:
        """Previous joined room."""
        if on_cycle is not None:
            on_cycle(-1)

    add_paste_enter(bindings, on_notice)

    guard_mouse(bindings)

    @bindings.add("f5")
    def _(event: KeyPressEvent) -> None:
        """Reconnect now (the toolbar counts down to the next attempt)."""
        if on_retry is not None:
            on_retry()

    def prompt() -> Fragments:
        room = state.current_room
        return [("class:room", room.name if room else "(no room)"), ("", "> ")]

    return PromptSession(
        prompt,
        history=history or InMemoryHistory(),
        completer=ChatCompleter(state),
        complete_while_typing=False,
        bottom_toolbar=lambda: toolbar_fragments(state, get_app().output.get_size().columns),
        key_bindings=bindings,
        style=STYLE,
        enable_history_search=False,
        # The server echoes what we send, timestamped; the accepted prompt line would only
        # repeat it, so it is erased.
        erase_when_done=True,
        input=input,
        output=output,
    )


class Ui:
    """Shows lines above the prompt, coalescing bursts; rings the bell on mentions."""

    def __init__(
        self,
        state: ChatState,
        session: PromptSession[str],
        colour: Callable[[str], str] = nick_colour,
    ) -> None:
        self.state = state
        self.session = session
        self._colour = colour
        self._pending: list[Line] = []
        self._flush_scheduled = False

    def show(self, lines: Iterable[Line]) -> None:
        """Queue lines; they are printed together once the current burst is read."""
        self._pending.extend(lines)
        if len(self._pending) >= MAX_BATCH:
            self.flush()
        elif self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Print every queued line now, in one go."""
        self._flush_scheduled = False
        lines, self._pending = self._pending, []
        if not lines:
            self.refresh()
            return
        current = self.state.current_room
        width = self._width()
        out: Any = []
        for line in lines:
            out.extend(
                wrap(fragments(line, current.name if current else None, self._colour), width)
            )
            out.append(("", "\n"))
        self._print_above(FormattedText(out))
        if any(line.mention for line in lines):
            self.session.output.bell()
        self.refresh()

    def _width(self) -> int:
        """Columns to wrap at: the terminal's, less one so no row ends in the last column
        (where terminals differ on what the next character does)."""
        try:
            return self.session.app.output.get_size().columns - 1
        except Exception:  # no terminal to ask
            return 79

    def _print_above(self, text: FormattedText) -> None:
        """Print above the running prompt, without leaving raw mode.

        ``print_formatted_text`` goes through ``run_in_terminal``, which switches the
        terminal to cooked mode while it prints: a Ctrl-D typed in that instant is eaten
        by the tty as end-of-file and a Ctrl-C becomes SIGINT (both seen in the tmux
        tests). A chat client prints all the time, so it does what ``in_terminal`` does
        minus the mode switch: erase the prompt, print, reset the renderer, redraw. All of
        it runs synchronously on the loop's thread, so nothing renders in between.
        """
        app = self.session.app
        if not app.is_running or app.is_done or getattr(app, "_running_in_terminal", False):
            print_formatted_text(text, style=STYLE, end="")
            return
        app.renderer.erase()
        renderer_print_formatted_text(app.output, text, STYLE, color_depth=app.color_depth)
        app.output.flush()
        app.renderer.reset()
        app.renderer.request_absolute_cursor_position()
        app.invalidate()

    def stop(self) -> None:
        """End the prompt (the wiring is going away)."""
        app = self.session.app
        if app.is_running and not app.is_done:
            app.exit(exception=EOFError())

    def refresh(self) -> None:
        """Redraw the toolbar and prompt (state changed)."""
        if self.session.app.is_running:
            self.session.app.invalidate()
