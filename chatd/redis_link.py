"""One connection to Redis, living in the server's selectors loop like a client's.

A non-blocking socket; commands are encoded here (RESP arrays of bulk strings) and
pipelined into one output buffer; replies are parsed by ``hiredis.Reader`` (the C RESP
parser the Redis project keeps) and handed to the callback of the command they answer,
in order. The connection speaks RESP3 (``HELLO 3``), so one connection both runs
commands and receives pub/sub messages: pushes arrive in the same byte stream as the
replies, in the order Redis produced them. That single order is what :mod:`chatd.cluster`
builds on (a script's reply and the messages it published are adjacent).

No thread, no blocking client library. Deadlines come from the loop's timer heap:

- connecting and every reply: a command unanswered for ``timeout`` seconds (Redis
  stopped, a partition) drops the link;
- reconnecting: backoff from 0.05 s doubling to 2 s, for ever.

Replies are ``bytes``, ``int``, ``list``, ``dict``, ``None`` or a ``hiredis.ReplyError``
(Redis said ``-ERR``); a callback gets :data:`LINK_DOWN` when the link died before the
reply came (the command may or may not have run).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import hiredis

from chatd.loop import Loop
from chatd.timers import Timer

__all__ = ["RedisLink", "RedisAddress", "LINK_DOWN", "encode_command", "parse_url"]

logger = logging.getLogger(__name__)

#: What a callback receives for a command whose reply will never come.
LINK_DOWN = object()
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
RECV_BYTES = 256 * 1024

Reply = Any
Callback = Callable[[Reply], None]


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str
    port: int
    db: int


def parse_url(url: str) -> RedisAddress:
    """``redis://HOST:PORT/DB`` (port 6379 and db 0 by default); ValueError if not."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"not a redis://HOST:PORT/DB URL: {url!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database in {url!r} must be a number")
    return RedisAddress(parts.hostname, parts.port or 6379, int(path or 0))


