"""The client's moderation commands and lines (docs/moderation.md), beside ``core.py``.

:func:`frame` turns ``/kick``, ``/ban``, ``/unban``, ``/mute``, ``/unmute``, ``/op``,
``/deop``, ``/voice``, ``/mode``, ``/invite``, ``/oper`` into a JSON request (the current
room unless a ``#room`` comes first); :func:`describe` turns the moderation events into
a line, and :func:`mode_change` a ``mode`` event into the changes the client applies to
its books (a room's modes, its members' ranks). Tab completion comes with the command
table in core (``COMMANDS``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMMAND_NAMES",
    "EVENT_TYPES",
    "USAGE",
    "ModeChange",
    "frame",
    "describe",
    "mode_change",
]

USAGE = {
    "kick": ("/kick [#room] NICK [reason]", "remove someone from a room (operators)"),
    "ban": ("/ban [#room] NICK|MASK [30m] [why]", "ban from a room, optionally for a time"),
    "unban": ("/unban [#room] NICK|MASK", "lift a ban (/unban alone: the ban list)"),
    "mute": ("/mute [#room] NICK [10m] [why]", "a member may stay but not speak"),
    "unmute": ("/unmute [#room] NICK", "let a muted member speak again"),
    "op": ("/op [#room] NICK", "make someone a room operator"),
    "deop": ("/deop [#room] NICK", "take operator status away"),
    "voice": ("/voice [#room] NICK", "let someone speak in a moderated (+m) room"),
    "mode": ("/mode [#room] [+imnt-k KEY …]", "show or change a room's modes"),
    "invite": ("/invite NICK [#room]", "invite someone (to an invite-only room)"),
    "oper": ("/oper NAME PASSWORD", "become a server operator"),
}
COMMAND_NAMES = frozenset(USAGE)
EVENT_TYPES = frozenset({"mode", "bans", "mutes", "invite", "oper", "modlog"})  # one line each
_DURATION = re.compile(r"\d{1,9}[smhdw]?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_SHOWN = 100  # list entries one line shows
# Mode letters that always take an argument (as the server parses them); "k" takes one
# when set (its key), and a query's answer shows it only to members.
_WITH_ARG = "ovbq"
MAX_MODE_CHARS = 64  # a mode string longer than this is not from chatd: ignored


@dataclass(frozen=True, slots=True)
class ModeChange:
    """A ``mode`` event, parsed: ``by`` "" is the answer to a query (the whole picture)."""

    target: str
    by: str
    changes: tuple[tuple[bool, str, str], ...]  # (set?, letter, argument or "")


def mode_change(f: dict[str, Any]) -> ModeChange | None:
    """The changes a ``mode`` event makes, or None if it does not parse. ``f`` comes from
    the server and is not trusted: types, lengths and letters are checked here."""
    target, by, modes, args = f.get("target"), f.get("by", ""), f.get("modes"), f.get("args", [])
    if not (
        isinstance(target, str)
        and isinstance(by, str)
        and isinstance(modes, str)
        and isinstance(args, list)
        and len(modes) <= MAX_MODE_CHARS
        and len(args) <= MAX_MODE_CHARS
        and all(isinstance(a, str) for a in args)
    ):
        return None
    rest = list(args)
    changes: list[tuple[bool, str, str]] = []
    plus = True
    for letter in modes:
        if letter in "+-":
            plus = letter == "+"
        elif not (letter.isascii() and letter.isalpha()):
            return None
        elif letter in _WITH_ARG:
            if not rest:
                return None
            changes.append((plus, letter, rest.pop(0)))
        else:
            changes.append((plus, letter, rest.pop(0) if letter == "k" and plus and rest else ""))
    return ModeChange(target, by, tuple(changes))


def _seconds(word: str) -> int | None:
    if not _DURATION.fullmatch(word):
        return None
    unit = word[-1] if word[-1] in _UNITS else "s"
    return int(word.rstrip("smhdw")) * _UNITS[unit]


def frame(name: str, rest: str, current: str | None) -> dict[str, Any] | str:
    """The request for ``/name rest``, or a usage message."""
    words = rest.split()
    room = current
    if words and words[0].startswith("#") and name != "invite":
        room, words = words[0], words[1:]
    usage = "usage: " + USAGE[name][0]
    if name == "oper":
        return {"op": "oper", "name": words[0], "password": words[1]} if len(words) == 2 else usage
    if name == "invite":
        if not words:
            return usage
        return {"op": "invite", "nick": words[0], "room": words[1] if len(words) > 1 else room}
    if room is None:
        return "join a room first, or name one: " + USAGE[name][0]
    if name == "mode":
        return {"op": "mode", "target": room, "modes": words[0] if words else "", "args": words[1:]}
    if name == "unban" and not words:
        return {"op": "bans", "room": room}
    if not words:
        return usage
    target, more = words[0], words[1:]
    if name in ("op", "deop", "voice"):
        modes = {"op": "+o", "deop": "-o", "voice": "+v"}[name]
        return {"op": "mode", "target": room, "modes": modes, "args": [target]}
    if name == "kick":
        return {"op": "kick", "room": room, "nick": target, "reason": " ".join(more)}
    if name in ("unban", "unmute"):
        return {"op": name, "room": room, "mask": target}
    request: dict[str, Any] = {"op": name, "room": room, "mask": target}
    if more and (seconds := _seconds(more[0])) is not None:
        request["duration"], more = seconds, more[1:]
    request["reason"] = " ".join(more)
    return request


def describe(f: dict[str, Any]) -> str:
    """One line for a moderation event. ``f`` comes from the server and is not trusted:
    every field is checked here, lists are capped; the caller sanitises and cuts."""

    def text(key: str, obj: dict[str, Any] | None = None) -> str:
        value = (f if obj is None else obj).get(key)
        return value if isinstance(value, str) else ""

    def items(key: str) -> list[dict[str, Any]]:
        value = f.get(key)
        return (
            [e for e in value[:MAX_SHOWN] if isinstance(e, dict)] if isinstance(value, list) else []
        )

    kind = text("type")
    if kind == "mode":
        args = f.get("args")
        words = (
            [a for a in args[:MAX_SHOWN] if isinstance(a, str)] if isinstance(args, list) else []
        )
        change = " ".join([text("modes"), *words])
        if not text("by"):
            return f"modes of {text('target')}: {change}"
        return f"{text('by')} set mode {change} on {text('target')}"
    if kind in ("bans", "mutes"):
        masks = [text("mask", e) for e in items(kind)]
        if not masks:
            return f"no {kind} in {text('room')}"
        return f"{kind} of {text('room')}: " + ", ".join(masks)
    if kind == "invite":
        return f"{text('by')} invited {text('nick')} to {text('room')}"
    if kind == "oper":
        return f"you are a server operator now ({text('name')})"
    entries = [
        f"{text('by', e)} {text('action', e)} {text('target', e)}".strip() for e in items("entries")
    ]
    return "moderation log: " + ("; ".join(entries) or "empty")
