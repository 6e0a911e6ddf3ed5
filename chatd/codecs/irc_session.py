"""One IRC connection's state, and registration: PASS, NICK, USER and CAP.

:class:`Session` is what the command mapping (:mod:`chatd.codecs.irc_commands`) and the
rendering (:mod:`chatd.codecs.irc_render`) share: the server name, the own nick once
registered, the negotiated capabilities, the rooms joined, the MOTD. It also formats
numerics, because every numeric names the client it goes to.

Registration is a small state machine: PASS, NICK and USER are collected, CAP LS/REQ
suspends it until CAP END, then ``Hello`` goes to the hub; the hub's ``Welcome`` (seen in
:meth:`Session.observe`) completes it. A refused nick (433) leaves the session waiting
for another NICK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from chatd.codecs.irc_wire import IrcMessage, format_line
from chatd.model import (
    AccountEvent,
    Command,
    Echo,
    Error,
    Event,
    Hello,
    Joined,
    KickEvent,
    Nick,
    NickEvent,
    PartEvent,
    Welcome,
)
from chatd.names import NICK_MAX, fold

__all__ = [
    "CAPABILITIES",
    "USER_MODES",
    "USERLEN",
    "clean_username",
    "strip_formatting",
    "HOST",
    "MAX_TARGETS",
    "Ctx",
    "IrcLines",
    "Session",
    "REGISTRATION",
    "mask",
]

#: What CAP LS offers. Only what is implemented: multi-prefix shows "@+" for a member
#: who is both operator and voiced (NAMES, WHO).
CAPABILITIES = (
    "echo-message",
    "message-tags",
    "multi-prefix",
    "server-time",
    "account-tag",  # accounts: chatd/codecs/irc_accounts.py
    "sasl",
)

MAX_TARGETS = 4  # PRIVMSG/NOTICE a,b,c,d (TARGMAX)
HOST = "chatd"  # the host part of every nick!user@host: chatd keeps peers' addresses private

#: User modes that exist (004, MODE): everybody is +i (WHO lists nobody outside your
#: rooms); +o is a server operator. Channel modes: chatd.codecs.irc_moderation.
USER_MODES = "io"
USERLEN = NICK_MAX  # the longest username kept from USER

#: Commands allowed before registration is complete (others get 451).
REGISTRATION = frozenset({"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT", "AUTHENTICATE"})


# mIRC formatting: bold, colour (with up to two numbers, fg[,bg]), hex colour, reset,
# monospace, reverse, italic, strikethrough, underline.
_FORMATTING_RE = re.compile(
    r"\x03(\d{1,2}(,\d{1,2})?)?|\x04([0-9A-Fa-f]{6}(,[0-9A-Fa-f]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)


def strip_formatting(text: str) -> str:
    return _FORMATTING_RE.sub("", text)


def mask(nick: str) -> str:
    return f"{nick}!{nick}@{HOST}"


def clean_username(given: str) -> str:
    """The USER username as chatd keeps it: ASCII letters, digits and ``-._~`` and the
    nick punctuation, at most :data:`USERLEN`; "" when nothing is left (then the hub
    shows the nick)."""
    return "".join(c for c in given if c.isascii() and (c.isalnum() or c in _USER_PUNCT))[:USERLEN]


_USER_PUNCT = frozenset("-._~[]\\^{}|")


@dataclass(frozen=True, slots=True)
class IrcLines(Event):
    """The codec's own answer (CAP, MODE, 421 …), already rendered; sent via ``Echo``."""

    lines: tuple[str, ...]


class Ctx(NamedTuple):
    """The request id of an IRC command: what the reply or error answers."""

    command: str
    target: str = ""


