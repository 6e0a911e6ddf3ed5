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

from chatd.accounts import AccountGate
from chatd.codecs import pick_codec
from chatd.config import Config
from chatd.connection import Connection, State
from chatd.fanout import Fanout
from chatd.framing import LINE_TOO_LONG
from chatd.historyfile import HistoryError
from chatd.hub import Hub
from chatd.model import (
    Action,
    Close,
    DeleteAccount,
    Deliver,
    Disconnected,
    Echo,
    Error,
    ErrorCode,
    Event,
    FetchHistory,
    FetchModLog,
    Hello,
    HistoryEnd,
    HistoryReply,
    LogModeration,
    Message,
    ModLogReply,
    ProtocolError,
    Replay,
    SaveAccount,
    SaveRoom,
    SaveServerBans,
    Store,
)
from chatd.moderation_store import ModerationStore
from chatd.ratelimit import command_cost  # noqa: E402
from chatd.storekeeper import HistoryStore, StoreKeeper  # noqa: E402

__all__ = ["Dispatcher", "HistoryStore", "public_reason"]

logger = logging.getLogger(__name__)


class ClusterHooks(Protocol):
    """What the dispatcher hands to the cluster layer (chatd/cluster.py) when on."""

    def submit(self, cid: int, command: object, wall: float) -> None: ...
    def departed(self, cid: int, reason: str) -> None: ...
    def replay(self, action: Replay) -> None: ...
    def fetch_history(self, action: FetchHistory) -> None: ...


