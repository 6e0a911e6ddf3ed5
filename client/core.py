"""The client's pure core: typed input -> protocol requests, server frames -> display lines.

Nothing here touches a socket, a terminal or the clock (sans-I/O, like the server's hub):
:class:`ChatState` is fed three kinds of input and answers each with an :class:`Output`
(frames to send, lines to show, whether to quit) for the shells to carry out.

- ``user_input(text)``: one accepted prompt line (may hold newlines: a paste).
- ``server_line(line)``: one line received from the server, banner lines included.
- ``connected()`` / ``disconnected()``: the network shell's view of the link.

Invariants:

- Everything that came from the server and will be shown goes through :func:`sanitize`
  first: control characters and bidi overrides become U+FFFD, so nothing another user
  typed can reach the terminal as an escape sequence.
- Each room message is shown at most once. A message is identified by ``(mid, from,
  text)``: the mid alone would make a restarted history-less server (whose mids start
  again at 1) look like a stream of duplicates.
- Messages are shown in mid order per room. While a gap is being fetched (after a
  reconnect or a ``skipped`` notice) new messages of that room are held back and merged
  with the fetched ones, so the gap never appears after the messages that followed it.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# The name rules and defaults are the server's own (pure, stdlib-only): no drift.
from chatd import names
from chatd.config import DEFAULT_PORT, Config

__all__ = [
    "COMMANDS",
    "ChatState",
    "Kind",
    "Line",
    "Output",
    "default_nick",
    "encode",
    "irc_fold",
    "parse_address",
    "sanitize",
]

logger = logging.getLogger(__name__)

DEFAULT_ROOM = names.LOBBY
# docs/protocol.md: texts at most max_text_chars; a request line at most max_line_bytes
# without the newline (the server's defaults).
MAX_NICK = names.NICK_MAX
MAX_TEXT_CHARS = Config().max_text_chars
MAX_LINE_BYTES = Config().max_line_bytes
# How many messages one gap request asks for; a full page means "ask again".
GAP_PAGE = 200
DEFAULT_HISTORY = 20
MAX_HISTORY = 500
# Ids of messages remembered per room for de-duplication; a gap is never this long
# without being paged in order, so an older duplicate cannot slip through.
SEEN_PER_ROOM = 4000
# Typed while disconnected and sent after the reconnect; more is refused, not dropped.
MAX_QUEUED = 100
# Fallback nicks tried when ours is taken: nick_, nick__, ... then give up.
MAX_NICK_TRIES = 5

_NICK_CHARS = re.compile(r"[^A-Za-z0-9_\-\[\]\\^{}|]")


# --------------------------------------------------------------------------- helpers


def irc_fold(name: str) -> str:
    """Case-fold a nick or room exactly as the server compares them (its own rule)."""
    return names.fold(name)


def _is_unsafe(ch: str) -> bool:
    code = ord(ch)
    if code < 0x20:
        return ch not in "\n\t"
    if 0x7F <= code < 0xA0:  # DEL and the C1 controls (CSI 0x9b among them)
        return True
    # Bidi embeddings/overrides/isolates reorder what follows them on screen.
    if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return True
    return unicodedata.category(ch) == "Cs"  # lone surrogates cannot be written


def sanitize(text: str, *, newlines: bool = True) -> str:
    """Make untrusted text harmless to show: controls become U+FFFD, tabs spaces.

    Args:
        text: anything received from the server.
        newlines: keep ``\\n`` (message bodies); otherwise it becomes U+FFFD too.
    """
    out = []
    for ch in text:
        if ch == "\t":
            out.append("    ")
        elif ch == "\n" and newlines:
            out.append(ch)
        elif ch == "\n" or _is_unsafe(ch):
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def default_nick(login: str) -> str:
    """Turn a login name into a valid nick (invalid characters become ``_``)."""
    nick = _NICK_CHARS.sub("_", login)[:MAX_NICK]
    if not nick or nick[0].isdigit() or nick[0] == "-":
        nick = ("u" + nick)[:MAX_NICK]
    return nick


def valid_nick(nick: str) -> bool:
    return names.valid_nick(nick)


def normalize_room(name: str) -> str | None:
    """``lobby`` or ``#lobby`` -> ``#lobby``; None if it can never be a room name."""
    name = names.nfkc(name)  # as the server does: ＃ｌｏｂｂｙ and NFD accents fold
    room = name if name.startswith("#") else "#" + name
    return room if names.valid_room(room) else None


