"""IRC mode: irssi, WeeChat, HexChat and friends join the same rooms as everybody else.

A third codec over the same hub, on its own listening socket (:func:`listen_irc`). The
grammar is RFC 1459/2812 as the IRCv3 "Modern IRC" document describes it, with message
tags; docs/irc.md says what is supported and what is not.

How the pieces map:

- Commands become the hub's commands (``PRIVMSG #room`` -> ``Say``, ``PRIVMSG nick`` ->
  ``PrivMsg``, ``NAMES``/``WHO #room`` -> ``Who`` …). Each carries a request id ``_Ctx``
  (IRC command, target); the hub copies it onto the reply or error, which is how an
  ``Error(no_such_nick)`` becomes ``401 me bob``, or a ``WhoReply`` becomes 352s for
  ``WHO`` but 353s for ``NAMES``, with no IRC knowledge in the hub.
- What only IRC has (CAP, MODE queries, PING, 421/461 …) is answered by the codec
  itself, through ``Echo`` of an :class:`IrcLines` event (pre-rendered lines).
- Registration is a small state machine in the codec: PASS, NICK and USER are collected,
  CAP LS/REQ suspends until CAP END, then ``Hello`` goes to the hub; the hub's
  ``Welcome`` (seen in :meth:`IrcCodec.observe`) completes it and is rendered as 001-005
  and the MOTD. A refused nick (433) leaves the codec waiting for another NICK.
- Per-connection state that changes the bytes of shared events (negotiated caps) is in
  :attr:`IrcCodec.cache_key`, so fan-out stays correct. The own nick is not: what depends
  on it only ever goes to this connection (see ``_rekey``).

Output obeys the 512-byte line limit (tags excluded, as IRCv3 says): message texts are
split into several PRIVMSGs at word or character boundaries, never silently cut; a
multi-line text (a paste from another protocol) becomes one PRIVMSG per line. One-line
fields that cannot be split (a 300-character topic in a script with 4-byte characters)
are shortened to fit, at a character boundary.

Input: UTF-8; a line that is not valid UTF-8 is read as CP1252 (what most non-UTF-8 IRC
clients send), so nobody is cut off for a stray byte. IRC formatting codes (bold,
colours …) are removed from texts before they reach the hub, which would otherwise show
them as U+FFFD to everybody; CTCP other than ACTION is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from chatd import __version__
from chatd.codecs.base import Codec
from chatd.codecs.irc_wire import (
    MAX_LINE_BYTES,
    IrcMessage,
    format_line,
    parse_line,
    split_text,
)
from chatd.model import (
    Away,
    AwayNotice,
    AwayReply,
    Command,
    Echo,
    Error,
    ErrorCode,
    Event,
    Hello,
    HistoryEnd,
    HistoryReply,
    Join,
    Joined,
    JoinEvent,
    Message,
    Nick,
    NickEvent,
    Notice,
    Part,
    PartEvent,
    Pong,
    PrivateMessage,
    PrivMsg,
    Probe,
    Quit,
    QuitEvent,
    Rooms,
    RoomsReply,
    Say,
    Shutdown,
    Skipped,
    Topic,
    TopicEvent,
    Welcome,
    Who,
    Whois,
    WhoisReply,
    WhoReply,
)
from chatd.names import NICK_MAX, ROOM_MAX, fold

if TYPE_CHECKING:
    from chatd.server import Server
    from chatd.streams import StreamFactory

__all__ = [
    "IrcCodec",
    "IrcLines",
    "IrcMessage",
    "parse_line",
    "format_line",
    "split_text",
    "listen_irc",
    "CAPABILITIES",
]

#: What CAP LS offers. Only what is implemented: multi-prefix is trivially honoured
#: (chatd has no channel operators, so NAMES never carries a prefix at all).
CAPABILITIES = ("echo-message", "message-tags", "multi-prefix", "server-time")

MAX_TARGETS = 4  # PRIVMSG/NOTICE a,b,c,d (TARGMAX)
HOST = "chatd"  # the host part of every nick!user@host: chatd keeps peers' addresses private
TOPIC_LEN = 300  # chatd.hub.MAX_TOPIC_CHARS
AWAY_LEN = 200  # chatd.hub.MAX_REASON_CHARS

# mIRC formatting: bold, colour (with up to two numbers, fg[,bg]), hex colour, reset,
# monospace, reverse, italic, strikethrough, underline.
_FORMATTING_RE = re.compile(
    r"\x03(\d{1,2}(,\d{1,2})?)?|\x04([0-9A-Fa-f]{6}(,[0-9A-Fa-f]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)


def _mask(nick: str) -> str:
    return f"{nick}!{nick}@{HOST}"


def _iso(ts: float) -> str:
    # isoformat is twice as fast as strftime, and this runs per message per recipient.
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# --------------------------------------------------------------------------- the codec


@dataclass(frozen=True, slots=True)
class IrcLines(Event):
    """The codec's own answer (CAP, MODE, 421 …), already rendered; sent via ``Echo``."""

    lines: tuple[str, ...]


