"""JSON mode: one JSON object per line, both ways (the client's mode).

Requests are ``{"op": ..., "id": ...}``; replies and events are ``{"type": ...}``. Field
types are checked here, so the hub only ever sees well-typed commands; name rules and
ranges are the hub's. ``docs/protocol.md`` is the reference for every field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, assert_never, cast

from chatd.codecs.base import Codec, decode_utf8
from chatd.model import (
    AccountEvent,
    Announce,
    AnyEvent,
    Away,
    AwayEvent,
    AwayNotice,
    AwayReply,
    Ban,
    BanInfo,
    BanList,
    BanListReply,
    Command,
    DropAccount,
    Error,
    ErrorCode,
    Event,
    Hello,
    History,
    HistoryEnd,
    HistoryReply,
    Identify,
    Invite,
    InviteEvent,
    Join,
    Joined,
    JoinEvent,
    Kick,
    KickEvent,
    Kill,
    Message,
    Mode,
    ModeEvent,
    ModLog,
    ModLogReply,
    Nick,
    NickEvent,
    Notice,
    Oper,
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
    Unban,
    Welcome,
    Who,
    Whois,
    WhoisReply,
    WhoReply,
)

__all__ = ["JsonCodec", "MAX_ID_CHARS", "MAX_ID_INT"]

# A request id is copied onto the reply, so it is ours to encode: only small, flat values.
# Strings up to 64 characters hold any UUID or counter; integers up to 2**53 are what
# every JSON client (JavaScript's numbers) reads exactly.
MAX_ID_CHARS = 64
MAX_ID_INT = 2**53

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN, Infinity and -Infinity; RFC 8259 does not. A request id
    # of NaN would be copied onto the reply and make *our* output invalid JSON.
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf: same problem as Infinity
        raise ValueError(f"{text} is out of range")
    return value


_loads = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode
# "\ud800" escapes decode to lone surrogates, which cannot be encoded as UTF-8: one in a
# room name or a message would crash the encoding of every frame that carries it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Request:
    """Typed access to one request object; every failure is a ``bad_request``."""

    __slots__ = ("obj", "op", "rid")

    def __init__(self, obj: dict[str, Any], op: str, rid: object) -> None:
        self.obj, self.op, self.rid = obj, op, rid

    def _fail(self, message: str) -> ProtocolError:
        error = ProtocolError(ErrorCode.BAD_REQUEST, f"{self.op}: {message}")
        error.rid = self.rid
        return error

    def text(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str):
            raise self._fail(f'"{key}" must be a string')
        return value

    def opt_text(self, key: str, default: str | None = None) -> str | None:
        value = self.obj.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self._fail(f'"{key}" must be a string or null')
        return value

    def flag(self, key: str) -> bool:
        value = self.obj.get(key, False)
        if not isinstance(value, bool):
            raise self._fail(f'"{key}" must be true or false')
        return value

    def opt_int(self, key: str) -> int | None:
        value = self.obj.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise self._fail(f'"{key}" must be an integer or null')
        return value


def _hello(r: _Request) -> Command:
    return Hello(
        r.text("nick"),
        password=r.opt_text("password"),
        resume=r.opt_text("resume"),
        account=r.opt_text("account"),
        account_password=r.opt_text("account_password"),
        rid=r.rid,
    )


def _say(r: _Request) -> Command:
    return Say(r.text("room"), r.text("text"), action=r.op == "me", rid=r.rid)


def _topic(r: _Request) -> Command:
    return Topic(r.text("room"), r.opt_text("topic"), rid=r.rid)


def _history(r: _Request) -> Command:
    return History(
        r.text("room"),
        before=r.opt_int("before"),
        after=r.opt_int("after"),
        limit=r.opt_int("limit"),
        rid=r.rid,
    )


def _ban(r: _Request) -> Command:
    server = r.flag("server")
    room = None if server else r.text("room")
    quiet = r.op == "mute"
    if r.op in ("ban", "mute"):
        duration, reason = r.opt_int("duration"), r.opt_text("reason", "") or ""
        return Ban(room, r.text("mask"), duration, reason, quiet=quiet, server=server, rid=r.rid)
    return Unban(room, r.text("mask"), quiet=r.op == "unmute", server=server, rid=r.rid)


def _mode(r: _Request) -> Command:
    args = r.obj.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args) or len(args) > 8:
        raise r._fail('"args" must be a list of at most 8 strings')
    return Mode(r.text("target"), r.opt_text("modes", "") or "", tuple(args), rid=r.rid)


_OPS: dict[str, Callable[[_Request], Command]] = {
    "hello": _hello,
    "join": lambda r: Join(r.text("room"), key=r.opt_text("key"), rid=r.rid),
    "part": lambda r: Part(r.text("room"), r.opt_text("reason", "") or "", rid=r.rid),
    "say": _say,
    "me": _say,
    "msg": lambda r: PrivMsg(r.text("to"), r.text("text"), action=r.flag("action"), rid=r.rid),
    "nick": lambda r: Nick(r.text("nick"), rid=r.rid),
    "who": lambda r: Who(r.text("room"), rid=r.rid),
    "rooms": lambda r: Rooms(rid=r.rid),
    "topic": _topic,
    "history": _history,
    "away": lambda r: Away(r.opt_text("message"), rid=r.rid),
    "whois": lambda r: Whois(r.text("nick"), rid=r.rid),
    "ping": lambda r: Ping(rid=r.rid),
    "quit": lambda r: Quit(r.opt_text("reason", "") or "", rid=r.rid),
    # accounts (docs/accounts.md)
    "register": lambda r: Register(r.text("password"), rid=r.rid),
    "identify": lambda r: Identify(r.opt_text("account"), r.text("password"), rid=r.rid),
    "passwd": lambda r: SetPassword(r.text("password"), r.text("new_password"), rid=r.rid),
    "unregister": lambda r: DropAccount(r.text("password"), rid=r.rid),
    # moderation (docs/moderation.md)
    "kick": lambda r: Kick(
        r.text("room"), r.text("nick"), r.opt_text("reason", "") or "", rid=r.rid
    ),
    "ban": _ban,
    "unban": _ban,
    "mute": _ban,
    "unmute": _ban,
    "bans": lambda r: BanList(
        None if r.flag("server") else r.text("room"), r.flag("mutes"), r.flag("server"), rid=r.rid
    ),
    "mode": _mode,
    "invite": lambda r: Invite(r.text("nick"), r.text("room"), rid=r.rid),
    "oper": lambda r: Oper(r.text("name"), r.text("password"), rid=r.rid),
    "kill": lambda r: Kill(r.text("nick"), r.opt_text("reason", "") or "", rid=r.rid),
    "announce": lambda r: Announce(r.text("text"), rid=r.rid),
    "modlog": lambda r: ModLog(r.opt_text("room"), r.opt_int("limit"), rid=r.rid),
}


def _ban_fields(b: BanInfo) -> dict[str, Any]:
    return {
        "mask": b.mask,
        "by": b.by,
        "set_at": b.set_at,
        "expires": b.expires,
        "reason": b.reason,
    }


def _ranks(members: tuple[str, ...], prefixes: tuple[str, ...]) -> dict[str, Any]:
    ops = [m for m, p in zip(members, prefixes, strict=False) if "@" in p]
    voiced = [m for m, p in zip(members, prefixes, strict=False) if "+" in p]
    return {"ops": ops, "voiced": voiced} if ops or voiced else {}


def _message_fields(m: Message) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "msg",
        "room": m.room,
        "from": m.sender,
        "text": m.text,
        "ts": m.ts,
        "mid": m.mid,
    }
    if m.action:
        obj["action"] = True
    if m.history:
        obj["history"] = True
    if m.account is not None:
        obj["account"] = m.account
    return obj


def _event_fields(event: AnyEvent) -> dict[str, Any]:  # noqa: C901 (one case per event: the match must stay exhaustive for assert_never)
    match event:
        case Message():
            return _message_fields(event)
        case Welcome(nick=nick, server=server, motd=motd, limits=limits):
            welcome: dict[str, Any] = {"type": "welcome", "nick": nick, "server": server}
            welcome["motd"] = list(motd)
            if limits:
                welcome["limits"] = dict(limits)
            if event.resume:
                welcome["resume"] = event.resume
            if event.account is not None:
                welcome["account"] = event.account
            if event.resumed:
                welcome["resumed"] = True
            return welcome
        case Joined(room=room, topic=topic, members=members):
            joined: dict[str, Any] = {"type": "joined", "room": room, "topic": topic}
            joined["members"] = list(members)
            joined |= {"away": list(event.away)} if event.away else {}
            return joined | _ranks(members, event.prefixes)
        case JoinEvent(room=room, nick=nick):
            return {"type": "join", "room": room, "nick": nick}
        case PartEvent(room=room, nick=nick, reason=reason):
            return {"type": "part", "room": room, "nick": nick, "reason": reason}
        case PrivateMessage(sender=sender, to=to, text=text, ts=ts, notice=notice, action=action):
            obj = {"type": "privmsg", "from": sender, "to": to, "text": text, "ts": ts}
            if notice:
                obj["notice"] = True
            if action:
                obj["action"] = True
            if event.account is not None:
                obj["account"] = event.account
            return obj
        case NickEvent(old=old, new=new):
            return {"type": "nick", "old": old, "new": new}
        case WhoReply(room=room, members=members):
            who: dict[str, Any] = {"type": "who", "room": room, "members": list(members)}
            away = [info.nick for info in event.details if info.away]
            who |= {"away": away} if away else {}
            return who | _ranks(members, event.prefixes)
        case RoomsReply(rooms=rooms, more=more):
            obj = {
                "type": "rooms",
                "rooms": [{"room": r.room, "members": r.members, "topic": r.topic} for r in rooms],
            }
            if more:
                obj |= {"more": True, "omitted": more}
            return obj
        case TopicEvent(room=room, topic=topic, by=by):
            return {"type": "topic", "room": room, "topic": topic, "by": by}
        case Pong():
            return {"type": "pong"}
        case QuitEvent(nick=nick, reason=reason):
            return {"type": "quit", "nick": nick, "reason": reason}
        case Error(code=code, message=message):
            return {"type": "error", "code": code, "message": message}
        case Skipped(count=count):
            return {"type": "skipped", "count": count}
        case Shutdown(reason=reason):
            return {"type": "shutdown", "reason": reason}
        case Notice(text=text, code=code):
            return (
                {"type": "notice", "text": text, "code": code}
                if code
                else {
                    "type": "notice",
                    "text": text,
                }
            )
        case AwayNotice(nick=nick, message=message):
            return {
                "type": "notice",
                "text": f"{nick} is away: {message}",
                "nick": nick,
                "away": message,
            }
        case Probe():
            return {"type": "ping"}
        case HistoryReply(room=room, messages=messages, more=more, start=start):
            obj = {
                "type": "history",
                "room": room,
                "messages": [_message_fields(m) for m in messages],
            }
            if more:
                obj["more"] = True
            if start is not None:
                obj["start"] = start
            return obj
        case HistoryEnd(room=room):
            return {"type": "history_end", "room": room}
        case WhoisReply(nick=nick, rooms=rooms, away=away, idle_seconds=idle):
            return (
                {
                    "type": "whois",
                    "nick": nick,
                    "rooms": list(rooms),
                    "away": away,
                    "idle": idle,
                    "account": event.account,
                }
                | ({"address": event.address} if event.address else {})
                | ({"oper": True} if event.oper else {})
            )
        case AccountEvent(account=account, what=what):
            return {"type": "account", "account": account, "event": what}
        case AwayReply(away=away):
            return {"type": "away", "away": away}
        case AwayEvent(nick=nick, away=away):
            return {"type": "away_change", "nick": nick, "away": away}
        case StatsReply(users=users, rooms=rooms):  # no op asks for it yet (IRC's LUSERS)
            return {"type": "stats", "users": users, "rooms": rooms}
        case KickEvent(room=room, nick=nick, by=by, reason=reason):
            return {"type": "kick", "room": room, "nick": nick, "by": by, "reason": reason}
        case ModeEvent(target=target, by=by, modes=modes, args=args):
            return {"type": "mode", "target": target, "by": by, "modes": modes, "args": list(args)}
        case BanListReply(room=room, bans=bans, quiet=quiet):
            kind = "mutes" if quiet else "bans"
            return {"type": kind, "room": room, kind: [_ban_fields(b) for b in bans]}
        case InviteEvent(room=room, nick=nick, by=by):
            return {"type": "invite", "room": room, "nick": nick, "by": by}
        case OperEvent(name=name):
            return {"type": "oper", "name": name}
        case ModLogReply(entries=entries):
            return {
                "type": "modlog",
                "entries": [
                    {
                        "ts": e.ts,
                        "by": e.by,
                        "action": e.action,
                        "target": e.target,
                        "room": e.room,
                        "reason": e.reason,
                    }
                    for e in entries
                ],
            }
    assert_never(event)


def _request_id(rid: object) -> str | int | None:
    """The request id if it is one the server may echo back, else ``bad_request``."""
    if rid is None or (isinstance(rid, str) and len(rid) <= MAX_ID_CHARS):
        return rid
    if isinstance(rid, int) and not isinstance(rid, bool) and -MAX_ID_INT <= rid <= MAX_ID_INT:
        return rid
    raise ProtocolError(
        ErrorCode.BAD_REQUEST,
        f'"id" must be a string of at most {MAX_ID_CHARS} characters, an integer '
        f"of at most 2**53 in magnitude, or null; the request was ignored",
    )


class JsonCodec(Codec):
    name = "json"
    cache_key = "json"

    def decode(self, line: bytes) -> list[Command]:
        text = decode_utf8(line)
        try:
            obj = _loads(text)
        except (ValueError, RecursionError):
            raise ProtocolError(ErrorCode.BAD_JSON, "line is not valid JSON") from None
        if _SURROGATE_ESCAPE.search(text):
            try:
                _dumps(obj).encode()
            except UnicodeEncodeError:
                raise ProtocolError(
                    ErrorCode.BAD_ENCODING,
                    "line holds a lone surrogate escape (\\ud800-\\udfff); it was ignored",
                ) from None
        if not isinstance(obj, dict):
            raise ProtocolError(ErrorCode.BAD_JSON, "expected a JSON object per line")
        rid = _request_id(obj.get("id"))
        op = obj.get("op")
        make = _OPS.get(op) if isinstance(op, str) else None
        if make is None or not isinstance(op, str):
            raise ProtocolError(
                ErrorCode.UNKNOWN_OP, f"unknown op {op!r}; see docs/protocol.md"[:200], rid
            )
        return [make(_Request(obj, op, rid))]

    def encode(self, event: Event, rid: object = None) -> bytes:
        obj = _event_fields(cast(AnyEvent, event))  # the open base -> the closed union
        if rid is not None:
            obj["id"] = rid
        return _dumps(obj).encode() + b"\n"
