"""Server frames, decoded and checked in one place: a line in, one typed frame out.

Everything the server says passes :func:`decode` before the client acts on it, so the
rest of the client handles typed values only. The server may be buggy or an impostor
(issue 17), so nothing is trusted:

- the JSON itself: malformed, nested 100,000 deep (``RecursionError``), not an object;
- every field, through the checks of :mod:`client.fields` (types, names by the server's
  own rules, times the clock can show, text sanitised and cut to the advertised
  ``max_text_chars``, lists capped);
- the advertised limits themselves, clamped (:class:`Limits`).

A frame that fails any check raises :class:`~client.fields.Garbled`; the caller logs and
skips it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from chatd.config import Config
from client import moderation
from client.fields import Fields, Garbled
from client.text import sanitize

__all__ = ["DECODERS", "Frame", "Limits", "decode", "parse"]

# A client-side memory bound (like client.fields.MAX_NAMES), not a server limit.
MAX_MOTD_LINES = 100

_SERVER = Config()


@dataclass(frozen=True, slots=True)
class Limits:
    """What the server accepts; read from ``welcome``. Until then (or from a server that
    does not say), the server's defaults — imported, not copied."""

    max_text_chars: int = _SERVER.max_text_chars
    max_line_bytes: int = _SERVER.max_line_bytes
    history_max_limit: int = _SERVER.history_max_limit
    max_rooms_per_client: int = _SERVER.max_rooms_per_client


# Advertised values are clamped: a hostile server must not make the client hold more.
_LIMIT_RANGES = {
    "max_text_chars": (16, 65_536),
    "max_line_bytes": (256, 1 << 20),
    "history_max_limit": (1, 10_000),
    "max_rooms_per_client": (1, 1_000),
}


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class Welcome:
    nick: str
    server: str
    motd: tuple[str, ...]
    limits: Limits
    resume: str = ""  # the token that takes this session back (docs/accounts.md)
    account: str = ""  # logged in as ("": not)
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class Marks:
    """Who of a member list is away, an operator, voiced (optional lists in joined/who)."""

    away: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    voiced: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Joined:
    room: str
    topic: str
    members: tuple[str, ...]
    marks: Marks = Marks()


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    nick: str


@dataclass(frozen=True, slots=True)
class Part:
    room: str
    nick: str
    reason: str


@dataclass(frozen=True, slots=True)
class Msg:
    room: str
    sender: str
    text: str
    ts: float | None
    mid: int
    action: bool = False
    history: bool = False


@dataclass(frozen=True, slots=True)
class PrivMsg:
    sender: str
    to: str
    text: str
    ts: float | None
    action: bool = False


@dataclass(frozen=True, slots=True)
class Nick:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Who:
    room: str
    members: tuple[str, ...]
    marks: Marks = Marks()


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room: str
    members: int | None
    topic: str


@dataclass(frozen=True, slots=True)
class Rooms:
    rooms: tuple[RoomInfo, ...]


@dataclass(frozen=True, slots=True)
class Topic:
    room: str
    topic: str
    by: str


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    """The server asks whether we are still there."""


@dataclass(frozen=True, slots=True)
class Quit:
    nick: str
    reason: str


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str
    rid: int | None


@dataclass(frozen=True, slots=True)
class Skipped:
    count: int | None


@dataclass(frozen=True, slots=True)
class Shutdown:
    reason: str


@dataclass(frozen=True, slots=True)
class Notice:
    text: str


@dataclass(frozen=True, slots=True)
class History:
    room: str
    messages: tuple[Msg, ...]
    size: int  # messages in the page as sent, good ones or not (a full page: ask again)
    rid: int | None
    more: bool = False  # the server cut the page (max_reply_bytes): ask again from its end
    start: int | None = None  # the room's history now starts here (older ones were pruned)


@dataclass(frozen=True, slots=True)
class HistoryEnd:
    room: str


@dataclass(frozen=True, slots=True)
class Whois:
    nick: str
    rooms: tuple[str, ...]
    away: str
    account: str = ""


@dataclass(frozen=True, slots=True)
class Account:
    """Something happened to my account: registered, identified, password_changed,
    dropped (then ``account`` is "")."""

    account: str
    event: str


@dataclass(frozen=True, slots=True)
class Away:
    away: bool


@dataclass(frozen=True, slots=True)
class AwayChange:
    nick: str
    away: bool


@dataclass(frozen=True, slots=True)
class Stats:
    users: int | None
    rooms: int | None


@dataclass(frozen=True, slots=True)
class Kick:
    """Somebody (maybe me) was kicked from a room (docs/moderation.md)."""

    room: str
    nick: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class Moderation:
    """Another moderation event (mode, bans, mutes, invite, oper, modlog), as one line;
    a ``mode`` event also carries its parsed ``change`` (None if it does not parse)."""

    text: str
    change: moderation.ModeChange | None = None


Frame = (
    Welcome
    | Joined
    | Join
    | Part
    | Msg
    | PrivMsg
    | Nick
    | Who
    | Rooms
    | Topic
    | Pong
    | Ping
    | Quit
    | Error
    | Skipped
    | Shutdown
    | Notice
    | History
    | HistoryEnd
    | Whois
    | Account
    | Away
    | AwayChange
    | Stats
    | Kick
    | Moderation
)