class _Ctx(NamedTuple):
    """The request id of an IRC command: what the reply or error answers."""

    command: str
    target: str = ""


_Handler = Callable[["IrcCodec", IrcMessage], list[Command]]
_REGISTRATION = frozenset({"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT"})


class IrcCodec(Codec):
    pings_peer = True
    """One IRC connection.

    Args:
        server_name: what clients see as the server (numerics' source, 002, 004).
        password_required: the server has a password (PASS is forwarded to the hub).
        max_rooms: rooms per client (``CHANLIMIT``, and the most JOIN targets per line).
    """

    name = "irc"

    def __init__(
        self, server_name: str = "chatd", *, password_required: bool = False, max_rooms: int = 50
    ) -> None:
        self._server = server_name.split()[0] if server_name.split() else "chatd"
        self._password_required = password_required
        self._max_rooms = max_rooms
        self._nick: str | None = None  # set by Welcome: registered
        self._wanted: str | None = None  # NICK before registration
        self._user = False
        self._password: str | None = None
        self._negotiating = False  # between CAP LS/REQ and CAP END, before registration
        self._hello_sent = False
        self._caps: frozenset[str] = frozenset()
        self._rooms: dict[str, str] = {}  # folded -> name, from Joined/PartEvent
        self._motd: tuple[str, ...] = ()
        self.cache_key: Hashable = ("irc", None, self._caps)

    # ------------------------------------------------------------------ state

    @property
    def nick(self) -> str | None:
        return self._nick

    @property
    def caps(self) -> frozenset[str]:
        return self._caps

    def _rekey(self) -> None:
        # The own nick is not part of the key: every byte that depends on it goes to this
        # connection alone (numerics, server notices) or is the sender's own copy of a
        # message, which the server encodes apart (Deliver.reply_to). So IRC users with
        # the same capabilities share one encoding of each room message, as JSON users
        # do. The test harness in test_irc_codec checks equal keys get equal bytes.
        self.cache_key = ("irc", self._caps)

    @property
    def _me(self) -> str:
        return self._nick or "*"  # numerics go to "*" until registration is complete

    def observe(self, event: Event) -> None:
        match event:
            case Welcome(nick=nick, motd=motd):
                self._nick, self._motd = nick, motd
                self._rekey()
            case Joined(room=room):
                self._rooms[fold(room)] = room
            case PartEvent(room=room, nick=nick) if self._is_me(nick):
                self._rooms.pop(fold(room), None)
            case NickEvent(old=old, new=new) if self._is_me(old):
                self._nick = new
                self._rekey()
            case Error() if self._nick is None:
                self._hello_sent = False  # refused: wait for another NICK (or PASS)

    def _is_me(self, nick: str) -> bool:
        return self._nick is not None and fold(nick) == fold(self._nick)

    # ------------------------------------------------------------------ decoding

    def decode(self, line: bytes) -> list[Command]:
        msg = parse_line(line)
        if msg is None:
            return []
        handler = _HANDLERS.get(msg.command)
        if handler is None:
            return self._reply("421", msg.command[:32], trailing="Unknown command")
        if self._nick is None and msg.command not in _REGISTRATION:
            return self._reply("451", trailing="You have not registered")
        return handler(self, msg)

    def _lines(self, *lines: str) -> list[Command]:
        return [Echo(IrcLines(lines))]

    def _numeric(self, code: str, *params: str, trailing: str | None = None) -> str:
        return format_line(code, self._me, *params, trailing=trailing, source=self._server)

    def _reply(self, code: str, *params: str, trailing: str | None = None) -> list[Command]:
        return self._lines(self._numeric(code, *params, trailing=trailing))

    def _need(self, msg: IrcMessage, count: int) -> list[Command] | None:
        if len(msg.params) >= count:
            return None
        return self._reply("461", msg.command, trailing="Not enough parameters")

    def _register(self) -> list[Command]:
        if self._wanted is None or not self._user or self._negotiating or self._hello_sent:
            return []
        self._hello_sent = True
        password = self._password if self._password_required else None
        return [Hello(self._wanted, password=password, rid=_Ctx("NICK", self._wanted))]

    def _pass(self, msg: IrcMessage) -> list[Command]:
        if self._nick is not None:
            return self._reply("462", trailing="You may not reregister")
        if (missing := self._need(msg, 1)) is not None:
            return missing
        self._password = msg.params[0]
        return []

    def _user_cmd(self, msg: IrcMessage) -> list[Command]:
        if self._nick is not None or self._user:
            return self._reply("462", trailing="You may not reregister")
        if (missing := self._need(msg, 4)) is not None:
            return missing
        self._user = True  # chatd shows nick!nick@chatd for everybody; USER is not kept
        return self._register()

    def _nick_cmd(self, msg: IrcMessage) -> list[Command]:
        if not msg.params or not msg.params[0]:
            return self._reply("431", trailing="No nickname given")
        nick = msg.params[0]
        if self._nick is not None:
            return [Nick(nick, rid=_Ctx("NICK", nick))]
        self._wanted = nick
        return self._register()

    def _cap(self, msg: IrcMessage) -> list[Command]:
        if (missing := self._need(msg, 1)) is not None:
            return missing
        sub = msg.params[0].upper()
        if sub == "LS":
            self._negotiating = self._nick is None
            return self._lines(self._cap_line("LS", " ".join(CAPABILITIES)))
        if sub == "LIST":
            return self._lines(self._cap_line("LIST", " ".join(sorted(self._caps))))
        if sub == "REQ":
            self._negotiating = self._nick is None
            asked = msg.params[1] if len(msg.params) > 1 else ""
            wanted = asked.split()
            if not wanted or any(cap.lstrip("-") not in CAPABILITIES for cap in wanted):
                return self._lines(self._cap_line("NAK", asked))
            caps = set(self._caps)
            for cap in wanted:
                if cap.startswith("-"):
                    caps.discard(cap[1:])
                else:
                    caps.add(cap)
            self._caps = frozenset(caps)
            self._rekey()
            return self._lines(self._cap_line("ACK", asked))
        if sub == "END":
            self._negotiating = False
            return self._register() if self._nick is None else []
        return self._reply("410", msg.params[0][:20], trailing="Invalid CAP command")

    def _cap_line(self, sub: str, caps: str) -> str:
        return format_line("CAP", self._me, sub, trailing=caps, source=self._server)

    def _ping(self, msg: IrcMessage) -> list[Command]:
        # Answered here, not by the hub: clients' lag checks must not reset WHOIS idle.
        if not msg.params:
            return self._reply("409", trailing="No origin specified")
        return self._lines(
            format_line("PONG", self._server, trailing=msg.params[0], source=self._server)
        )

    def _quit(self, msg: IrcMessage) -> list[Command]:
        reason = msg.params[0] if msg.params else ""
        goodbye = format_line("ERROR", trailing=f"Closing link: {self._me} (Quit: {reason})")
        return [Echo(IrcLines((goodbye,))), Quit(reason)]

    def _targets(self, msg: IrcMessage, limit: int) -> list[str]:
        return [name for name in msg.params[0].split(",") if name][:limit]

    def _join(self, msg: IrcMessage) -> list[Command]:
        if (missing := self._need(msg, 1)) is not None:
            return missing
        if msg.params[0] == "0":  # JOIN 0: leave every room
            return [Part(room, "", rid=_Ctx("PART", room)) for room in self._rooms.values()]
        # Keys (JOIN #a,#b k1,k2) are ignored: chatd rooms have none. A room already
        # joined is left alone, as IRC servers do.
        return [
            Join(room, rid=_Ctx("JOIN", room))
            for room in self._targets(msg, self._max_rooms)
            if fold(room) not in self._rooms
        ]

    def _part(self, msg: IrcMessage) -> list[Command]:
        if (missing := self._need(msg, 1)) is not None:
            return missing
        reason = msg.params[1] if len(msg.params) > 1 else ""
        return [
            Part(room, reason, rid=_Ctx("PART", room))
            for room in self._targets(msg, self._max_rooms)
        ]

    def _privmsg(self, msg: IrcMessage) -> list[Command]:
        notice = msg.command == "NOTICE"
        if not msg.params or not msg.params[0]:
            return [] if notice else self._reply("411", trailing="No recipient given (PRIVMSG)")
        if len(msg.params) < 2 or not msg.params[1]:
            return [] if notice else self._reply("412", trailing="No text to send")
        text, action = msg.params[1], False
        if text.startswith("\x01"):
            body = text.strip("\x01")
            if not body.upper().startswith("ACTION "):
                return []  # CTCP VERSION, PING, …: nobody here would answer
            text, action = body[7:], True
        text = _FORMATTING_RE.sub("", text)
        commands: list[Command] = []
        for target in self._targets(msg, MAX_TARGETS):
            rid = _Ctx(msg.command, target)
            if target.startswith("#"):
                commands.append(Say(target, text, action=action, rid=rid))
            else:
                commands.append(PrivMsg(target, text, notice=notice, action=action, rid=rid))
        return commands

    def _topic(self, msg: IrcMessage) -> list[Command]:
        if (missing := self._need(msg, 1)) is not None:
            return missing
        room = msg.params[0]
        topic = _FORMATTING_RE.sub("", msg.params[1]) if len(msg.params) > 1 else None
        return [Topic(room, topic, rid=_Ctx("TOPIC", room))]

    def _names(self, msg: IrcMessage) -> list[Command]:
        if not msg.params:
            return self._reply("366", "*", trailing="End of /NAMES list")
        return [Who(room, rid=_Ctx("NAMES", room)) for room in self._targets(msg, self._max_rooms)]

    def _list(self, msg: IrcMessage) -> list[Command]:
        return [Rooms(rid=_Ctx("LIST", msg.params[0] if msg.params else ""))]

    def _who(self, msg: IrcMessage) -> list[Command]:
        mask = msg.params[0] if msg.params else "*"
        if mask in ("*", "0", ""):  # "everybody": not offered; the room lists are there
            return self._reply("315", mask, trailing="End of /WHO list")
        if mask.startswith("#"):
            return [Who(mask, rid=_Ctx("WHO", mask))]
        return [Whois(mask, rid=_Ctx("WHO", mask))]

    def _whois(self, msg: IrcMessage) -> list[Command]:
        if not msg.params:
            return self._reply("431", trailing="No nickname given")
        nick = msg.params[-1].split(",")[0]  # WHOIS [server] nick
        return [Whois(nick, rid=_Ctx("WHOIS", nick))]

    def _away(self, msg: IrcMessage) -> list[Command]:
        return [Away(msg.params[0] if msg.params else None, rid=_Ctx("AWAY"))]

    def _mode(self, msg: IrcMessage) -> list[Command]:
        if (missing := self._need(msg, 1)) is not None:
            return missing
        target = msg.params[0]
        modes = msg.params[1] if len(msg.params) > 1 else ""
        if target.startswith("#"):
            if not modes:
                return self._reply("324", target, "+")
            lists = {"b": ("368", "ban"), "e": ("349", "exception"), "I": ("347", "invite")}
            if modes.lstrip("+") in lists and len(msg.params) == 2:  # list query: empty
                code, what = lists[modes.lstrip("+")]
                return self._reply(code, target, trailing=f"End of channel {what} list")
            return self._reply("482", target, trailing="chatd has no channel modes or operators")
        if fold(target) != fold(self._me):
            return self._reply("502", trailing="Can't view or change modes for other users")
        # Everybody is effectively +i (WHO never lists users outside a channel), so
        # irssi's automatic "MODE me +i" is a no-op, not an error; nothing else exists.
        if not modes:
            return self._reply("221", "+i")
        if modes.strip("+i") == "":
            return []
        return self._reply("501", trailing="chatd has no user modes but +i")

    def _motd_cmd(self, msg: IrcMessage) -> list[Command]:
        return self._lines(*self._motd_lines())

    def _motd_lines(self) -> list[str]:
        if not self._motd:
            return [self._numeric("422", trailing="There is no message of the day")]
        lines = [self._numeric("375", trailing=f"- {self._server} Message of the day -")]
        lines += [self._numeric("372", trailing=f"- {line}") for line in self._motd]
        lines.append(self._numeric("376", trailing="End of /MOTD command"))
        return lines

    # ------------------------------------------------------------------ encoding

    def encode(self, event: Event, rid: object = None) -> bytes:
        lines = self._render(event, rid if isinstance(rid, _Ctx) else None)
        return "".join(line + "\r\n" for line in lines).encode()

    def _render(self, event: Event, ctx: _Ctx | None) -> list[str]:
        num = self._numeric
        match event:
            case Message():
                return self._message(event, own=ctx is not None)
            case PrivateMessage():
                return self._private(event)
            case JoinEvent(room=room, nick=nick):
                return [format_line("JOIN", room, source=_mask(nick))]
            case PartEvent(room=room, nick=nick, reason=reason):
                return [format_line("PART", room, trailing=reason or None, source=_mask(nick))]
            case QuitEvent(nick=nick, reason=reason):
                return [
                    format_line(
                        "QUIT", trailing=f"Quit: {reason}" if reason else "Quit", source=_mask(nick)
                    )
                ]
            case NickEvent(old=old, new=new):
                return [format_line("NICK", trailing=new, source=_mask(old))]
            case TopicEvent(room=room, topic=topic, by=by) if by:
                return [format_line("TOPIC", room, trailing=topic, source=_mask(by))]
            case TopicEvent(room=room, topic=topic):
                if topic:
                    return [num("332", room, trailing=topic)]
                return [num("331", room, trailing="No topic is set")]
            case Joined(room=room, topic=topic, members=members):
                lines = [format_line("JOIN", room, source=_mask(self._me))]
                if topic:
                    lines.append(num("332", room, trailing=topic))
                return lines + self._names_lines(room, members)
            case WhoReply(room=room, members=members):
                if ctx is not None and ctx.command == "WHO":
                    return [self._who_line(room, nick) for nick in members] + [
                        num("315", ctx.target, trailing="End of /WHO list")
                    ]
                return self._names_lines(room, members)
            case WhoisReply():
                return self._whois_lines(event, ctx)
            case RoomsReply(rooms=rooms):
                wanted = {fold(r) for r in ctx.target.split(",") if r} if ctx else set()
                lines = [num("321", "Channel", trailing="Users  Name")]
                lines += [
                    num("322", r.room, str(r.members), trailing=r.topic)
                    for r in rooms
                    if not wanted or fold(r.room) in wanted
                ]
                return lines + [num("323", trailing="End of /LIST")]
            case AwayReply(away=away):
                if away:
                    return [num("306", trailing="You have been marked as being away")]
                return [num("305", trailing="You are no longer marked as being away")]
            case Welcome():
                return self._welcome_lines()
            case Error(code=code, message=message):
                return self._error_lines(code, message, ctx)
            case Notice(text=text):
                return self._server_notice(text)
            case AwayNotice(nick=nick, message=message):
                return [self._numeric("301", nick, trailing=message)]
            case Skipped(count=count):
                return self._server_notice(
                    f"You read too slowly: {count} room message{'s' * (count != 1)} were skipped."
                )
            case HistoryEnd(room=room, count=count):
                if not count:
                    return []
                return [
                    format_line(
                        "NOTICE",
                        room,
                        source=self._server,
                        trailing=(
                            f"End of history: the {count} message{'s' * (count != 1)} above "
                            f"{'were' if count != 1 else 'was'} sent before you joined."
                        ),
                    )
                ]
            case Probe():
                return [format_line("PING", trailing=self._server)]
            case Pong(token=token):
                return [
                    format_line(
                        "PONG", self._server, trailing=token or self._server, source=self._server
                    )
                ]
            case Shutdown(reason=reason):
                return [format_line("ERROR", trailing=f"Closing link: {reason}")]
            case IrcLines(lines=lines):
                return list(lines)
            case HistoryReply():
                return []  # IRC has no command that asks for it (no CHATHISTORY yet)
        raise TypeError(f"IRC mode cannot encode {event!r}")

    def _tags(self, ts: float, mid: int | None = None) -> dict[str, str] | None:
        tags = {}
        if "server-time" in self._caps:
            tags["time"] = _iso(ts)
        if mid is not None and "message-tags" in self._caps:
            tags["msgid"] = str(mid)
        return tags or None

    def _texts(
        self,
        command: str,
        target: str,
        sender: str,
        text: str,
        action: bool,
        tags: dict[str, str] | None,
    ) -> list[str]:
        source = _mask(sender)
        head_bytes = len(f":{source} {command} {target} :".encode())
        budget = MAX_LINE_BYTES - head_bytes - (9 if action else 0)  # \x01ACTION …\x01
        return [
            format_line(
                command,
                target,
                source=source,
                tags=tags,
                trailing=f"\x01ACTION {piece}\x01" if action else piece,
            )
            for piece in split_text(text, budget)
        ]

    def _message(self, m: Message, own: bool) -> list[str]:
        # ``own`` comes from the request id: only the sender's own copy carries one. It
        # must not be guessed from the nick, because a room message's bytes are shared by
        # every IRC user with the same caps (see ``_rekey``).
        if own and not m.history and "echo-message" not in self._caps:
            return []  # the client already shows what it sent
        text = m.text
        if m.history and "server-time" not in self._caps:
            # No timestamp tag to carry the age: put it in the text, dated.
            stamp = datetime.fromtimestamp(m.ts).strftime("%Y-%m-%d %H:%M")
            text = "\n".join(f"[{stamp}] {line}" for line in text.split("\n") if line.strip())
        return self._texts("PRIVMSG", m.room, m.sender, text, m.action, self._tags(m.ts, m.mid))

    def _private(self, m: PrivateMessage) -> list[str]:
        command = "NOTICE" if m.notice else "PRIVMSG"
        echo = self._is_me(m.sender) and not self._is_me(m.to)
        if echo and "echo-message" not in self._caps:
            return []
        return self._texts(command, m.to, m.sender, m.text, m.action, self._tags(m.ts))

    def _server_notice(self, text: str) -> list[str]:
        head = len(f":{self._server} NOTICE {self._me} :".encode())
        return [
            format_line("NOTICE", self._me, trailing=piece, source=self._server)
            for piece in split_text(text, MAX_LINE_BYTES - head)
        ]

    def _names_lines(self, room: str, members: tuple[str, ...]) -> list[str]:
        head = len(f":{self._server} 353 {self._me} = {room} :".encode())
        lines = [
            self._numeric("353", "=", room, trailing=chunk)
            for chunk in split_text(" ".join(members), MAX_LINE_BYTES - head)
        ]
        return lines + [self._numeric("366", room, trailing="End of /NAMES list")]

    def _who_line(self, room: str, nick: str) -> str:
        return self._numeric("352", room, nick, HOST, self._server, nick, "H", trailing=f"0 {nick}")

    def _whois_lines(self, w: WhoisReply, ctx: _Ctx | None) -> list[str]:
        num = self._numeric
        if ctx is not None and ctx.command == "WHO":
            return [
                self._who_line("*", w.nick),
                num("315", ctx.target, trailing="End of /WHO list"),
            ]
        lines = [num("311", w.nick, w.nick, HOST, "*", trailing=w.nick)]
        if w.rooms:
            head = len(f":{self._server} 319 {self._me} {w.nick} :".encode())
            lines += [
                num("319", w.nick, trailing=chunk)
                for chunk in split_text(" ".join(w.rooms), MAX_LINE_BYTES - head)
            ]
        lines.append(num("312", w.nick, self._server, trailing=f"chatd {__version__}"))
        if w.away:
            lines.append(num("301", w.nick, trailing=w.away))
        lines.append(num("317", w.nick, str(w.idle_seconds), trailing="seconds idle"))
        return lines + [num("318", w.nick, trailing="End of /WHOIS list")]

    def _welcome_lines(self) -> list[str]:
        num, me, server = self._numeric, self._me, self._server
        tokens = [
            "CASEMAPPING=rfc1459",
            "CHANTYPES=#",
            f"CHANNELLEN={ROOM_MAX + 1}",
            f"NICKLEN={NICK_MAX}",
            f"TOPICLEN={TOPIC_LEN}",
            f"AWAYLEN={AWAY_LEN}",
            f"CHANLIMIT=#:{self._max_rooms}",
            "PREFIX=",
            "CHANMODES=,,,",
            "NETWORK=chatd",
            f"MAXTARGETS={MAX_TARGETS}",
            f"TARGMAX=JOIN:{self._max_rooms},PART:{self._max_rooms},PRIVMSG:{MAX_TARGETS},"
            f"NOTICE:{MAX_TARGETS},NAMES:{self._max_rooms},WHOIS:1",
        ]
        lines = [
            num("001", trailing=f"Welcome to chatd on {server}, {me}"),
            num("002", trailing=f"Your host is {server}, running chatd {__version__}"),
            num("003", trailing="This server speaks IRC as one listener of chatd"),
            num("004", server, f"chatd-{__version__}"),
        ]
        for start in range(0, len(tokens), 12):  # at most 13 parameters after the nick
            lines.append(
                num("005", *tokens[start : start + 12], trailing="are supported by this server")
            )
        return lines + self._motd_lines()

    def _error_lines(self, code: str, message: str, ctx: _Ctx | None) -> list[str]:
        num = self._numeric
        command, target = (ctx.command, ctx.target) if ctx else ("", "")
        if command == "NOTICE":
            return []  # RFC 2812 3.3.2: never answer a NOTICE with an error
        if code == ErrorCode.NICK_TAKEN:
            return [num("433", target, trailing=message)]
        if code == ErrorCode.BAD_NICK:
            return [num("432", target, trailing=message)]
        if code == ErrorCode.BAD_PASSWORD:
            return [num("464", trailing=message)]
        if code == ErrorCode.ALREADY_REGISTERED:
            return [num("462", trailing=message)]
        if code == ErrorCode.NOT_REGISTERED:
            return [num("451", trailing=message)]
        if command == "WHO" and code in (
            ErrorCode.NO_SUCH_NICK,
            ErrorCode.NO_SUCH_ROOM,
            ErrorCode.BAD_ROOM,
        ):
            return [num("315", target, trailing="End of /WHO list")]
        if command == "NAMES" and code in (ErrorCode.NO_SUCH_ROOM, ErrorCode.BAD_ROOM):
            return [num("366", target, trailing="End of /NAMES list")]
        if code == ErrorCode.NO_SUCH_NICK:
            lines = [num("401", target, trailing="No such nick/channel")]
            if command == "WHOIS":
                lines.append(num("318", target, trailing="End of /WHOIS list"))
            return lines
        if code in (ErrorCode.NO_SUCH_ROOM, ErrorCode.BAD_ROOM):
            return [num("403", target or "*", trailing=message)]
        if code == ErrorCode.NOT_IN_ROOM:
            if command == "PRIVMSG":
                return [num("404", target, trailing="Cannot send to channel: join it first")]
            return [num("442", target or "*", trailing="You're not on that channel")]
        if code in (ErrorCode.TEXT_TOO_LONG, ErrorCode.LINE_TOO_LONG):
            return [num("417", trailing=message)]
        if code == ErrorCode.BAD_REQUEST and command == "JOIN":
            return [num("405", target, trailing=message)]
        if code == ErrorCode.BAD_REQUEST and command == "PRIVMSG":
            return [num("412", trailing=message)]
        if code in (ErrorCode.TIMEOUT, ErrorCode.SLOW_CONSUMER, ErrorCode.SERVER_FULL):
            return [format_line("ERROR", trailing=f"Closing link: {message}")]
        return self._server_notice(f"{code}: {message}")


