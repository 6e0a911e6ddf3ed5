"""The client's terminal shell: prompt_toolkit in line mode.

Incoming lines are printed *above* the running prompt with ``print_formatted_text``
(inside ``patch_stdout``, entered by :mod:`client.app`), so whatever the user is typing
and the cursor position survive any number of arrivals.

How a line looks (styles, colours, wrapping, the toolbar) is :mod:`client.render`; what
it prints is only ever those ``(style, text)`` fragments, so untrusted text is shown
literally (see there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application.current import get_app
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Always, Filter
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.mouse import load_mouse_bindings
from prompt_toolkit.keys import Keys
from prompt_toolkit.output import Output
from prompt_toolkit.renderer import print_formatted_text as renderer_print_formatted_text

from client.core import COMMANDS, ChatState, Line
from client.render import STYLE, Fragments, fragments, nick_colour, toolbar_fragments, wrap

__all__ = [
    "ChatCompleter",
    "Ui",
    "history_path",
    "make_session",
]

logger = logging.getLogger(__name__)

# Keys closer together than this after an Enter-with-keys-waiting are one paste.
PASTE_WINDOW = 0.05
PASTE_QUESTION = "pasted {lines} lines: Enter sends them as one message, Ctrl-C throws them away"
LEAVE_HINT = "to leave, press Ctrl-D on an empty line or type /quit"

# Batches of incoming lines are printed together (one redraw per burst, not per line),
# but never more than this many at once so a flood still shows progress.
MAX_BATCH = 200


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
