"""Rules for nicks, room names and relayed text. Pure functions, shared by every codec.

Names are IRC-compatible on purpose (an IRC listener speaks to the same hub):

- nick: 1-24 of ``A-Z a-z 0-9 _ - [ ] \\ ^ { } |``, not starting with a digit or ``-``;
- room: ``#`` then 1-32 characters, none a space, comma, colon (IRC's separators), a
  control character or an invisible format character (zero-width, bidi override);
- both compared with the ``rfc1459`` case mapping (``[]\\^`` fold to ``{}|~``), which is
  what IRC clients expect from ``CASEMAPPING=rfc1459``.

:func:`clean_text` replaces C0 controls (but tab and newline), DEL and C1 controls with
U+FFFD before anything is relayed, so nobody can drive another person's terminal.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "NICK_MAX",
    "ROOM_MAX",
    "NICK_RULE",
    "LOBBY",
    "valid_nick",
    "valid_room",
    "fold",
    "clean_text",
    "clean_line",
]

NICK_MAX = 24
ROOM_MAX = 32  # characters after the "#"
#: The nick rule in words, for error messages (the hub's and the client's).
NICK_RULE = f"1-{NICK_MAX} letters, digits or _-[]\\^{{}}|, not starting with a digit or -"
#: The room text-mode users land in and the terminal client joins by default.
LOBBY = "#lobby"

_NICK_RE = re.compile(
    r"[A-Za-z_\[\]\\^{}|][A-Za-z0-9_\-\[\]\\^{}|]{0,%s}\Z".replace("%s", str(NICK_MAX - 1))
)
_ROOM_RE = re.compile(r"#[^\x00-\x20\x7f-\x9f,:]{1,%s}\Z".replace("%s", str(ROOM_MAX)))
# Everything a terminal might act on: C0 (but \t and \n), DEL, C1 (ESC is \x1b in C0).
_CONTROLS_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS_AND_NEWLINES_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\^", "abcdefghijklmnopqrstuvwxyz{}|~")


def valid_nick(nick: str) -> bool:
    return _NICK_RE.match(nick) is not None


def valid_room(room: str) -> bool:
    """``#`` and 1-32 visible characters. Invisible format characters (zero-width space,
    bidi overrides: Unicode category Cf) are refused too: they would let ``#lobby`` and
    ``#lob\u200bby`` look the same, or turn a name around on screen."""
    if _ROOM_RE.match(room) is None:
        return False
    return room.isascii() or not any(unicodedata.category(c) == "Cf" for c in room)


def fold(name: str) -> str:
    """The case-insensitive key of a nick or room (rfc1459 mapping)."""
    return name.translate(_FOLD)


def clean_text(text: str) -> str:
    """Message text as relayed: control characters replaced, tab and newline kept."""
    if text.isprintable():  # the common case, and much cheaper than the regex
        return text
    return _CONTROLS_RE.sub("\ufffd", text.replace("\r\n", "\n"))


def clean_line(text: str) -> str:
    """One-line text (topics, reasons, away messages): newlines become spaces too."""
    text = text.replace("\r\n", " ").replace("\n", " ")
    if text.isprintable():
        return text
    return _CONTROLS_AND_NEWLINES_RE.sub("\ufffd", text)
