"""Hub events -> IRC lines.

Output obeys the 512-byte line limit (tags excluded, as IRCv3 says): message texts are
split into several PRIVMSGs at word or character boundaries, never silently cut; a
multi-line text (a paste from another protocol) becomes one PRIVMSG per line. One-line
fields that cannot be split (a 300-character topic in a script with 4-byte characters)
are shortened to fit, at a character boundary.

Errors become numerics through one table (:data:`ERROR_NUMERICS`), keyed by the error
code and the IRC command the error answers.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import UTC, datetime
from typing import NamedTuple, assert_never

from chatd import __version__
from chatd.codecs import irc_accounts, irc_moderation
from chatd.codecs.irc_moderation import CHANNEL_MODES, PARAM_MODES
from chatd.codecs.irc_session import (
    HOST,
    MAX_TARGETS,
    USER_MODES,
    USERLEN,
    Ctx,
    IrcLines,
    Session,
    mask,
)
from chatd.codecs.irc_wire import MAX_LINE_BYTES, format_line, split_text
from chatd.hub import MAX_REASON_CHARS, MAX_TOPIC_CHARS
from chatd.model import (
    AccountEvent,
    AnyEvent,
    AwayEvent,
    AwayNotice,
    AwayReply,
    BanListReply,
    Error,
    ErrorCode,
    HistoryEnd,
    HistoryReply,
    InviteEvent,
    Joined,
    JoinEvent,
    KickEvent,
    MemberInfo,
    Message,
    ModeEvent,
    ModLogReply,
    NickEvent,
    Notice,
    OperEvent,
    PartEvent,
    Pong,
    PrivateMessage,
    Probe,
    QuitEvent,
    RoomsReply,
    Shutdown,
    Skipped,
    StatsReply,
    TopicEvent,
    Welcome,
    WhoisReply,
    WhoReply,
)
from chatd.moderation import MAX_MODES
from chatd.names import NICK_MAX, ROOM_MAX, fold

__all__ = ["render", "motd_lines", "isupport", "ERROR_NUMERICS"]


class Numeric(NamedTuple):
    """How an error is shown: ``code``, with the target as first parameter or not, and
    a fixed text (None: the hub's own message)."""

    code: str
    with_target: bool = True
    text: str | None = None


_END_WHO = Numeric("315", text="End of /WHO list")
_END_NAMES = Numeric("366", text="End of /NAMES list")

#: (error code, IRC command) -> numeric; command "" is the default for that code.
ERROR_NUMERICS: dict[tuple[str, str], Numeric] = {
    (ErrorCode.NICK_TAKEN, ""): Numeric("433"),
    (ErrorCode.BAD_NICK, ""): Numeric("432"),
    (ErrorCode.BAD_PASSWORD, ""): Numeric("464", with_target=False),
    (ErrorCode.ALREADY_REGISTERED, ""): Numeric("462", with_target=False),
    (ErrorCode.NOT_REGISTERED, ""): Numeric("451", with_target=False),
    # accounts (docs/accounts.md); SASL and NickServ errors: irc_accounts
    (ErrorCode.NICK_REGISTERED, ""): Numeric("433"),
    (ErrorCode.NICK_HELD, ""): Numeric("401"),
    (ErrorCode.BAD_LOGIN, ""): Numeric("464", with_target=False),
    (ErrorCode.THROTTLED, ""): Numeric("464", with_target=False),
    (ErrorCode.ACCOUNT_REQUIRED, ""): Numeric("464", with_target=False),
    (ErrorCode.ACCOUNTS_BUSY, ""): Numeric("433"),
    # WHO and NAMES of nobody or nothing: an empty list, not an error
    (ErrorCode.NO_SUCH_NICK, "WHO"): _END_WHO,
    (ErrorCode.NO_SUCH_ROOM, "WHO"): _END_WHO,
    (ErrorCode.BAD_ROOM, "WHO"): _END_WHO,
    (ErrorCode.NO_SUCH_ROOM, "NAMES"): _END_NAMES,
    (ErrorCode.BAD_ROOM, "NAMES"): _END_NAMES,
    (ErrorCode.NO_SUCH_NICK, ""): Numeric("401", text="No such nick/channel"),
    (ErrorCode.NO_SUCH_ROOM, ""): Numeric("403"),
    (ErrorCode.BAD_ROOM, ""): Numeric("403"),
    (ErrorCode.NOT_IN_ROOM, "PRIVMSG"): Numeric(
        "404", text="Cannot send to channel: join it first"
    ),
    (ErrorCode.NOT_IN_ROOM, ""): Numeric("442", text="You're not on that channel"),
    (ErrorCode.TEXT_TOO_LONG, ""): Numeric("417", with_target=False),
    (ErrorCode.LINE_TOO_LONG, ""): Numeric("417", with_target=False),
    (ErrorCode.BAD_REQUEST, "JOIN"): Numeric("405"),
    (ErrorCode.BAD_REQUEST, "PRIVMSG"): Numeric("412", with_target=False),
    # moderation (chatd/codecs/irc_moderation.py; KICK and INVITE: its error_lines)
    (ErrorCode.NOT_OPERATOR, ""): Numeric("482"),
    (ErrorCode.NOT_SERVER_OPERATOR, ""): Numeric(
        "481", with_target=False, text="Permission Denied- You're not an IRC operator"
    ),
    (ErrorCode.NOT_SERVER_OPERATOR, "OPER"): Numeric(
        "491", with_target=False, text="No O-lines for your host"
    ),
    (ErrorCode.BAD_PASSWORD, "OPER"): Numeric("464", with_target=False, text="Password incorrect"),
    (ErrorCode.BANNED, ""): Numeric("465", with_target=False),
    (ErrorCode.BANNED, "JOIN"): Numeric("474"),
    (ErrorCode.INVITE_ONLY, ""): Numeric("473"),
    (ErrorCode.BAD_KEY, ""): Numeric("475"),
    (ErrorCode.MUTED, ""): Numeric("404"),
    (ErrorCode.CANNOT_SEND, ""): Numeric("404"),
    (ErrorCode.BAD_MODE, ""): Numeric("472"),
    (ErrorCode.NOT_IN_THAT_ROOM, ""): Numeric("441"),
    (ErrorCode.ALREADY_IN_ROOM, ""): Numeric("443"),
}
#: Numerics that close a reply (WHOIS of nobody: 401 then 318).
_FOLLOWED_BY = {("401", "WHOIS"): Numeric("318", text="End of /WHOIS list")}
#: Errors that end the connection: IRC's ERROR line.
_CLOSING = frozenset(
    {ErrorCode.TIMEOUT, ErrorCode.SLOW_CONSUMER, ErrorCode.SERVER_FULL, ErrorCode.KILLED}
)


def _iso(ts: float) -> str:
    # isoformat is twice as fast as strftime, and this runs per message per recipient.
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def render(s: Session, event: AnyEvent | IrcLines, ctx: Ctx | None) -> list[str]:  # noqa: C901
    # (one case per event: the match must stay exhaustive for assert_never)
    """The lines that tell this connection ``event`` (``ctx``: the command it answers)."""
    num = s.numeric
    match event:
        case Message():
            return _message(s, event, own=ctx is not None)
        case PrivateMessage():
            return _private(s, event)
        case JoinEvent(room=room, nick=nick):
            return [format_line("JOIN", room, source=mask(nick))]
        case PartEvent(room=room, nick=nick, reason=reason):
            return [format_line("PART", room, trailing=reason or None, source=mask(nick))]
        case QuitEvent(nick=nick, reason=reason):
            text = f"Quit: {reason}" if reason else "Quit"
            return [format_line("QUIT", trailing=text, source=mask(nick))]
        case NickEvent(old=old, new=new):
            return [format_line("NICK", trailing=new, source=mask(old))]
        case TopicEvent(room=room, topic=topic, by=by) if by:
            return [format_line("TOPIC", room, trailing=topic, source=mask(by))]
        case TopicEvent(room=room, topic=topic):
            if topic:
                return [num("332", room, trailing=topic)]
            return [num("331", room, trailing="No topic is set")]
        case Joined(room=room, topic=topic, members=members):
            lines = [format_line("JOIN", room, source=mask(s.me))]
            if topic:
                lines.append(num("332", room, trailing=topic))
            return lines + _names_lines(s, room, members, event.prefixes)
        case WhoReply(room=room, members=members, details=details):
            if ctx is not None and ctx.command == "WHO":
                return _who_lines(s, room, details, ctx.target)
            return _names_lines(s, room, members, event.prefixes)
        case WhoisReply():
            return _whois_lines(s, event, ctx)
        case RoomsReply(rooms=rooms, more=more):
            wanted = {fold(r) for r in ctx.target.split(",") if r} if ctx else set()
            lines = [num("321", "Channel", trailing="Users  Name")]
            lines += [
                num("322", r.room, str(r.members), trailing=r.topic)
                for r in rooms
                if not wanted or fold(r.room) in wanted
            ]
            if more:  # cut at max_reply_bytes: say so before 323 (no numeric says it)
                lines += _server_notice(s, _list_cut(more, event.budget_bytes))
            return lines + [num("323", trailing="End of /LIST")]
        case StatsReply():
            return _lusers_lines(s, event)
        case AwayReply(away=away):
            if away:
                return [num("306", trailing="You have been marked as being away")]
            return [num("305", trailing="You are no longer marked as being away")]
        case Welcome(stats=stats):
            return _welcome_lines(s, stats)
        case Error(code=code, message=message):
            return _error_lines(s, code, message, ctx)
        case Notice(text=text):
            return _server_notice(s, text)
        case AwayNotice(nick=nick, message=message):
            return [num("301", nick, trailing=message)]
        case Skipped(count=count):
            return _server_notice(
                s, f"You read too slowly: {count} room message{'s' * (count != 1)} were skipped."
            )
        case HistoryEnd(room=room, count=count):
            if not count:
                return []
            text = (
                f"End of history: the {count} message{'s' * (count != 1)} above "
                f"{'were' if count != 1 else 'was'} sent before you joined."
            )
            return [format_line("NOTICE", room, source=s.server, trailing=text)]
        case Probe():
            return [format_line("PING", trailing=s.server)]
        case Pong(token=token):
            return [format_line("PONG", s.server, trailing=token or s.server, source=s.server)]
        case Shutdown(reason=reason):
            return [format_line("ERROR", trailing=f"Closing link: {reason}")]
        case IrcLines(lines=lines):
            return list(lines)
        case HistoryReply():
            return []  # IRC has no command that asks for it (no CHATHISTORY yet)
        case AccountEvent():
            return irc_accounts.render_account(s, event, ctx)
        case KickEvent() | ModeEvent() | BanListReply() | InviteEvent() | OperEvent():
            return irc_moderation.render(s, event, lambda text: _server_notice(s, text))
        case ModLogReply():
            return irc_moderation.render(s, event, lambda text: _server_notice(s, text))
        case AwayEvent():
            return []  # IRCv3's away-notify needs a CAP the server does not offer
    assert_never(event)


def _tags(
    s: Session, ts: float, mid: int | None = None, account: str | None = None
) -> dict[str, str] | None:
    tags = {}
    if "server-time" in s.caps:
        tags["time"] = _iso(ts)
    if account is not None and "account-tag" in s.caps:
        tags["account"] = account
    if mid is not None and "message-tags" in s.caps:
        tags["msgid"] = str(mid)
    return tags or None


def _texts(
    command: str,
    target: str,
    sender: str,
    text: str,
    action: bool,
    tags: dict[str, str] | None,
) -> list[str]:
    source = mask(sender)
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


def _message(s: Session, m: Message, own: bool) -> list[str]:
    # ``own`` comes from the request id: only the sender's own copy carries one. It must
    # not be guessed from the nick, because a room message's bytes are shared by every
    # IRC user with the same caps (see ``Session.cache_key``).
    if own and not m.history and "echo-message" not in s.caps:
        return []  # the client already shows what it sent
    text = m.text
    if m.history and "server-time" not in s.caps:
        # No timestamp tag to carry the age: put it in the text, dated.
        stamp = datetime.fromtimestamp(m.ts).strftime("%Y-%m-%d %H:%M")
        text = "\n".join(f"[{stamp}] {line}" for line in text.split("\n") if line.strip())
    command = "NOTICE" if m.notice else "PRIVMSG"
    tags = _tags(s, m.ts, m.mid, m.account)
    return _texts(command, m.room, m.sender, text, m.action, tags)


def _private(s: Session, m: PrivateMessage) -> list[str]:
    command = "NOTICE" if m.notice else "PRIVMSG"
    echo = s.is_me(m.sender) and not s.is_me(m.to)
    if echo and "echo-message" not in s.caps:
        return []
    return _texts(command, m.to, m.sender, m.text, m.action, _tags(s, m.ts, None, m.account))


def _list_cut(more: int, budget_bytes: int) -> str:
    """What LIST says when the rooms list was cut at the reply budget."""
    cut = f" (list cut at {budget_bytes / 1024:.4g} KiB)" if budget_bytes else ""
    return f"... and {more} more room{'s' * (more != 1)}{cut}"


def _server_notice(s: Session, text: str) -> list[str]:
    head = len(f":{s.server} NOTICE {s.me} :".encode())
    return [
        format_line("NOTICE", s.me, trailing=piece, source=s.server)
        for piece in split_text(text, MAX_LINE_BYTES - head)
    ]


def _rank(s: Session, prefix: str) -> str:
    """A member's prefix in NAMES and WHO: all of them with multi-prefix, else the highest."""
    return prefix if "multi-prefix" in s.caps else prefix[:1]


def _names_lines(
    s: Session, room: str, members: tuple[str, ...], prefixes: tuple[str, ...] = ()
) -> list[str]:
    head = len(f":{s.server} 353 {s.me} = {room} :".encode())
    if prefixes:
        members = tuple(_rank(s, p) + m for m, p in zip(members, prefixes, strict=False))
    lines = [
        s.numeric("353", "=", room, trailing=chunk)
        for chunk in split_text(" ".join(members), MAX_LINE_BYTES - head)
    ]
    return lines + [s.numeric("366", room, trailing="End of /NAMES list")]


def _who_line(s: Session, channel: str, who: MemberInfo) -> str:
    # 352 <client> <channel> <username> <host> <server> <nick> <flags> :<hopcount> <realname>
    flags = ("G" if who.away else "H") + ("*" if who.oper else "") + _rank(s, who.prefix)
    return s.numeric(
        "352", channel, who.user, HOST, s.server, who.nick, flags, trailing=f"0 {who.realname}"
    )


def _who_lines(s: Session, room: str, members: tuple[MemberInfo, ...], mask: str) -> list[str]:
    """352 per member (``room`` "*": everybody visible, filtered by ``mask``), then 315."""
    if room == "*" and mask not in ("*", "0"):
        # Masks are globs (* and ?) over the nick, or over nick!user@host when they name
        # a user or host part. Both sides are case-folded first, which also turns IRC's
        # [ ] into { }: fnmatch's character classes cannot occur. fnmatch's patterns do
        # not backtrack exponentially.
        full = "!" in mask or "@" in mask
        match = re.compile(fnmatch.translate(fold(mask))).match
        members = tuple(
            m
            for m in members
            if match(fold(f"{m.nick}!{m.user}@{HOST}" if full else m.nick)) is not None
        )
    lines = [_who_line(s, room, member) for member in members]
    return lines + [s.numeric("315", mask, trailing="End of /WHO list")]


def _lusers_lines(s: Session, stats: StatsReply) -> list[str]:
    # Everybody is +i (see USER_MODES), so all users are "invisible"; one server.
    num, users = s.numeric, stats.users
    return [
        num("251", trailing=f"There are 0 users and {users} invisible on 1 servers"),
        num("252", str(stats.operators), trailing="operator(s) online"),
        num("253", str(stats.unregistered), trailing="unknown connection(s)"),
        num("254", str(stats.rooms), trailing="channels formed"),
        num("255", trailing=f"I have {users + stats.unregistered} clients and 0 servers"),
        num("265", str(users), str(stats.max_users), trailing=_current(users, stats, "local")),
        num("266", str(users), str(stats.max_users), trailing=_current(users, stats, "global")),
    ]


def _current(users: int, stats: StatsReply, where: str) -> str:
    return f"Current {where} users {users}, max {stats.max_users}"


def _whois_lines(s: Session, w: WhoisReply, ctx: Ctx | None) -> list[str]:
    num = s.numeric
    user, realname = w.user or w.nick, w.realname or w.nick
    if ctx is not None and ctx.command == "WHO":
        who = MemberInfo(w.nick, user, realname, w.away is not None)
        return _who_lines(s, "*", (who,), ctx.target)
    lines = [num("311", w.nick, user, HOST, "*", trailing=realname)]
    if w.rooms:
        head = len(f":{s.server} 319 {s.me} {w.nick} :".encode())
        lines += [
            num("319", w.nick, trailing=chunk)
            for chunk in split_text(" ".join(w.rooms), MAX_LINE_BYTES - head)
        ]
    lines.append(num("312", w.nick, s.server, trailing=f"chatd {__version__}"))
    if w.oper:
        lines.append(num("313", w.nick, trailing="is an IRC operator"))
    if w.account:
        lines.append(num("330", w.nick, w.account, trailing="is logged in as"))
    if w.address:  # (to server operators only)
        lines.append(num("338", w.nick, w.address, trailing="Is actually using host"))
    if w.away:
        lines.append(num("301", w.nick, trailing=w.away))
    lines.append(num("317", w.nick, str(w.idle_seconds), trailing="seconds idle"))
    return lines + [num("318", w.nick, trailing="End of /WHOIS list")]


def isupport(s: Session) -> list[str]:
    """The ISUPPORT (005) tokens: what this server really does."""
    rooms = s.max_rooms
    return [
        "CASEMAPPING=rfc1459",
        "CHANTYPES=#",
        f"CHANNELLEN={ROOM_MAX + 1}",
        f"NICKLEN={NICK_MAX}",
        f"TOPICLEN={MAX_TOPIC_CHARS}",
        f"AWAYLEN={MAX_REASON_CHARS}",
        f"CHANLIMIT=#:{rooms}",
        f"PREFIX={irc_moderation.PREFIX}",
        f"CHANMODES={irc_moderation.CHANMODES}",
        f"MODES={MAX_MODES}",
        f"USERLEN={USERLEN}",
        "NETWORK=chatd",
        f"MAXTARGETS={MAX_TARGETS}",
        "TARGMAX=" + ",".join(f"{command}:{n}" for command, n in s.targmax.items()),
    ]


def _welcome_lines(s: Session, stats: StatsReply | None) -> list[str]:
    num, me, server = s.numeric, s.me, s.server
    tokens = isupport(s)
    lines = [
        num("001", trailing=f"Welcome to chatd on {server}, {me}"),
        num("002", trailing=f"Your host is {server}, running chatd {__version__}"),
        num("003", trailing="This server speaks IRC as one listener of chatd"),
        num("004", server, f"chatd-{__version__}", USER_MODES, CHANNEL_MODES, PARAM_MODES),
    ]
    for start in range(0, len(tokens), 12):  # at most 13 parameters after the nick
        lines.append(
            num("005", *tokens[start : start + 12], trailing="are supported by this server")
        )
    if stats is not None:
        lines += _lusers_lines(s, stats)
    return lines + motd_lines(s)


def motd_lines(s: Session) -> list[str]:
    if not s.motd:
        return [s.numeric("422", trailing="There is no message of the day")]
    lines = [s.numeric("375", trailing=f"- {s.server} Message of the day -")]
    lines += [s.numeric("372", trailing=f"- {line}") for line in s.motd]
    lines.append(s.numeric("376", trailing="End of /MOTD command"))
    return lines


def _error_lines(s: Session, code: str, message: str, ctx: Ctx | None) -> list[str]:
    command, target = (ctx.command, ctx.target) if ctx else ("", "")
    if command == "NOTICE":
        return []  # RFC 2812 3.3.2: never answer a NOTICE with an error
    if ctx is not None and command in irc_accounts.ACCOUNT_COMMANDS:
        return irc_accounts.account_error_lines(s, message, ctx)
    if ctx is not None and (lines := irc_moderation.error_lines(s, code, message, ctx)):
        return lines
    if code in _CLOSING:
        return [format_line("ERROR", trailing=f"Closing link: {message}")]
    numeric = ERROR_NUMERICS.get((code, command)) or ERROR_NUMERICS.get((code, ""))
    if numeric is None:
        return _server_notice(s, f"{code}: {message}")
    lines = [_numeric_line(s, numeric, target, message)]
    if (after := _FOLLOWED_BY.get((numeric.code, command))) is not None:
        lines.append(_numeric_line(s, after, target, message))
    return lines


def _numeric_line(s: Session, numeric: Numeric, target: str, message: str) -> str:
    params = (target or "*",) if numeric.with_target else ()
    return s.numeric(numeric.code, *params, trailing=numeric.text or message)
