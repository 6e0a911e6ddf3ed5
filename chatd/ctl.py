"""The operator console: ``chatd ctl`` talks to the running server over a Unix socket.

Server side (:class:`CtlServer`): one more listener on the server's loop. The socket is
created with mode 0600 (owner only), so whoever can connect is the user who started the
server (or root): that is the **only** reason it is trusted, and why it is never a TCP
port. The protocol is JSON lines both ways: ``{"cmd": "who"}`` ->
``{"ok": true, "users": [...]}``; errors are ``{"ok": false, "error": CODE, "message":
...}``. Commands: ``who``, ``rooms``, ``stats``, ``kick``, ``ban``, ``unban``, ``kill``,
``announce``, ``modlog``, ``reload`` (docs/moderation.md). Acting commands go through the
hub as the pseudo-client ``console`` (a server operator), so they obey the same rules,
are announced the same way and land in the moderation log.

Bounded: at most :data:`MAX_CONNECTIONS` console connections, lines of at most
:data:`MAX_LINE_BYTES`; a console that does not read its replies is closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatd.model import (
    Action,
    Announce,
    Ban,
    Command,
    Deliver,
    Error,
    Event,
    FetchModLog,
    Kick,
    Kill,
    ModLog,
    ModLogReply,
    Notice,
    Unban,
)
from chatd.moderation import CONSOLE_CID

if TYPE_CHECKING:
    from chatd.server import Server

__all__ = ["CtlServer", "default_path", "MAX_CONNECTIONS", "MAX_LINE_BYTES"]

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 8
MAX_LINE_BYTES = 65536
MAX_OUT_BYTES = 8 * 1024 * 1024


def default_path(ctl_socket: str, db_path: str, port: int) -> str | None:
    """Where the console socket goes: ``ctl_socket``; else next to the database file;
    else (``:memory:``) under ``$XDG_RUNTIME_DIR``; None: off (or nowhere to put it)."""
    if ctl_socket == "off":
        return None
    if ctl_socket:
        return ctl_socket
    if db_path and db_path != ":memory:":
        return db_path + ".ctl"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return str(Path(runtime) / f"chatd-{port}.ctl") if runtime else None


class CtlServer:
    """The listening socket (a :class:`chatd.loop.Handler`); ``reload`` re-reads the
    configuration (given by the CLI)."""

    mask = 0  # the loop's
    wants_read = True
    wants_write = False

    def __init__(
        self, server: Server, path: str, reload: Callable[[], list[str]] | None = None
    ) -> None:
        self.server, self.path, self._reload = server, path, reload
        self._conns: set[_CtlConn] = set()
        self._started = time.monotonic()
        self._last_sample = (self._started, 0)
        _remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the file is born 0600: no moment of wider access
        try:
            sock.bind(path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(MAX_CONNECTIONS)
        sock.setblocking(False)
        self.sock = sock
        server.loop.update(self)
        logger.info("operator console on %s (owner only)", path)

    def on_ready(self, mask: int) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        if len(self._conns) >= MAX_CONNECTIONS:
            with contextlib.suppress(OSError):
                conn.send(_frame({"ok": False, "error": "busy", "message": "too many consoles"}))
            conn.close()
            return
        conn.setblocking(False)
        ctl = _CtlConn(self, conn)
        self._conns.add(ctl)
        self.server.loop.update(ctl)

    def close(self) -> None:
        for conn in list(self._conns):
            conn.close()
        self.server.loop.remove(self)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    # ------------------------------------------------------------------ commands

    def execute(self, request: Any, wall: float) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return _fail("bad_request", 'send {"cmd": NAME, ...}; cmds: ' + ", ".join(_CMDS))
        name = request["cmd"]
        if name not in _CMDS:
            return _fail("unknown_cmd", f"unknown cmd {name[:30]!r}; cmds: " + ", ".join(_CMDS))
        try:
            return _CMDS[name](self, request, wall)
        except (KeyError, TypeError, ValueError) as exc:
            return _fail("bad_request", f"{name}: missing or wrong field ({exc})"[:200])
        except Exception:  # a bug: this console gets an answer, the loop goes on
            logger.exception("bug in the operator console's %s", name)
            return _fail("internal_error", "the server hit a bug; see its log")

    def act(self, command: Command, wall: float) -> dict[str, Any]:
        """Run ``command`` in the hub as the console; its replies become the answer."""
        if not self.server.console_acts and not isinstance(command, ModLog):
            return _fail("cluster_mode", CLUSTER_MODE)
        replies: list[Event] = []
        rest: list[Action] = []
        for action in self.server.hub.console(command, wall):
            if isinstance(action, Deliver) and action.cids == (CONSOLE_CID,):
                replies.append(action.event)
            elif isinstance(action, FetchModLog) and action.cid == CONSOLE_CID:
                store = self.server.moderation
                replies.append(
                    ModLogReply(store.modlog(action.room, action.limit) if store else ())
                )
            else:
                rest.append(action)
        self.server.apply(rest)
        for event in replies:
            if isinstance(event, Error):
                return _fail(event.code, event.message)
        out: dict[str, Any] = {"ok": True}
        for event in replies:
            if isinstance(event, Notice):
                out["message"] = event.text
            elif isinstance(event, ModLogReply):
                out["entries"] = [vars_of(e) for e in event.entries]
            else:
                out.setdefault("events", []).append(type(event).__name__)
        return out

    def stats(self) -> dict[str, Any]:
        server = self.server
        now, messages = time.monotonic(), server.stats["messages"]
        then, before = self._last_sample
        self._last_sample = (now, messages)
        size = 0
        store = server.moderation
        if store is not None and store.path != ":memory:":
            for suffix in ("", "-wal"):
                with contextlib.suppress(OSError):
                    size += os.path.getsize(store.path + suffix)
        return {
            "ok": True,
            "connections": server.connections,
            "messages": messages,
            "messages_per_second": round((messages - before) / max(now - then, 1e-3), 2),
            "slow_consumers": server.stats["slow_consumers"],
            "store_bytes": size,
            "uptime_seconds": round(now - self._started, 1),
            **server.hub.stats(),
        }


class _CtlConn:
    """One console connection (a :class:`chatd.loop.Handler`)."""

    mask = 0
    wants_read = True

    def __init__(self, owner: CtlServer, sock: socket.socket) -> None:
        self.owner, self.sock = owner, sock
        self.inbuf = b""
        self.out = b""

    @property
    def wants_write(self) -> bool:
        return bool(self.out)

    def on_ready(self, mask: int) -> None:
        wall = time.time()  # (the console's commands are stamped like the hub's)
        if mask & selectors.EVENT_READ:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self.close()
                return
            if data:
                self.inbuf += data
                self._run(wall)
        self._flush()

    def _run(self, wall: float) -> None:
        while b"\n" in self.inbuf:
            line, _, self.inbuf = self.inbuf.partition(b"\n")
            try:
                request = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                answer = _fail("bad_json", "one JSON object per line")
            else:
                answer = self.owner.execute(request, wall)
            self.out += _frame(answer)
        if len(self.inbuf) > MAX_LINE_BYTES:
            self.inbuf = b""
            self.out += _frame(_fail("line_too_long", f"lines are at most {MAX_LINE_BYTES} bytes"))
        if len(self.out) > MAX_OUT_BYTES:
            self.close()  # not reading its answers

    def _flush(self) -> None:
        if self.sock.fileno() < 0:
            return
        try:
            sent = self.sock.send(self.out) if self.out else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        self.owner.server.loop.update(self)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.owner.server.loop.remove(self)
            self.sock.close()
        self.owner._conns.discard(self)


CLUSTER_MODE = (
    "in cluster mode the console acts on one node only: kick, ban, kill and announce "
    "from a server operator's client, which every node applies (docs/cluster.md)"
)


def _frame(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def _fail(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}


def vars_of(value: object) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}  # type: ignore[attr-defined]


def _remove_stale(path: str) -> None:
    """A socket file left by a chatd that died: remove it; a live one: refuse."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: stale
    else:
        raise OSError(f"{path}: another chatd is running its console there")
    finally:
        probe.close()


