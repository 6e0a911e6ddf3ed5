"""Text mode: for a person typing into ``nc`` or ``telnet``.

The first line is a nickname; after that plain lines are said to the current room and
``/commands`` do the rest. Output is one readable line per event (``[12:04] #lobby <bob>
hello``); errors start with ``!!!`` and server notes with ``***`` (docs/protocol.md).

Per-connection state is only the registration step: waiting for a nick, waiting for the
password (when the server has one), registered. It advances by observing the hub's
``Welcome`` and ``Error`` events for this connection. A wrong password keeps the nick and
asks for the password again: a line typed at the password prompt is only ever a password,
never a nick or a message (it would be shown to everybody).

Continuation lines of a multi-line message start with :data:`CONTINUATION`, a visible
marker no other output line starts with, so no text can pass for a message of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import assert_never, cast

from chatd.codecs import text_moderation
from chatd.codecs.base import Codec, decode_utf8
from chatd.model import (
    AccountEvent,
    AnyEvent,
    Away,
    AwayEvent,
    AwayNotice,
    AwayReply,
    BanListReply,
    Command,
    DropAccount,
    Echo,
    Error,
    ErrorCode,
    Event,
    Hello,
    History,
    HistoryEnd,
    HistoryReply,
    Identify,
    InviteEvent,
    Join,
    Joined,
    JoinEvent,
    KickEvent,
    Message,
    ModeEvent,
    ModLogReply,
    Nick,
    NickEvent,
    Notice,
    OperEvent,
    Part,
    PartEvent,
    Ping,
    Pong,
    PrivateMessage,
    PrivMsg,
    Probe,
    ProtocolError,
    Quit,
    QuitEvent,
    Register,
    Rooms,
    RoomsReply,
    Say,
    SetPassword,
    Shutdown,
    Skipped,
    StatsReply,
    Topic,
    TopicEvent,
    Welcome,
    Who,
    Whois,
    WhoisReply,
    WhoReply,
)
from chatd.names import LOBBY, valid_nick

__all__ = ["TextCodec", "HELP", "CONTINUATION"]

# Every output line that is not a continuation starts with "[", "*", "!", "#" or "-".
CONTINUATION = "    | "

HELP = """\
Commands (anything else you type is said to your current room):
  /join #room          join a room; it becomes your current room
  /part [#room] [why]  leave a room (default: the current one)
  /msg NICK text       private message
  /me text             action, shown as "* you text"
  /nick NAME           change your nickname
  /who [#room]         who is in a room
  /rooms               list rooms
  /topic [text]        show or set the current room's topic
  /history [N]         the last N messages of the current room
  /away [text]         set (or clear) an away message
  /whois NICK          about somebody
  /register PASSWORD   register your nick as an account (docs/accounts.md)
  /identify [NAME] PW  log in to your account (or account NAME)
  /passwd OLD NEW      change your account's password
  /unregister PASSWORD delete your account
  /ping                check the server is there
  /quit [reason]       leave
  //text               say "/text" literally"""


def _ranked(members: tuple[str, ...], prefixes: tuple[str, ...]) -> list[str]:
    """Nicks with their operator (@) or voice (+) mark."""
    return [p[:1] + m for m, p in zip(members, prefixes, strict=False)] or list(members)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M")


def _indent(text: str) -> str:
    """Continuation lines of a multi-line message start with a visible marker, so none
    can pose as a line of its own (``[12:04] #x <admin> …`` on a line of its own)."""
    return text.replace("\n", "\n" + CONTINUATION)


def _usage(text: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"usage: {text}")


def _split1(arg: str) -> tuple[str, str]:
    head, _, rest = arg.partition(" ")
    return head, rest.strip()


def _cmd_join(arg: str) -> list[Command]:
    if not arg:
        raise _usage("/join #room [key]")
    words = arg.split()
    return [Join(words[0], key=words[1] if len(words) > 1 else None)]


def _cmd_part(arg: str) -> list[Command]:
    if arg.startswith("#"):
        room, reason = _split1(arg)
        return [Part(room, reason)]
    return [Part(None, arg)]


def _cmd_msg(arg: str) -> list[Command]:
    nick, text = _split1(arg)
    if not nick or not text:
        raise _usage("/msg NICK text")
    return [PrivMsg(nick, text)]


def _cmd_me(arg: str) -> list[Command]:
    if not arg:
        raise _usage("/me text")
    return [Say(None, arg, action=True)]


def _cmd_nick(arg: str) -> list[Command]:
    if not arg:
        raise _usage("/nick NAME")
    return [Nick(arg.split()[0])]


def _cmd_topic(arg: str) -> list[Command]:
    if arg.startswith("#"):
        room, topic = _split1(arg)
        return [Topic(room, topic or None)]
    return [Topic(None, arg or None)]


def _cmd_history(arg: str) -> list[Command]:
    if not arg:
        return [History(None, limit=20)]
    if not arg.isdigit():
        raise _usage("/history [N]   (N a number)")
    return [History(None, limit=int(arg))]


def _cmd_whois(arg: str) -> list[Command]:
    if not arg:
        raise _usage("/whois NICK")
    return [Whois(arg.split()[0])]


def _cmd_register(arg: str) -> list[Command]:
    if not arg or " " in arg:
        raise _usage("/register PASSWORD   (one word)")
    return [Register(arg)]


def _cmd_identify(arg: str) -> list[Command]:
    words = arg.split()
    if len(words) == 1:
        return [Identify(None, words[0])]
    if len(words) == 2:
        return [Identify(words[0], words[1])]
    raise _usage("/identify [ACCOUNT] PASSWORD")


def _cmd_passwd(arg: str) -> list[Command]:
    words = arg.split()
    if len(words) != 2:
        raise _usage("/passwd OLD NEW")
    return [SetPassword(words[0], words[1])]


def _cmd_unregister(arg: str) -> list[Command]:
    if not arg or " " in arg:
        raise _usage("/unregister PASSWORD")
    return [DropAccount(arg)]


_COMMANDS: dict[str, Callable[[str], list[Command]]] = {
    "join": _cmd_join,
    "j": _cmd_join,
    "part": _cmd_part,
    "leave": _cmd_part,
    "msg": _cmd_msg,
    "query": _cmd_msg,
    "me": _cmd_me,
    "nick": _cmd_nick,
    "who": lambda arg: [Who(arg.split()[0] if arg else None)],
    "names": lambda arg: [Who(arg.split()[0] if arg else None)],
    "rooms": lambda arg: [Rooms()],
    "list": lambda arg: [Rooms()],
    "topic": _cmd_topic,
    "history": _cmd_history,
    "away": lambda arg: [Away(arg or None)],
    "whois": _cmd_whois,
    "ping": lambda arg: [Ping(arg)],
    "quit": lambda arg: [Quit(arg)],
    "exit": lambda arg: [Quit(arg)],
    "help": lambda arg: [Echo(Notice(HELP + "\n" + text_moderation.HELP))],
    "register": _cmd_register,
    "identify": _cmd_identify,
    "passwd": _cmd_passwd,
    "unregister": _cmd_unregister,
    **text_moderation.COMMANDS,  # /kick /ban /mute /op /mode /invite … (docs/moderation.md)
}


def _render(event: AnyEvent) -> str:  # noqa: C901 (one case per event: the match must stay exhaustive for assert_never)
    """One event as the lines a person reads (without the final newline)."""
    match event:
        case Message(room=room, sender=sender, text=text, ts=ts, action=action, history=history):
            mark = " (earlier)" if history else ""
            if action:
                return f"[{_clock(ts)}] {room}{mark} * {sender} {_indent(text)}"
            return f"[{_clock(ts)}] {room}{mark} <{sender}> {_indent(text)}"
        case PrivateMessage(sender=sender, to=to, text=text, ts=ts, notice=notice, action=action):
            kind = "notice" if notice else "msg"
            if action:
                return f"[{_clock(ts)}] [{kind}] {sender} -> {to}: * {sender} {_indent(text)}"
            return f"[{_clock(ts)}] [{kind}] <{sender} -> {to}> {_indent(text)}"
        case JoinEvent(room=room, nick=nick):
            return f"{room} -- {nick} joined"
        case PartEvent(room=room, nick=nick, reason=reason):
            return f"{room} -- {nick} left" + (f" ({reason})" if reason else "")
        case QuitEvent(nick=nick, reason=reason):
            return f"-- {nick} quit" + (f" ({reason})" if reason else "")
        case NickEvent(old=old, new=new):
            return f"-- {old} is now known as {new}"
        case TopicEvent(room=room, topic=topic, by=by):
            if by:
                return f"{room} -- {by} set the topic: {topic}"
            return f"*** Topic of {room}: {topic or '(none)'}"
        case Welcome(nick=nick, server=server, motd=motd, resumed=True):
            return f"*** Welcome back, {nick}: your session was kept (rooms follow)."
        case Welcome(nick=nick, server=server, motd=motd):
            lines = [f"*** Welcome to {server}, {nick}! Type /help for commands."]
            if event.account:
                lines.append(f"*** You are logged in as {event.account}.")
            lines += [f"*** {line}" for line in motd]
            return "\n".join(lines)
        case Joined(room=room, topic=topic, members=members):
            count = len(members)
            who = ", ".join(_ranked(members, event.prefixes))
            line = f"*** You joined {room} ({count} member{'s' * (count != 1)}: {who})."
            return line + (f" Topic: {topic}" if topic else "")
        case WhoReply(room=room, members=members):
            return f"*** {room} ({len(members)}): {', '.join(_ranked(members, event.prefixes))}"
        case RoomsReply(rooms=rooms, more=more):
            if not rooms:
                return "*** No rooms yet: /join #something to make one."
            lines = [
                f"*** {r.room} ({r.members})" + (f" {r.topic}" if r.topic else "") for r in rooms
            ]
            if more:
                lines.append(f"*** ...and {more} more room{'s' * (more != 1)}, not listed.")
            return "\n".join(lines)
        case Pong():
            return "*** pong"
        case Error(code=code, message=message):
            return f"!!! {code}: {message}"
        case Skipped(count=count):
            return (
                f"*** You were reading too slowly: {count} message{'s' * (count != 1)} "
                f"skipped. /history shows them."
            )
        case Shutdown(reason=reason):
            return f"*** Server shutting down: {reason}"
        case AwayNotice(nick=nick, message=message):
            return f"*** {nick} is away: {message}"
        case Notice(text=text):
            return "\n".join(f"*** {line}" for line in text.split("\n"))
        case HistoryReply(room=room, messages=messages, more=more, start=start):
            pruned = (
                f"*** Older messages in {room} were removed by the server's retention policy."
                if start is not None
                else ""
            )
            if not messages:
                return pruned or f"*** No earlier messages in {room}."
            lines = [_render(m) for m in messages]
            if more:
                lines.insert(0, f"*** Only the last {len(messages)} fit in one reply.")
            if pruned:
                lines.insert(0, pruned)
            return "\n".join(lines)
        case HistoryEnd() | Probe() | AwayEvent():  # AwayEvent: /whois tells, on demand
            return ""
        case WhoisReply(nick=nick, rooms=rooms, away=away):
            line = f"*** {nick} is in {', '.join(rooms) or 'no rooms'}"
            line += f"; logged in as {event.account}" if event.account else ""
            line += "; a server operator" if event.oper else ""
            line += f"; from {event.address}" if event.address else ""
            return line + (f"; away: {away}" if away else "")
        case AwayReply(away=away):
            return "*** You are marked as away." if away else "*** You are back."
        case AccountEvent(account=account, what=what):
            return {
                "registered": f"*** Account {account} registered; you are logged in.",
                "identified": f"*** You are logged in as {account}.",
                "password_changed": f"*** Password of {account} changed.",
                "dropped": "*** Your account is deleted; you are logged out.",
            }.get(what, f"*** account: {what}")
        case StatsReply(users=users, rooms=rooms):  # no command asks for it yet
            return f"*** {users} users in {rooms} rooms"
        case (
            KickEvent() | ModeEvent() | BanListReply() | InviteEvent() | OperEvent() | ModLogReply()
        ):
            return text_moderation.render(event)
    assert_never(event)


class TextCodec(Codec):
    name = "text"
    cache_key = "text"

    def __init__(self, password_required: bool = False) -> None:
        self._password_required = password_required
        self._registered = False
        self._nick_for_password: str | None = None
        # A registered nick was refused: the next line is its account password.
        self._asked: tuple[str, str | None] | None = None  # (nick, server password)
        self._nick_for_login: tuple[str, str | None] | None = None

    def decode(self, line: bytes) -> list[Command]:
        text = decode_utf8(line).strip()
        if not text:
            return []
        if not self._registered:
            return self._decode_registration(text)
        if text.startswith("//"):
            return [Say(None, text[1:])]
        if text.startswith("/"):
            name, arg = _split1(text[1:])
            handler = _COMMANDS.get(name.lower())
            if handler is None:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_OP, f"unknown command /{name[:30]}; type /help"
                )
            return handler(arg)
        return [Say(None, text)]

    def _decode_registration(self, text: str) -> list[Command]:
        if self._nick_for_login is not None:
            (nick, password), self._nick_for_login = self._nick_for_login, None
            if not text.startswith("/"):  # a /command (/nick other, /quit) cancels
                self._asked = (nick, password)
                return [Hello(nick, password=password, account_password=text, autojoin=(LOBBY,))]
        if self._nick_for_password is not None:
            # The password prompt: this line is the password, whatever it looks like. The
            # nick stays until the hub welcomes us or refuses the nick (see observe).
            self._asked = (self._nick_for_password, text)
            return [Hello(self._nick_for_password, password=text, autojoin=(LOBBY,))]
        if text.startswith("/"):
            name, arg = _split1(text[1:])
            name = name.lower()
            if name in ("quit", "exit", "help"):
                return _COMMANDS[name](arg)
            if name != "nick" or not arg:
                raise ProtocolError(
                    ErrorCode.NOT_REGISTERED, "first type the nickname you want (or /nick NAME)"
                )
            text = arg
        nick = text.split()[0]
        if self._password_required:
            if not valid_nick(nick):  # say so now, not after the password
                shown = nick[:40].encode("unicode_escape").decode()
                raise ProtocolError(ErrorCode.BAD_NICK, f'"{shown}" is not a valid nick')
            self._nick_for_password = nick
            return [Echo(Notice("This server has a password: type it on the next line."))]
        self._asked = (nick, None)
        return [Hello(nick, autojoin=(LOBBY,))]

    def observe(self, event: Event) -> None:
        if isinstance(event, Welcome):
            self._registered = True
            self._nick_for_password = None
        elif (
            isinstance(event, Error)
            and not self._registered
            and event.code != ErrorCode.BAD_PASSWORD
        ):
            self._nick_for_password = None  # the nick was refused: ask for another
            login_codes = (ErrorCode.NICK_REGISTERED, ErrorCode.BAD_LOGIN, ErrorCode.THROTTLED)
            if event.code in login_codes and self._asked is not None:
                self._nick_for_login = self._asked  # ask for the account's password

    def encode(self, event: Event, rid: object = None) -> bytes:
        text = _render(cast(AnyEvent, event))  # the open base -> the closed union
        if isinstance(event, Error) and not self._registered:
            text += self._next_step(event.code)
        return (text + "\n").encode() if text else b""

    def _next_step(self, code: str) -> str:
        """During registration, what the next line must be (after observe has run)."""
        if self._nick_for_login is not None:  # (an error goes to this connection alone)
            return (
                f"\n*** Type the password of account {self._nick_for_login[0]} on the next "
                "line (it is not shown to anyone), or /nick ANOTHER."
            )
        if code == ErrorCode.BAD_PASSWORD and self._nick_for_password is not None:
            return f"\n*** Type the password for {self._nick_for_password} on the next line."
        if code in (ErrorCode.BAD_NICK, ErrorCode.NICK_TAKEN):
            return "\n*** Type the nickname you want on the next line."
        return ""
