"""The vocabulary shared by the codecs and the hub: commands, events and actions.

Everything here is an immutable value (frozen, slotted dataclasses), so tests compare
what the hub returned with ``==`` and codecs can encode one event once and hand the same
bytes to every recipient.

- A *command* is what a client asked for, already parsed by its codec. It names no
  socket and no wire format; ``Disconnected`` is how "the peer went away" enters the hub
  through the same door as everything else (the h11 habit).
- An *event* is what a client is told. Codecs turn events into bytes.
- An *action* is what the hub asks the shell (the server) to do: deliver an event to some
  connections, store a message, close a connection.

Connection ids (``cid``) are plain integers handed out by the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    # commands
    "Command",
    "Hello",
    "Join",
    "Part",
    "Say",
    "PrivMsg",
    "Nick",
    "Who",
    "Rooms",
    "Users",
    "Stats",
    "Topic",
    "Ping",
    "Quit",
    "History",
    "Away",
    "Whois",
    "Disconnected",
    "Echo",
    "Register",
    "Identify",
    "SetPassword",
    "DropAccount",
    "Verified",
    # events
    "Event",
    "AnyEvent",
    "Welcome",
    "Joined",
    "JoinEvent",
    "PartEvent",
    "Message",
    "PrivateMessage",
    "NickEvent",
    "WhoReply",
    "MemberInfo",
    "StatsReply",
    "RoomInfo",
    "RoomsReply",
    "TopicEvent",
    "Pong",
    "QuitEvent",
    "Error",
    "Skipped",
    "Shutdown",
    "Notice",
    "Probe",
    "AwayNotice",
    "HistoryReply",
    "HistoryEnd",
    "WhoisReply",
    "AwayReply",
    "AccountEvent",
    "AwayEvent",
    # actions
    "Action",
    "Deliver",
    "Store",
    "Replay",
    "FetchHistory",
    "Close",
    "SaveAccount",
    "DeleteAccount",
    # errors
    "ProtocolError",
    "ErrorCode",
    "MAX_MID",
    # moderation (chatd.model_moderation)
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
    "RoomState",
    "SaveRoom",
    "SaveServerBans",
    "LogModeration",
    "FetchModLog",
]


# Message ids are SQLite INTEGER PRIMARY KEYs (chatd/history.py): signed 64-bit.
MAX_MID = 2**63 - 1


class ErrorCode(StrEnum):
    """The error codes of the wire protocol (docs/protocol.md lists what each means).
    Members are strings: ``ErrorCode.BAD_NICK == "bad_nick"``, and JSON shows the value."""

    BAD_JSON = "bad_json"
    UNKNOWN_OP = "unknown_op"
    BAD_REQUEST = "bad_request"
    NOT_REGISTERED = "not_registered"
    ALREADY_REGISTERED = "already_registered"
    BAD_NICK = "bad_nick"
    NICK_TAKEN = "nick_taken"
    BAD_ROOM = "bad_room"
    NOT_IN_ROOM = "not_in_room"
    NO_SUCH_NICK = "no_such_nick"
    NO_SUCH_ROOM = "no_such_room"
    LINE_TOO_LONG = "line_too_long"
    BAD_ENCODING = "bad_encoding"
    SERVER_FULL = "server_full"
    BAD_PASSWORD = "bad_password"
    TEXT_TOO_LONG = "text_too_long"
    TOO_MANY_LINES = "too_many_lines"
    TIMEOUT = "timeout"
    SLOW_CONSUMER = "slow_consumer"
    HISTORY_OFF = "history_off"
    CLUSTER_UNAVAILABLE = "cluster_unavailable"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    # accounts (docs/accounts.md)
    NICK_HELD = "nick_held"
    NICK_REGISTERED = "nick_registered"
    BAD_LOGIN = "bad_login"
    THROTTLED = "throttled"
    ACCOUNTS_OFF = "accounts_off"
    ACCOUNT_REQUIRED = "account_required"
    REGISTRATION_CLOSED = "registration_closed"
    ACCOUNT_EXISTS = "account_exists"
    NOT_LOGGED_IN = "not_logged_in"
    ACCOUNTS_BUSY = "accounts_busy"
    # moderation (docs/moderation.md)
    NOT_OPERATOR = "not_operator"
    NOT_SERVER_OPERATOR = "not_server_operator"
    BANNED = "banned"
    INVITE_ONLY = "invite_only"
    BAD_KEY = "bad_key"
    MUTED = "muted"
    CANNOT_SEND = "cannot_send"
    BAD_MODE = "bad_mode"
    NOT_IN_THAT_ROOM = "not_in_that_room"
    ALREADY_IN_ROOM = "already_in_room"
    KILLED = "killed"


class ProtocolError(Exception):
    """The peer sent something we will not accept. Carries the wire error code.

    Raised by codecs (a line that does not parse) and turned into an :class:`Error`
    event for that connection alone. Any *other* exception out of a codec or the hub is
    a bug, and the server treats it as one.
    """

    def __init__(self, code: str, message: str, rid: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rid = rid  # the request id, when the line got far enough to have one


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every command. ``rid`` is the client's request id, echoed on replies."""

    rid: object = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class Hello(Command):
    nick: str
    password: str | None = None
    # Rooms to join right after a successful registration (text mode lands in #lobby).
    autojoin: tuple[str, ...] = ()
    # What IRC's USER says (username, real name); empty: the nick is shown instead.
    user: str = ""
    realname: str = ""
    resume: str | None = None  # the token of a dropped session: take it back
    account: str | None = None  # log in to this account (default: the nick's)
    account_password: str | None = None  # never reaches the hub: see Verified
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class Join(Command):
    room: str
    key: str | None = None  # a +k room's key


