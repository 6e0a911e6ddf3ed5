"""IRC's side of moderation (docs/moderation.md): KICK, INVITE, OPER, KILL, KLINE,
UNKLINE, channel and user MODE, and the lines for the moderation events.

Numerics as the Modern IRC documents give them: 221 (RPL_UMODEIS), 313
(RPL_WHOISOPERATOR), 324 (RPL_CHANNELMODEIS), 338 (RPL_WHOISACTUALLY), 341
(RPL_INVITING), 367/368 (ban list), 381 (RPL_YOUREOPER), 441, 443, 472, 473, 474, 475,
481, 482, 491, 501, 502; the quiet list as solanum sends it (728/729); errors through
``irc_render.ERROR_NUMERICS``.
"""

from __future__ import annotations

from chatd.codecs.irc_session import Ctx, Session, mask
from chatd.codecs.irc_wire import IrcMessage, format_line
from chatd.model import (
    Ban,
    BanListReply,
    Command,
    ErrorCode,
    Invite,
    InviteEvent,
    Kick,
    KickEvent,
    Kill,
    Mode,
    ModeEvent,
    ModLogReply,
    Oper,
    OperEvent,
    Unban,
)
from chatd.moderation import MAX_MODES, parse_duration
from chatd.names import fold

__all__ = ["COMMANDS", "render", "error_lines", "CHANNEL_MODES", "PARAM_MODES", "CHANMODES"]

#: 004's channel modes, and those of them that take a parameter; ISUPPORT CHANMODES
#: (lists, always a parameter, a parameter when set, flags) and PREFIX.
CHANNEL_MODES = "bikmnoqtv"
PARAM_MODES = "bkoqv"
CHANMODES = "bq,k,,imnt"
PREFIX = "(ov)@+"
_LISTS = {"e": ("349", "exception"), "I": ("347", "invite")}  # none: empty lists


def _kick(s: Session, msg: IrcMessage) -> list[Command]:
    if (missing := s.need(msg, 2)) is not None:
        return missing
    room, reason = msg.params[0], msg.params[2] if len(msg.params) > 2 else ""
    nicks = [n for n in msg.params[1].split(",") if n][:MAX_MODES]
    return [Kick(room, nick, reason, rid=Ctx("KICK", f"{nick} {room}")) for nick in nicks]


def _invite(s: Session, msg: IrcMessage) -> list[Command]:
    if (missing := s.need(msg, 2)) is not None:
        return missing
    nick, room = msg.params[0], msg.params[1]
    return [Invite(nick, room, rid=Ctx("INVITE", f"{nick} {room}"))]


def _oper(s: Session, msg: IrcMessage) -> list[Command]:
    if (missing := s.need(msg, 2)) is not None:
        return missing
    return [Oper(msg.params[0], msg.params[1], rid=Ctx("OPER"))]


def _kill(s: Session, msg: IrcMessage) -> list[Command]:
    if (missing := s.need(msg, 1)) is not None:
        return missing
    reason = msg.params[1] if len(msg.params) > 1 else ""
    return [Kill(msg.params[0], reason, rid=Ctx("KILL", msg.params[0]))]


def _kline(s: Session, msg: IrcMessage) -> list[Command]:
    # KLINE [duration] <mask> [:reason] (ergo's form, without ANDKILL/MYSELF: a server
    # ban always disconnects who it matches, but never the operator setting it)
    params = list(msg.params)
    duration = parse_duration(params[0]) if len(params) > 1 else None
    if duration is not None:
        params.pop(0)
    if not params:
        return s.reply("461", "KLINE", trailing="Not enough parameters")
    reason = params[1] if len(params) > 1 else ""
    return [Ban(None, params[0], duration, reason, server=True, rid=Ctx("KLINE", params[0]))]


def _unkline(s: Session, msg: IrcMessage) -> list[Command]:
    if (missing := s.need(msg, 1)) is not None:
        return missing
    return [Unban(None, msg.params[0], server=True, rid=Ctx("UNKLINE", msg.params[0]))]


