"""IRC commands -> hub commands.

``PRIVMSG #room`` becomes ``Say``, ``PRIVMSG nick`` ``PrivMsg``, ``NAMES``/``WHO #room``
``Who`` … Each carries a request id :class:`~chatd.codecs.irc_session.Ctx` (IRC command,
target); the hub copies it onto the reply or error, which is how the rendering knows an
``Error(no_such_nick)`` answers a ``WHOIS``. What only IRC has (MODE queries, PING,
421/461 …) is answered here, through ``Echo`` of pre-rendered lines.
"""

from __future__ import annotations

from collections.abc import Callable

from chatd.codecs import irc_accounts, irc_moderation
from chatd.codecs.irc_render import motd_lines
from chatd.codecs.irc_session import (
    REGISTRATION,
    Ctx,
    IrcLines,
    Session,
    strip_formatting,
)
from chatd.codecs.irc_wire import IrcMessage, format_line, parse_line
from chatd.model import (
    Away,
    Command,
    Echo,
    Join,
    Part,
    PrivMsg,
    Quit,
    Rooms,
    Say,
    Stats,
    Topic,
    Users,
    Who,
    Whois,
)
from chatd.names import fold

__all__ = ["decode"]


def decode(s: Session, line: bytes) -> list[Command]:
    """The hub commands (and ``Echo``-ed answers) for one IRC line."""
    msg = parse_line(line)
    if msg is None:
        return []
    handler = _HANDLERS.get(msg.command)
    if handler is None:
        return s.reply("421", msg.command[:32], trailing="Unknown command")
    if s.nick is None and msg.command not in REGISTRATION:
        return s.reply("451", trailing="You have not registered")
    return handler(s, msg)


def _targets(s: Session, msg: IrcMessage, param: int = 0) -> tuple[list[str], list[Command]]:
    """The comma-separated targets of ``msg.params[param]``, each once (ignoring case),
    and no refusal; or no targets and ``407`` if there are more than the command's
    TARGMAX: then nothing is done. Every target becomes one hub command, and each
    command costs one rate-limit token."""
    targets: dict[str, str] = {}
    for name in msg.params[param].split(","):
        if name:
            targets.setdefault(fold(name), name)
    limit = s.targmax[msg.command]
    if len(targets) <= limit:
        return list(targets.values()), []
    if msg.command == "NOTICE":
        return [], []  # never an automatic reply to a NOTICE
    extra = list(targets.values())[limit]
    text = f"Too many targets: at most {limit} for {msg.command}; nothing was done"
    return [], s.reply("407", extra, trailing=text)


def _ping(s: Session, msg: IrcMessage) -> list[Command]:
    # Answered here, not by the hub: clients' lag checks must not reset WHOIS idle.
    if not msg.params:
        return s.reply("409", trailing="No origin specified")
    return s.lines(format_line("PONG", s.server, trailing=msg.params[0], source=s.server))


def _quit(s: Session, msg: IrcMessage) -> list[Command]:
    reason = msg.params[0] if msg.params else ""
    goodbye = format_line("ERROR", trailing=f"Closing link: {s.me} (Quit: {reason})")
    return [Echo(IrcLines((goodbye,))), Quit(reason)]


def _join(s: Session, msg: IrcMessage) -> list[Command]:
    if (missing := s.need(msg, 1)) is not None:
        return missing
    if msg.params[0] == "0":  # JOIN 0: leave every room
        return [Part(room, "", rid=Ctx("PART", room)) for room in s.rooms.values()]
    # Keys (JOIN #a,#b k1,k2) go with the rooms in order (+k rooms). A room already
    # joined is left alone, as IRC servers do.
    rooms, refused = _targets(s, msg)
    if not rooms:
        return refused
    keys = msg.params[1].split(",") if len(msg.params) > 1 else []
    keyed = zip(rooms, keys + [""] * len(rooms), strict=False)
    return [
        Join(room, key=key or None, rid=Ctx("JOIN", room))
        for room, key in keyed
        if fold(room) not in s.rooms
    ]


def _part(s: Session, msg: IrcMessage) -> list[Command]:
    if (missing := s.need(msg, 1)) is not None:
        return missing
    reason = msg.params[1] if len(msg.params) > 1 else ""
    rooms, refused = _targets(s, msg)
    if not rooms:
        return refused
    return [Part(room, reason, rid=Ctx("PART", room)) for room in rooms]


