"""The client's pure core: typed input -> protocol requests, server frames -> display lines.

Nothing here touches a socket, a terminal or the clock (sans-I/O, like the server's hub):
:class:`ChatState` is fed its inputs and answers each with an
:class:`~client.values.Output` (frames to send, lines to show, whether to quit) for the
shells to carry out.

- ``user_input(text)``: one accepted prompt line (may hold newlines: a paste);
  slash commands are in :mod:`client.commands`.
- ``server_line(line)``: one line received from the server, banner lines included;
  decoded and checked by :mod:`client.frames`, handled by :mod:`client.handlers`.
- ``connected()`` / ``disconnected()``: the network shell's view of the link.
- ``tick(now)``: the app's clock, for the bounded gap fill of :mod:`client.sync`.

Invariants:

- No frame, whatever it holds, raises out of ``server_line``: a frame that fails its
  checks is logged and skipped.
- Everything that came from the server and will be shown has been sanitised: control
  characters and bidi overrides become U+FFFD; names follow :mod:`chatd.names`.
- Each room message is shown at most once, in mid order per room (see :mod:`client.sync`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from client import commands, frames, handlers, sync
from client.commands import COMMANDS
from client.fields import Garbled
from client.frames import Limits
from client.sync import GAP_PAGE, Room
from client.text import (
    DEFAULT_PORT,
    DEFAULT_ROOM,
    MAX_NICK,
    default_nick,
    encode,
    irc_fold,
    normalize_room,
    parse_address,
    sanitize,
    valid_nick,
)
from client.values import Kind, Line, Output, Request

__all__ = [
    "COMMANDS",
    "DEFAULT_PORT",
    "DEFAULT_ROOM",
    "GAP_PAGE",
    "ChatState",
    "Garbled",
    "Kind",
    "Limits",
    "Line",
    "Output",
    "Request",
    "Room",
    "default_nick",
    "encode",
    "irc_fold",
    "normalize_room",
    "parse_address",
    "sanitize",
    "valid_nick",
]

logger = logging.getLogger(__name__)

# Typed while disconnected and sent after the reconnect; more is refused, not dropped.
MAX_QUEUED = 100
# A lag this long is shown in the toolbar.
LAG_SHOWN = 2.0
# Room names remembered from /rooms replies, for completion.
MAX_KNOWN_ROOMS = 1000


def _toolbar_width(fields: list[tuple[str, str]]) -> int:
    return 1 + sum(len(value) for _, value in fields) + 3 * (len(fields) - 1)


def _short_link(link: str) -> str:
    if link.startswith("reconnecting in "):
        return "retry " + link.split()[2] + "s"
    return {"connected": "up", "connecting": "...", "disconnected": "down"}.get(
        link, link.split(" (")[0]
    )


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


_Fields = list[tuple[str, str]]
_TOOLBAR_STEPS: tuple[Callable[[_Fields], _Fields], ...] = (
    lambda f: [(k, v) for k, v in f if k != "server"],
    lambda f: [(k, _short_link(v) if k == "state" else v) for k, v in f],
    lambda f: [(k, v.split()[0] if k in ("members", "lag") else v) for k, v in f],
    lambda f: [(k, _cut(v, 12) if k in ("nick", "room") else v) for k, v in f],
    lambda f: [(k, v) for k, v in f if k != "lag"],
    lambda f: [(k, _cut(v, 8) if k in ("nick", "room") else v) for k, v in f],
    lambda f: [(k, _cut(v, 6) if k in ("nick", "room") else v) for k, v in f],
)


class ChatState:
    """Everything the client knows; fed inputs, answers with :class:`Output`.

    Args:
        nick: the nick to register with.
        room: the room to join first.
        server: ``host:port`` as shown in the toolbar.
        password: the server's password, if it has one.
    """

    def __init__(
        self, nick: str, room: str = DEFAULT_ROOM, server: str = "", password: str | None = None
    ) -> None:
        self.password = password
        self.resume_token = ""  # from welcome: takes the session back (docs/accounts.md)
        self.account = ""  # logged in as ("": not)
        self.wanted_nick = nick
        self.nick = nick
        self.server = server
        self.link = "connecting"  # connecting | connected | disconnected | reconnecting …
        self.transport = ""  # "tls" or "plain", set by the network shell (client/trust.py)
        self.registered = False
        self.lag: float | None = None  # seconds a ping has waited (the app measures it)
        self.away = False
        self.away_nicks: set[str] = set()  # folded nicks of members who are away
        self.limits = Limits()  # replaced by the server's own in `welcome`
        self.rooms: dict[str, Room] = {}  # folded name -> Room, in join order
        self.current: str | None = None  # folded name of the current room
        self.known_rooms: set[str] = set()  # from /rooms, for completion
        self.greeted = False  # banner skipped, first JSON frame seen
        self.initial_rooms = [room]
        self.explicit_join: str | None = None  # folded room the user /joined last
        self.asked: set[str] = set()  # folded rooms we sent a join for, not yet joined
        self.nick_tries = 0
        self.pending: dict[int, sync.Pending] = {}  # history requests in flight, by id
        self.queued_global: list[Request] = []
        self._next_id = 1

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

    def toolbar(
        self, width: int | None = None, conversation: str | None = None
    ) -> list[tuple[str, str]]:
        """The bottom toolbar as (field, value) pairs, for the UI to style. Given the
        terminal's ``width``, it degrades step by step (server dropped, then shorter
        forms) so the nick, the room and the member count stay visible at 40 columns.
        ``conversation``: the nick of the private buffer shown (full screen), named
        where the room would be."""
        room = self.current_room
        fields = [
            ("state", self.link),
            ("server", self.server),
            ("nick", self.nick + (f" ({self.account})" if self.account else "")),
            *([("away", "away")] if self.away else []),
            ("room", room.name if room else "(no room)"),
            ("members", f"{len(room.members)} here" if room and room.joined else "-"),
            *([("lag", f"lag {self.lag:.0f} s")] if self.lag and self.lag >= LAG_SHOWN else []),
            *([("transport", self.transport)] if self.transport else []),
        ]
        if conversation is not None:
            fields = [(k, v) for k, v in fields if k != "members"]
            fields = [(k, "private: " + conversation if k == "room" else v) for k, v in fields]
        if width is None:
            return fields
        for step in _TOOLBAR_STEPS:
            if _toolbar_width(fields) <= width:
                break
            fields = step(fields)
        return fields

    def wanted_rooms(self) -> list[str]:
        return self.room_names() or self.initial_rooms

    # ------------------------------------------------------------------ the link

    def connected(self) -> Output:
        """A new connection is open: register (the banner is skipped as it comes)."""
        self.link = "connecting"
        self.registered = False
        self.lag = None
        self.away = False  # the server forgets it with the connection
        self.away_nicks.clear()  # the next member lists tell again
        self.greeted = False
        self.nick_tries = 0
        self.nick = self.wanted_nick
        return Output(frames=[self.hello()])

    def hello(self) -> Request:
        frame: Request = {"op": "hello", "nick": self.nick}
        if self.password is not None:
            frame["password"] = self.password
        if self.resume_token:  # a reconnect: the server kept our nick and rooms for us
            frame["resume"] = self.resume_token
        return frame

    def disconnected(self, reason: str = "connection lost") -> Output:
        """The connection is gone; rooms are kept so the next one rejoins them."""
        out = Output()
        if self.link == "connected" or self.registered:
            out.error(f"disconnected from {self.server}: {reason}; reconnecting…")
        self.link = "disconnected"
        self.registered = False
        self.pending.clear()
        self.asked.clear()
        for room in self.rooms.values():
            room.joined = False
            room.members = []
            room.held = None  # unseen held messages are fetched again as part of the gap
        return out

    def tick(self, now: float) -> Output:
        """The app's clock, about once a second: ends gap fills that take too long."""
        out = Output()
        sync.tick(self, out, now)
        return out

    # ------------------------------------------------------------------ user input

    def user_input(self, text: str) -> Output:
        """One accepted input line (a paste may hold newlines): requests and feedback."""
        out = Output()
        text = text.rstrip()
        if not text.strip():
            return out
        if text.startswith("//"):
            self.say(out, text[1:], action=False)
            return out
        if not text.startswith("/"):
            self.say(out, text, action=False)
            return out
        name, _, rest = text[1:].partition(" ")
        if "\n" in name:  # "/me\ntext" from a paste: the command is the first word
            name, _, more = name.partition("\n")
            rest = more + (" " + rest if rest else "")
        command = commands.find(name)
        if command is None:
            out.error(
                f"unknown command /{sanitize(name.lower(), newlines=False)}; /help lists them"
            )
            return out
        command.run(self, out, rest.strip())
        return out

    def quit(self, reason: str = "") -> Output:
        """Ctrl-D: the same as /quit."""
        return self.user_input("/quit " + reason)

    def cycle_room(self, step: int) -> Output:
        """Make the next (step 1) or previous (-1) joined room current."""
        out = Output()
        keys = list(self.rooms)
        if len(keys) < 2 or self.current not in keys:
            return out
        self.current = keys[(keys.index(self.current) + step) % len(keys)]
        out.info(f"now talking in {self.rooms[self.current].name}")
        return out

    # ------------------------------------------------------------------ for commands

    def next_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def send(self, out: Output, frame: Request, room: Room | None = None) -> None:
        """Send now, or queue until the reconnect when it is worth keeping."""
        if self.registered:
            out.frames.append(frame)
            return
        if frame["op"] not in ("say", "me", "msg"):
            out.error("not connected; try again once the connection is back")
            return
        queue = room.queued if room is not None else self.queued_global
        if len(queue) >= MAX_QUEUED:
            out.error("not connected, and too much is waiting already; not sent")
            return
        queue.append(frame)
        out.info("not connected: will be sent when the connection is back")

    def text_ok(self, out: Output, text: str) -> bool:
        most = self.limits.max_text_chars
        if len(text) > most:
            out.error(f"message too long ({len(text)} characters, at most {most})")
            return False
        line_bytes = self.limits.max_line_bytes
        if len(encode({"op": "say", "room": "#" + "x" * 32, "text": text})) > line_bytes:
            out.error(f"message too long (more than {line_bytes} bytes encoded)")
            return False
        return True

    def need_room(self, out: Output) -> Room | None:
        room = self.current_room
        if room is None:
            out.error("you are in no room; /join #room first")
        return room

    def say(self, out: Output, text: str, *, action: bool) -> None:
        room = self.need_room(out)
        if room is None or not self.text_ok(out, text):
            return
        self.send(out, {"op": "me" if action else "say", "room": room.name, "text": text}, room)

    # ------------------------------------------------------------------ for handlers

    def leave(self, key: str) -> None:
        """Forget a room; the previous one (in join order) becomes current."""
        keys = list(self.rooms)
        self.rooms.pop(key, None)
        still = {irc_fold(m) for room in self.rooms.values() for m in room.members}
        self.away_nicks &= still  # away is known only of people we share a room with
        for rid, pending in list(self.pending.items()):
            if pending.room == key:
                del self.pending[rid]
        if self.current == key:
            index = keys.index(key) if key in keys else 0
            rest = [k for k in keys if k != key]
            self.current = rest[max(index - 1, 0)] if rest else None

    def know_room(self, name: str) -> None:
        if len(self.known_rooms) < MAX_KNOWN_ROOMS:
            self.known_rooms.add(name)

    def fallback_nick(self) -> str:
        """nick_, nick__, … (cut to fit), for the ``nick_tries``-th retry."""
        base = self.wanted_nick[: MAX_NICK - self.nick_tries]
        return base + "_" * self.nick_tries

    def message_line(self, m: frames.Msg, earlier: bool = False) -> Line:
        own = self.is_me(m.sender)
        return Line(
            Kind.ACTION if m.action else Kind.OWN if own else Kind.MSG,
            m.text,
            ts=m.ts,
            room=m.room,
            nick=m.sender,
            mention=not own and not earlier and self._mentions(m.text),
            earlier=earlier,
            own=own,
        )

    def _mentions(self, text: str) -> bool:
        pattern = r"(?<![\w\[\]\\^{}|-])" + re.escape(irc_fold(self.nick)) + r"(?![\w\[\]\\^{}|-])"
        return re.search(pattern, irc_fold(text)) is not None

    # ------------------------------------------------------------------ server input

    def server_line(self, line: str) -> Output:
        """One line from the server. Banner lines, garbage and unknown frames are skipped;
        nothing a server sends makes this raise."""
        out = Output()
        if not line.startswith("{"):
            if self.greeted and line.strip():
                logger.info("ignored a non-JSON line from the server: %.80r", line)
            return out
        try:
            obj = frames.parse(line)
            self.greeted = True
            frame = frames.decode(obj, self.limits)
            if frame is None:
                logger.debug("ignored a frame of unknown type %.40r", obj["type"])
                return out
            handlers.HANDLERS[type(frame)](self, out, frame)
        except Garbled as exc:
            logger.info("ignored a frame: %s: %.80r", exc, line)
            return Output()
        return out
