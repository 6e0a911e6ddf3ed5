"""The server: wires the loop, the listeners, the connections, the hub and the fan-out.

One thread, one ``selectors`` loop (:mod:`chatd.loop`), every socket non-blocking. Lines
a connection reads go through its codec into the :class:`~chatd.hub.Hub` (by way of the
:class:`~chatd.dispatch.Dispatcher`), which carries out the actions the hub returns.
One loop turn (:meth:`Server.run_once`):

1. wait in ``select()`` until a socket is ready or the next deadline (:mod:`chatd.timers`);
2. accept (:mod:`chatd.listeners`, then :meth:`Server.adopt`), read and execute what
   clients sent (:mod:`chatd.intake`) - output is only *queued* (:mod:`chatd.fanout`);
   a connection that becomes writable is only noted;
3. run the timers that are due: each connection's deadlines (:mod:`chatd.watchdog`),
   slow consumers, rate-limit pauses ending, close lingers, upkeep
   (:mod:`chatd.housekeeping`);
4. tell the hub about connections that went away (never in the middle of a fan-out),
   and hand the turn's batched room messages to their recipients;
5. commit the turn's room messages to history - **before** any byte of them is sent;
6. flush every connection with queued output and judge what is left
   (:mod:`chatd.flushing`, :mod:`chatd.outpolicy`); ``EVENT_WRITE`` is registered only
   for those left with unsent bytes; closing connections whose goodbyes are out close.

This module keeps what ties those together: the open and closing connections, accepting
a socket as a connection, starting and finishing a close, and the graceful shutdown.

Errors: ``ProtocolError`` -> an error line, the connection stays. ``OSError`` on a
socket or a broken stream -> that connection closes. Any other exception while serving a
connection is a bug: logged with its id, that connection closes, the loop carries on.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from chatd.accounts import AccountGate, new_token
from chatd.accounts_store import AccountStore
from chatd.admission import Admission
from chatd.codecs import Codec, TextCodec
from chatd.config import Config
from chatd.connection import Connection, State
from chatd.dispatch import Dispatcher
from chatd.fanout import Fanout
from chatd.flushing import Flusher
from chatd.framing import LineFramer
from chatd.housekeeping import Housekeeping
from chatd.hub import Hub
from chatd.intake import Intake
from chatd.listeners import (
    Listener,
    configure_socket,
    format_peer,
    native_banner,
    open_socket,
    refuse,
)
from chatd.login_throttle import LoginThrottle
from chatd.loop import Loop
from chatd.model import Action, Event, Shutdown
from chatd.moderation_store import ModerationStore
from chatd.outpolicy import OutputPolicy
from chatd.ratelimit import TokenBucket
from chatd.storekeeper import HistoryStore, StoreKeeper
from chatd.streams import StreamFactory, StreamSniffer
from chatd.throttle import address_key
from chatd.watchdog import SNIFF_SECONDS, Watchdog

if TYPE_CHECKING:
    from chatd.ctl import CtlServer

__all__ = ["Server", "HistoryStore", "Listener", "SNIFF_SECONDS"]

logger = logging.getLogger(__name__)


class Server:
    """Everything that touches a socket, through the loop.

    Args:
        config: limits and addresses.
        history: the message store, or None to run without history.
        clock: monotonic seconds (timeouts); injectable for tests.
        wall_clock: epoch seconds (message timestamps).
    """

    def __init__(
        self,
        config: Config,
        history: HistoryStore | None = None,
        next_mid: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        accounts: AccountStore | None = None,
        moderation: ModerationStore | None = None,
        oper_credentials: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.hub = Hub(config, next_mid=next_mid, new_token=new_token)
        # moderation (docs/moderation.md): what the store kept, and who may OPER
        self.moderation = moderation
        if moderation is not None:
            self.hub.load_moderation(*moderation.load())
        self.hub.set_operators(_names(config.operators), oper_credentials or {})
        self.ctl: CtlServer | None = None  # the operator console (chatd.ctl), when on
        self.console_acts = True  # False in cluster mode: its hub is one node's of many
        self._history = history
        self._keeper = StoreKeeper(history, clock()) if history is not None else None
        self._clock = clock
        self._wall = wall_clock
        self.loop = Loop(clock)
        self.policy = OutputPolicy(config)
        self._listeners: list[Listener] = []
        self._open: dict[int, Connection] = {}  # OPEN connections, by id: the fan-out's
        self._closing: dict[int, Connection] = {}  # CLOSING: flushing goodbyes
        self._next_cid = 1
        self._dirty: list[Connection] = []  # queued output to flush this turn
        self._departures: list[tuple[int, str]] = []  # to tell the hub, end of turn
        fallback = TextCodec()  # for lines sent before a mode is picked
        self._fallback_codec = fallback
        self._password_required = config.password is not None
        self._stopping = False
        self._stop_reason = "server shutting down"
        self.stats = {
            "accepted": 0,
            "rejected_full": 0,
            "rejected_per_ip": 0,
            "turned_away": 0,  # by a listener that refuses everyone (plain IRC, --require-tls)
            "password_failures": 0,
            "slow_consumers": 0,
            "line_too_long": 0,
            "protocol_errors": 0,
            "bugs": 0,
            "dropped_deliveries": 0,  # not encodable for one recipient (a bug; logged)
            "messages": 0,  # room messages accepted (chatd ctl stats)
        }
        self._admission = Admission(config, clock, self.stats)
        # Accounts (docs/accounts.md): logins spend from the same guess budget per address.
        throttle = LoginThrottle(clock, self._admission.guesses)
        self.gate = AccountGate(config, accounts, throttle, self.hub.account_of, self.hub.nick_of)
        self._fanout = Fanout(self._open.get, fallback, self.stats, self._commit)
        self._dispatch = Dispatcher(
            config,
            self.hub,
            self._fanout,
            self._keeper,
            self._open,
            self._close_now,
            self.stats,
            self._note_login,
            self.request_stop,
            gate=self.gate,
        )
        self._dispatch.moderation = moderation
        deliver_one = self._dispatch.deliver_one
        loop, policy, admission = self.loop, self.policy, self._admission
        # The read side, the write side and every connection's deadlines:
        self._intake = Intake(
            config,
            loop,
            policy,
            self.hub,
            admission,
            self._dispatch,
            close=self._close,
            stats=self.stats,
            wall_clock=wall_clock,
        )
        self._flusher = Flusher(
            loop,
            policy,
            self._dirty,
            close=self._close,
            finalize=self._finalize,
            deliver_one=deliver_one,
            resume=self._intake.resume,
            stats=self.stats,
        )
        self._watchdog = Watchdog(config, loop, self.hub, deliver_one, self._close)
        holds = config.nick_hold_seconds > 0  # held nicks expire there (docs/accounts.md)
        if self._keeper is not None or self._password_required or holds:
            Housekeeping(
                loop, self._keeper, self._dispatch, self.hub, admission, wall_clock
            ).start()

    # ------------------------------------------------------------------ set-up

    def listen(
        self,
        host: str,
        port: int,
        *,
        name: str = "native",
        make_codec: Callable[[], Codec] | None = None,
        banner: bytes | None = None,
        make_stream: StreamFactory | None = None,
        sniff_stream: StreamSniffer | None = None,
        turn_away: bytes | None = None,
        handshake_seconds: float | None = None,
        refuse_with: Callable[[socket.socket, str], None] | None = None,
    ) -> tuple[str, int]:
        """Open a listening socket; returns the bound (host, port).

        ``make_stream``/``sniff_stream``/``turn_away``/``handshake_seconds``/``refuse_with``:
        see :class:`~chatd.listeners.Listener`.
        """
        sock = open_socket(host, port, self.config.listen_backlog)
        if banner is None:
            banner = native_banner(self.config.server_name) if make_codec is None else b""
        listener = Listener(
            sock,
            name,
            make_codec,
            banner,
            make_stream,
            sniff_stream,
            turn_away=turn_away,
            handshake_seconds=handshake_seconds,
            refuse_with=refuse_with,
        )
        self._listeners.append(listener)
        listener.start(self.loop, self, self.config)
        logger.info("listening on %s:%d (%s)", *listener.address, name)
        return listener.address

    @property
    def addresses(self) -> list[tuple[str, str, int]]:
        return [(listener.name, *listener.address) for listener in self._listeners]

    @property
    def dispatcher(self) -> Dispatcher:
        """Where the cluster layer (chatd/cluster.py) hooks in."""
        return self._dispatch

    @property
    def connections(self) -> int:
        return len(self._open) + len(self._closing)

    def connection(self, cid: int) -> Connection | None:
        """The connection with this id, open or closing (for tests and diagnostics)."""
        return self._open.get(cid) or self._closing.get(cid)

    # ------------------------------------------------------------------ running

    def request_stop(self, reason: str = "server shutting down") -> None:
        """Ask the loop to shut down gracefully. Safe from a signal handler or a thread."""
        self._stopping = True
        self._stop_reason = reason
        self.loop.wake()

    def serve_forever(self) -> None:
        """Run until :meth:`request_stop`; then say goodbye to everyone and close."""
        try:
            while not self._stopping:
                self.run_once()
            self._shutdown()
        finally:
            self.close()

    def run_once(self, timeout: float | None = None) -> None:
        """One loop turn. ``timeout``: the longest wait in select() (default: until the
        next deadline, or none at all while work is pending)."""
        loop = self.loop
        if timeout is None:
            busy = bool(self._dirty or self._departures or self._fanout)
            timeout = loop.timeout(self._clock(), busy)
        now = loop.run_once(timeout)
        if self._departures:
            wall = self._wall()
            while self._departures:  # a departure can cause others (a failed delivery)
                departures, self._departures = self._departures, []
                for cid, reason in departures:
                    self._dispatch.departed(cid, reason, wall)
        if self._fanout:
            self._fanout.flush()
        self._commit()  # store before deliver: see module docstring
        if self._dirty:
            self._flusher.flush(now)

    def apply(self, actions: Iterable[Action]) -> None:
        """Carry out the hub's ``actions`` (for the operator console, chatd.ctl)."""
        self._dispatch.apply(actions)

    def close(self) -> None:
        """Release every socket at once (no goodbyes)."""
        for conn in [*self._open.values(), *self._closing.values()]:
            self._finalize(conn)
        self._close_listeners()
        if self.ctl is not None:
            self.ctl.close()
        self.loop.close()
        # The history store's owner (the CLI) commits and closes it: a commit that failed
        # in the loop must not be retried here, on the way out.

    def _shutdown(self) -> None:
        reason = self._stop_reason
        logger.info("shutting down (%s): %d connections", reason, self.connections)
        self._close_listeners()
        goodbye = Shutdown(reason)
        for conn in list(self._open.values()):
            self._deliver_one(conn, goodbye)
            self._close(conn, "server shutdown", flush=True)
        deadline = self._clock() + self.config.shutdown_grace_seconds
        while self.connections and self._clock() < deadline:
            self.run_once(max(0.0, min(0.25, deadline - self._clock())))

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()

    # ------------------------------------------------------------------ accepting

    def adopt(self, sock: socket.socket, addr: object, listener: Listener) -> None:
        """A listener accepted ``sock``: refuse it when full, else make it a connection."""
        config = self.config
        peer = format_peer(addr)
        if listener.turn_away is not None:  # (the plain IRC port when TLS is required)
            self.stats["turned_away"] += 1
            refuse(sock, listener.turn_away)
            return
        host = address_key(addr[0]) if isinstance(addr, tuple) else peer
        error = self._admission.refusal(self.connections, host, peer)
        if error is not None:  # full, or that address is: told why in its protocol
            listener.turn_down(sock, error, self._fallback_codec)
            return
        configure_socket(sock, peer, config)
        now = self.loop.now
        cid = self._next_cid
        self._next_cid += 1
        bucket = (
            TokenBucket(config.rate_limit, config.rate_burst, now) if config.rate_limit else None
        )
        codec = listener.make_codec() if listener.make_codec else None
        framer = LineFramer(config.max_line_bytes)
        conn = Connection(cid, sock, peer, framer, codec, bucket, self._dirty, self._intake)
        conn.last_heard = now
        conn.host = host
        self._admission.opened(host)
        self._open[cid] = conn
        self.stats["accepted"] += 1
        self.hub.connect(cid, self._wall(), conn.host)
        level = self._admission.log_level(host)
        logger.log(level, "#%d connected from %s (%s)", cid, peer, listener.name)
        self._watchdog.arm(conn, listener, now)  # registration, sniffing, handshake, idle
        if listener.sniff_stream is not None:  # plain or TLS: its first bytes will tell
            conn.sniffer = listener.sniff_stream
            conn.greeting = listener.banner
        else:
            if listener.make_stream is not None:
                conn.stream = listener.make_stream()
            if listener.banner:
                conn.queue(listener.banner)
        self.loop.update(conn)

    def _note_login(self, conn: Connection, actions: list[Action]) -> None:
        self._admission.note_login(conn.host, actions)

    # ------------------------------------------------------------------ storage

    def _commit(self) -> None:
        self._dispatch.commit()  # store before deliver (refusing what cannot be stored)

    @property
    def storage_failure(self) -> str | None:
        """Set when a storage failure stopped the server (``--on-storage-failure stop``)."""
        return self._dispatch.storage_failure

    # ------------------------------------------------------------------ closing

    def _deliver_one(self, conn: Connection, event: Event, rid: object = None) -> None:
        self._dispatch.deliver_one(conn, event, rid)

    def _close_now(self, conn: Connection, reason: str, flush: bool) -> None:
        self._close(conn, reason, flush=flush)

    def _close(self, conn: Connection, reason: str, *, flush: bool, broken: bool = False) -> None:
        """Start closing ``conn``: no more reading; the hub hears of it at the end of turn.

        With ``flush`` its queued output (an error, a goodbye) still goes out, for at
        most ``close_linger_seconds``; without, it is dropped. ``broken``: its stream
        failed, so no orderly stream close follows.
        """
        if not conn.begin_close(reason, flush=flush, broken=broken):
            return
        self._open.pop(conn.cid, None)
        self._closing[conn.cid] = conn
        self._departures.append((conn.cid, reason))
        self.loop.call_at(self.loop.now + self.config.close_linger_seconds, self._finalize, conn)
        self.loop.update(conn)
        if not conn.pending:  # judged (and closed once flushed) at the end of this turn
            conn.pending = True
            self._dirty.append(conn)

    def _finalize(self, conn: Connection) -> None:
        if conn.state is State.CLOSED:
            return
        if conn.state is State.OPEN:
            self._departures.append((conn.cid, "server closed the connection"))
        self._open.pop(conn.cid, None)
        self._closing.pop(conn.cid, None)
        self.loop.remove(conn)
        conn.finish()
        self._admission.closed(conn.host)
        logger.log(
            self._admission.log_level(conn.host),
            "#%d %s closed: %s (in %dB/%d lines, out %dB%s)",
            conn.cid,
            conn.peer,
            conn.close_reason or "server stopped",
            conn.bytes_in,
            conn.lines_in,
            conn.bytes_out,
            f", {conn.out.size}B unsent" if conn.out.size else "",
        )


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]