def _text(request: dict[str, Any], key: str, default: str | None = None) -> str:
    value = request.get(key, default)
    if not isinstance(value, str):
        raise TypeError(f'"{key}" must be a string')
    return value


def _duration(request: dict[str, Any]) -> int | None:
    value = request.get("duration")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError('"duration" must be seconds (an integer)')
    return value


def _who(ctl: CtlServer, request: dict[str, Any], wall: float) -> dict[str, Any]:
    return {"ok": True, "users": ctl.server.hub.user_list(wall)}


def _rooms(ctl: CtlServer, request: dict[str, Any], wall: float) -> dict[str, Any]:
    return {"ok": True, "rooms": ctl.server.hub.room_list()}


def _ban(ctl: CtlServer, request: dict[str, Any], wall: float) -> dict[str, Any]:
    room = request.get("room")
    if room is not None and not isinstance(room, str):
        raise TypeError('"room" must be a string')
    mask, reason = _text(request, "mask"), _text(request, "reason", "")
    if request.get("cmd") == "unban":
        return ctl.act(Unban(room, mask, server=room is None), wall)
    return ctl.act(Ban(room, mask, _duration(request), reason, server=room is None), wall)


def _reload(ctl: CtlServer, request: dict[str, Any], wall: float) -> dict[str, Any]:
    if ctl._reload is None:
        return _fail("no_config", "this server was not started from the command line")
    try:
        changed = ctl._reload()
    except (OSError, ValueError) as exc:
        return _fail("bad_config", str(exc)[:300])
    return {"ok": True, "changed": changed}


_CMDS: dict[str, Callable[[CtlServer, dict[str, Any], float], dict[str, Any]]] = {
    "who": _who,
    "rooms": _rooms,
    "stats": lambda ctl, r, wall: ctl.stats(),
    "kick": lambda ctl, r, wall: ctl.act(
        Kick(_text(r, "room"), _text(r, "nick"), _text(r, "reason", "")), wall
    ),
    "ban": _ban,
    "unban": _ban,
    "kill": lambda ctl, r, wall: ctl.act(Kill(_text(r, "nick"), _text(r, "reason", "")), wall),
    "announce": lambda ctl, r, wall: ctl.act(Announce(_text(r, "text")), wall),
    "modlog": lambda ctl, r, wall: ctl.act(_modlog(r), wall),
    "reload": _reload,
}


def _modlog(request: dict[str, Any]) -> Command:
    room = request.get("room")
    limit = request.get("limit")
    if room is not None and not isinstance(room, str):
        raise TypeError('"room" must be a string')
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise TypeError('"limit" must be an integer')
    return ModLog(room, limit)