@dataclass(frozen=True, slots=True)
class Part(Command):
    room: str | None  # None: the current room (text mode's bare /part)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Say(Command):
    room: str | None  # None: the current room (text mode's plain lines)
    text: str
    action: bool = False
    notice: bool = False  # IRC's NOTICE to a channel: never to be answered automatically


@dataclass(frozen=True, slots=True)
class PrivMsg(Command):
    to: str
    text: str
    notice: bool = False
    action: bool = False  # a private /me


@dataclass(frozen=True, slots=True)
class Nick(Command):
    nick: str
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class Who(Command):
    room: str | None


@dataclass(frozen=True, slots=True)
class Rooms(Command):
    pass


@dataclass(frozen=True, slots=True)
class Users(Command):
    """Who can I see? Everybody sharing a room with me, and me (IRC's ``WHO *``)."""


@dataclass(frozen=True, slots=True)
class Stats(Command):
    """How many users, connections and rooms are there (IRC's ``LUSERS``)?"""


@dataclass(frozen=True, slots=True)
class Topic(Command):
    room: str | None
    topic: str | None  # None: ask for the topic instead of setting it


@dataclass(frozen=True, slots=True)
class Ping(Command):
    token: str = ""


@dataclass(frozen=True, slots=True)
class Quit(Command):
    reason: str = ""


@dataclass(frozen=True, slots=True)
class History(Command):
    room: str | None
    before: int | None = None
    after: int | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Away(Command):
    message: str | None  # None or "": back


@dataclass(frozen=True, slots=True)
class Whois(Command):
    nick: str


@dataclass(frozen=True, slots=True)
class Disconnected(Command):
    """The transport lost the peer (EOF, reset, timeout, limit). Never sent by a client."""

    reason: str = "connection closed"


@dataclass(frozen=True, slots=True)
class Echo(Command):
    """Not for the hub: a codec's own answer (``/help``) sent straight back to its client."""

    event: Event


# --------------------------------------------------------------------------- events


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


# Moderation's commands, events and actions live in a file of their own (it imports the
# base classes above, so it is imported here, after them).
from chatd.model_moderation import (  # noqa: E402
    Announce,
    Ban,
    BanInfo,
    BanList,
    BanListReply,
    Invite,
    InviteEvent,
    Kick,
    KickEvent,
    Kill,
    Mode,
    ModeEvent,
    ModLog,
    ModLogEntry,
    ModLogReply,
    Oper,
    OperEvent,
    Unban,
)

#: Every event a codec may be asked to render. Each codec's render ``match``-es over it
#: and ends with ``assert_never``, so an event added here and not rendered by every
#: codec fails the type check (mypy), not a user.
AnyEvent = (
    Welcome
    | Joined
    | JoinEvent
    | PartEvent
    | Message
    | PrivateMessage
    | NickEvent
    | WhoReply
    | RoomsReply
    | TopicEvent
    | Pong
    | QuitEvent
    | Error
    | Skipped
    | Shutdown
    | Notice
    | Probe
    | AwayNotice
    | HistoryReply
    | HistoryEnd
    | WhoisReply
    | AwayReply
    | StatsReply
    | AccountEvent
    | KickEvent
    | ModeEvent
    | BanListReply
    | InviteEvent
    | OperEvent
    | ModLogReply
    | AwayEvent
)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Action:
    """Base of what the hub asks the server to do."""