class Session:
    """The state of one IRC connection.

    Args:
        server_name: what clients see as the server (numerics' source, 002, 004).
        password_required: the server has a password (PASS is forwarded to the hub).
        max_rooms: rooms per client (``CHANLIMIT``, and the most JOIN targets per line).
    """

    def __init__(self, server_name: str, password_required: bool, max_rooms: int) -> None:
        self.server = server_name.split()[0] if server_name.split() else "chatd"
        self.password_required = password_required
        self.max_rooms = max_rooms
        self.nick: str | None = None  # set by Welcome: registered
        self.wanted: str | None = None  # NICK before registration
        self.user = False
        self.username = ""  # from USER
        self.realname = ""
        self.password: str | None = None
        self.negotiating = False  # between CAP LS/REQ and CAP END, before registration
        self.hello_sent = False
        self.caps: frozenset[str] = frozenset()
        self.rooms: dict[str, str] = {}  # folded -> name, from Joined/PartEvent
        self.motd: tuple[str, ...] = ()
        # SASL (chatd.codecs.irc_accounts)
        self.sasl_mechanism: str | None = None
        self.sasl_data = ""
        self.logged_in = False

    @property
    def targmax(self) -> dict[str, int]:
        """The most targets one line of each command may name (ISUPPORT ``TARGMAX``)."""
        rooms = self.max_rooms
        return {
            "JOIN": rooms,
            "PART": rooms,
            "PRIVMSG": MAX_TARGETS,
            "NOTICE": MAX_TARGETS,
            "NAMES": rooms,
            "WHOIS": 1,
        }

    @property
    def cache_key(self) -> tuple[str, frozenset[str]]:
        # The own nick is not part of the key: every byte that depends on it goes to this
        # connection alone (numerics, server notices) or is the sender's own copy of a
        # message, which the server encodes apart (Deliver.reply_to). So IRC users with
        # the same capabilities share one encoding of each room message, as JSON users
        # do. The test harness in test_irc_codec checks equal keys get equal bytes.
        return ("irc", self.caps)

    @property
    def me(self) -> str:
        return self.nick or "*"  # numerics go to "*" until registration is complete

    def is_me(self, nick: str) -> bool:
        return self.nick is not None and fold(nick) == fold(self.nick)

    def observe(self, event: Event) -> None:
        match event:
            case Welcome(nick=nick, motd=motd):
                self.nick, self.motd = nick, motd
            case Joined(room=room):
                self.rooms[fold(room)] = room
            case PartEvent(room=room, nick=nick) | KickEvent(room=room, nick=nick) if self.is_me(
                nick
            ):
                self.rooms.pop(fold(room), None)
            case NickEvent(old=old, new=new) if self.is_me(old):
                self.nick = new
            case Error() if self.nick is None:
                self.hello_sent = False  # refused: wait for another NICK (or PASS)
            case AccountEvent(account=account):
                self.logged_in = account is not None

    # ------------------------------------------------------------------ formatting

    def numeric(self, code: str, *params: str, trailing: str | None = None) -> str:
        return format_line(code, self.me, *params, trailing=trailing, source=self.server)

    def lines(self, *lines: str) -> list[Command]:
        return [Echo(IrcLines(lines))]

    def reply(self, code: str, *params: str, trailing: str | None = None) -> list[Command]:
        return self.lines(self.numeric(code, *params, trailing=trailing))

    def need(self, msg: IrcMessage, count: int) -> list[Command] | None:
        """461 if ``msg`` has fewer than ``count`` parameters, else None."""
        if len(msg.params) >= count:
            return None
        return self.reply("461", msg.command, trailing="Not enough parameters")

    # ------------------------------------------------------------------ registration

    def register(self) -> list[Command]:
        if self.wanted is None or not self.user or self.negotiating or self.hello_sent:
            return []
        self.hello_sent = True
        password = self.password if self.password_required else None
        account = account_password = None
        if self.password is not None and not self.password_required:
            # No server password: PASS is the account's (ergo's "PASS account:password").
            account, _, account_password = self.password.rpartition(":")
        return [
            Hello(
                self.wanted,
                password=password,
                account=account or None,
                account_password=account_password,
                user=self.username,
                realname=self.realname,
                rid=Ctx("NICK", self.wanted),
            )
        ]

    def pass_cmd(self, msg: IrcMessage) -> list[Command]:
        if self.nick is not None:
            return self.reply("462", trailing="You may not reregister")
        if (missing := self.need(msg, 1)) is not None:
            return missing
        self.password = msg.params[0]
        return []

    def user_cmd(self, msg: IrcMessage) -> list[Command]:
        if self.nick is not None or self.user:
            return self.reply("462", trailing="You may not reregister")
        if (missing := self.need(msg, 4)) is not None:
            return missing
        # USER <username> 0 * :<realname>; neither may be empty (Modern IRC: 461). A
        # line that is not UTF-8 was read as CP1252 by the parser, so "\xe9ric" is "éric".
        username, realname = msg.params[0], msg.params[3].strip()
        if not username or not realname:
            return self.reply("461", "USER", trailing="Not enough parameters")
        self.user = True
        self.username = clean_username(username)  # "" when nothing was usable: the nick
        self.realname = strip_formatting(realname)  # the hub cleans and cuts it
        return self.register()

    def nick_cmd(self, msg: IrcMessage) -> list[Command]:
        if not msg.params or not msg.params[0]:
            return self.reply("431", trailing="No nickname given")
        nick = msg.params[0]
        if self.nick is not None:
            return [Nick(nick, rid=Ctx("NICK", nick))]
        self.wanted = nick
        return self.register()

    def cap_cmd(self, msg: IrcMessage) -> list[Command]:
        if (missing := self.need(msg, 1)) is not None:
            return missing
        sub = msg.params[0].upper()
        if sub == "LS":
            self.negotiating = self.nick is None
            return self.lines(self._cap_line("LS", " ".join(CAPABILITIES)))
        if sub == "LIST":
            return self.lines(self._cap_line("LIST", " ".join(sorted(self.caps))))
        if sub == "REQ":
            self.negotiating = self.nick is None
            asked = msg.params[1] if len(msg.params) > 1 else ""
            wanted = asked.split()
            if not wanted or any(cap.lstrip("-") not in CAPABILITIES for cap in wanted):
                return self.lines(self._cap_line("NAK", asked))
            caps = set(self.caps)
            for cap in wanted:
                if cap.startswith("-"):
                    caps.discard(cap[1:])
                else:
                    caps.add(cap)
            self.caps = frozenset(caps)
            return self.lines(self._cap_line("ACK", asked))
        if sub == "END":
            self.negotiating = False
            return self.register() if self.nick is None else []
        return self.reply("410", msg.params[0][:20], trailing="Invalid CAP command")

    def _cap_line(self, sub: str, caps: str) -> str:
        return format_line("CAP", self.me, sub, trailing=caps, source=self.server)
