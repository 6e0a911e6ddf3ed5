"""Between a connection's lines and the hub: decode, hand commands to the hub, and carry
out the actions it returns (deliveries through the fan-out, history, closes).

It never touches a socket: closing is the server's (``close`` callback), bytes are the
fan-out's. History is read here (replay, ``history`` requests) after a commit, so a
reply never shows a message that is not stored yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from chatd.codecs import pick_codec
from chatd.config import Config
from chatd.connection import Connection, State
from chatd.fanout import Fanout
from chatd.framing import LINE_TOO_LONG
from chatd.hub import Hub
from chatd.model import (
    Action,
    Close,
    Deliver,
    Disconnected,
    Echo,
    Error,
    ErrorCode,
    Event,
    FetchHistory,
    HistoryEnd,
    HistoryReply,
    Message,
    ProtocolError,
    Replay,
    Store,
)
from chatd.ratelimit import command_cost

__all__ = ["Dispatcher", "HistoryStore", "public_reason"]

logger = logging.getLogger(__name__)


class HistoryStore(Protocol):
    """What the server needs from a message store (see :mod:`chatd.history`)."""

    def append(self, message: Message) -> None: ...
    def commit(self) -> None:
        """Raises on failure; the server then stops before sending anything unstored."""

    def recent(self, room: str, limit: int) -> list[Message]: ...
    def query(
        self, room: str, before: int | None, after: int | None, limit: int
    ) -> list[Message]: ...


class Dispatcher:
    """Runs frames through codecs and the hub; carries out the hub's actions.

    Args:
        open_conns: the server's open connections by id (read only).
        close: ``close(conn, reason, flush)`` - the server starts closing a connection.
        stats: the server's counters (``line_too_long``, ``protocol_errors``).
    """

    def __init__(
        self,
        config: Config,
        hub: Hub,
        fanout: Fanout,
        history: HistoryStore | None,
        open_conns: dict[int, Connection],
        close: Callable[[Connection, str, bool], None],
        stats: dict[str, int],
    ) -> None:
        self.config = config
        self.hub = hub
        self.fanout = fanout
        self.history = history
        self._open = open_conns
        self._close = close
        self.stats = stats
        self._password_required = config.password is not None

    def execute(self, conn: Connection, frame: bytes | object, wall: float) -> None:
        """One frame from ``conn``: a line, or the framer's LINE_TOO_LONG marker."""
        conn.lines_in += 1
        if frame is LINE_TOO_LONG:
            self.stats["line_too_long"] += 1
            limit = self.config.max_line_bytes
            why = f"line longer than {limit} bytes; it was discarded"
            self.deliver_one(conn, Error(ErrorCode.LINE_TOO_LONG, why))
            return
        assert isinstance(frame, bytes)
        codec = conn.codec
        if codec is None:
            codec = conn.codec = pick_codec(frame, self._password_required)
            logger.debug("#%d speaks %s", conn.cid, codec.name)
        try:
            commands = codec.decode(frame)
        except ProtocolError as exc:
            self.stats["protocol_errors"] += 1
            logger.debug("#%d sent a bad line: %s %s", conn.cid, exc.code, exc.message)
            self.deliver_one(conn, Error(exc.code, exc.message), exc.rid)
            return
        if conn.bucket is not None:  # one token was taken for the line: charge the rest
            conn.bucket.charge(max(0, sum(map(command_cost, commands)) - 1))
        for command in commands:
            if conn.state is not State.OPEN:
                return
            if isinstance(command, Echo):
                self.deliver_one(conn, command.event, command.rid)
            else:
                self.apply(self.hub.handle(conn.cid, command, wall))

    def departed(self, cid: int, reason: str, wall: float) -> None:
        """Tell the hub a connection is gone (at the end of a turn, never mid fan-out)."""
        self.apply(self.hub.handle(cid, Disconnected(public_reason(reason)), wall))

    def apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            match action:
                case Deliver():
                    self.fanout.deliver(action)
                case Store(message=message):
                    if self.history is not None:
                        self.history.append(message)
                case Close(cid=cid, reason=reason, flush=flush):
                    conn = self._open.get(cid)
                    if conn is not None:
                        self._close(conn, reason, flush)
                case Replay():
                    self._replay(action)
                case FetchHistory():
                    self._fetch_history(action)
                case _:
                    raise TypeError(f"unknown action {action!r}")

    def deliver_one(self, conn: Connection, event: Event, rid: object = None) -> None:
        self.fanout.deliver(Deliver((conn.cid,), event, rid=rid))

    def _replay(self, action: Replay) -> None:
        conn = self._open.get(action.cid)
        if conn is None:
            return
        messages: list[Message] = []
        if self.history is not None:
            self.history.commit()
            messages = self.history.recent(action.room, action.limit)
            for message in messages:
                self.deliver_one(conn, message)
        self.deliver_one(conn, HistoryEnd(action.room, len(messages)))

    def _fetch_history(self, action: FetchHistory) -> None:
        conn = self._open.get(action.cid)
        if conn is None:
            return
        if self.history is None:
            why = "this server keeps no history"
            self.deliver_one(conn, Error(ErrorCode.HISTORY_OFF, why), action.rid)
            return
        self.history.commit()
        messages = self.history.query(action.room, action.before, action.after, action.limit)
        self.deliver_one(conn, HistoryReply(action.room, tuple(messages)), action.rid)


def public_reason(reason: str) -> str:
    """What other users are told when somebody leaves (no internal detail)."""
    if reason.startswith(("read error", "write error", "stream error")):
        return "connection lost"
    if reason == "internal error":
        return "connection lost"
    return reason