def _privmsg(s: Session, msg: IrcMessage) -> list[Command]:
    notice = msg.command == "NOTICE"
    if not msg.params or not msg.params[0]:
        return [] if notice else s.reply("411", trailing="No recipient given (PRIVMSG)")
    if len(msg.params) < 2 or not msg.params[1]:
        return [] if notice else s.reply("412", trailing="No text to send")
    text, action = msg.params[1], False
    if text.startswith("\x01"):
        body = text.strip("\x01")
        if not body.upper().startswith("ACTION "):
            return []  # CTCP VERSION, PING, …: nobody here would answer
        text, action = body[7:], True
    text = strip_formatting(text)
    if fold(msg.params[0]) == fold(irc_accounts.NICKSERV):
        return irc_accounts.nickserv(s, text)
    targets, refused = _targets(s, msg)
    if not targets:
        return refused
    commands: list[Command] = []
    for target in targets:
        rid = Ctx(msg.command, target)
        if target.startswith("#"):
            commands.append(Say(target, text, action=action, notice=notice, rid=rid))
        else:
            commands.append(PrivMsg(target, text, notice=notice, action=action, rid=rid))
    return commands


def _topic(s: Session, msg: IrcMessage) -> list[Command]:
    if (missing := s.need(msg, 1)) is not None:
        return missing
    room = msg.params[0]
    topic = strip_formatting(msg.params[1]) if len(msg.params) > 1 else None
    return [Topic(room, topic, rid=Ctx("TOPIC", room))]


def _names(s: Session, msg: IrcMessage) -> list[Command]:
    if not msg.params:
        return s.reply("366", "*", trailing="End of /NAMES list")
    rooms, refused = _targets(s, msg)
    if not rooms:
        return refused
    return [Who(room, rid=Ctx("NAMES", room)) for room in rooms]


def _list(s: Session, msg: IrcMessage) -> list[Command]:
    return [Rooms(rid=Ctx("LIST", msg.params[0] if msg.params else ""))]


def _who(s: Session, msg: IrcMessage) -> list[Command]:
    # WHO #room: its members. WHO nick: that user. WHO with a mask (* ? ! @) or "0":
    # everybody visible (sharing a room with you, and you: everybody is +i) whose
    # nick!user@host matches; the rendering filters. "WHO x o": operators only: none.
    mask = msg.params[0] if msg.params and msg.params[0] else "*"
    if len(msg.params) > 1 and "o" in msg.params[1].split("%")[0]:  # not WHOX's o field
        return s.reply("315", mask, trailing="End of WHO list")
    if mask.startswith("#"):
        return [Who(mask, rid=Ctx("WHO", mask))]
    if mask == "0" or any(c in mask for c in "*?!@"):
        return [Users(rid=Ctx("WHO", mask))]
    return [Whois(mask, rid=Ctx("WHO", mask))]


def _lusers(s: Session, msg: IrcMessage) -> list[Command]:
    return [Stats(rid=Ctx("LUSERS"))]


def _whois(s: Session, msg: IrcMessage) -> list[Command]:
    if not msg.params:
        return s.reply("431", trailing="No nickname given")
    nicks, refused = _targets(s, msg, len(msg.params) - 1)  # WHOIS [server] nick
    if not nicks:
        return refused
    return [Whois(nick, rid=Ctx("WHOIS", nick)) for nick in nicks]


def _away(s: Session, msg: IrcMessage) -> list[Command]:
    return [Away(msg.params[0] if msg.params else None, rid=Ctx("AWAY"))]


def _motd(s: Session, msg: IrcMessage) -> list[Command]:
    return s.lines(*motd_lines(s))


def _nothing(s: Session, msg: IrcMessage) -> list[Command]:
    return []


_HANDLERS: dict[str, Callable[[Session, IrcMessage], list[Command]]] = {
    "CAP": Session.cap_cmd,
    "PASS": Session.pass_cmd,
    "NICK": Session.nick_cmd,
    "USER": Session.user_cmd,
    "PING": _ping,
    "PONG": _nothing,
    "QUIT": _quit,
    "JOIN": _join,
    "PART": _part,
    "PRIVMSG": _privmsg,
    "NOTICE": _privmsg,
    "TOPIC": _topic,
    "NAMES": _names,
    "LIST": _list,
    "WHO": _who,
    "WHOIS": _whois,
    "AWAY": _away,
    **irc_moderation.COMMANDS,  # KICK INVITE OPER KILL KLINE UNKLINE MODE
    "MOTD": _motd,
    "LUSERS": _lusers,
    "TAGMSG": _nothing,  # client tags: not relayed
    "AUTHENTICATE": irc_accounts.authenticate,
    "NICKSERV": irc_accounts.nickserv_command,
    "NS": irc_accounts.nickserv_command,
}
