"""The server: wires the loop, the listeners, the connections, the hub and the fan-out.

One thread, one ``selectors`` loop (:mod:`chatd.loop`), every socket non-blocking. Lines
a connection reads go through its codec into the :class:`~chatd.hub.Hub`; the actions the
hub returns are carried out here. One loop turn (:meth:`Server.run_once`):

1. wait in ``select()`` until a socket is ready or the next deadline (:mod:`chatd.timers`);
2. accept (:mod:`chatd.listeners`), read and execute what clients sent - output is only
   *queued* (:mod:`chatd.fanout`); a connection that becomes writable is only noted;
3. run the timers that are due: registration timeouts, slow consumers, rate-limit
   pauses ending, close lingers, idle probes;
4. tell the hub about connections that went away (never in the middle of a fan-out),
   and hand the turn's batched room messages to their recipients;
5. commit the turn's room messages to history - **before** any byte of them is sent;
6. flush every connection with queued output (gather writes, capped per connection) and
   judge what is left (:mod:`chatd.outpolicy`); ``EVENT_WRITE`` is registered only for
   those left with unsent bytes; closing connections whose goodbyes are out are closed.

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
from chatd.framing import LineFramer
from chatd.hub import Hub
from chatd.listeners import (
    Listener,
    configure_socket,
    format_peer,
    native_banner,
    open_socket,
    refuse,
)
from chatd.login_throttle import LoginThrottle
from chatd.loop import READ, Loop
from chatd.model import Action, Error, ErrorCode, Event, Probe, Shutdown, Skipped
from chatd.moderation_store import ModerationStore
from chatd.outpolicy import OutputPolicy, Verdict
from chatd.ratelimit import TokenBucket
from chatd.storekeeper import HistoryStore, StoreKeeper
from chatd.streams import StreamError, StreamFactory, StreamSniffer
from chatd.throttle import address_key

if TYPE_CHECKING:
    from chatd.ctl import CtlServer

__all__ = ["Server", "HistoryStore", "Listener", "SNIFF_SECONDS"]

logger = logging.getLogger(__name__)

# A sniffing listener waits this long for the first bytes before it settles on plain
# (and shows its banner): a TLS client speaks first, a person in nc waits to be greeted.
SNIFF_SECONDS = 0.25
# Storage upkeep (failure probes, pruning) and password-guess episodes run this often.
_HOUSEKEEPING_SECONDS = 0.25


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
        # Bound once: every connection's registration timer shares it (memory per client).
        self._on_register_timeout = self._register_timeout
        self._on_handshake_timeout = self._handshake_timeout
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
        self._housekeeping_turns = 0
        # Without a rate limit every line read runs at once; with one, input may have to
        # wait, and what waits is bounded by max_input_backlog_bytes.
        self._recv_size = min(config.recv_chunk_bytes, config.max_input_backlog_bytes)
        holds = config.nick_hold_seconds > 0  # held nicks expire here (docs/accounts.md)
        if self._keeper is not None or self._password_required or holds:
            self.loop.call_at(self.loop.now + _HOUSEKEEPING_SECONDS, self._housekeeping)

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
    ) -> tuple[str, int]:
        """Open a listening socket; returns the bound (host, port).

        ``make_stream``/``sniff_stream``/``turn_away``/``handshake_seconds``: see
        :class:`~chatd.listeners.Listener`.
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
            self._flush_dirty(now)

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
            refuse(sock, listener.refusal(error, self._fallback_codec))
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
        conn = Connection(cid, sock, peer, framer, codec, bucket, self._dirty, self)
        conn.last_heard = now
        conn.host = host
        self._admission.opened(host)
        self._open[cid] = conn
        self.stats["accepted"] += 1
        self.hub.connect(cid, self._wall(), conn.host)
        level = self._admission.log_level(host)
        logger.log(level, "#%d connected from %s (%s)", cid, peer, listener.name)
        call_at = self.loop.call_at
        call_at(now + config.register_timeout_seconds, self._on_register_timeout, conn)
        if codec is not None and codec.pings_peer:
            call_at(now + config.idle_ping_seconds, self._idle_check, conn)
        if listener.sniff_stream is not None:
            conn.sniffer = listener.sniff_stream
            conn.greeting = listener.banner
            call_at(now + SNIFF_SECONDS, self._sniff_timeout, conn)
        else:
            if listener.make_stream is not None:
                conn.stream = listener.make_stream()
            if listener.banner:
                conn.queue(listener.banner)
        if listener.handshake_seconds is not None:
            # A stalled handshake is cut sooner than a slow typist (OpenSSL keeps
            # kilobytes for it); the timer is gone once it fires, handshake or not.
            call_at(now + listener.handshake_seconds, self._on_handshake_timeout, conn)
        self.loop.update(conn)

    def _login_wait(self, conn: Connection, now: float) -> bool:
        """Hold an unregistered client's lines while its address is out of guesses."""
        if not self._password_required or self.hub.is_registered(conn.cid):
            return False
        wait = self._admission.guess_delay(conn.host)
        if not wait:
            return False
        conn.paused_until = now + wait
        self.loop.update(conn)
        self.loop.call_at(conn.paused_until, self._resume, conn)
        return True

    # ------------------------------------------------------------------ reading

    def on_readable(self, conn: Connection) -> None:
        try:
            data = conn.read(self._recv_size if conn.bucket else self.config.recv_chunk_bytes)
        except StreamError as exc:
            logger.info("#%d %s broke its stream: %s", conn.cid, conn.peer, exc.reason)
            self._close(conn, f"stream error: {exc.reason}", flush=True, broken=True)
            return
        except OSError as exc:
            self._close(conn, f"read error: {exc.strerror or exc}", flush=False)
            return
        if data is None:
            return
        now = self.loop.now
        conn.last_heard = now
        conn.probed = False
        if data and conn.take_input(data):
            self._run_backlog(conn, now)
        if conn.at_eof and not conn.has_input:
            # End of stream (the peer closed, or half-closed): what it sent before is
            # executed, replies are flushed, then we close.
            self._close(conn, "connection closed by peer", flush=True)

    def _run_backlog(self, conn: Connection, now: float) -> None:
        """Execute queued frames while the rate limit and the client's own output allow.

        Above the high-water mark its remaining frames wait, as unread bytes would: they
        could only add output for it (a burst of commands in one read must not pile up
        more than the limits for a client that reads its replies perfectly well).
        """
        backlog = conn.backlog
        bucket = conn.bucket
        wall = self._wall()
        high = self.policy.high
        try:
            while conn.state is State.OPEN:
                if not backlog:
                    backlog = conn.frame_next()
                    if backlog is None:
                        break
                if self._login_wait(conn, now):
                    return
                if conn.queued > high:
                    conn.flow.paused = True  # resumed when it drains (see _judge)
                    self.loop.update(conn)
                    return
                if bucket is not None and not bucket.take(now):
                    conn.paused_until = now + bucket.delay(now)
                    self.loop.update(conn)
                    self.loop.call_at(conn.paused_until, self._resume, conn)
                    return
                self._dispatch.execute(conn, backlog.popleft(), wall)
            conn.backlog = None  # all done (or closing): free it
            if conn.at_eof and conn.state is State.OPEN:
                self._close(conn, "connection closed by peer", flush=True)
        except Exception:
            # A bug, not the peer's fault: keep it to this connection (asyncio's
            # _fatal_error pattern). SystemExit and KeyboardInterrupt are not caught.
            self.stats["bugs"] += 1
            logger.exception("bug while serving #%d %s; closing it", conn.cid, conn.peer)
            conn.backlog, conn.unframed = None, b""
            self._close(conn, "internal error", flush=False)

    # ------------------------------------------------------------------ writing

    def _flush_dirty(self, now: float) -> None:
        dirty = self._dirty[:]
        self._dirty.clear()  # (connections hold this list: it is emptied, not replaced)
        cap = self.policy.write_cap
        closed = State.CLOSED
        for conn in dirty:
            conn.pending = False
            if conn.state is closed:
                continue
            try:
                conn.flush(cap)
            except OSError as exc:
                self._close(conn, f"write error: {exc.strerror or exc}", flush=False)
                if conn.state is State.CLOSING:
                    self._finalize(conn)  # nothing more can be sent to it
                continue
            stream = conn.stream  # (a TLS stream holds bytes only before its handshake)
            if (
                not conn.out.size
                and conn.mask == READ
                and (stream is None or not stream.buffered_bytes)
            ):
                flow = conn.flow  # the usual case: all sent, reading on, nothing owed
                if not flow.skipped and flow.over_soft_since is None:
                    continue
            self._judge(conn, now)

    def _judge(self, conn: Connection, now: float) -> None:
        """Apply the output policy to what a flush left queued."""
        paused = conn.flow.paused
        verdict = self.policy.judge(conn.flow, conn.queued, now)
        if paused and not conn.flow.paused and conn.has_input:
            self.loop.call_at(now, self._resume, conn)  # its waiting frames
        if verdict is Verdict.OVER_HARD:
            self._slow_consumer(
                conn, f"output buffer over the hard limit ({self.policy.hard} bytes)"
            )
        elif verdict is Verdict.OVER_SOFT:
            since = conn.flow.over_soft_since
            assert since is not None
            logger.info(
                "#%d %s is reading slowly (%d bytes queued): skipping room messages",
                conn.cid,
                conn.peer,
                conn.queued,
            )
            self.loop.call_at(since + self.policy.soft_seconds, self._soft, conn)
        elif verdict is Verdict.CAUGHT_UP and conn.state is State.OPEN:
            skipped = conn.flow.take_skipped()
            logger.info("#%d caught up; %d messages were skipped", conn.cid, skipped)
            self._deliver_one(conn, Skipped(skipped))  # flushed next turn
        if conn.state is State.CLOSING and not conn.out.size:
            self._finalize(conn)  # its goodbyes are out
        elif conn.state is not State.CLOSED:
            self.loop.update(conn)

    def _slow_consumer(self, conn: Connection, why: str) -> None:
        self.stats["slow_consumers"] += 1
        logger.warning(
            "#%d %s disconnected as a slow consumer: %s (%d messages skipped)",
            conn.cid,
            conn.peer,
            why,
            conn.flow.skipped,
        )
        # Its buffer is full of older lines; it would never reach a goodbye. Cut it.
        self._close(conn, f"slow consumer: {why}", flush=False)

    def _note_login(self, conn: Connection, actions: list[Action]) -> None:
        self._admission.note_login(conn.host, actions)

    # ------------------------------------------------------------------ storage

    def _commit(self) -> None:
        self._dispatch.commit()  # store before deliver (refusing what cannot be stored)

    @property
    def storage_failure(self) -> str | None:
        """Set when a storage failure stopped the server (``--on-storage-failure stop``)."""
        return self._dispatch.storage_failure

    # ------------------------------------------------------------------ timers

    def _housekeeping(self) -> None:
        """Storage upkeep (probes after a failure, pruning); password-guess episodes;
        nick holds that ran out."""
        now = self.loop.now
        if self._keeper is not None:
            change = self._keeper.upkeep(now, self._wall())
            if change is not None:
                self._dispatch.storage_state(change)
        self._dispatch.apply(self.hub.expire(self._wall()))  # nick holds that ran out
        self._housekeeping_turns += 1
        if self._housekeeping_turns % 4 == 0:
            self._admission.sweep()
        self.loop.call_at(now + _HOUSEKEEPING_SECONDS, self._housekeeping)

    def _register_timeout(self, conn: Connection) -> None:
        if conn.state is State.OPEN and not self.hub.is_registered(conn.cid):
            self._deliver_one(conn, Error(ErrorCode.TIMEOUT, "no nickname given in time; goodbye"))
            self._close(conn, "registration timeout", flush=True)

    def _sniff_timeout(self, conn: Connection) -> None:
        if conn.state is State.OPEN and conn.sniffer is not None:
            conn.settle_stream(b"")  # it waits to be greeted: plain, and say hello
            if conn.at_eof:  # its stream refused it (plain text when TLS is required)
                self._close(conn, "refused by its stream", flush=True)

    def _handshake_timeout(self, conn: Connection) -> None:
        stream = conn.stream
        if (
            conn.state is State.OPEN
            and stream is not None
            and conn.handshaking
            and not stream.ready
        ):
            # Nothing can be said: there is no session to say it in.
            self._close(conn, "handshake timeout", flush=False, broken=True)

    def _soft(self, conn: Connection) -> None:
        since = conn.flow.over_soft_since  # None, or a later episode: expired() says no
        if since is None:
            return
        if conn.state is State.OPEN and self.policy.expired(conn.flow, since, self.loop.now):
            self._slow_consumer(conn, f"over the soft limit for {self.policy.soft_seconds:g}s")

    def _resume(self, conn: Connection) -> None:
        """A rate-limit pause ended, or its output drained: run its waiting frames."""
        if conn.state is not State.OPEN:
            return
        if conn.paused_until > self.loop.now:
            return  # still rate-limited: its own timer resumes it
        conn.paused_until = 0.0
        self._run_backlog(conn, self.loop.now)
        self.loop.update(conn)

    def _idle_check(self, conn: Connection) -> None:
        """Ping a silent peer whose protocol answers pings (IRC); drop it if it stays so."""
        if conn.state is not State.OPEN:
            return
        now = self.loop.now
        ping_after = self.config.idle_ping_seconds
        drop_after = self.config.idle_drop_seconds
        silent = now - conn.last_heard
        if silent >= drop_after:
            why = f"ping timeout: silent for {silent:.0f}s"
            self._deliver_one(conn, Error(ErrorCode.TIMEOUT, why))
            self._close(conn, why, flush=True)
            return
        if silent >= ping_after and not conn.probed:
            conn.probed = True
            self._deliver_one(conn, Probe())
        due = conn.last_heard + (drop_after if conn.probed else ping_after)
        self.loop.call_at(due, self._idle_check, conn)

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