def _mode(s: Session, msg: IrcMessage) -> list[Command]:
    if (missing := s.need(msg, 1)) is not None:
        return missing
    target = msg.params[0]
    modes = msg.params[1] if len(msg.params) > 1 else ""
    args = msg.params[2:]
    rid = Ctx("MODE", target)
    if not target.startswith("#"):
        if fold(target) != fold(s.me):
            return s.reply("502", trailing="Can't change mode for other users")
        if modes and modes.strip("+i") == "":
            return []  # irssi's automatic "MODE me +i": everybody is +i already
        if modes and modes != "-o":  # -o: stop being a server operator
            return s.reply("501", trailing="Unknown MODE flag")
        return [Mode(target, modes, rid=rid)]
    for letter in modes:
        if letter not in "+-" + CHANNEL_MODES + "".join(_LISTS):
            return s.reply("472", letter, trailing="is unknown mode char to me")
    bare = modes.strip("+")
    if bare in _LISTS and not args:
        code, what = _LISTS[bare]
        return s.reply(code, target, trailing=f"End of channel {what} list")
    return [Mode(target, modes, tuple(args), rid=rid)]


COMMANDS = {
    "KICK": _kick,
    "INVITE": _invite,
    "OPER": _oper,
    "KILL": _kill,
    "KLINE": _kline,
    "UNKLINE": _unkline,
    "MODE": _mode,
}


def render(
    s: Session,
    event: KickEvent | ModeEvent | BanListReply | InviteEvent | OperEvent | ModLogReply,
    notice: object,
) -> list[str]:
    """``notice``: irc_render's server-notice function (text -> lines)."""
    num = s.numeric
    match event:
        case KickEvent(room=room, nick=nick, by=by, reason=reason):
            return [format_line("KICK", room, nick, trailing=reason or by, source=mask(by))]
        case ModeEvent(target=target, by="", modes=modes, args=args):
            if target.startswith("#"):
                return [num("324", target, modes, *args)]
            return [num("221", modes)]
        case ModeEvent(target=target, by=by, modes=modes, args=args):
            # (arguments are single words: nicks, masks and keys are checked by the hub)
            return [format_line("MODE", target, modes, *args, source=mask(by))]
        case BanListReply(room="*", bans=bans):
            lines = [
                f"K-line {b.mask} by {b.by}" + (f": {b.reason}" if b.reason else "") for b in bans
            ]
            return _notices(notice, lines or ["No server bans (K-lines)"])
        case BanListReply(room=room, bans=bans, quiet=True):
            lines = [num("728", room, "q", b.mask, b.by, str(int(b.set_at))) for b in bans]
            return lines + [num("729", room, "q", trailing="End of channel quiet list")]
        case BanListReply(room=room, bans=bans):
            lines = [num("367", room, b.mask, b.by, str(int(b.set_at))) for b in bans]
            return lines + [num("368", room, trailing="End of channel ban list")]
        case InviteEvent(room=room, nick=nick, by=by):
            if s.is_me(nick):
                return [format_line("INVITE", nick, trailing=room, source=mask(by))]
            return [num("341", nick, room)]
        case OperEvent():
            return [
                num("381", trailing="You are now an IRC operator"),
                format_line("MODE", s.me, trailing="+o", source=mask(s.me)),
            ]
        case ModLogReply(entries=entries):
            lines = [
                f"{e.by}: {e.action} {e.target}"
                + (f" in {e.room}" if e.room else "")
                + (f" ({e.reason})" if e.reason else "")
                for e in entries
            ]
            return _notices(notice, lines or ["The moderation log is empty"])


def _notices(notice: object, lines: list[str]) -> list[str]:
    assert callable(notice)
    out: list[str] = []
    for line in lines:
        out += notice(line)
    return out


#: Errors of KICK and INVITE name a nick and a channel (Ctx target "nick #chan").
_TWO_PARAMS: dict[str, tuple[str, str]] = {
    ErrorCode.NOT_IN_THAT_ROOM: ("441", "They aren't on that channel"),
    ErrorCode.ALREADY_IN_ROOM: ("443", "is already on channel"),
}


def error_lines(s: Session, code: str, message: str, ctx: Ctx) -> list[str] | None:
    """The numeric for an error of KICK or INVITE (None: the general table's)."""
    if ctx.command not in ("KICK", "INVITE"):
        return None
    nick, _, room = ctx.target.partition(" ")
    if code in _TWO_PARAMS:
        number, text = _TWO_PARAMS[code]
        return [s.numeric(number, nick, room, trailing=text)]
    if code == ErrorCode.NO_SUCH_NICK:
        return [s.numeric("401", nick, trailing="No such nick/channel")]
    if code in (ErrorCode.NOT_OPERATOR, ErrorCode.NOT_IN_ROOM, ErrorCode.NO_SUCH_ROOM):
        number = {"not_operator": "482", "not_in_room": "442"}.get(code, "403")
        return [s.numeric(number, room or "*", trailing=message)]
    return None
