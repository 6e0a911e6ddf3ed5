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
from typing import Protocol

from chatd.codecs import Codec, JsonCodec, TextCodec, pick_codec
from chatd.config import Config
from chatd.connection import Connection, State
from chatd.framing import LINE_TOO_LONG, LineFramer
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
    Probe,
    ProtocolError,
    Replay,
    Shutdown,
    Skipped,
    Store,
)
from chatd.ratelimit import TokenBucket
from chatd.streams import StreamError, StreamFactory, StreamSniffer

__all__ = ["Server", "HistoryStore", "Listener"]

logger = logging.getLogger(__name__)

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
# accept() errors that mean "out of resources": back off instead of spinning.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_SWEEP_SECONDS = 0.25
# Idle peers are checked less often: it visits every connection.
_IDLE_SWEEP_SECONDS = 1.0
# A sniffing listener waits this long for the first bytes before it settles on plain
# (and shows its banner): a TLS client speaks first, a person in nc waits to be greeted.
SNIFF_SECONDS = 0.25


class HistoryStore(Protocol):
    """What the server needs from a message store (see :mod:`chatd.history`)."""

    def append(self, message: Message) -> None: ...
    def commit(self) -> None:
        """Raises on failure; the server then stops before sending anything unstored."""

    def recent(self, room: str, limit: int) -> list[Message]: ...
    def query(
        self, room: str, before: int | None, after: int | None, limit: int
    ) -> list[Message]: ...


