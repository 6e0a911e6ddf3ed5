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

The classes live in :mod:`chatd.commands`, :mod:`chatd.events`, :mod:`chatd.actions` and
:mod:`chatd.model_moderation`; import them from here.
"""

from __future__ import annotations

from enum import StrEnum

from chatd import actions, commands, events, model_moderation
from chatd.actions import *
from chatd.commands import *
from chatd.events import *
from chatd.model_moderation import *

# The vocabulary lives in files of its own (chatd.commands, chatd.events, chatd.actions,
# chatd.model_moderation), so that each stays readable; this module re-exports it all
# (each file's own __all__ says what) and is the one the rest of chatd imports from.

__all__ = ["AnyEvent", "ErrorCode", "MAX_MID", "ProtocolError"]
__all__ += commands.__all__
__all__ += events.__all__
__all__ += actions.__all__
__all__ += model_moderation.__all__


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