_HANDLERS: dict[str, _Handler] = {
    "CAP": IrcCodec._cap,
    "PASS": IrcCodec._pass,
    "NICK": IrcCodec._nick_cmd,
    "USER": IrcCodec._user_cmd,
    "PING": IrcCodec._ping,
    "PONG": lambda codec, msg: [],
    "QUIT": IrcCodec._quit,
    "JOIN": IrcCodec._join,
    "PART": IrcCodec._part,
    "PRIVMSG": IrcCodec._privmsg,
    "NOTICE": IrcCodec._privmsg,
    "TOPIC": IrcCodec._topic,
    "NAMES": IrcCodec._names,
    "LIST": IrcCodec._list,
    "WHO": IrcCodec._who,
    "WHOIS": IrcCodec._whois,
    "AWAY": IrcCodec._away,
    "MODE": IrcCodec._mode,
    "MOTD": IrcCodec._motd_cmd,
    "TAGMSG": lambda codec, msg: [],  # client tags: not relayed
}


def listen_irc(
    server: Server,
    host: str,
    port: int,
    *,
    name: str = "irc",
    make_stream: StreamFactory | None = None,
) -> tuple[str, int]:
    """Open the IRC listener on ``server``'s loop; returns the bound address.

    ``make_stream``: the byte stream of every connection (TLS on ``--irc-tls-port``).
    """
    config = server.config

    def make_codec() -> Codec:
        return IrcCodec(
            config.server_name,
            password_required=config.password is not None,
            max_rooms=config.max_rooms_per_client,
        )

    return server.listen(
        host, port, name=name, make_codec=make_codec, banner=b"", make_stream=make_stream
    )
