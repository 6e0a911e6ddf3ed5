"""Rules for nicks, room names and relayed text. Pure functions, shared by every codec.

Names are IRC-compatible on purpose (an IRC listener speaks to the same hub):

- nick: 1-24 of ``A-Z a-z 0-9 _ - [ ] \\ ^ { } |``, not starting with a digit or ``-``.
  ASCII only, so no Unicode look-alike can pose as a nick; the ASCII ones that remain
  (``alice``/``aIice``, ``bob``/``b0b``) are caught by :func:`nick_skeleton`.
- room: ``#`` then 1-32 characters, none a space, comma, colon (IRC's separators) or a
  control character. A non-ASCII room name must also be (docs/security.md):

  * in NFKC form (:func:`nfkc`): the hub folds ``#ｌｏｂｂｙ`` (fullwidth) into ``#lobby``
    and ``#cafe\\u0301`` (NFD accent) into ``#café`` before it looks the room up;
  * free of invisible and space-like characters (:func:`invisible`): Unicode's
    separators (Zs, Zl, Zp), format characters (Cf: zero-width, bidi) and every
    Default_Ignorable_Code_Point (Hangul fillers, variation selectors, …), and of
    unassigned and private-use code points (nobody knows what they look like);
  * written in one script (:func:`mixed_scripts`): ``#lоbby`` with a Cyrillic ``о`` is
    refused. Chinese, Japanese and Korean mix Han with their own scripts (and Latin),
    as UTS #39's "highly restrictive" level allows.
- both compared with the ``rfc1459`` case mapping (``[]\\^`` fold to ``{}|~``), which is
  what IRC clients expect from ``CASEMAPPING=rfc1459``, after NFKC (:func:`fold`).

:func:`clean_text` replaces C0 controls (but tab and newline), DEL, C1 controls and the
bidi embedding, override and isolate controls with U+FFFD before anything is relayed, so
nobody can drive another person's terminal or turn their text around on screen.
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
    "room_problem",
    "nick_skeleton",
    "nfkc",
    "invisible",
    "blank",
    "mixed_scripts",
    "fold",
    "is_bidi_control",
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
# Bidi embeddings, overrides (U+202A-202E) and isolates (U+2066-2069) reorder what follows
# them on screen ("Trojan Source"); the terminal client neutralises the same set.
_BIDI = "\u202a-\u202e\u2066-\u2069"
# Everything a terminal might act on: C0 (but \t and \n), DEL, C1 (ESC is \x1b in C0).
_CONTROLS_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f" + _BIDI + "]")
_CONTROLS_AND_NEWLINES_RE = re.compile(r"[\x00-\x1f\x7f-\x9f" + _BIDI + "]")
_BIDI_RE = re.compile("[" + _BIDI + "]")
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\^", "abcdefghijklmnopqrstuvwxyz{}|~")

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 14/15):
# drawn as nothing at all when a font has no glyph for them. The stdlib's unicodedata
# does not expose the property, hence the table. U+2800 BRAILLE PATTERN BLANK is not in
# it but draws as a blank cell, and is a favourite "invisible" name on chat services.
_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
_ASCII_INVISIBLE = "".join(map(chr, range(0x21))) + "\x7f"
# Separators, controls and format characters.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
# Not in a name either: surrogates, private use and unassigned code points (no one can
# tell what they will look like; an unassigned one may become a look-alike later).
_UNKNOWN_CATEGORIES = frozenset({"Cs", "Co", "Cn"})
# Scripts that legitimately mix (UTS #39 "highly restrictive"): Latin may join each set.
_CJK_MIXES = (
    frozenset({"LATIN", "HAN", "KANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
# The first word of a character's Unicode name is its script for almost every letter
# ("CYRILLIC SMALL LETTER O"); these are the exceptions that matter for the mixes above.
_SCRIPT_ALIASES = {
    "CJK": "HAN",
    "IDEOGRAPHIC": "HAN",
    "HIRAGANA": "KANA",
    "KATAKANA": "KANA",
    "KATAKANA-HIRAGANA": "KANA",
}
# ASCII characters that look alike in many fonts, for nick_skeleton: I l 1 | and O 0.
_SKELETON = str.maketrans("I1|0", "lllo")


def valid_nick(nick: str) -> bool:
    return _NICK_RE.match(nick) is not None


def nick_skeleton(nick: str) -> str:
    """What a nick looks like, for spotting impersonation: two nicks with the same
    skeleton cannot both be in use (``aIice`` while ``alice`` is here, ``b0b``/``bob``).
    Case-insensitive like :func:`fold`; ``rn`` reads as ``m`` and ``vv`` as ``w``."""
    return fold(nick.translate(_SKELETON)).replace("rn", "m").replace("vv", "w")


def nfkc(name: str) -> str:
    """``name`` in Unicode NFKC form: fullwidth, ligature and NFD spellings folded."""
    return name if name.isascii() else unicodedata.normalize("NFKC", name)


def invisible(ch: str) -> bool:
    """True for a character that shows as nothing or as blank space."""
    return unicodedata.category(ch) in _INVISIBLE_CATEGORIES or _IGNORABLE.match(ch) is not None


def blank(text: str) -> bool:
    """True when ``text`` would show as nothing: only spaces and invisible characters."""
    if text.isascii():  # the common case: ASCII's only invisible characters are controls
        return not text.strip(_ASCII_INVISIBLE)
    return all(ch.isspace() or invisible(ch) for ch in text)


def _script(ch: str) -> str | None:
    """The script of a letter or mark, from its Unicode name; None for the rest (digits,
    punctuation: Unicode's Common) and for generic combining marks (Inherited)."""
    if unicodedata.category(ch)[0] not in "LM":
        return None
    word = unicodedata.name(ch, "?").split(" ", 1)[0]
    if word in ("COMBINING", "MODIFIER"):  # ʻ in Hawaiʻi; look-alike ones NFKC-fold away
        return None
    return _SCRIPT_ALIASES.get(word, word)


def mixed_scripts(text: str) -> set[str] | None:
    """The scripts of ``text`` when they mix in a way that only a look-alike would
    (Latin with Cyrillic or Greek, …); None when one script (or a CJK mix) is used."""
    scripts = {script for ch in text if (script := _script(ch)) is not None}
    if len(scripts) <= 1 or any(scripts <= allowed for allowed in _CJK_MIXES):
        return None
    return scripts


def room_problem(room: str) -> str | None:
    """Why ``room`` is not a valid room name, or None when it is."""
    if _ROOM_RE.match(room) is None:
        return f"# then 1-{ROOM_MAX} characters without spaces, commas or control characters"
    if room.isascii():
        return None
    if any(invisible(ch) for ch in room):
        return "it holds an invisible or space-like character"
    if any(unicodedata.category(ch) in _UNKNOWN_CATEGORIES for ch in room):
        return "it holds an unassigned or private-use character"
    if nfkc(room) != room:
        return f"it is not in NFKC form (that would be {nfkc(room)})"
    scripts = mixed_scripts(room)
    if scripts is not None:
        return f"it mixes scripts ({', '.join(sorted(scripts)).lower()}), like a look-alike"
    return None


def valid_room(room: str) -> bool:
    """See the module docstring; :func:`room_problem` says why a name is refused."""
    return room_problem(room) is None


def fold(name: str) -> str:
    """The case-insensitive key of a nick or room (NFKC, then the rfc1459 mapping)."""
    if name.isascii():  # every nick, most rooms: skip the call
        return name.translate(_FOLD)
    return unicodedata.normalize("NFKC", name).translate(_FOLD)


def is_bidi_control(ch: str) -> bool:
    """Whether ``ch`` reorders what follows it on screen (an embedding, override or
    isolate): the one set both the server and the terminal client neutralise."""
    return _BIDI_RE.match(ch) is not None


def clean_text(text: str) -> str:
    """Message text as relayed: control and bidi characters replaced, tab and newline
    kept; the Unicode line and paragraph separators become newlines (they end a line on
    some screens, so they must count as one and be marked as a continuation)."""
    if text.isprintable():  # the common case, and much cheaper than the regex
        return text
    text = text.replace("\r\n", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    return _CONTROLS_RE.sub("\ufffd", text)


def clean_line(text: str) -> str:
    """One-line text (topics, reasons, away messages): newlines become spaces too."""
    if text.isprintable():
        return text
    for newline in ("\r\n", "\n", "\u2028", "\u2029"):
        text = text.replace(newline, " ")
    return _CONTROLS_AND_NEWLINES_RE.sub("\ufffd", text)
