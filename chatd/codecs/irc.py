"""IRC mode: irssi, WeeChat, HexChat and friends join the same rooms as everybody else.

A third codec over the same hub, on its own listening socket (``--irc-port``). The
grammar is RFC 1459/2812 as the IRCv3 "Modern IRC" document describes it, with message
tags; docs/irc.md says what is supported and what is not. The codec is four small parts:

- :mod:`chatd.codecs.irc_wire`: the line grammar (parse, format, split a text);
- :mod:`chatd.codecs.irc_session`: one connection's state, registration and CAP;
- :mod:`chatd.codecs.irc_commands`: IRC commands -> hub commands (or the codec's own
  answers, sent back through ``Echo``);
- :mod:`chatd.codecs.irc_render`: hub events -> IRC lines, errors through one table.

Per-connection state that changes the bytes of shared events (negotiated caps) is in
:attr:`IrcCodec.cache_key`, so fan-out stays correct; the own nick is not (what depends
on it only ever goes to this connection).

Input: UTF-8; a line that is not valid UTF-8 is read as CP1252 (what most non-UTF-8 IRC
clients send), so nobody is cut off for a stray byte. IRC formatting codes (bold,
colours …) are removed from texts before they reach the hub, which would otherwise show
them as U+FFFD to everybody; CTCP other than ACTION is dropped.
"""

from __future__ import annotations

from typing import cast

from chatd.codecs.base import Codec
from chatd.codecs.irc_commands import decode
from chatd.codecs.irc_render import render
from chatd.codecs.irc_session import CAPABILITIES, Ctx, IrcLines, Session
from chatd.codecs.irc_wire import IrcMessage, format_line, parse_line, split_text
from chatd.model import AnyEvent, Command, Event

__all__ = [
    "IrcCodec",
    "IrcLines",
    "IrcMessage",
    "parse_line",
    "format_line",
    "split_text",
    "CAPABILITIES",
]


class IrcCodec(Codec):
    """One IRC connection.

    Args:
        server_name: what clients see as the server (numerics' source, 002, 004).
        password_required: the server has a password (PASS is forwarded to the hub).
        max_rooms: rooms per client (``CHANLIMIT``, and the most JOIN targets per line).
    """

    name = "irc"
    pings_peer = True

    def __init__(
        self, server_name: str = "chatd", *, password_required: bool = False, max_rooms: int = 50
    ) -> None:
        self._session = Session(server_name, password_required, max_rooms)
        self.cache_key = self._session.cache_key

    @property
    def nick(self) -> str | None:
        return self._session.nick

    @property
    def caps(self) -> frozenset[str]:
        return self._session.caps

    def decode(self, line: bytes) -> list[Command]:
        commands = decode(self._session, line)
        self.cache_key = self._session.cache_key  # CAP REQ may have changed it
        return commands

    def observe(self, event: Event) -> None:
        self._session.observe(event)

    def encode(self, event: Event, rid: object = None) -> bytes:
        closed = cast("AnyEvent | IrcLines", event)  # the open base -> the closed union
        lines = render(self._session, closed, rid if isinstance(rid, Ctx) else None)
        return "".join(line + "\r\n" for line in lines).encode()
