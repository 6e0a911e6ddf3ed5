"""How a line looks in the terminal: styles, nick colours, wrapping, the toolbar.

Shared by both shells: line mode (:mod:`client.ui`) prints these fragments above the
prompt, full screen (:mod:`client.fullscreen`) draws them in its buffer.

Untrusted text only ever travels as the text half of ``(style, text)`` fragments in a
``FormattedText``: never through ``HTML()`` or ``ANSI()``, so markup or escape sequences
in a message are shown literally (and :func:`client.core.sanitize` has already replaced
control characters). A style is only ever one of ours or a colour from
:data:`NICK_PALETTE`.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth

from client.core import ChatState, Kind, Line

__all__ = [
    "Fragments",
    "INDENT",
    "NICK_PALETTE",
    "STYLE",
    "fragments",
    "nick_colour",
    "toolbar_fragments",
    "wrap",
]

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