def encode_command(*args: bytes | str | int | float) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisLink:
    """A pipelined RESP3 connection that reconnects by itself.

    Args:
        on_up: called once the link is ready (``HELLO``/``SELECT`` answered); it may send
            commands at once (subscribe, load scripts, resynchronise).
        on_down: called when a live link is lost (pending callbacks got LINK_DOWN first).
        on_push: a pub/sub message (channel, payload).
    """

    def __init__(
        self,
        loop: Loop,
        address: RedisAddress,
        timeout: float,
        on_up: Callable[[], None],
        on_down: Callable[[], None],
        on_push: Callable[[bytes, bytes], None],
    ) -> None:
        self.loop = loop
        self.address = address
        self.timeout = timeout
        self._on_up = on_up
        self._on_down = on_down
        self._on_push = on_push
        self.sock: socket.socket = socket.socket()  # replaced on connect
        self.mask = 0
        self.up = False  # HELLO answered: commands may be sent
        self.commands_sent = 0  # for the benchmark: Redis commands per chat message
        self._connecting = False
        self._open = False
        self._out = bytearray()
        self._pending: deque[tuple[float, Callback | None]] = deque()
        self._reader = hiredis.Reader()
        self._backoff = BACKOFF_FIRST
        self._watchdog: Timer | None = None
        self._closed = False

    # ------------------------------------------------------------------ Handler

    @property
    def wants_read(self) -> bool:
        return self._open and not self._connecting

    @property
    def wants_write(self) -> bool:
        return self._open and (self._connecting or bool(self._out))

    def on_ready(self, mask: int) -> None:
        try:
            if self._connecting:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, errno.errorcode.get(err, "connect failed"))
                self._connecting = False
            if mask & 1 and not self._connecting:  # EVENT_READ
                self._read()
            if self._open and self._out:
                self._write()
        except OSError as exc:
            self._drop(f"{exc.strerror or exc}")
            return
        if self._open:
            self.loop.update(self)

    # ------------------------------------------------------------------ commands

    def start(self) -> None:
        self._connect()

    def command(self, callback: Callback | None, *args: bytes | str | int | float) -> None:
        """Queue one command; ``callback(reply)`` runs when its reply arrives.

        ``callback=None`` is for commands whose answer comes as a push (SUBSCRIBE).
        The caller checks :attr:`up` first: commands queued while down are lost."""
        if not self._open:
            if callback is not None:
                callback(LINK_DOWN)
            return
        self._out += encode_command(*args)
        self.commands_sent += 1
        if callback is not None:
            self._pending.append((self.loop.now, callback))
        if not self._connecting:
            self.loop.update(self)

    def reset(self, why: str) -> None:
        """Drop the connection and start again (a fresh session)."""
        if self._open:
            self._drop(why)

    def finish(self, *args: bytes | str | int | float, timeout: float = 0.5) -> None:
        """On the way out (the loop has stopped): send what is queued and one last
        command, waiting at most ``timeout`` seconds; then close."""
        if self.up:
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(timeout)
                self.sock.sendall(bytes(self._out) + encode_command(*args))
                self._out.clear()
            except OSError as exc:
                logger.info("cluster: could not say goodbye to Redis: %s", exc)
        self.close()

    def close(self) -> None:
        self._closed = True
        self._teardown()

    # ------------------------------------------------------------------ internals

    def _connect(self) -> None:
        if self._closed:
            return
        address = self.address
        try:
            infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            self._retry(f"cannot resolve {address.host}: {exc}")
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.mask = 0
        self._open = True
        self._connecting = True
        self._reader = hiredis.Reader()
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._teardown()
            self._retry(f"connect: {errno.errorcode.get(err, err)}")
            return
        # The handshake: RESP3 (pushes and replies on one connection), the database.
        self._pending.append((self.loop.now, self._hello_done))
        self._out += encode_command("HELLO", 3)
        self._out += encode_command("SELECT", address.db)
        self._pending.append((self.loop.now, self._select_done))
        self.loop.update(self)
        self._arm_watchdog()

    def _hello_done(self, reply: Reply) -> None:
        if isinstance(reply, hiredis.ReplyError):
            logger.error("Redis refused HELLO 3 (chatd needs Redis 6 or later): %s", reply)

    def _select_done(self, reply: Reply) -> None:
        if reply is LINK_DOWN:
            return
        if isinstance(reply, hiredis.ReplyError):
            self._drop(f"SELECT {self.address.db}: {reply}")
            return
        self.up = True
        self._backoff = BACKOFF_FIRST
        logger.info("cluster: connected to Redis %s:%d", self.address.host, self.address.port)
        self._on_up()

    def _read(self) -> None:
        data = self.sock.recv(RECV_BYTES)
        if not data:
            raise OSError(errno.ECONNRESET, "Redis closed the connection")
        reader = self._reader
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                raise OSError(errno.EPROTO, f"bad reply from Redis: {exc}") from None
            if reply is False:
                return
            if isinstance(reply, hiredis.PushNotification):  # RESP3 '>': not a reply
                if len(reply) == 3 and reply[0] == b"message":
                    self._call(self._on_push, reply[1], reply[2])
            elif self._pending:
                _, callback = self._pending.popleft()
                assert callback is not None
                self._call(callback, reply)
            else:
                raise OSError(errno.EPROTO, "a reply from Redis that nobody asked for")
            if not self._open:
                return  # a callback dropped the link

    @staticmethod
    def _call(function: Callable[..., None], *args: Any) -> None:
        """A bug in what handles one reply must not take the loop down (nor this link)."""
        try:
            function(*args)
        except Exception:
            logger.exception("cluster: bug while handling a Redis reply")

    def _write(self) -> None:
        sent = self.sock.send(self._out)
        del self._out[:sent]

    def _arm_watchdog(self) -> None:
        if self._watchdog is None and not self._closed:
            self._watchdog = self.loop.call_at(self.loop.now + self.timeout / 4, self._watch)

    def _watch(self) -> None:
        """Drop a link whose oldest command has waited longer than ``timeout``."""
        self._watchdog = None
        if not self._open:
            return
        if self._pending and self.loop.now - self._pending[0][0] > self.timeout:
            self._drop(f"no reply from Redis in {self.timeout:g}s")
            return
        self._arm_watchdog()

    def _drop(self, why: str) -> None:
        was_up = self.up
        if was_up:
            logger.warning("cluster: lost Redis (%s); reconnecting", why)
        self._teardown()
        if was_up:
            self._on_down()
        self._retry(why)

    def _teardown(self) -> None:
        self.up = False
        if self._open:
            try:
                self.loop.remove(self)
            except (KeyError, ValueError, OSError, RuntimeError):
                pass  # the loop's selector is already closed (shutdown)
            self.sock.close()
        self._open = False
        self._connecting = False
        self._out.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self._pending = self._pending, deque()
        for _, callback in pending:
            if callback is not None:
                callback(LINK_DOWN)

    def _retry(self, why: str) -> None:
        if self._closed:
            return
        delay = self._backoff
        self._backoff = min(BACKOFF_MAX, self._backoff * 2)
        logger.debug("cluster: Redis unreachable (%s); retrying in %.2fs", why, delay)
        self.loop.call_at(self.loop.now + delay, self._connect)