# --------------------------------------------------------------------------- fields


# --------------------------------------------------------------------------- decoders


def _limits(f: Fields) -> Limits:
    given = f.obj.get("limits")
    if not isinstance(given, dict):
        return Limits()
    values: dict[str, int] = {}
    for spec in fields(Limits):
        value = given.get(spec.name)
        if isinstance(value, int) and not isinstance(value, bool):
            low, high = _LIMIT_RANGES[spec.name]
            values[spec.name] = min(max(value, low), high)
    return Limits(**values)


def _marks(f: Fields) -> Marks:
    """The optional away/ops/voiced lists of a member list (absent: nobody)."""
    lists = [f.nicks(key) if key in f.obj else () for key in ("away", "ops", "voiced")]
    return Marks(*lists)


def _welcome(f: Fields) -> Welcome:
    motd = f.obj.get("motd")
    lines = motd[:MAX_MOTD_LINES] if isinstance(motd, list) else []
    return Welcome(
        f.nick("nick"),
        f.opt_str("server"),
        tuple(f.cut(sanitize(line, newlines=False)) for line in lines if isinstance(line, str)),
        _limits(f),
        resume=f.opt_str("resume"),
        account=f.opt_str("account"),
        resumed=f.flag("resumed"),
    )


def _msg(f: Fields) -> Msg:
    return Msg(
        f.room(),
        f.nick("from"),
        f.text(),
        f.ts(),
        f.integer("mid"),
        action=f.flag("action"),
        history=f.flag("history"),
    )


def _history(f: Fields) -> History:
    room = f.room()
    messages = f.obj.get("messages")
    if not isinstance(messages, list):
        raise Garbled("messages is not a list")
    good = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        try:
            good.append(_msg(Fields({**m, "room": room}, f.max_text_chars)))
        except Garbled:
            continue
    return History(
        room, tuple(good), len(messages), f.opt_int("id"), f.flag("more"), f.opt_int("start")
    )


def _rooms(f: Fields) -> Rooms:
    infos = []
    for info in f.items("rooms"):
        if not isinstance(info, dict):
            continue
        one = Fields(info, f.max_text_chars)
        try:
            infos.append(RoomInfo(one.room(), one.opt_int("members"), one.opt_str("topic")))
        except Garbled:
            continue
    return Rooms(tuple(infos))


DECODERS: dict[str, Callable[[Fields], Frame]] = {
    "welcome": _welcome,
    "joined": lambda f: Joined(f.room(), f.opt_str("topic"), f.nicks("members"), _marks(f)),
    "join": lambda f: Join(f.room(), f.nick("nick")),
    "part": lambda f: Part(f.room(), f.nick("nick"), f.opt_str("reason")),
    "msg": _msg,
    "privmsg": lambda f: PrivMsg(
        f.nick("from"), f.nick("to"), f.text(), f.ts(), action=f.flag("action")
    ),
    "nick": lambda f: Nick(f.nick("old"), f.nick("new")),
    "who": lambda f: Who(f.room(), f.nicks("members"), _marks(f)),
    "rooms": _rooms,
    "topic": lambda f: Topic(f.room(), f.opt_str("topic"), f.opt_str("by")),
    "pong": lambda f: Pong(),
    "ping": lambda f: Ping(),
    "quit": lambda f: Quit(f.nick("nick"), f.opt_str("reason")),
    "error": lambda f: Error(f.opt_str("code") or "error", f.opt_str("message"), f.opt_int("id")),
    "skipped": lambda f: Skipped(f.opt_int("count")),
    "shutdown": lambda f: Shutdown(f.opt_str("reason")),
    "notice": lambda f: Notice(f.text()),
    "history": _history,
    "history_end": lambda f: HistoryEnd(f.room()),
    "whois": lambda f: Whois(
        f.nick("nick"), f.rooms("rooms"), f.opt_str("away"), f.opt_str("account")
    ),
    "account": lambda f: Account(f.opt_str("account"), f.opt_str("event")),
    "away": lambda f: Away(f.flag("away")),
    "away_change": lambda f: AwayChange(f.nick("nick"), f.flag("away")),
    "stats": lambda f: Stats(f.opt_int("users"), f.opt_int("rooms")),
    # moderation (client/moderation.py)
    "kick": lambda f: Kick(f.room(), f.nick("nick"), f.opt_str("by"), f.opt_str("reason")),
    **{
        kind: (lambda f: Moderation(f.cut(sanitize(moderation.describe(f.obj), newlines=False))))
        for kind in moderation.EVENT_TYPES
    },
    "mode": lambda f: Moderation(
        f.cut(sanitize(moderation.describe(f.obj), newlines=False)), moderation.mode_change(f.obj)
    ),
}


def parse(line: str) -> dict[str, Any]:
    """One received line as a JSON object with a string ``type``.

    Raises:
        Garbled: not JSON (or nested too deep to parse), not an object, no type.
    """
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise Garbled("not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise Garbled("not an object with a type")
    return obj


def decode(obj: dict[str, Any], limits: Limits) -> Frame | None:
    """The typed frame for a parsed object; None for a type this client does not know.

    Raises:
        Garbled: a field is missing, of the wrong type, or not a valid name.
    """
    decoder = DECODERS.get(obj["type"])
    return None if decoder is None else decoder(Fields(obj, limits.max_text_chars))
