"""The actions of the vocabulary (:mod:`chatd.model`): what the hub asks the shell to do.

Import these from :mod:`chatd.model`, which re-exports them; this module is a second
file for the same vocabulary, so that ``model.py`` stays readable. An action asks the
server to deliver an event to some connections, store a message, close a connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatd.events import Event, Message
from chatd.model_moderation import BanInfo, ModLogEntry

__all__ = [
    "Action",
    "Deliver",
    "Store",
    "Replay",
    "FetchHistory",
    "Close",
    "SaveAccount",
    "DeleteAccount",
    "RoomState",
    "SaveRoom",
    "SaveServerBans",
    "LogModeration",
    "FetchModLog",
]


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
# (docs/accounts.md; the account commands and ``Verified``: chatd.commands)


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