def parse_address(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (IPv6 as ``[::1]:PORT`` or bare ``::1``) -> (host, port).

    Raises:
        ValueError: with a sentence fit to show the user.
    """
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ValueError(f"bad address {text!r}: no host")
    if not port_text and not text.endswith(":"):
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}: expected a number from 1 to 65535")
    return host, int(port_text)


def encode(frame: dict[str, Any]) -> bytes:
    """One request as one JSON line (UTF-8, compact, newline-terminated)."""
    return (json.dumps(frame, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


# --------------------------------------------------------------------------- values


class Kind(enum.Enum):
    """How a line looks; the UI maps each kind to a style."""

    MSG = "msg"  # someone's room message
    OWN = "own"  # my own room message
    ACTION = "action"  # /me, anyone's
    PRIVATE = "private"  # private message, either direction
    SYSTEM = "system"  # joins, parts, nicks, topics: dimmed
    INFO = "info"  # replies to my commands, help, connection news
    ERROR = "error"  # errors from the server or about my input


@dataclass(frozen=True, slots=True)
class Line:
    """One thing to show. Every string in it is already sanitised."""

    kind: Kind
    text: str
    ts: float | None = None
    room: str | None = None
    nick: str | None = None  # the sender, for MSG/OWN/ACTION/PRIVATE
    target: str | None = None  # the recipient of a private message
    mention: bool = False  # mentions my nick: highlight and ring the bell
    earlier: bool = False  # history, not live
    own: bool = False  # I sent it (actions and private messages)


@dataclass(slots=True)
class Output:
    """What one input asks the shells to do."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    quit: bool = False
    fatal: str | None = None  # registration failed for good: say this and stop

    def info(self, text: str) -> None:
        self.lines.append(Line(Kind.INFO, text))

    def error(self, text: str) -> None:
        self.lines.append(Line(Kind.ERROR, text))

    def extend(self, other: Output) -> None:
        self.frames.extend(other.frames)
        self.lines.extend(other.lines)
        self.quit = self.quit or other.quit
        self.fatal = self.fatal or other.fatal


class Garbled(Exception):
    """A server frame that is not what the protocol promises; it is ignored."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    usage: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("join", "/join #room", "join a room and make it current"),
    Command("part", "/part [#room] [reason]", "leave a room (default: the current one)"),
    Command("switch", "/switch #room", "make a joined room current (also Ctrl-N / Ctrl-P)"),
    Command("msg", "/msg NICK text", "send a private message"),
    Command("me", "/me text", "an action in the current room"),
    Command("nick", "/nick NAME", "change your nick"),
    Command("who", "/who [#room]", "list the members of a room"),
    Command("rooms", "/rooms", "list the rooms on the server"),
    Command("topic", "/topic [text]", "show or set the current room's topic"),
    Command("history", "/history [N]", f"show N earlier messages (default {DEFAULT_HISTORY})"),
    Command("away", "/away [text]", "set or clear an away message"),
    Command("whois", "/whois NICK", "where a nick is, and whether it is away"),
    Command("quit", "/quit [reason]", "leave (Ctrl-D too)"),
    Command("help", "/help", "this list"),
)
_ALIASES = {"go": "switch", "j": "join", "leave": "part", "query": "msg", "exit": "quit"}


# --------------------------------------------------------------------------- per room


@dataclass(slots=True)
class Room:
    """What the client knows about one joined room."""

    name: str
    members: list[str] = field(default_factory=list)
    joined: bool = False  # a `joined` arrived on the current connection
    last_mid: int | None = None  # newest message shown
    # While nothing has been shown: a mid that every message not yet shown follows
    # (the room's newest at join time, 0 if it had none), so a gap can still be fetched.
    floor_mid: int | None = None
    oldest_mid: int | None = None  # oldest message shown (for /history)
    seen: set[tuple[int, str, str]] = field(default_factory=set)
    seen_order: deque[tuple[int, str, str]] = field(default_factory=deque)
    # Messages held back while a gap is fetched; None when no fetch is running.
    held: list[dict[str, Any]] | None = None
    queued: list[dict[str, Any]] = field(default_factory=list)  # typed while offline

    def remember(self, key: tuple[int, str, str]) -> None:
        self.seen.add(key)
        self.seen_order.append(key)
        if len(self.seen_order) > SEEN_PER_ROOM:
            self.seen.discard(self.seen_order.popleft())


# --------------------------------------------------------------------------- the state


class ChatState:
    """Everything the client knows; fed inputs, answers with :class:`Output`.

    Args:
        nick: the nick to register with.
        room: the room to join first.
        server: ``host:port`` as shown in the toolbar.
    """

    def __init__(
        self, nick: str, room: str = DEFAULT_ROOM, server: str = "", password: str | None = None
    ) -> None:
        self.password = password  # the server's password, if it has one
        self.wanted_nick = nick
        self.nick = nick
        self.server = server
        self.link = "connecting"  # connecting | connected | disconnected
        self.transport = ""  # "tls" or "plain", set by the network shell (client/trust.py)
        self.registered = False
        self.rooms: dict[str, Room] = {}  # folded name -> Room, in join order
        self.current: str | None = None  # folded name of the current room
        self.known_rooms: set[str] = set()  # from /rooms, for completion
        self.greeted = False  # banner skipped, first JSON frame seen
        self._initial_room = room
        self._explicit_join: str | None = None  # folded room the user /joined last
        self._nick_tries = 0
        self._next_id = 1
        self._pending: dict[int, tuple[str, str]] = {}  # id -> (purpose, folded room)
        self._queued_global: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ queries

    @property
    def current_room(self) -> Room | None:
        return self.rooms.get(self.current) if self.current else None

    def room_names(self) -> list[str]:
        return [r.name for r in self.rooms.values()]

    def members(self) -> list[str]:
        room = self.current_room
        return list(room.members) if room else []

    def is_me(self, nick: str) -> bool:
        return irc_fold(nick) == irc_fold(self.nick)

    def toolbar(self) -> list[tuple[str, str]]:
        """The bottom toolbar as (field, value) pairs, for the UI to style."""
        room = self.current_room
        return [
            ("state", self.link),
            ("server", self.server),
            ("nick", self.nick),
            ("room", room.name if room else "(no room)"),
            ("members", f"{len(room.members)} here" if room and room.joined else "-"),
            *([("transport", self.transport)] if self.transport else []),
        ]

    # ------------------------------------------------------------------ the link

    def connected(self) -> Output:
        """A new connection is open: register (the banner is skipped as it comes)."""
        self.link = "connecting"
        self.registered = False
        self.greeted = False
        self._nick_tries = 0
        self.nick = self.wanted_nick
        return Output(frames=[self._hello()])

    def _hello(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "hello", "nick": self.nick}
        if self.password is not None:
            frame["password"] = self.password
        return frame

    def disconnected(self, reason: str = "connection lost") -> Output:
        """The connection is gone; rooms are kept so the next one rejoins them."""
        out = Output()
        if self.link == "connected" or self.registered:
            out.error(f"disconnected from {self.server}: {reason}; reconnecting…")
        self.link = "disconnected"
        self.registered = False
        self._pending.clear()
        for room in self.rooms.values():
            room.joined = False
            room.members = []
            room.held = None  # unseen held messages are fetched again as part of the gap
        return out

    def wanted_rooms(self) -> list[str]:
        return self.room_names() or [self._initial_room]

    # ------------------------------------------------------------------ user input

    def user_input(self, text: str) -> Output:
        """One accepted input line (a paste may hold newlines): requests and feedback."""
        out = Output()
        text = text.rstrip()
        if not text.strip():
            return out
        if text.startswith("//"):
            self._say(out, text[1:], action=False)
            return out
        if not text.startswith("/"):
            self._say(out, text, action=False)
            return out
        name, _, rest = text[1:].partition(" ")
        if "\n" in name:  # "/me\ntext" from a paste: the command is the first word
            name, _, more = name.partition("\n")
            rest = more + (" " + rest if rest else "")
        name = _ALIASES.get(name.lower(), name.lower())
        rest = rest.strip()
        handler = getattr(self, f"_cmd_{name}", None)
        if handler is None or not any(c.name == name for c in COMMANDS):
            out.error(f"unknown command /{sanitize(name, newlines=False)}; /help lists them")
            return out
        handler(out, rest)
        return out

    def _usage(self, out: Output, name: str) -> None:
        usage = next(c.usage for c in COMMANDS if c.name == name)
        out.error(f"usage: {usage}")

    def _send(self, out: Output, frame: dict[str, Any], room: Room | None = None) -> None:
        """Send now, or queue until the reconnect when it is worth keeping."""
        if self.registered:
            out.frames.append(frame)
            return
        if frame["op"] not in ("say", "me", "msg"):
            out.error("not connected; try again once the connection is back")
            return
        queue = room.queued if room is not None else self._queued_global
        if len(queue) >= MAX_QUEUED:
            out.error("not connected, and too much is waiting already; not sent")
            return
        queue.append(frame)
        out.info("not connected: will be sent when the connection is back")

    def _text_ok(self, out: Output, text: str) -> bool:
        if len(text) > MAX_TEXT_CHARS:
            out.error(f"message too long ({len(text)} characters, at most {MAX_TEXT_CHARS})")
            return False
        if len(encode({"op": "say", "room": "#" + "x" * 32, "text": text})) > MAX_LINE_BYTES:
            out.error(f"message too long (more than {MAX_LINE_BYTES} bytes encoded)")
            return False
        return True

    def _need_room(self, out: Output) -> Room | None:
        room = self.current_room
        if room is None:
            out.error("you are in no room; /join #room first")
        return room

    def _say(self, out: Output, text: str, *, action: bool) -> None:
        room = self._need_room(out)
        if room is None or not self._text_ok(out, text):
            return
        self._send(out, {"op": "me" if action else "say", "room": room.name, "text": text}, room)

    def _cmd_join(self, out: Output, rest: str) -> None:
        room = normalize_room(rest.split()[0]) if rest else None
        if room is None:
            self._usage(out, "join")
            return
        key = irc_fold(room)
        if key in self.rooms and self.rooms[key].joined:
            self.current = key
            out.info(f"now talking in {self.rooms[key].name}")
            return
        self._explicit_join = key
        self._send(out, {"op": "join", "room": room})

    def _cmd_part(self, out: Output, rest: str) -> None:
        first, _, reason = rest.partition(" ")
        if first.startswith("#"):
            room = self.rooms.get(irc_fold(first))
            if room is None:
                out.error(f"you are not in {sanitize(first, newlines=False)}")
                return
        else:
            room, reason = self._need_room(out), rest
            if room is None:
                return
        frame: dict[str, Any] = {"op": "part", "room": room.name}
        if reason.strip():
            frame["reason"] = reason.strip()
        self._send(out, frame)

    def _cmd_switch(self, out: Output, rest: str) -> None:
        room = normalize_room(rest.split()[0]) if rest else None
        if room is None:
            self._usage(out, "switch")
        elif irc_fold(room) not in self.rooms:
            out.error(f"you are not in {room}; /join it first")
        else:
            self.current = irc_fold(room)
            out.info(f"now talking in {self.rooms[self.current].name}")

    def cycle_room(self, step: int) -> Output:
        """Make the next (step 1) or previous (-1) joined room current."""
        out = Output()
        keys = list(self.rooms)
        if len(keys) < 2 or self.current not in keys:
            return out
        self.current = keys[(keys.index(self.current) + step) % len(keys)]
        out.info(f"now talking in {self.rooms[self.current].name}")
        return out

    def _cmd_msg(self, out: Output, rest: str) -> None:
        to, _, text = rest.partition(" ")
        text = text.strip()
        if not to or not text:
            self._usage(out, "msg")
        elif not valid_nick(to):
            out.error(f"not a valid nick: {sanitize(to, newlines=False)}")
        elif self._text_ok(out, text):
            self._send(out, {"op": "msg", "to": to, "text": text})

    def _cmd_me(self, out: Output, rest: str) -> None:
        if not rest:
            self._usage(out, "me")
        else:
            self._say(out, rest, action=True)

    def _cmd_nick(self, out: Output, rest: str) -> None:
        if not rest or " " in rest:
            self._usage(out, "nick")
        elif not valid_nick(rest):
            out.error(f"not a valid nick: {sanitize(rest, newlines=False)} ({names.NICK_RULE})")
        else:
            self._send(out, {"op": "nick", "nick": rest})

    def _cmd_who(self, out: Output, rest: str) -> None:
        if rest:
            room = normalize_room(rest.split()[0])
            if room is None:
                self._usage(out, "who")
                return
            self._send(out, {"op": "who", "room": room})
        elif (current := self._need_room(out)) is not None:
            self._send(out, {"op": "who", "room": current.name})

    def _cmd_rooms(self, out: Output, rest: str) -> None:
        self._send(out, {"op": "rooms"})

    def _cmd_topic(self, out: Output, rest: str) -> None:
        room = self._need_room(out)
        if room is None:
            return
        frame: dict[str, Any] = {"op": "topic", "room": room.name}
        if rest:
            frame["topic"] = rest
        self._send(out, frame)

    def _cmd_history(self, out: Output, rest: str) -> None:
        if rest and (not rest.isdigit() or not 0 < int(rest) <= MAX_HISTORY):
            out.error(f"usage: /history [N], N from 1 to {MAX_HISTORY}")
            return
        room = self._need_room(out)
        if room is None:
            return
        limit = int(rest) if rest else DEFAULT_HISTORY
        self._send(out, self._history_request(room, "older", before=room.oldest_mid, limit=limit))

    def _cmd_away(self, out: Output, rest: str) -> None:
        self._send(out, {"op": "away", "message": rest} if rest else {"op": "away"})

    def _cmd_whois(self, out: Output, rest: str) -> None:
        if not rest or not valid_nick(rest):
            self._usage(out, "whois")
        else:
            self._send(out, {"op": "whois", "nick": rest})

    def _cmd_quit(self, out: Output, rest: str) -> None:
        out.quit = True
        if self.registered:
            out.frames.append({"op": "quit", "reason": rest} if rest else {"op": "quit"})

    def _cmd_help(self, out: Output, rest: str) -> None:
        out.info("commands:")
        for command in COMMANDS:
            out.info(f"  {command.usage:<24} {command.help}")
        out.info("  //text                   say /text literally")
        out.info("Tab completes commands, nicks and rooms; Up/Down recall earlier input.")

    def quit(self, reason: str = "") -> Output:
        """Ctrl-D: the same as /quit."""
        out = Output()
        self._cmd_quit(out, reason)
        return out

    # ------------------------------------------------------------------ history requests

    def _history_request(
        self,
        room: Room,
        purpose: str,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int,
    ) -> dict[str, Any]:
        rid = self._next_id
        self._next_id += 1
        self._pending[rid] = (purpose, irc_fold(room.name))
        return {
            "op": "history",
            "room": room.name,
            "before": before,
            "after": after,
            "limit": limit,
            "id": rid,
        }

    def _start_gap(self, out: Output, room: Room) -> None:
        """Fetch what was missed since ``room.last_mid``, holding new messages back."""
        after = room.last_mid if room.last_mid is not None else room.floor_mid
        if after is None:
            return
        if room.held is None:
            room.held = []
        out.frames.append(self._history_request(room, "gap", after=after, limit=GAP_PAGE))

    def _claim(self, frame: dict[str, Any], room_key: str) -> str | None:
        """Match a history reply (or an error) to the request it answers."""
        rid = frame.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and rid in self._pending:
            return self._pending.pop(rid)[0]
        for pid, (purpose, key) in self._pending.items():  # a server that drops ids
            if key == room_key:
                del self._pending[pid]
                return purpose
        return None

    # ------------------------------------------------------------------ server input

    def server_line(self, line: str) -> Output:
        """One line from the server. Banner lines, garbage and unknown frames are skipped."""
        if not line.startswith("{"):
            if self.greeted and line.strip():
                logger.info("ignored a non-JSON line from the server: %.80r", line)
            return Output()
        try:
            frame = json.loads(line)
        except ValueError:
            logger.info("ignored a malformed frame: %.80r", line)
            return Output()
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            logger.info("ignored a frame without a type: %.80r", line)
            return Output()
        self.greeted = True
        handler = getattr(self, "_on_" + frame["type"], None)
        if handler is None:
            logger.debug("ignored a frame of unknown type %r", frame["type"])
            return Output()
        out = Output()
        try:
            handler(out, frame)
        except Garbled as exc:
            logger.info("ignored a %s frame: %s", frame["type"], exc)
            return Output()
        return out

    def _on_welcome(self, out: Output, f: dict[str, Any]) -> None:
        self.nick = _name(f, "nick")
        self.registered = True
        self.link = "connected"
        if not self.is_me(self.wanted_nick):
            out.info(f"{self.wanted_nick} was taken; you are {self.nick}")
        server = _opt_str(f, "server")
        out.info(f"connected to {self.server}" + (f" ({server})" if server else ""))
        for line in f.get("motd") or []:
            if isinstance(line, str):
                out.lines.append(Line(Kind.INFO, sanitize(line, newlines=False)))
        for name in self.wanted_rooms():
            out.frames.append({"op": "join", "room": name})
        out.frames.extend(self._queued_global)
        self._queued_global = []

    def _on_joined(self, out: Output, f: dict[str, Any]) -> None:
        name = _name(f, "room")
        key = irc_fold(name)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(name)
        room.joined = True
        room.members = _names(f, "members")
        if self.current is None or self._explicit_join == key or self.current not in self.rooms:
            self.current = key
            self._explicit_join = None
        topic = _opt_str(f, "topic", newlines=False)
        count = len(room.members)
        out.lines.append(
            Line(
                Kind.SYSTEM,
                f"you joined {name} ({count} member{'s' if count != 1 else ''}: "
                f"{', '.join(room.members)})" + (f"; topic: {topic}" if topic else ""),
                room=name,
            )
        )
        if room.last_mid is not None or room.floor_mid is not None:
            # A rejoin: hold the replay back and fetch exactly the gap. The server answers
            # requests in order, so every replayed message arrives before the gap reply.
            room.held = None
            self._start_gap(out, room)
        out.frames.extend(room.queued)
        room.queued = []

    def _on_history_end(self, out: Output, f: dict[str, Any]) -> None:
        # A rejoin's replay needs no end marker (see _on_joined). But if nothing at all has
        # been shown in this room (a quiet room, or a server that replays nothing), there
        # is no mid to fetch a later gap after: ask for the room's newest message instead.
        room = self.rooms.get(irc_fold(_name(f, "room")))
        if room is not None and room.last_mid is None and room.floor_mid is None:
            out.frames.append(self._history_request(room, "floor", limit=1))

    def _on_join(self, out: Output, f: dict[str, Any]) -> None:
        name, nick = _name(f, "room"), _name(f, "nick")
        room = self.rooms.get(irc_fold(name))
        if room is not None and not any(irc_fold(m) == irc_fold(nick) for m in room.members):
            room.members.append(nick)
        out.lines.append(Line(Kind.SYSTEM, f"{nick} joined {name}", room=name))

    def _on_part(self, out: Output, f: dict[str, Any]) -> None:
        name, nick = _name(f, "room"), _name(f, "nick")
        reason = _opt_str(f, "reason", newlines=False)
        suffix = f" ({reason})" if reason else ""
        key = irc_fold(name)
        if self.is_me(nick):
            keys = list(self.rooms)
            if key in self.rooms:
                del self.rooms[key]
            if self.current == key:
                index = keys.index(key) if key in keys else 0
                rest = [k for k in keys if k != key]
                self.current = rest[max(index - 1, 0)] if rest else None
            out.lines.append(Line(Kind.SYSTEM, f"you left {name}{suffix}", room=name))
            if self.current_room:
                out.info(f"now talking in {self.current_room.name}")
            return
        room = self.rooms.get(key)
        if room is not None:
            room.members = [m for m in room.members if irc_fold(m) != irc_fold(nick)]
        out.lines.append(Line(Kind.SYSTEM, f"{nick} left {name}{suffix}", room=name))

    def _on_quit(self, out: Output, f: dict[str, Any]) -> None:
        nick = _name(f, "nick")
        reason = _opt_str(f, "reason", newlines=False)
        for room in self.rooms.values():
            room.members = [m for m in room.members if irc_fold(m) != irc_fold(nick)]
        out.lines.append(Line(Kind.SYSTEM, f"{nick} quit" + (f" ({reason})" if reason else "")))

    def _on_nick(self, out: Output, f: dict[str, Any]) -> None:
        old, new = _name(f, "old"), _name(f, "new")
        for room in self.rooms.values():
            room.members = [new if irc_fold(m) == irc_fold(old) else m for m in room.members]
        if self.is_me(old):
            self.nick = self.wanted_nick = new
            out.lines.append(Line(Kind.SYSTEM, f"you are now known as {new}"))
        else:
            out.lines.append(Line(Kind.SYSTEM, f"{old} is now known as {new}"))

    def _on_msg(self, out: Output, f: dict[str, Any]) -> None:
        name = _name(f, "room")
        mid = f.get("mid")
        if not isinstance(mid, int) or isinstance(mid, bool):
            raise Garbled("mid is not an integer")
        _name(f, "from")
        _text(f)
        room = self.rooms.get(irc_fold(name))
        if room is None:  # not ours (anymore): show it, but keep no books
            out.lines.append(self._message_line(f))
            return
        if room.held is not None:
            room.held.append(f)
            return
        self._show_message(out, room, f)

    def _show_message(
        self, out: Output, room: Room, f: dict[str, Any], older: bool = False
    ) -> None:
        key = (f["mid"], f["from"], f["text"])
        if key in room.seen:
            return
        room.remember(key)
        mid: int = f["mid"]
        if not older:
            room.last_mid = mid
        if room.oldest_mid is None or mid < room.oldest_mid:
            room.oldest_mid = mid
        out.lines.append(self._message_line(f, earlier=older or f.get("history") is True))

    def _message_line(self, f: dict[str, Any], earlier: bool = False) -> Line:
        sender = _name(f, "from")
        text = _text(f)
        action = f.get("action") is True
        own = self.is_me(sender)
        kind = Kind.ACTION if action else Kind.OWN if own else Kind.MSG
        return Line(
            kind,
            text,
            ts=_ts(f),
            room=_name(f, "room"),
            nick=sender,
            mention=not own and not earlier and self._mentions(text),
            earlier=earlier or f.get("history") is True,
            own=own,
        )

    def _mentions(self, text: str) -> bool:
        pattern = r"(?<![\w\[\]\\^{}|-])" + re.escape(irc_fold(self.nick)) + r"(?![\w\[\]\\^{}|-])"
        return re.search(pattern, irc_fold(text)) is not None

    def _on_history(self, out: Output, f: dict[str, Any]) -> None:
        name = _name(f, "room")
        key = irc_fold(name)
        messages = f.get("messages")
        if not isinstance(messages, list):
            raise Garbled("messages is not a list")
        good = []
        for m in messages:
            if not isinstance(m, dict):
                continue
            try:
                _name(m, "from")
                _text(m)
                if not isinstance(m.get("mid"), int) or isinstance(m.get("mid"), bool):
                    raise Garbled("mid is not an integer")
            except Garbled:
                continue
            good.append({**m, "room": name})
        purpose = self._claim(f, key)
        room = self.rooms.get(key)
        if room is None:
            return
        if purpose == "floor":
            if room.floor_mid is None:
                room.floor_mid = max((m["mid"] for m in good), default=0)
            return
        if purpose == "gap" and room.held is not None:
            room.held.extend(good)
            if len(messages) >= GAP_PAGE:  # a full page: there may be more
                newest = max(m["mid"] for m in good) if good else room.last_mid
                out.frames.append(self._history_request(room, "gap", after=newest, limit=GAP_PAGE))
                return
            self._flush_held(out, room)
            return
        # /history: older messages, shown now, marked as earlier
        before = len(out.lines)
        for m in sorted(good, key=lambda m: m["mid"]):
            self._show_message(out, room, m, older=True)
        if len(out.lines) == before:
            out.info(f"no earlier messages in {room.name}")

    def _flush_held(self, out: Output, room: Room) -> None:
        held, room.held = room.held or [], None
        for m in sorted(held, key=lambda m: m["mid"]):
            self._show_message(out, room, {**m, "history": False})

    def _on_privmsg(self, out: Output, f: dict[str, Any]) -> None:
        sender, to, text = _name(f, "from"), _name(f, "to"), _text(f)
        if f.get("action") is True:  # a private /me (from an IRC user, say)
            text = f"* {sender} {text}"
        own = self.is_me(sender)
        out.lines.append(
            Line(Kind.PRIVATE, text, ts=_ts(f), nick=sender, target=to, own=own, mention=not own)
        )

    def _on_who(self, out: Output, f: dict[str, Any]) -> None:
        name, members = _name(f, "room"), _names(f, "members")
        room = self.rooms.get(irc_fold(name))
        if room is not None and room.joined:
            room.members = members
        out.info(
            f"{name}: {len(members)} member{'s' if len(members) != 1 else ''}: "
            + ", ".join(members)
        )

    def _on_rooms(self, out: Output, f: dict[str, Any]) -> None:
        rooms = f.get("rooms")
        if not isinstance(rooms, list):
            raise Garbled("rooms is not a list")
        if not rooms:
            out.info("no rooms")
        for info in rooms:
            if not isinstance(info, dict):
                continue
            try:
                name = _name(info, "room")
            except Garbled:
                continue
            self.known_rooms.add(name)
            count = info.get("members")
            topic = _opt_str(info, "topic", newlines=False)
            out.info(
                f"{name}  {count if isinstance(count, int) else '?'} members"
                + (f"  {topic}" if topic else "")
            )

    def _on_topic(self, out: Output, f: dict[str, Any]) -> None:
        name = _name(f, "room")
        topic = _opt_str(f, "topic", newlines=False)
        by = _opt_str(f, "by", newlines=False)
        if by:
            out.lines.append(Line(Kind.SYSTEM, f"{by} set the topic of {name}: {topic}", room=name))
        elif topic:
            out.info(f"topic of {name}: {topic}")
        else:
            out.info(f"{name} has no topic")

    def _on_away(self, out: Output, f: dict[str, Any]) -> None:
        out.info("you are marked as away" if f.get("away") is True else "you are back")

    def _on_whois(self, out: Output, f: dict[str, Any]) -> None:
        nick = _name(f, "nick")
        rooms = _names(f, "rooms")
        away = _opt_str(f, "away", newlines=False)
        out.info(
            f"{nick} is in {', '.join(rooms) if rooms else 'no rooms'}"
            + (f"; away: {away}" if away else "")
        )

    def _on_pong(self, out: Output, f: dict[str, Any]) -> None:
        pass

    def _on_skipped(self, out: Output, f: dict[str, Any]) -> None:
        count = f.get("count")
        out.info(
            f"{count if isinstance(count, int) else 'some'} messages were skipped "
            "while this client was slow; fetching them"
        )
        for room in self.rooms.values():
            if room.joined and room.held is None:
                self._start_gap(out, room)

    def _on_shutdown(self, out: Output, f: dict[str, Any]) -> None:
        reason = _opt_str(f, "reason", newlines=False)
        out.error("the server is shutting down" + (f": {reason}" if reason else ""))

    def _on_notice(self, out: Output, f: dict[str, Any]) -> None:
        out.info(_text(f))

    def _on_error(self, out: Output, f: dict[str, Any]) -> None:
        code = _opt_str(f, "code", newlines=False) or "error"
        message = _opt_str(f, "message", newlines=False)
        if not self.registered:
            if code == "nick_taken" and self._nick_tries < MAX_NICK_TRIES:
                self._nick_tries += 1
                self.nick = self._fallback(self.nick)
                out.frames.append(self._hello())
                return
            if code in ("nick_taken", "bad_nick", "bad_password", "server_full"):
                out.fatal = f"the server refused nick {self.nick}: {message or code}"
                if code == "server_full":
                    out.fatal = f"the server is full: {message or code}"
                elif code == "bad_password":
                    out.fatal = (
                        "the server refused the password"
                        if self.password is not None
                        else "the server wants a password: set CHATD_PASSWORD or use "
                        "--password-file"
                    )
                return
        # An error about a history request ends that request (e.g. history_off).
        for pid, (purpose, key) in list(self._pending.items()):
            if f.get("id") == pid:
                del self._pending[pid]
                if purpose == "floor":
                    return  # our own bookkeeping (e.g. history_off): nothing to tell
                room = self.rooms.get(key)
                if purpose == "gap" and room is not None:
                    self._flush_held(out, room)
                    if code == "history_off":
                        return  # expected on a server without history: stay quiet
        if code == "not_registered":
            return  # a request raced the reconnect; the welcome will redo the joins
        out.error(f"{code}: {message}" if message else code)

    def _fallback(self, nick: str) -> str:
        base = self.wanted_nick[: MAX_NICK - self._nick_tries]
        return base + "_" * self._nick_tries


# --------------------------------------------------------------------------- field access


def _name(f: dict[str, Any], key: str) -> str:
    value = f.get(key)
    if not isinstance(value, str) or not value:
        raise Garbled(f"{key} is not a non-empty string")
    return sanitize(value, newlines=False)


def _names(f: dict[str, Any], key: str) -> list[str]:
    value = f.get(key)
    if not isinstance(value, list):
        raise Garbled(f"{key} is not a list")
    return [sanitize(v, newlines=False) for v in value if isinstance(v, str) and v]


def _opt_str(f: dict[str, Any], key: str, *, newlines: bool = True) -> str:
    value = f.get(key)
    return sanitize(value, newlines=newlines) if isinstance(value, str) else ""


def _text(f: dict[str, Any]) -> str:
    value = f.get("text")
    if not isinstance(value, str):
        raise Garbled("text is not a string")
    return sanitize(value)


def _ts(f: dict[str, Any]) -> float | None:
    value = f.get("ts")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