class Listener:
    """A listening socket and the codec its connections speak (None: pick by first line).

    ``make_stream`` builds the byte stream (TLS, WebSocket) of every connection it accepts;
    ``sniff_stream`` instead chooses it from the first bytes each peer sends (None: plain).
    Neither: plain TCP, no stream object at all.
    """

    def __init__(
        self,
        sock: socket.socket,
        name: str,
        make_codec: Callable[[], Codec] | None,
        banner: bytes,
        make_stream: StreamFactory | None = None,
        sniff_stream: StreamSniffer | None = None,
    ) -> None:
        if make_stream is not None and sniff_stream is not None:
            raise ValueError("a listener has make_stream or sniff_stream, not both")
        self.sock = sock
        self.name = name
        self.make_codec = make_codec
        self.banner = banner
        self.make_stream = make_stream
        self.sniff_stream = sniff_stream
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
    ) -> None:
        self.config = config
        self.hub = Hub(config, next_mid=next_mid)
        self._history = history
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
        self._sniffing: dict[Connection, tuple[float, bytes]] = {}  # deadline, held banner
        self._fallback_codec = TextCodec()  # for lines sent before a mode is picked
        # [tls] How long before the registration deadline an unfinished handshake is cut.
        self._handshake_grace = max(
            0.0, config.register_timeout_seconds - config.tls_handshake_seconds
        )
        self._password_required = config.password is not None
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
            "slow_consumers": 0,
            "line_too_long": 0,
            "protocol_errors": 0,
            "bugs": 0,
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
        make_stream: StreamFactory | None = None,
        sniff_stream: StreamSniffer | None = None,
    ) -> tuple[str, int]:
        """Open a listening socket; returns the bound (host, port).

        ``make_stream``/``sniff_stream``: see :class:`Listener` and :mod:`chatd.streams`.
        """
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
        listener = Listener(sock, name, make_codec, banner, make_stream, sniff_stream)
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
        timeout = 0.0 if self._pending or self._departures else self._timeout()
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
            else:  # the waker
                self._drain_waker()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_SECONDS
            self._sweep(now, wall)
        self._tell_hub_departures(wall)
        if self._batches:
            self._materialize()
        if self._history is not None:
            self._history.commit()  # store before deliver: see module docstring
        self._flush_pending()
        self._close_finished(now)

    def _timeout(self) -> float:
        """Seconds select() may sleep: until the next deadline, at most one second."""
        if self._unregistered or self._over_soft or self._paused or self._closing or self._sniffing:
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
            self._adopt(sock, peer, listener, now)

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
        if listener.make_stream is not None:  # no words before its handshake: just close
            data = b""
        elif listener.make_codec is not None:  # a fixed protocol (IRC): its own ERROR line
            data = listener.make_codec().encode(error)
        else:  # the native port, mode not picked yet: a line for people, a frame for programs
            data = self._fallback_codec.encode(error) + JsonCodec().encode(error)
        try:
            sock.setblocking(False)
            sock.send(data)  # best effort: the newcomer gets told why
        except OSError:
            pass
        sock.close()

    def _adopt(self, sock: socket.socket, peer: str, listener: Listener, now: float) -> None:
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
        conn.register_deadline = now + config.register_timeout_seconds
        conn.last_heard = now
        self._conns[cid] = conn
        self._unregistered.add(conn)
        if codec is not None and codec.pings_peer:
            self._pingable.add(conn)
        self.stats["accepted"] += 1
        self.hub.connect(cid, self._wall())
        logger.info("#%d connected from %s (%s)", cid, peer, listener.name)
        if listener.sniff_stream is not None:
            conn.sniffer = listener.sniff_stream
            self._sniffing[conn] = (now + SNIFF_SECONDS, listener.banner)
        else:
            if listener.make_stream is not None:
                conn.stream = listener.make_stream()
            if listener.banner:
                self._queue(conn, listener.banner)
            self._refuse_if_finished(conn)
        self._mark_pending(conn)
        self._update_interest(conn)

    def _settle_stream(self, conn: Connection, first: bytes) -> None:
        """A sniffing listener's connection: choose its stream, then greet it."""
        sniffer = conn.sniffer
        assert sniffer is not None
        conn.sniffer = None
        _, banner = self._sniffing.pop(conn, (0.0, b""))
        conn.stream = sniffer(first)  # first is b"" if the peer said nothing in time
        if banner:
            self._queue(conn, banner)
        self._refuse_if_finished(conn)

    def _refuse_if_finished(self, conn: Connection) -> None:
        # [tls] A stream finished from the start refuses the connection (plain text when
        # TLS is required: chatd.tls.PlainRefused); its one line goes out, then it closes.
        stream = conn.stream
        if stream is not None and stream.finished and conn.state is State.OPEN:
            conn.out.append(stream.data_to_send())
            self._close(conn, "plain text refused (TLS is required)", flush=True)

    # ------------------------------------------------------------------ reading

    def _on_readable(self, conn: Connection, now: float, wall: float) -> None:
        try:
            data = conn.recv(self.config.recv_chunk_bytes)
        except OSError as exc:
            self._close(conn, f"read error: {exc.strerror or exc}", flush=False)
            return
        if data is None:
            return
        conn.last_heard = now
        conn.probed = False
        if conn.sniffer is not None:
            self._settle_stream(conn, data)
            if conn.state is not State.OPEN:
                return
        stream = conn.stream
        if stream is not None:
            wire = data
            try:
                data = stream.receive(wire)
            except StreamError as exc:
                logger.info("#%d %s broke its stream: %s", conn.cid, conn.peer, exc.reason)
                self._pump(conn)  # its alert, if it has one; no orderly close after that
                self._close(conn, f"stream error: {exc.reason}", flush=True, broken=True)
                return
            self._pump(conn)
            if not wire or stream.finished:
                if data:
                    self._feed(conn, data, now, wall)
                self._close(conn, "connection closed by peer", flush=True)
                return
            if not data:
                return
        elif not data:
            # End of stream (the peer closed, or half-closed): what it sent before is
            # executed, replies are flushed, then we close.
            self._close(conn, "connection closed by peer", flush=True)
            return
        self._feed(conn, data, now, wall)

    def _pump(self, conn: Connection) -> None:
        """Move the wire bytes a stream produced into the output buffer."""
        assert conn.stream is not None
        wire = conn.stream.data_to_send()
        if wire:
            conn.out.append(wire)
            self._mark_pending(conn)

    def _feed(self, conn: Connection, data: bytes, now: float, wall: float) -> None:
        frames = conn.framer.feed(data)
        if frames:
            if conn.backlog is None:
                conn.backlog = deque(frames)
            else:
                conn.backlog.extend(frames)
            self._run_backlog(conn, now, wall)

    def _run_backlog(self, conn: Connection, now: float, wall: float) -> None:
        """Execute queued frames while the rate limit allows."""
        backlog = conn.backlog
        if backlog is None:
            return
        bucket = conn.bucket
        try:
            while backlog and conn.state is State.OPEN:
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
            backlog.clear()
            self._close(conn, "internal error", flush=False)

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
        for command in commands:
            if conn.state is not State.OPEN:
                return
            if isinstance(command, Echo):
                self._deliver_one(conn, command.event, command.rid)
            else:
                self._apply(self.hub.handle(conn.cid, command, wall))

    # ------------------------------------------------------------------ actions

    def _apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            match action:
                case Deliver():
                    self._deliver(action)
                case Store(message=message):
                    if self._history is not None:
                        self._history.append(message)
                case Close(cid=cid, reason=reason, flush=flush):
                    conn = self._conns.get(cid)
                    if conn is not None:
                        self._close(conn, reason, flush=flush)
                case Replay():
                    self._replay(action)
                case FetchHistory():
                    self._fetch_history(action)
                case _:
                    raise TypeError(f"unknown action {action!r}")

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
        encoded: dict[object, bytes] = {}
        for cid in action.cids:
            conn = self._conns.get(cid)
            if conn is None or conn.state is not State.OPEN:
                continue
            codec = conn.codec or self._fallback_codec
            codec.observe(event)
            if cid == reply_to:
                self._queue(conn, codec.encode(event, rid))
                continue
            key = codec.cache_key
            data = encoded.get(key)
            if data is None:
                data = encoded[key] = codec.encode(event, shared_rid)
            self._queue(conn, data)

    def _materialize(self) -> None:
        """Append this tick's batched room messages to their recipients' buffers."""
        batches, self._batches = self._batches, {}
        conns = self._conns
        fallback = self._fallback_codec
        queue = self._queue
        for batch in batches.values():
            events = batch.events
            count = len(events)
            parts_by_key: dict[object, list[bytes]] = {}
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
                parts = parts_by_key.get(key)
                if parts is None:
                    parts = parts_by_key[key] = [codec.encode(e) for e in events]
                    blobs[key] = b"".join(parts)
                if cid in repliers:  # its own messages carry its request ids
                    parts = list(parts)
                    for index, reply_cid, rid in batch.replies:
                        if reply_cid == cid:
                            parts[index] = codec.encode(events[index], rid)
                    queue(conn, b"".join(parts))
                else:
                    queue(conn, blobs[key])

    def _queue(self, conn: Connection, data: bytes) -> None:
        """Append bytes for ``conn``; enforce the output limits; flush it this tick."""
        out = conn.out
        stream = conn.stream
        if stream is None:  # plain TCP: the shared blob itself, by reference
            out.append(data)
            size = out.size
        else:
            stream.send(data)
            out.append(stream.data_to_send())
            size = out.size + stream.buffered_bytes
        if size > self.config.out_soft_limit_bytes:
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
            self._history.commit()
            messages = self._history.recent(action.room, action.limit)
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
        self._history.commit()
        messages = self._history.query(action.room, action.before, action.after, action.limit)
        self._deliver_one(conn, HistoryReply(action.room, tuple(messages)), action.rid)

    # ------------------------------------------------------------------ output limits

    def _over_soft_limit(self, conn: Connection) -> None:
        # Within one tick every ready client's lines run before anything is flushed, so a
        # burst (many senders, or one paste of 30 lines) can pile up more than the soft or
        # even the hard limit for a reader that keeps up perfectly. Judge only what the
        # kernel will not take now: try to send first, as asyncio's write() does.
        # Store before deliver holds here too: the queue may hold this tick's messages.
        if self._history is not None:
            self._history.commit()
        try:
            conn.flush(self.config.max_write_bytes_per_tick)
        except OSError as exc:
            self._close(conn, f"write error: {exc.strerror or exc}", flush=False)
            return
        if conn.queued <= self.config.out_soft_limit_bytes:
            return
        if conn.queued > self.config.out_hard_limit_bytes:
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
        for conn in list(self._unregistered):
            if conn.state is not State.OPEN or self.hub.is_registered(conn.cid):
                self._unregistered.discard(conn)
            elif (
                conn.stream is not None
                and not conn.stream.ready
                and now >= conn.register_deadline - self._handshake_grace
            ):
                # [tls] A handshake that stalls is cut sooner than a slow typist: OpenSSL
                # keeps kilobytes of state for it. Nothing can be said: no session yet.
                self._unregistered.discard(conn)
                self._close(conn, "TLS handshake timeout", flush=False, broken=True)
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
        for conn, (deadline, _) in list(self._sniffing.items()):
            if conn.state is not State.OPEN:
                self._sniffing.pop(conn, None)
            elif now >= deadline:  # it waits to be greeted: plain, and say hello
                self._settle_stream(conn, b"")
                self._update_interest(conn)
        if now >= self._next_idle_sweep:
            self._next_idle_sweep = now + _IDLE_SWEEP_SECONDS
            self._probe_idle(now)
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
                conn.backpressured = False
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

    def _close(self, conn: Connection, reason: str, *, flush: bool, broken: bool = False) -> None:
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
        if conn.stream is not None and flush and not broken:
            conn.stream.close()  # its close_notify / close frame goes out with the rest
            conn.out.append(conn.stream.data_to_send())
        conn.state = State.CLOSING
        conn.close_reason = reason
        conn.close_deadline = self._now + self.config.close_linger_seconds
        conn.backlog = None
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
        self._sniffing.pop(conn, None)
        logger.info(
            "#%d %s closed: %s (in %dB/%d lines, out %dB%s)",
            conn.cid,
            conn.peer,
            conn.close_reason or "server stopped",
            conn.bytes_in,
            conn.lines_in,
            conn.bytes_out,
            f", {conn.out.size}B unsent" if conn.out.size else "",
        )

    def _unregister_quietly(self, sock: socket.socket) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass  # not registered (paused, or already closed)


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