@dataclass(frozen=True, slots=True)
class Deliver(Action):
    """Send ``event`` to every connection in ``cids``.

    ``rid`` is the request id this event answers. It goes on the copy for ``reply_to``
    only, or on every copy when ``reply_to`` is None (a direct reply to one connection):
    so a room message that is also the reply to its sender stays one action, and every
    other member's copy can still be encoded once.

    ``droppable`` events (room messages) may be skipped for a connection whose output is
    over its soft limit; everything else is always queued.

    ``group`` names the recipient set (a room): the fan-out batches a loop turn's room
    messages per group, and encodes each batch once per codec.
    """

    cids: tuple[int, ...]
    event: Event
    rid: object = None
    droppable: bool = False
    reply_to: int | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Store(Action):
    """Persist a room message; the server commits it before any byte of it is sent.

    ``cid`` and ``rid`` name the sender and its request, to refuse the message to them
    if it cannot be stored.
    """

    message: Message
    cid: int | None = None
    rid: object = None


@dataclass(frozen=True, slots=True)
class Replay(Action):
    """After a join: send ``cid`` the last ``limit`` messages of ``room``, then HistoryEnd."""

    cid: int
    room: str
    limit: int


@dataclass(frozen=True, slots=True)
class FetchHistory(Action):
    """Answer a member's history request with a HistoryReply."""

    cid: int
    room: str
    before: int | None
    after: int | None
    limit: int
    rid: object = None


@dataclass(frozen=True, slots=True)
class Close(Action):
    """Close ``cid``: after its queued output is flushed when ``flush`` is true."""

    cid: int
    reason: str
    flush: bool = True


# --------------------------------------------------------------------------- accounts
# (docs/accounts.md) Passwords stop at the server's account gate (chatd.accounts): it
# checks or hashes them, and hands the hub the same command with the password fields
# emptied and ``verified`` filled in. The hub trusts ``verified`` only: codecs never set it.


@dataclass(frozen=True, slots=True)
class Verified:
    """What the account gate found out for one command (set by the server only)."""

    owner: str | None = None  # the account registered under the nick concerned
    account: str | None = None  # credentials were given and are right: this account
    error: str | None = None  # credentials were given and refused (or throttled)
    message: str = ""
    secret: bytes | None = None  # a new password's hash record, opaque to the hub


@dataclass(frozen=True, slots=True)
class Register(Command):
    """Register the nick one holds as an account, with this password."""

    password: str | None
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class Identify(Command):
    """Log in (also before registration: IRC SASL). ``account`` None: the nick's."""

    account: str | None
    password: str | None
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class SetPassword(Command):
    password: str | None  # the current one
    new_password: str | None
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class DropAccount(Command):
    password: str | None
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class SaveAccount(Action):
    """Create (``create``) or update account ``name`` with the hash record ``secret``.
    On failure the server tells ``cid`` (the request ``rid``)."""

    name: str
    secret: bytes
    create: bool
    cid: int
    rid: object = None


@dataclass(frozen=True, slots=True)
class DeleteAccount(Action):
    name: str


# --------------------------------------------------------------------------- moderation
# (docs/moderation.md; its commands and events: chatd.model_moderation)


@dataclass(frozen=True, slots=True)
class RoomState:
    """What persists of a registered room."""

    name: str
    founder: str
    modes: str
    key: str | None
    topic: str
    bans: tuple[BanInfo, ...] = ()
    quiets: tuple[BanInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class SaveRoom(Action):
    state: RoomState


@dataclass(frozen=True, slots=True)
class SaveServerBans(Action):
    bans: tuple[BanInfo, ...]


@dataclass(frozen=True, slots=True)
class LogModeration(Action):
    entry: ModLogEntry


@dataclass(frozen=True, slots=True)
class FetchModLog(Action):
    """Answer ``cid`` with a ModLogReply of the newest ``limit`` entries (of ``room``)."""

    cid: int
    room: str | None
    limit: int
    rid: object = None
