"""The server: one thread, one ``selectors`` loop, every socket non-blocking.

It owns the listening sockets and every :class:`~chatd.connection.Connection`, feeds
their lines through the codecs into the :class:`~chatd.hub.Hub`, and carries out the
actions the hub returns. One loop turn (``_tick``):

1. wait in ``select()`` until a socket is ready or the next deadline;
2. accept (at most ``max_accepts_per_tick``), read and execute what clients sent —
   output is only *queued* here; a connection that becomes writable is only noted;
3. timers: registration timeouts, slow consumers, rate-limit pauses ending;
4. tell the hub about connections that went away (never in the middle of a fan-out),
   and append the tick's batched room messages to their recipients (see ``_deliver``);
5. commit the tick's room messages to history — **before** any byte of them is sent;
6. flush every connection with queued output (gather writes, capped per connection);
   ``EVENT_WRITE`` is registered only for those left with unsent bytes;
7. close connections whose goodbyes are flushed or whose linger time is up.

Policy in one place (docs/limits.md has the numbers):

- A client whose own output is above the high-water mark is not read until it drains
  below the low-water mark (its commands would only add output for it).
- Above the soft limit, room messages are skipped for it and counted; once it drains it
  is told how many (``Skipped``). Above the hard limit, or over the soft limit for
  ``out_soft_limit_seconds``, it is disconnected as a slow consumer.
- Every command takes a token from the client's bucket; an empty bucket pauses reading.
- Errors: ``ProtocolError`` → an error line, the connection stays. ``OSError`` on a
  socket → that connection closes. Any other exception while serving a connection is a
  bug: logged with its id, that connection closes, the loop carries on.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable

from chatd.accounts import AccountGate, new_token
from chatd.accounts_store import AccountStore
from chatd.codecs import Codec, JsonCodec, TextCodec, pick_codec
from chatd.config import Config
from chatd.connection import Connection, State
from chatd.framing import LINE_TOO_LONG, LineFramer, LineTooLong
from chatd.historyfile import HistoryError
from chatd.hub import Hub
from chatd.login_throttle import LoginThrottle
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
    Probe,
    ProtocolError,
    Replay,
    SaveAccount,
    SaveRoom,
    SaveServerBans,
    Shutdown,
    Skipped,
    Store,
)
from chatd.moderation_store import ModerationStore
from chatd.ratelimit import TokenBucket, command_cost
from chatd.storekeeper import HistoryStore, StoreKeeper
from chatd.throttle import Throttle, address_key

__all__ = ["Server", "HistoryStore", "Listener"]

logger = logging.getLogger(__name__)

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
# accept() errors that mean "out of resources": back off instead of spinning.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_SWEEP_SECONDS = 0.25
# Idle peers are checked less often: it visits every connection.
_IDLE_SWEEP_SECONDS = 1.0


class Listener:
    """A listening socket and the codec its connections speak (None: pick by first line)."""

    def __init__(
        self, sock: socket.socket, name: str, make_codec: Callable[[], Codec] | None, banner: bytes
    ) -> None:
        self.sock = sock
        self.name = name
        self.make_codec = make_codec
        self.banner = banner
        self.paused_until = 0.0  # after EMFILE: not watched until then

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port


class _Batch:
    """Room messages of one tick bound for one recipient set (a room's member tuple)."""

    __slots__ = ("cids", "events", "replies")

    def __init__(self, cids: tuple[int, ...]) -> None:
        self.cids = cids  # also keeps the tuple alive, so its id() stays unique this tick
        self.events: list[Event] = []
        self.replies: list[tuple[int, int, object]] = []  # (event index, cid, rid)


class Server:
    """Everything that touches a socket.

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
        self.ctl: Endpoint | None = None  # the operator console (chatd.ctl), when on
        self._history = history
        self._keeper = StoreKeeper(history, clock()) if history is not None else None
        self.storage_failure: str | None = None  # set when a storage failure stopped us
        self._clock = clock
        self._wall = wall_clock
        self._selector = selectors.DefaultSelector()
        self._listeners: list[Listener] = []
        self._conns: dict[int, Connection] = {}
        self._next_cid = 1
        self._pending: list[Connection] = []  # queued output to flush this tick
        self._batches: dict[int, _Batch] = {}  # this tick's room messages, by recipient set
        self._departures: list[tuple[int, str]] = []  # to tell the hub, end of tick
        self._closing: set[Connection] = set()
        self._unregistered: set[Connection] = set()
        self._over_soft: set[Connection] = set()
        self._paused: set[Connection] = set()  # rate-limited
        self._pingable: set[Connection] = set()  # peers whose protocol answers pings (IRC)
        self._fallback_codec = TextCodec()  # for lines sent before a mode is picked
        self._password_required = config.password is not None
        self._per_host: dict[str, int] = {}  # open connections per address key
        self._guesses = Throttle(config.password_guess_rate, config.password_guess_burst, clock)
        # Account logins (chatd.accounts) spend from the same guess budget per address.
        throttle = LoginThrottle(clock, self._guesses)
        self.gate = AccountGate(config, accounts, throttle, self.hub.account_of, self.hub.nick_of)
        self._now = clock()
        self._next_sweep = 0.0
        self._next_idle_sweep = 0.0
        self._stopping = False
        self._stop_reason = "server shutting down"
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._waker_w.setblocking(False)
        self._selector.register(self._waker_r, _READ, None)
        self.stats = {
            "accepted": 0,
            "rejected_full": 0,
            "rejected_per_ip": 0,
            "password_failures": 0,
            "slow_consumers": 0,
            "line_too_long": 0,
            "protocol_errors": 0,
            "bugs": 0,
            "messages": 0,
            "dropped_deliveries": 0,  # not encodable for one recipient (a bug; logged)
        }

    # ------------------------------------------------------------------ set-up

    def listen(
        self,
        host: str,
        port: int,
        *,
        name: str = "native",
        make_codec: Callable[[], Codec] | None = None,
        banner: bytes | None = None,
    ) -> tuple[str, int]:
        """Open a listening socket; returns the bound (host, port)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(self.config.listen_backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        if banner is None:
            banner = self._native_banner() if make_codec is None else b""
        listener = Listener(sock, name, make_codec, banner)
        self._listeners.append(listener)
        self._selector.register(sock, _READ, listener)
        logger.info("listening on %s:%d (%s)", *listener.address, name)
        return listener.address

    def _native_banner(self) -> bytes:
        name = self.config.server_name
        lines = [
            f"*** chatd on {name}. Type the nickname you want and press Enter.",
            "*** (Programs: send JSON lines, see docs/protocol.md.)",
        ]
        return "".join(line + "\n" for line in lines).encode()

    @property
    def addresses(self) -> list[tuple[str, str, int]]:
        return [(listener.name, *listener.address) for listener in self._listeners]

    # ------------------------------------------------------------------ running

    def request_stop(self, reason: str = "server shutting down") -> None:
        """Ask the loop to shut down gracefully. Safe from a signal handler or a thread."""
        self._stopping = True
        self._stop_reason = reason
        try:
            self._waker_w.send(b"\0")
        except OSError:
            pass  # the waker is full or closed: the loop is awake or gone anyway

    def serve_forever(self) -> None:
        """Run until :meth:`request_stop`; then say goodbye to everyone and close."""
        try:
            while not self._stopping:
                self._tick()
            self._shutdown()
        finally:
            self.close()

    def close(self) -> None:
        """Release every socket at once (no goodbyes)."""
        for conn in list(self._conns.values()):
            self._finalize(conn)
        self._close_listeners()
        if self.ctl is not None:
            self.ctl.close()
        for sock in (self._waker_r, self._waker_w):
            self._unregister_quietly(sock)
            sock.close()
        self._selector.close()
        # The history store's owner (the CLI) commits and closes it: a commit that failed
        # in the loop must not be retried here, on the way out.

    def _shutdown(self) -> None:
        reason = self._stop_reason
        logger.info("shutting down (%s): %d connections", reason, len(self._conns))
        self._close_listeners()
        goodbye = Shutdown(reason)
        for conn in list(self._conns.values()):
            if conn.state is State.OPEN:
                self._deliver_one(conn, goodbye)
                self._close(conn, "server shutdown", flush=True)
        deadline = self._clock() + self.config.shutdown_grace_seconds
        for conn in self._closing:
            conn.close_deadline = min(conn.close_deadline, deadline)
        while self._conns and self._clock() < deadline:
            self._tick()

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            self._unregister_quietly(listener.sock)
            listener.sock.close()
        self._listeners.clear()

    def _tick(self) -> None:
        busy = self._pending or self._departures or self._batches
        timeout = 0.0 if busy else self._timeout()
        ready = self._selector.select(timeout)
        self._now = now = self._clock()
        wall = self._wall()
        for key, mask in ready:
            target = key.data
            if isinstance(target, Connection):
                if mask & _READ and target.state is State.OPEN:
                    self._on_readable(target, now, wall)
                if mask & _WRITE and not target.pending and target.state is not State.CLOSED:
                    target.pending = True
                    self._pending.append(target)
            elif isinstance(target, Listener):
                self._accept(target, now)
            elif isinstance(target, Endpoint):  # the operator console (chatd.ctl)
                target.on_ready(mask, wall)
            else:  # the waker
                self._drain_waker()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_SECONDS
            self._sweep(now, wall)
        self._tell_hub_departures(wall)
        if self._batches:
            self._materialize()
        self._commit()  # store before deliver: see module docstring
        self._flush_pending()
        self._close_finished(now)

    def _timeout(self) -> float:
        """Seconds select() may sleep: until the next deadline, at most one second."""
        if self._unregistered or self._over_soft or self._paused or self._closing:
            return max(0.0, min(_SWEEP_SECONDS, self._next_sweep - self._now))
        if self._keeper is not None and self._keeper.busy:  # pruning to do, or a failure
            return max(0.0, min(_SWEEP_SECONDS, self._next_sweep - self._now))
        if any(listener.paused_until for listener in self._listeners):
            return _SWEEP_SECONDS
        return 1.0

    def _drain_waker(self) -> None:
        try:
            while self._waker_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # ------------------------------------------------------------------ accepting

    def _accept(self, listener: Listener, now: float) -> None:
        for _ in range(self.config.max_accepts_per_tick):
            try:
                sock, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    # Out of descriptors: the listening socket stays readable, so watching
                    # it would spin the CPU. Stop watching for a while (asyncio's pattern).
                    logger.warning(
                        "accept failed (%s); not accepting for %.1fs (%d connections open)",
                        exc.strerror,
                        self.config.accept_retry_seconds,
                        len(self._conns),
                    )
                    listener.paused_until = now + self.config.accept_retry_seconds
                    self._selector.unregister(listener.sock)
                    return
                logger.debug("accept failed: %s", exc)  # e.g. ECONNABORTED: try the next
                continue
            peer = _format_peer(addr)
            if len(self._conns) >= self.config.max_clients:
                self._reject_full(sock, peer, listener)
                continue
            host = address_key(addr[0]) if isinstance(addr, tuple) else peer
            if self._host_full(host):
                self._reject_host(sock, peer, host, listener)
                continue
            self._adopt(sock, peer, listener, now, host)

    def _reject_full(self, sock: socket.socket, peer: str, listener: Listener) -> None:
        """Tell a newcomer the server is full, in its listener's protocol, and close."""
        self.stats["rejected_full"] += 1
        if self.stats["rejected_full"] in (1, 10, 100) or self.stats["rejected_full"] % 1000 == 0:
            logger.warning(
                "server full (%d clients): refused %s (%d refused so far)",
                self.config.max_clients,
                peer,
                self.stats["rejected_full"],
            )
        error = Error(
            ErrorCode.SERVER_FULL,
            f"the server is full ({self.config.max_clients} clients); try again later",
        )
        self._refuse(sock, listener, error)

    def _host_full(self, host: str) -> bool:
        limit = self.config.max_clients_per_ip
        return bool(limit) and self._per_host.get(host, 0) >= limit

    def _reject_host(self, sock: socket.socket, peer: str, host: str, listener: Listener) -> None:
        """One address already holds ``max_clients_per_ip``: refuse like server_full."""
        self.stats["rejected_per_ip"] += 1
        refused = self.stats["rejected_per_ip"]
        if refused in (1, 10, 100) or refused % 1000 == 0:
            logger.warning(
                "%s already has %d connections: refused %s (%d refused so far)",
                host,
                self.config.max_clients_per_ip,
                peer,
                refused,
            )
        limit = self.config.max_clients_per_ip
        error = Error(
            ErrorCode.SERVER_FULL,
            f"too many connections from your address ({limit} allowed); close one first",
        )
        self._refuse(sock, listener, error)

    def _refuse(self, sock: socket.socket, listener: Listener, error: Error) -> None:
        """Tell a newcomer ``error`` in its listener's protocol, and close."""
        if listener.make_codec is not None:  # a fixed protocol (IRC): its own ERROR line
            data = listener.make_codec().encode(error)
        else:  # the native port, mode not picked yet: a line for people, a frame for programs
            data = self._fallback_codec.encode(error) + JsonCodec().encode(error)
        try:
            sock.setblocking(False)
            sock.send(data)  # best effort: the newcomer gets told why
        except OSError:
            pass
        sock.close()

    def _adopt(
        self, sock: socket.socket, peer: str, listener: Listener, now: float, host: str = ""
    ) -> None:
        config = self.config
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if config.send_buffer_bytes:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config.send_buffer_bytes)
            if config.keepalive_idle_seconds:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if hasattr(socket, "TCP_KEEPIDLE"):
                    sock.setsockopt(
                        socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, config.keepalive_idle_seconds
                    )
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
        except OSError as exc:  # the peer may already be gone
            logger.debug("setsockopt on %s failed: %s", peer, exc)
        cid = self._next_cid
        self._next_cid += 1
        bucket = (
            TokenBucket(config.rate_limit, config.rate_burst, now) if config.rate_limit else None
        )
        codec = listener.make_codec() if listener.make_codec else None
        conn = Connection(cid, sock, peer, LineFramer(config.max_line_bytes), codec, bucket)
        conn.host = host or peer
        self._per_host[conn.host] = self._per_host.get(conn.host, 0) + 1
        conn.register_deadline = now + config.register_timeout_seconds
        conn.last_heard = now
        self._conns[cid] = conn
        self._unregistered.add(conn)
        if codec is not None and codec.pings_peer:
            self._pingable.add(conn)
        self.stats["accepted"] += 1
        self.hub.connect(cid, self._wall(), conn.host)
        logger.log(
            self._conn_log_level(conn), "#%d connected from %s (%s)", cid, peer, listener.name
        )
        conn.out.append(listener.banner)
        self._mark_pending(conn)
        self._update_interest(conn)

    # ------------------------------------------------------------------ reading

    def _on_readable(self, conn: Connection, now: float, wall: float) -> None:
        try:
            data = conn.recv(self._recv_size(conn))
        except OSError as exc:
            self._close(conn, f"read error: {exc.strerror or exc}", flush=False)
            return
        if data is None:
            return
        conn.last_heard = now
        conn.probed = False
        if not data:
            # End of stream (the peer closed, or half-closed): what it sent before is
            # executed, replies are flushed, then we close.
            self._close(conn, "connection closed by peer", flush=True)
            return
        if conn.bucket is not None:  # rate-limited: framed lazily, a line per token
            if conn.unframed_pos < len(conn.unframed):
                data = conn.unframed[conn.unframed_pos :] + data
            conn.unframed, conn.unframed_pos = data, 0
            self._run_backlog(conn, now, wall)
            return
        frames = conn.framer.feed(data)
        if frames:
            if conn.backlog is None:
                conn.backlog = deque(frames)
            else:
                conn.backlog.extend(frames)
            self._run_backlog(conn, now, wall)

    def _recv_size(self, conn: Connection) -> int:
        """Without a rate limit every line read runs at once; with one, input may have
        to wait, and what waits is bounded by ``max_input_backlog_bytes``."""
        if conn.bucket is None:
            return self.config.recv_chunk_bytes
        return min(self.config.recv_chunk_bytes, self.config.max_input_backlog_bytes)

    def _frame_next(self, conn: Connection) -> deque[bytes | LineTooLong] | None:
        """Frame the next line of ``conn.unframed`` (None when nothing is left)."""
        data, pos = conn.unframed, conn.unframed_pos
        while pos < len(data):
            end = data.find(b"\n", pos) + 1 or len(data)
            frames = conn.framer.feed(data[pos:end])
            pos = end
            if frames:
                conn.unframed_pos = pos
                conn.backlog = deque(frames)
                return conn.backlog
        conn.unframed, conn.unframed_pos = b"", 0
        return None

    def _run_backlog(self, conn: Connection, now: float, wall: float) -> None:
        """Execute queued frames while the rate limit allows."""
        backlog = conn.backlog
        bucket = conn.bucket
        try:
            while conn.state is State.OPEN:
                if not backlog:
                    backlog = self._frame_next(conn)
                    if backlog is None:
                        break
                if self._login_wait(conn, now) or self._output_full(conn):
                    return
                if bucket is not None and not bucket.take(now):
                    conn.paused_until = now + bucket.delay(now)
                    self._paused.add(conn)
                    self._update_interest(conn)
                    return
                self._execute(conn, backlog.popleft(), wall)
            conn.backlog = None  # all done (or closing): free it
        except Exception:
            # A bug, not the peer's fault: keep it to this connection (asyncio's
            # _fatal_error pattern). SystemExit and KeyboardInterrupt are not caught.
            self.stats["bugs"] += 1
            logger.exception("bug while serving #%d %s; closing it", conn.cid, conn.peer)
            conn.backlog, conn.unframed = None, b""
            self._close(conn, "internal error", flush=False)

    def _output_full(self, conn: Connection) -> bool:
        """Run no more of a client's commands while its output is above the high-water
        mark: their replies would pile up (resumed by ``_flush_pending``)."""
        if conn.out.size <= self.config.out_high_water_bytes:
            return False
        conn.backpressured = True
        self._update_interest(conn)
        return True

    def _has_input(self, conn: Connection) -> bool:
        return bool(conn.backlog) or conn.unframed_pos < len(conn.unframed)

    def _login_wait(self, conn: Connection, now: float) -> bool:
        """Hold an unregistered client's lines while its address is out of guesses."""
        if not self._password_required or self.hub.is_registered(conn.cid):
            return False
        wait = self._guesses.delay(conn.host)
        if not wait:
            return False
        conn.paused_until = now + wait
        self._paused.add(conn)
        self._update_interest(conn)
        return True

    def _note_login(self, conn: Connection, actions: list[Action]) -> None:
        """Count a wrong password against the address it came from."""
        for action in actions:
            if (
                isinstance(action, Deliver)
                and isinstance(action.event, Error)
                and action.event.code == ErrorCode.BAD_PASSWORD
            ):
                self.stats["password_failures"] += 1
                if self._guesses.failed(conn.host):
                    logger.warning(
                        "%s: %d wrong passwords; slowing its guesses to %g/s",
                        conn.host,
                        self.config.password_guess_burst,
                        self.config.password_guess_rate,
                    )
                return

    def _log_guess_episodes(self) -> None:
        for episode in self._guesses.sweep():
            if episode.throttled:
                logger.warning(
                    "%s: %d wrong passwords in %.0fs (slowed to %g/s); no longer slowed",
                    episode.key,
                    episode.failures,
                    episode.seconds,
                    self.config.password_guess_rate,
                )

    def _execute(self, conn: Connection, frame: bytes | object, wall: float) -> None:
        conn.lines_in += 1
        if frame is LINE_TOO_LONG:
            self.stats["line_too_long"] += 1
            self._deliver_one(
                conn,
                Error(
                    ErrorCode.LINE_TOO_LONG,
                    f"line longer than {self.config.max_line_bytes} bytes; it was discarded",
                ),
            )
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
            self._deliver_one(conn, Error(exc.code, exc.message), exc.rid)
            return
        if conn.bucket is not None:  # one token was taken for the line: charge the rest
            conn.bucket.charge(max(0, sum(map(command_cost, commands)) - 1))
        for command in commands:
            if conn.state is not State.OPEN:
                return
            if isinstance(command, Echo):
                self._deliver_one(conn, command.event, command.rid)
                continue
            command = self.gate.prepare(conn.cid, conn.host, command)  # accounts
            actions = self.hub.handle(conn.cid, command, wall)
            if self._password_required and isinstance(command, Hello):
                self._note_login(conn, actions)
            self._apply(actions)

    # ------------------------------------------------------------------ actions

    def _apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            match action:
                case Deliver():
                    self._deliver(action)
                case Store():
                    self.stats["messages"] += 1
                    if self._keeper is not None:
                        self._keeper.append(action)
                case Close(cid=cid, reason=reason, flush=flush):
                    conn = self._conns.get(cid)
                    if conn is not None:
                        self._close(conn, reason, flush=flush)
                case Replay():
                    self._replay(action)
                case FetchHistory():
                    self._fetch_history(action)
                case SaveAccount() | DeleteAccount():
                    self._write_account(action)
                case SaveRoom() | SaveServerBans() | LogModeration():
                    if self.moderation is not None:
                        self.moderation.carry_out(action)
                case FetchModLog(cid=cid, room=room, limit=limit, rid=rid):
                    conn = self._conns.get(cid)
                    if conn is not None:
                        log = self.moderation.modlog(room, limit) if self.moderation else ()
                        self._deliver_one(conn, ModLogReply(log), rid)
                case _:
                    raise TypeError(f"unknown action {action!r}")

    def apply(self, actions: Iterable[Action]) -> None:
        """Carry out the hub's ``actions`` (for the operator console, chatd.ctl)."""
        self._apply(actions)

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def watch(self, sock: socket.socket, endpoint: Endpoint, events: int = _READ) -> None:
        """Watch ``sock`` for the operator console (register, or change the events)."""
        try:
            self._selector.modify(sock, events, endpoint)
        except KeyError:
            self._selector.register(sock, events, endpoint)

    def unwatch(self, sock: socket.socket) -> None:
        self._unregister_quietly(sock)

    def _write_account(self, action: SaveAccount | DeleteAccount) -> None:
        error = self.gate.carry_out(action)
        if error is not None and isinstance(action, SaveAccount):
            conn = self._conns.get(action.cid)
            if conn is not None:
                self._deliver_one(conn, error, action.rid)

    def _deliver(self, action: Deliver) -> None:
        """Queue one event for many connections.

        Room messages (``droppable``) are batched: within one tick, all messages for the
        same recipient set are kept as events and appended to each recipient once, as one
        blob, when the tick ends (``_materialize``). Fan-out then costs one append per
        recipient per tick instead of one per message. Any other event first materializes
        the pending batches, so every connection still sees events in the order the hub
        produced them (messages of one room always keep their order).
        """
        if action.droppable:
            batch = self._batches.get(id(action.cids))
            if batch is None:
                batch = self._batches[id(action.cids)] = _Batch(action.cids)
            batch.events.append(action.event)
            if action.reply_to is not None:
                batch.replies.append((len(batch.events) - 1, action.reply_to, action.rid))
            return
        if self._batches:
            self._materialize()
        event, rid, reply_to = action.event, action.rid, action.reply_to
        shared_rid = rid if reply_to is None else None
        encoded: dict[object, bytes | None] = {}  # None: that cache entry failed to encode
        for cid in action.cids:
            conn = self._conns.get(cid)
            if conn is None or conn.state is not State.OPEN:
                continue
            codec = conn.codec or self._fallback_codec
            if not self._observe(conn, codec, event):
                data = None
            elif cid == reply_to:
                data = self._encode_for(conn, codec, event, rid)
            else:
                key = codec.cache_key
                if key in encoded:
                    data = encoded[key]
                else:
                    data = encoded[key] = self._encode_for(conn, codec, event, shared_rid)
            if data is None:
                self._drop_delivery()
            else:
                self._queue(conn, data)

    def _materialize(self) -> None:
        """Append this tick's batched room messages to their recipients' buffers."""
        self._commit()  # store before deliver: an unstored message leaves its batch here
        if not self._batches:
            return
        batches, self._batches = self._batches, {}
        conns = self._conns
        fallback = self._fallback_codec
        queue = self._queue
        for batch in batches.values():
            events = batch.events
            count = len(events)
            parts_by_key: dict[object, tuple[list[bytes], int]] = {}  # parts, failures
            blobs: dict[object, bytes] = {}
            repliers = {cid for _, cid, _ in batch.replies}
            for cid in batch.cids:
                conn = conns.get(cid)
                if conn is None or conn.state is not State.OPEN:
                    continue
                if conn.over_soft_since is not None:
                    conn.skipped += count  # slow consumer: counted, not queued
                    continue
                codec = conn.codec or fallback
                key = codec.cache_key
                blob = blobs.get(key)
                if blob is not None and cid not in repliers:
                    queue(conn, blob)
                    continue
                entry = parts_by_key.get(key)
                if entry is None:
                    entry = parts_by_key[key] = self._encode_batch(conn, codec, events)
                    if not entry[1]:
                        blobs[key] = b"".join(entry[0])
                parts, failures = entry
                if failures:
                    self._drop_delivery(failures)
                if cid in repliers:  # its own messages carry its request ids
                    mine = [(index, rid) for index, rcid, rid in batch.replies if rcid == cid]
                    queue(conn, self._encode_replies(conn, codec, events, parts, mine))
                else:
                    queue(conn, b"".join(parts))

    # A failure to encode or observe an event is a bug, never the peer's fault; it must
    # cost that one delivery and nothing else: not the loop, not the other recipients.

    def _encode_for(
        self, conn: Connection, codec: Codec, event: Event, rid: object
    ) -> bytes | None:
        """``codec.encode(event, rid)``, or None if that raised."""
        try:
            return codec.encode(event, rid)
        except Exception:
            self._encode_failed(conn, event)
            return None

    def _observe(self, conn: Connection, codec: Codec, event: Event) -> bool:
        try:
            codec.observe(event)
        except Exception:
            self._encode_failed(conn, event)
            return False
        return True

    def _encode_batch(
        self, conn: Connection, codec: Codec, events: list[Event]
    ) -> tuple[list[bytes], int]:
        """Each event's bytes (``b""`` for one that failed), and how many failed."""
        parts: list[bytes] = []
        failures = 0
        for event in events:
            data = self._encode_for(conn, codec, event, None)
            if data is None:
                failures += 1
            parts.append(data or b"")
        return parts, failures

    def _encode_replies(
        self,
        conn: Connection,
        codec: Codec,
        events: list[Event],
        parts: list[bytes],
        mine: list[tuple[int, object]],
    ) -> bytes:
        """The batch for a sender: its own messages re-encoded with their request ids."""
        parts = list(parts)
        for index, rid in mine:
            data = self._encode_for(conn, codec, events[index], rid)
            if data is None:
                self._drop_delivery()
            parts[index] = data or b""
        return b"".join(parts)

    def _encode_failed(self, conn: Connection, event: Event) -> None:
        self.stats["bugs"] += 1
        failures = self.stats["bugs"]
        if failures <= 10 or failures % 1000 == 0:  # a bug repeated per line must not flood
            logger.exception(
                "bug: cannot encode %s for #%d %s (%s mode); that delivery is dropped "
                "(%d bugs so far)",
                type(event).__name__,
                conn.cid,
                conn.peer,
                conn.codec.name if conn.codec else "?",
                failures,
            )

    def _drop_delivery(self, count: int = 1) -> None:
        self.stats["dropped_deliveries"] += count

    def _queue(self, conn: Connection, data: bytes) -> None:
        """Append bytes for ``conn``; enforce the output limits; flush it this tick."""
        out = conn.out
        out.append(data)
        if out.size > self.config.out_soft_limit_bytes:
            self._over_soft_limit(conn)
        if not conn.pending:
            conn.pending = True
            self._pending.append(conn)

    def _deliver_one(self, conn: Connection, event: Event, rid: object = None) -> None:
        self._deliver(Deliver((conn.cid,), event, rid=rid))

    def _replay(self, action: Replay) -> None:
        conn = self._conns.get(action.cid)
        if conn is None:
            return
        messages: list[Message] = []
        if self._history is not None:
            self._commit()
            # Not on top of a backlog of output (50 rooms joined in one IRC line, say).
            budget = self.config.max_reply_bytes
            if conn.out.size > self.config.out_high_water_bytes:
                budget = 0
            try:
                messages = self._fit(conn, self._history.recent(action.room, action.limit), budget)
            except HistoryError as exc:
                logger.error("%s (replay to #%d)", exc, action.cid)
            for message in messages:
                self._deliver(Deliver((action.cid,), message))
        self._deliver_one(conn, HistoryEnd(action.room, len(messages)))

    def _fetch_history(self, action: FetchHistory) -> None:
        conn = self._conns.get(action.cid)
        if conn is None:
            return
        if self._history is None:
            self._deliver_one(
                conn, Error(ErrorCode.HISTORY_OFF, "this server keeps no history"), action.rid
            )
            return
        self._commit()
        history = self._history
        try:
            messages = history.query(action.room, action.before, action.after, action.limit)
            page = self._fit(
                conn, messages, self.config.max_reply_bytes, newest=action.after is None
            )
            more = len(page) < len(messages)
            # Scrolling back reaches the pruned part only with the page's oldest message.
            start = (
                None
                if more and action.after is None
                else history.start(
                    action.room, action.before, action.after, len(messages), action.limit
                )
            )
        except HistoryError as exc:
            logger.error("%s (history request of #%d)", exc, action.cid)
            error = Error(ErrorCode.STORAGE_UNAVAILABLE, f"history cannot be read: {exc.reason}")
            self._deliver_one(conn, error, action.rid)
            return
        reply = HistoryReply(action.room, tuple(page), more=more, start=start)
        self._deliver_one(conn, reply, action.rid)

    def _fit(
        self, conn: Connection, messages: list[Message], budget: int, newest: bool = True
    ) -> list[Message]:
        """The newest (or oldest) ``messages`` whose encoding for ``conn`` fits in
        ``budget`` bytes; at least one if the budget is positive (a page always moves)."""
        codec = conn.codec or self._fallback_codec
        kept: list[Message] = []
        size = 0
        for message in reversed(messages) if newest else messages:
            size += len(self._encode_for(conn, codec, message, None) or b"")
            if budget <= 0 or (kept and size > budget):
                break
            kept.append(message)
        return kept[::-1] if newest else kept

    # ------------------------------------------------------------------ storage

    def _commit(self) -> None:
        """Commit the queued room messages; any that cannot be stored are refused."""
        if self._keeper is not None:
            unstored = self._keeper.commit()
            if unstored:
                self._storage_failed(unstored)

    def _storage_failed(self, unstored: list[Store]) -> None:
        """Take unstored messages out of this turn's deliveries, refuse them to their
        senders, and go read-only (or stop, with ``--on-storage-failure stop``)."""
        assert self._keeper is not None and self._keeper.failed is not None
        failure = self._keeper.failed
        lost = {store.message.mid for store in unstored}
        for batch in self._batches.values():
            keep = [
                i
                for i, event in enumerate(batch.events)
                if not (isinstance(event, Message) and event.mid in lost)
            ]
            if len(keep) < len(batch.events):
                where = {old: new for new, old in enumerate(keep)}
                batch.events = [batch.events[i] for i in keep]
                batch.replies = [(where[i], c, r) for i, c, r in batch.replies if i in where]
        self._batches = {key: batch for key, batch in self._batches.items() if batch.events}
        self._storage_state("failed")
        for store in unstored:
            conn = self._conns.get(store.cid) if store.cid is not None else None
            if conn is not None and conn.state is State.OPEN:
                why = (
                    f"not sent: your message to {store.message.room} could not be stored "
                    f"({failure.reason}): {store.message.text[:60].replace(chr(10), ' ')}"
                )
                self._deliver_one(conn, Error(ErrorCode.STORAGE_UNAVAILABLE, why), store.rid)

    def _storage_state(self, change: str) -> None:
        """Tell the hub (and so everyone, once) that storage failed or recovered."""
        keeper = self._keeper
        assert keeper is not None
        if change == "failed" and keeper.failed is not None:
            if self.config.on_storage_failure == "stop":
                if self.storage_failure is None:
                    self.storage_failure = str(keeper.failed)
                    logger.critical("%s; stopping (nothing unstored was sent)", keeper.failed)
                    self.request_stop(f"history storage failed: {keeper.failed.reason}")
                self.hub.set_storage_down(keeper.failed.reason)
                return
            self._apply(self.hub.set_storage_down(keeper.failed.reason))
        elif change == "recovered":
            self._apply(self.hub.set_storage_down(None))

    # ------------------------------------------------------------------ output limits

    def _over_soft_limit(self, conn: Connection) -> None:
        # Within one tick every ready client's lines run before anything is flushed, so a
        # burst (many senders, or one paste of 30 lines) can pile up more than the soft or
        # even the hard limit for a reader that keeps up perfectly. Judge only what the
        # kernel will not take now: try to send first, as asyncio's write() does.
        # Store before deliver holds here too: the queue may hold this tick's messages.
        self._commit()
        try:
            conn.flush(self.config.max_write_bytes_per_tick)
        except OSError as exc:
            self._close(conn, f"write error: {exc.strerror or exc}", flush=False)
            return
        if conn.out.size <= self.config.out_soft_limit_bytes:
            return
        if conn.out.size > self.config.out_hard_limit_bytes:
            self._slow_consumer(
                conn,
                f"output buffer over the hard limit ({self.config.out_hard_limit_bytes} bytes)",
            )
        elif conn.over_soft_since is None:
            conn.over_soft_since = self._now
            self._over_soft.add(conn)
            logger.info(
                "#%d %s is reading slowly (%d bytes queued): skipping room messages",
                conn.cid,
                conn.peer,
                conn.out.size,
            )

    def _slow_consumer(self, conn: Connection, why: str) -> None:
        self.stats["slow_consumers"] += 1
        logger.warning(
            "#%d %s disconnected as a slow consumer: %s (%d messages skipped)",
            conn.cid,
            conn.peer,
            why,
            conn.skipped,
        )
        # Its buffer is full of older lines; it would never reach a goodbye. Cut it.
        self._close(conn, f"slow consumer: {why}", flush=False)

    # ------------------------------------------------------------------ timers

    def _sweep(self, now: float, wall: float) -> None:
        if self._keeper is not None:
            change = self._keeper.upkeep(now, wall)
            if change is not None:
                self._storage_state(change)
        for conn in list(self._unregistered):
            if conn.state is not State.OPEN or self.hub.is_registered(conn.cid):
                self._unregistered.discard(conn)
            elif now >= conn.register_deadline:
                self._unregistered.discard(conn)
                self._deliver_one(
                    conn, Error(ErrorCode.TIMEOUT, "no nickname given in time; goodbye")
                )
                self._close(conn, "registration timeout", flush=True)
        limit = self.config.out_soft_limit_seconds
        for conn in list(self._over_soft):
            since = conn.over_soft_since
            if conn.state is not State.OPEN or since is None:
                self._over_soft.discard(conn)
            elif now - since >= limit:
                self._over_soft.discard(conn)
                self._slow_consumer(conn, f"over the soft limit for {limit:g}s")
        for conn in list(self._paused):
            if conn.state is not State.OPEN:
                self._paused.discard(conn)
            elif now >= conn.paused_until:
                self._paused.discard(conn)
                conn.paused_until = 0.0
                self._run_backlog(conn, now, wall)
                if conn.paused_until == 0.0:
                    self._update_interest(conn)
        self._apply(self.hub.expire(wall))  # nick holds that ran out
        if now >= self._next_idle_sweep:
            self._next_idle_sweep = now + _IDLE_SWEEP_SECONDS
            self._probe_idle(now)
            self._log_guess_episodes()
        for listener in self._listeners:
            if listener.paused_until and now >= listener.paused_until:
                listener.paused_until = 0.0
                self._selector.register(listener.sock, _READ, listener)
                logger.info("accepting again on %s:%d", *listener.address)

    def _probe_idle(self, now: float) -> None:
        """Ping silent peers whose protocol answers pings (IRC); drop the dead ones."""
        ping_after = self.config.idle_ping_seconds
        drop_after = self.config.idle_drop_seconds
        for conn in list(self._pingable):
            if conn.state is not State.OPEN:
                continue
            silent = now - conn.last_heard
            if silent >= drop_after:
                why = f"ping timeout: silent for {silent:.0f}s"
                self._deliver_one(conn, Error(ErrorCode.TIMEOUT, why))
                self._close(conn, why, flush=True)
            elif silent >= ping_after and not conn.probed:
                conn.probed = True
                self._deliver_one(conn, Probe())

    # ------------------------------------------------------------------ writing

    def _mark_pending(self, conn: Connection) -> None:
        if not conn.pending:
            conn.pending = True
            self._pending.append(conn)

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        cap = self.config.max_write_bytes_per_tick
        low = self.config.out_low_water_bytes
        high = self.config.out_high_water_bytes
        for conn in pending:
            conn.pending = False
            if conn.state is State.CLOSED:
                continue
            try:
                conn.flush(cap)
            except OSError as exc:
                self._close(conn, f"write error: {exc.strerror or exc}", flush=False)
                continue
            size = conn.out.size
            if size <= low:
                if conn.over_soft_since is not None:
                    conn.over_soft_since = None
                    self._over_soft.discard(conn)
                if conn.skipped and conn.state is State.OPEN:
                    skipped, conn.skipped = conn.skipped, 0
                    logger.info("#%d caught up; %d messages were skipped", conn.cid, skipped)
                    self._deliver_one(conn, Skipped(skipped))  # flushed next tick
                if conn.backpressured and self._has_input(conn) and not conn.paused_until:
                    conn.backpressured = False
                    self._run_backlog(conn, self._now, self._wall())
                conn.backpressured = conn.backpressured and conn.out.size > low
            elif size > high:
                conn.backpressured = True
            if size or conn.mask != _READ:  # else: all sent, reading on: nothing changes
                self._update_interest(conn)

    def _update_interest(self, conn: Connection) -> None:
        """Register exactly the events this connection needs now."""
        if conn.state is State.CLOSED:
            return
        want = 0
        if conn.state is State.OPEN and not conn.backpressured and not conn.paused_until:
            want |= _READ
        if conn.out.size:
            want |= _WRITE
        if want == conn.mask:
            return
        if conn.mask == 0:
            self._selector.register(conn.sock, want, conn)
        elif want == 0:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, want, conn)
        conn.mask = want

    # ------------------------------------------------------------------ closing

    def _close(self, conn: Connection, reason: str, *, flush: bool) -> None:
        """Start closing ``conn``: no more reading; the hub hears of it at the end of tick.

        With ``flush`` its queued output (an error, a goodbye) still goes out, for at
        most ``close_linger_seconds``; without, it is dropped.
        """
        if conn.state is State.CLOSED:
            return
        if not flush:
            conn.out.clear()
        if conn.state is State.CLOSING:
            return
        conn.state = State.CLOSING
        conn.close_reason = reason
        conn.close_deadline = self._now + self.config.close_linger_seconds
        conn.backlog, conn.unframed = None, b""
        self._closing.add(conn)
        self._departures.append((conn.cid, reason))
        self._update_interest(conn)
        if conn.out.size:
            self._mark_pending(conn)

    def _tell_hub_departures(self, wall: float) -> None:
        while self._departures:
            departures, self._departures = self._departures, []
            for cid, reason in departures:
                self._apply(self.hub.handle(cid, Disconnected(_public_reason(reason)), wall))

    def _close_finished(self, now: float) -> None:
        for conn in list(self._closing):
            if not conn.out.size or now >= conn.close_deadline:
                self._finalize(conn)

    def _finalize(self, conn: Connection) -> None:
        if conn.state is State.CLOSED:
            return
        if conn.state is State.OPEN:
            self._departures.append((conn.cid, "server closed the connection"))
        conn.state = State.CLOSED
        if conn.mask:
            self._unregister_quietly(conn.sock)
            conn.mask = 0
        conn.sock.close()
        self._conns.pop(conn.cid, None)
        self._closing.discard(conn)
        self._unregistered.discard(conn)
        self._over_soft.discard(conn)
        self._paused.discard(conn)
        self._pingable.discard(conn)
        self._forget_host(conn.host)
        logger.log(
            self._conn_log_level(conn),
            "#%d %s closed: %s (in %dB/%d lines, out %dB%s)",
            conn.cid,
            conn.peer,
            conn.close_reason or "server stopped",
            conn.bytes_in,
            conn.lines_in,
            conn.bytes_out,
            f", {conn.out.size}B unsent" if conn.out.size else "",
        )

    def _forget_host(self, host: str) -> None:
        count = self._per_host.get(host, 0) - 1
        if count > 0:
            self._per_host[host] = count
        else:
            self._per_host.pop(host, None)

    def _conn_log_level(self, conn: Connection) -> int:
        """A guesser's connections are summed up per address (``_log_guess_episodes``)."""
        return logging.DEBUG if self._guesses.throttled(conn.host) else logging.INFO

    def _unregister_quietly(self, sock: socket.socket) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass  # not registered (paused, or already closed)


class Endpoint:
    """A socket of the operator console (chatd.ctl) on this loop (a base class)."""

    def on_ready(self, events: int, wall: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _format_peer(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)


def _public_reason(reason: str) -> str:
    """What other users are told when somebody leaves (no internal detail)."""
    if reason.startswith(("read error", "write error")):
        return "connection lost"
    if reason == "internal error":
        return "connection lost"
    return reason
