"""Moderation's part of the vocabulary (docs/moderation.md): commands, events, actions.

Import these from :mod:`chatd.model`, which re-exports them (and lists the events in
``AnyEvent``); this module is only a second file for the same vocabulary, so that
``model.py`` stays readable. Everything is an immutable value, as in ``chatd.model``.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatd.model import Command, Event

__all__ = [
    "Kick",
    "Ban",
    "Unban",
    "BanList",
    "Mode",
    "Invite",
    "Oper",
    "Kill",
    "Announce",
    "ModLog",
    "BanInfo",
    "KickEvent",
    "ModeEvent",
    "BanListReply",
    "InviteEvent",
    "OperEvent",
    "ModLogEntry",
    "ModLogReply",
]

# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Kick(Command):
    room: str | None  # None: the current room
    nick: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ban(Command):
    """Ban (``quiet``: mute) ``mask`` from ``room``; room None: from the server (server
    operators only). ``mask``: a nick, ``nick!user@host`` glob, an address, or
    ``$a:ACCOUNT``. ``duration`` in seconds; None: until lifted."""

    room: str | None
    mask: str
    duration: int | None = None
    reason: str = ""
    quiet: bool = False
    server: bool = False  # a server ban (room is ignored)


@dataclass(frozen=True, slots=True)
class Unban(Command):
    room: str | None
    mask: str
    quiet: bool = False
    server: bool = False


@dataclass(frozen=True, slots=True)
class BanList(Command):
    room: str | None
    quiet: bool = False
    server: bool = False


@dataclass(frozen=True, slots=True)
class Mode(Command):
    """Show (``modes`` "") or change a room's modes, IRC style: ``+mt-i``, ``+o nick``,
    ``+k key``, ``+b mask``. ``target`` None: the current room; a nick: user modes."""

    target: str | None
    modes: str = ""
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Invite(Command):
    nick: str
    room: str | None


@dataclass(frozen=True, slots=True)
class Oper(Command):
    name: str
    password: str


@dataclass(frozen=True, slots=True)
class Kill(Command):
    nick: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Announce(Command):
    text: str


@dataclass(frozen=True, slots=True)
class ModLog(Command):
    room: str | None = None  # None: every room and the server (server operators)
    limit: int | None = None


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class BanInfo:
    """One ban or mute. ``account``/``address``: who it was aimed at when it named a
    present user, so a new nick or a reconnect does not evade it."""

    mask: str
    by: str
    set_at: float
    expires: float | None = None
    reason: str = ""
    account: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class KickEvent(Event):
    room: str
    nick: str
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ModeEvent(Event):
    """Modes of ``target`` (a room, or a nick's user modes) changed ``by`` someone;
    ``by`` "": the answer to a query (the current modes)."""

    target: str
    by: str
    modes: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BanListReply(Event):
    room: str  # "*": the server's bans
    bans: tuple[BanInfo, ...]
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class InviteEvent(Event):
    room: str
    nick: str  # the invited
    by: str


@dataclass(frozen=True, slots=True)
class OperEvent(Event):
    """You are a server operator now (``name``: the operator name or account)."""

    name: str


@dataclass(frozen=True, slots=True)
class ModLogEntry:
    ts: float
    by: str
    action: str
    target: str
    room: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ModLogReply(Event):
    entries: tuple[ModLogEntry, ...]
