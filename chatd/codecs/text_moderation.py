"""Text mode's moderation commands and lines (docs/moderation.md), apart from ``text.py``.

``/kick``, ``/ban``, ``/unban``, ``/bans``, ``/mute``, ``/unmute``, ``/op``, ``/deop``,
``/voice``, ``/devoice``, ``/mode``, ``/invite``, ``/oper``, ``/kill``, ``/kline``,
``/unkline``, ``/klines``, ``/announce``, ``/modlog``. A first word starting with ``#``
names the room; otherwise the current room is meant.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from chatd.model import (
    Announce,
    Ban,
    BanList,
    BanListReply,
    Command,
    ErrorCode,
    Invite,
    InviteEvent,
    Kick,
    KickEvent,
    Kill,
    Mode,
    ModeEvent,
    ModLog,
    ModLogReply,
    Oper,
    OperEvent,
    ProtocolError,
    Unban,
)
from chatd.moderation import parse_duration

__all__ = ["COMMANDS", "HELP", "render"]

HELP = """\
Moderation (operators; docs/moderation.md). [#room]: default the current room:
  /kick [#room] NICK [why]        /ban [#room] MASK [30m] [why]   /unban [#room] MASK
  /mute [#room] NICK [10m] [why]  /unmute [#room] NICK            /bans [#room]
  /op /deop /voice /devoice [#room] NICK   /invite NICK [#room]
  /mode [#room] [+imnt-k KEY +o NICK ...]  /modlog [#room] [N]
  /oper NAME PASSWORD   /kill NICK [why]   /kline MASK [1d] [why]   /unkline MASK
  /klines   /announce TEXT"""


def _usage(text: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"usage: {text}")


def _room_and_words(arg: str) -> tuple[str | None, list[str]]:
    words = arg.split()
    if words and words[0].startswith("#"):
        return words[0], words[1:]
    return None, words


def _duration_and_reason(words: list[str]) -> tuple[int | None, str]:
    if words and (duration := parse_duration(words[0])) is not None:
        return duration, " ".join(words[1:])
    return None, " ".join(words)


def _kick(arg: str) -> list[Command]:
    room, words = _room_and_words(arg)
    if not words:
        raise _usage("/kick [#room] NICK [reason]")
    return [Kick(room, words[0], " ".join(words[1:]))]


def _banning(quiet: bool) -> Callable[[str], list[Command]]:
    def command(arg: str) -> list[Command]:
        room, words = _room_and_words(arg)
        if not words:
            raise _usage(f"/{'mute' if quiet else 'ban'} [#room] NICK|MASK [30m|2h|1d] [reason]")
        duration, reason = _duration_and_reason(words[1:])
        return [Ban(room, words[0], duration, reason, quiet=quiet)]

    return command


def _unbanning(quiet: bool) -> Callable[[str], list[Command]]:
    def command(arg: str) -> list[Command]:
        room, words = _room_and_words(arg)
        if not words:
            raise _usage(f"/{'unmute' if quiet else 'unban'} [#room] NICK|MASK")
        return [Unban(room, words[0], quiet=quiet)]

    return command


def _status(modes: str) -> Callable[[str], list[Command]]:
    name = ("de" if modes[0] == "-" else "") + ("op" if "o" in modes else "voice")

    def command(arg: str) -> list[Command]:
        room, words = _room_and_words(arg)
        if not words:
            raise _usage(f"/{name} [#room] NICK")
        return [Mode(room, modes, (words[0],))]

    return command


def _mode(arg: str) -> list[Command]:
    room, words = _room_and_words(arg)
    if words and not words[0].startswith(("+", "-")):
        return [Mode(words[0], " ".join(words[1:2]))]  # a nick: user modes
    return [Mode(room, words[0] if words else "", tuple(words[1:]))]


def _invite(arg: str) -> list[Command]:
    words = arg.split()
    if not words:
        raise _usage("/invite NICK [#room]")
    return [Invite(words[0], words[1] if len(words) > 1 else None)]


def _oper(arg: str) -> list[Command]:
    words = arg.split()
    if len(words) != 2:
        raise _usage("/oper NAME PASSWORD")
    return [Oper(words[0], words[1])]


def _kill(arg: str) -> list[Command]:
    words = arg.split()
    if not words:
        raise _usage("/kill NICK [reason]")
    return [Kill(words[0], " ".join(words[1:]))]


def _kline(arg: str) -> list[Command]:
    words = arg.split()
    if not words:
        raise _usage("/kline NICK|MASK|ADDRESS [1d] [reason]")
    duration, reason = _duration_and_reason(words[1:])
    return [Ban(None, words[0], duration, reason, server=True)]


def _modlog(arg: str) -> list[Command]:
    room, words = _room_and_words(arg)
    if words and not words[0].isdigit():
        raise _usage("/modlog [#room] [N]")
    return [ModLog(room, int(words[0][:4]) if words else None)]


def _announce(arg: str) -> list[Command]:
    if not arg:
        raise _usage("/announce TEXT")
    return [Announce(arg)]


COMMANDS: dict[str, Callable[[str], list[Command]]] = {
    "kick": _kick,
    "ban": _banning(False),
    "mute": _banning(True),
    "quiet": _banning(True),
    "unban": _unbanning(False),
    "unmute": _unbanning(True),
    "bans": lambda arg: [BanList(_room_and_words(arg)[0])],
    "mutes": lambda arg: [BanList(_room_and_words(arg)[0], quiet=True)],
    "op": _status("+o"),
    "deop": _status("-o"),
    "voice": _status("+v"),
    "devoice": _status("-v"),
    "mode": _mode,
    "invite": _invite,
    "oper": _oper,
    "kill": _kill,
    "kline": _kline,
    "unkline": lambda arg: [Unban(None, arg.split()[0] if arg else "", server=True)],
    "klines": lambda arg: [BanList(None, server=True)],
    "announce": _announce,
    "modlog": _modlog,
}


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def render(
    event: KickEvent | ModeEvent | BanListReply | InviteEvent | OperEvent | ModLogReply,
) -> str:
    match event:
        case KickEvent(room=room, nick=nick, by=by, reason=reason):
            return f"{room} -- {nick} was kicked by {by}" + (f" ({reason})" if reason else "")
        case ModeEvent(target=target, by="", modes=modes, args=args):
            return f"*** Modes of {target}: {' '.join((modes, *args))}"
        case ModeEvent(target=target, by=by, modes=modes, args=args):
            where = f"{target} -- " if target.startswith("#") else "-- "
            return f"{where}{by} set mode {' '.join((modes, *args))}"
        case BanListReply(room=room, bans=bans, quiet=quiet):
            what = "mutes" if quiet else "bans"
            if not bans:
                return f"*** No {what} in {room}." if room != "*" else "*** No server bans."
            lines = [f"*** {what.capitalize()} of {room}:"]
            for b in bans:
                until = f", until {_when(b.expires)}" if b.expires is not None else ""
                why = f": {b.reason}" if b.reason else ""
                lines.append(f"***   {b.mask} (by {b.by}, {_when(b.set_at)}{until}){why}")
            return "\n".join(lines)
        case InviteEvent(room=room, nick=nick, by=by):
            return f"*** {by} invited {nick} to {room} (/join {room})"
        case OperEvent(name=name):
            return f"*** You are a server operator now ({name})."
        case ModLogReply(entries=entries):
            if not entries:
                return "*** The moderation log is empty."
            return "\n".join(
                f"*** {_when(e.ts)} {e.by}: {e.action} {e.target}"
                + (f" in {e.room}" if e.room else "")
                + (f" ({e.reason})" if e.reason else "")
                for e in entries
            )