class Dispatcher:
    """Runs frames through codecs and the hub; carries out the hub's actions.

    Args:
        keeper: the history store's keeper (None: no history).
        open_conns: the server's open connections by id (read only).
        close: ``close(conn, reason, flush)`` - the server starts closing a connection.
        stats: the server's counters (``line_too_long``, ``protocol_errors``).
        on_hello: ``on_hello(conn, actions)`` - what a password attempt got (throttling).
    """

    def __init__(
        self,
        config: Config,
        hub: Hub,
        fanout: Fanout,
        keeper: StoreKeeper | None,
        open_conns: dict[int, Connection],
        close: Callable[[Connection, str, bool], None],
        stats: dict[str, int],
        on_hello: Callable[[Connection, list[Action]], None],
        request_stop: Callable[[str], None],
        gate: AccountGate | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.fanout = fanout
        self.keeper = keeper
        self.history: HistoryStore | None = keeper.store if keeper is not None else None
        self._on_hello = on_hello
        self._request_stop = request_stop
        self.storage_failure: str | None = None  # set when a storage failure stopped us
        self._open = open_conns
        self._close = close
        self.stats = stats
        self._password_required = config.password is not None
        self._gate = gate  # accounts: passwords stop there, before the hub
        self.moderation: ModerationStore | None = None  # set by the server (moderation)
        self.cluster: ClusterHooks | None = None  # set by chatd.cluster when --cluster

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
                continue
            if self._gate is not None:
                command = self._gate.prepare(conn.cid, conn.host, command)
            if self.cluster is not None:
                self.cluster.submit(conn.cid, command, wall)
                continue
            actions = self.hub.handle(conn.cid, command, wall)
            if self._password_required and isinstance(command, Hello):
                self._on_hello(conn, actions)
            self.apply(actions)

    def departed(self, cid: int, reason: str, wall: float) -> None:
        """Tell the hub a connection is gone (at the end of a turn, never mid fan-out)."""
        if self.cluster is not None:
            self.cluster.departed(cid, public_reason(reason))
        self.apply(self.hub.handle(cid, Disconnected(public_reason(reason)), wall))

    def apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            match action:
                case Deliver():
                    self.fanout.deliver(action)
                case Store():
                    self.stats["messages"] += 1
                    if self.keeper is not None:
                        self.keeper.append(action)
                case Close(cid=cid, reason=reason, flush=flush):
                    conn = self._open.get(cid)
                    if conn is not None:
                        self._close(conn, reason, flush)
                case Replay():
                    if self.cluster is not None:
                        self.cluster.replay(action)
                    else:
                        self._replay(action)
                case FetchHistory():
                    if self.cluster is not None:
                        self.cluster.fetch_history(action)
                    else:
                        self._fetch_history(action)
                case SaveRoom() | SaveServerBans() | LogModeration() | FetchModLog():
                    self._moderation(action)
                case SaveAccount() | DeleteAccount():
                    self._write_account(action)
                case _:
                    raise TypeError(f"unknown action {action!r}")

    def password_attempt(self, cid: int, actions: list[Action]) -> None:
        """What a ``hello`` got, for the password-guess throttle (the cluster's path)."""
        conn = self._open.get(cid)
        if conn is not None and self._password_required:
            self._on_hello(conn, actions)

    def _moderation(self, action: SaveRoom | SaveServerBans | LogModeration | FetchModLog) -> None:
        """Moderation's store (docs/moderation.md): write a change, or answer a modlog."""
        if not isinstance(action, FetchModLog):
            if self.moderation is not None:
                self.moderation.carry_out(action)
            return
        conn = self._open.get(action.cid)
        if conn is not None:
            store = self.moderation
            log = store.modlog(action.room, action.limit) if store is not None else ()
            self.deliver_one(conn, ModLogReply(log), action.rid)

    def _write_account(self, action: SaveAccount | DeleteAccount) -> None:
        error = self._gate.carry_out(action) if self._gate is not None else None
        if error is not None and isinstance(action, SaveAccount):
            conn = self._open.get(action.cid)
            if conn is not None:
                self.deliver_one(conn, error, action.rid)

    def deliver_one(self, conn: Connection, event: Event, rid: object = None) -> None:
        self.fanout.deliver(Deliver((conn.cid,), event, rid=rid))

    # ------------------------------------------------------------------ storage

    def commit(self) -> None:
        """Commit the queued room messages; any that cannot be stored are refused."""
        if self.keeper is not None:
            unstored = self.keeper.commit()
            if unstored:
                self._storage_failed(unstored)

    def _storage_failed(self, unstored: list[Store]) -> None:
        """Take unstored messages out of this turn's deliveries, refuse them to their
        senders, and go read-only (or stop, with ``--on-storage-failure stop``)."""
        assert self.keeper is not None and self.keeper.failed is not None
        failure = self.keeper.failed
        self.fanout.discard({store.message.mid for store in unstored})
        self.storage_state("failed")
        for store in unstored:
            conn = self._open.get(store.cid) if store.cid is not None else None
            if conn is not None:
                text = store.message.text[:60].replace("\n", " ")
                why = (
                    f"not sent: your message to {store.message.room} could not be stored "
                    f"({failure.reason}): {text}"
                )
                self.deliver_one(conn, Error(ErrorCode.STORAGE_UNAVAILABLE, why), store.rid)

    def storage_state(self, change: str) -> None:
        """Tell the hub (and so everyone, once) that storage failed or recovered."""
        keeper = self.keeper
        assert keeper is not None
        if change == "failed" and keeper.failed is not None:
            if self.config.on_storage_failure == "stop":
                if self.storage_failure is None:
                    self.storage_failure = str(keeper.failed)
                    logger.critical("%s; stopping (nothing unstored was sent)", keeper.failed)
                    self._request_stop(f"history storage failed: {keeper.failed.reason}")
                self.hub.set_storage_down(keeper.failed.reason)
                return
            self.apply(self.hub.set_storage_down(keeper.failed.reason))
        elif change == "recovered":
            self.apply(self.hub.set_storage_down(None))

    # ------------------------------------------------------------------ history

    def _replay(self, action: Replay) -> None:
        conn = self._open.get(action.cid)
        if conn is None:
            return
        messages: list[Message] = []
        if self.history is not None:
            self.commit()
            # Not on top of a backlog of output (50 rooms joined in one IRC line, say).
            budget = self.config.max_reply_bytes
            if conn.out.size > self.config.out_high_water_bytes:
                budget = 0
            try:
                messages = self._fit(conn, self.history.recent(action.room, action.limit), budget)
            except HistoryError as exc:
                logger.error("%s (replay to #%d)", exc, action.cid)
            for message in messages:
                self.deliver_one(conn, message)
        self.deliver_one(conn, HistoryEnd(action.room, len(messages)))

    def _fetch_history(self, action: FetchHistory) -> None:
        conn = self._open.get(action.cid)
        if conn is None:
            return
        history = self.history
        if history is None:
            why = "this server keeps no history"
            self.deliver_one(conn, Error(ErrorCode.HISTORY_OFF, why), action.rid)
            return
        self.commit()
        try:
            messages = history.query(action.room, action.before, action.after, action.limit)
            newest = action.after is None
            page = self._fit(conn, messages, self.config.max_reply_bytes, newest=newest)
            more = len(page) < len(messages)
            # Scrolling back reaches the pruned part only with the page's oldest message.
            start = (
                None
                if more and newest
                else history.start(
                    action.room, action.before, action.after, len(messages), action.limit
                )
            )
        except HistoryError as exc:
            logger.error("%s (history request of #%d)", exc, action.cid)
            error = Error(ErrorCode.STORAGE_UNAVAILABLE, f"history cannot be read: {exc.reason}")
            self.deliver_one(conn, error, action.rid)
            return
        reply = HistoryReply(action.room, tuple(page), more=more, start=start)
        self.deliver_one(conn, reply, action.rid)

    def fit(
        self, cid: int, messages: list[Message], *, replay: bool = False, newest: bool = True
    ) -> list[Message]:
        """What of ``messages`` one reply to ``cid`` may carry (the cluster's replies):
        ``max_reply_bytes``, and no replay on top of a backlog, as below."""
        conn = self._open.get(cid)
        if conn is None:
            return []
        budget = self.config.max_reply_bytes
        if replay and conn.out.size > self.config.out_high_water_bytes:
            budget = 0
        return self._fit(conn, messages, budget, newest)

    def _fit(
        self, conn: Connection, messages: list[Message], budget: int, newest: bool = True
    ) -> list[Message]:
        """The newest (or oldest) ``messages`` whose encoding for ``conn`` fits in
        ``budget`` bytes; at least one if the budget is positive (a page always moves)."""
        codec = conn.codec or self.fanout.fallback
        kept: list[Message] = []
        size = 0
        for message in reversed(messages) if newest else messages:
            try:
                size += len(codec.encode(message, None))
            except Exception:  # a bug: fanout logs and drops it when it is delivered
                pass
            if budget <= 0 or (kept and size > budget):
                break
            kept.append(message)
        return kept[::-1] if newest else kept


def public_reason(reason: str) -> str:
    """What other users are told when somebody leaves (no internal detail)."""
    if reason.startswith(("read error", "write error", "stream error")):
        return "connection lost"
    if reason == "internal error":
        return "connection lost"
    return reason
