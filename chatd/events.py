"""The events of the vocabulary (:mod:`chatd.model`): what a client is told.

Import these from :mod:`chatd.model`, which re-exports them and lists them in
``AnyEvent``; this module is a second file for the same vocabulary, so that ``model.py``
stays readable. Codecs turn events into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Event",
    "StatsReply",
    "Welcome",
    "Joined",
    "JoinEvent",
    "PartEvent",
    "Message",
    "PrivateMessage",
    "NickEvent",
    "MemberInfo",
    "WhoReply",
    "RoomInfo",
    "RoomsReply",
    "TopicEvent",
    "Pong",
    "QuitEvent",
    "Error",
    "Skipped",
    "Shutdown",
    "AwayNotice",
    "Probe",
    "Notice",
    "HistoryReply",
    "HistoryEnd",
    "WhoisReply",
    "AwayReply",
    "AccountEvent",
    "AwayEvent",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of everything a client is told."""


@dataclass(frozen=True, slots=True)
class StatsReply(Event):
    users: int  # registered
    unregistered: int  # connections that have not said hello yet
    rooms: int
    max_users: int  # the most registered users at once since the server started
    operators: int = 0  # server operators online (moderation)


@dataclass(frozen=True, slots=True)
class Welcome(Event):
    nick: str
    server: str
    motd: tuple[str, ...] = ()
    stats: StatsReply | None = None
    # Limits a client should respect, as (name, value) pairs: max_text_chars,
    # max_line_bytes, history_max_limit, max_rooms_per_client (docs/protocol.md).
    limits: tuple[tuple[str, int], ...] = ()
    resume: str = ""  # present it in a later hello to take this session back
    account: str | None = None
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class Joined(Event):
    """To the joiner: you are in, here is the room."""

    room: str
    topic: str
    members: tuple[str, ...]
    prefixes: tuple[str, ...] = ()  # per member: "@", "+", "@+" or "" (moderation)
    away: tuple[str, ...] = ()  # the members who are away


@dataclass(frozen=True, slots=True)
class JoinEvent(Event):
    """To the other members: somebody joined."""

    room: str
    nick: str


@dataclass(frozen=True, slots=True)
class PartEvent(Event):
    room: str
    nick: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Message(Event):
    """A room message. ``mid`` is server-wide increasing; ``ts`` is wall-clock seconds."""

    room: str
    sender: str
    text: str
    ts: float
    mid: int
    action: bool = False
    history: bool = False
    notice: bool = False  # sent as IRC's NOTICE (history does not keep it)
    account: str | None = None  # the sender's account, when logged in (not stored)


@dataclass(frozen=True, slots=True)
class PrivateMessage(Event):
    sender: str
    to: str
    text: str
    ts: float
    notice: bool = False
    action: bool = False
    account: str | None = None


@dataclass(frozen=True, slots=True)
class NickEvent(Event):
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One user as IRC's WHO shows it."""

    nick: str
    user: str
    realname: str
    away: bool = False
    prefix: str = ""  # "@" operator, "+" voiced, "@+" both (moderation)
    oper: bool = False  # a server operator


@dataclass(frozen=True, slots=True)
class WhoReply(Event):
    room: str  # "*": the answer to Users
    members: tuple[str, ...]
    details: tuple[MemberInfo, ...] = ()  # the same members, for IRC's WHO
    prefixes: tuple[str, ...] = ()  # per member: "@", "+", "@+" or "" (moderation)


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room: str
    members: int
    topic: str


@dataclass(frozen=True, slots=True)
class RoomsReply(Event):
    rooms: tuple[RoomInfo, ...]
    more: int = 0  # rooms left out: the list would have been over max_reply_bytes
    budget_bytes: int = 0  # the max_reply_bytes the list was cut at (when ``more``)


@dataclass(frozen=True, slots=True)
class TopicEvent(Event):
    """A topic was set (``by`` the setter), or the answer to a topic query (``by`` "")."""

    room: str
    topic: str
    by: str


@dataclass(frozen=True, slots=True)
class Pong(Event):
    token: str = ""


@dataclass(frozen=True, slots=True)
class QuitEvent(Event):
    nick: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Error(Event):
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Skipped(Event):
    """You were too slow to read: this many room messages were not queued for you."""

    count: int


@dataclass(frozen=True, slots=True)
class Shutdown(Event):
    reason: str


@dataclass(frozen=True, slots=True)
class AwayNotice(Event):
    """The nick you just messaged is away (IRC's 301)."""

    nick: str
    message: str


@dataclass(frozen=True, slots=True)
class Probe(Event):
    """Are you still there? Sent by the server to an idle peer whose protocol has pings
    (IRC's ``PING``); any line from the peer answers it."""


@dataclass(frozen=True, slots=True)
class Notice(Event):
    """Informational text from the server itself (help, banners, storage state).

    ``code`` names a state change programs can act on (``storage_unavailable`` when room
    messages cannot be stored, ``storage_available`` when they can again); "" for text.
    """

    text: str
    code: str = ""


@dataclass(frozen=True, slots=True)
class HistoryReply(Event):
    room: str
    messages: tuple[Message, ...]
    more: bool = False  # the request matched more than fit in max_reply_bytes
    # Set when retention removed messages the request asked for: the oldest mid the room
    # still has (or the next one, when it has none).
    start: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryEnd(Event):
    """After the replay that follows a join; ``count`` messages were replayed."""

    room: str
    count: int = 0


@dataclass(frozen=True, slots=True)
class WhoisReply(Event):
    nick: str
    rooms: tuple[str, ...]
    away: str | None
    idle_seconds: int = 0
    user: str = ""
    realname: str = ""
    account: str | None = None
    address: str | None = None  # shown to server operators only (moderation)
    oper: bool = False  # is a server operator


@dataclass(frozen=True, slots=True)
class AwayReply(Event):
    away: bool


@dataclass(frozen=True, slots=True)
class AccountEvent(Event):
    """To one client: ``what`` happened to its account (registered, identified,
    password_changed, dropped)."""

    account: str | None
    what: str


@dataclass(frozen=True, slots=True)
class AwayEvent(Event):
    """To everyone sharing a room with ``nick``: it went away, or came back."""

    nick: str
    away: bool
