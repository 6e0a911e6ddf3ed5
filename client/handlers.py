"""What the client does with each server frame: one function per frame type, in a table.

Each handler gets the state, the :class:`~client.core.Output` to fill and a frame already
decoded and checked by :mod:`client.frames`. A new frame type is a decoder there and a
handler here (:data:`HANDLERS`); ``tests/test_client_contract.py`` fails until both exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from client import frames, sync
from client.text import irc_fold
from client.values import Kind, Line

if TYPE_CHECKING:
    from client.core import ChatState
    from client.values import Output

__all__ = ["HANDLERS", "MAX_NICK_TRIES"]

logger = logging.getLogger(__name__)

# Fallback nicks tried when ours is taken: nick_, nick__, ... then give up.
MAX_NICK_TRIES = 5
# Registration errors that no retry on this connection can fix.
_FATAL = ("nick_taken", "bad_nick", "bad_password", "server_full")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def on_welcome(state: ChatState, out: Output, f: frames.Welcome) -> None:
    if state.registered:
        logger.info("ignored a second welcome on one connection")
        return
    state.nick = f.nick
    state.limits = f.limits
    state.resume_token, state.account = f.resume, f.account
    if f.resumed:
        out.info("the server kept your session while you were away")
    state.registered = True
    state.link = "connected"
    if not state.is_me(state.wanted_nick):
        out.info(f"{state.wanted_nick} was taken; you are {state.nick}")
    out.info(f"connected to {state.server}" + (f" ({f.server})" if f.server else ""))
    for line in f.motd:
        out.lines.append(Line(Kind.INFO, line))
    for name in state.wanted_rooms():
        state.asked.add(irc_fold(name))
        out.frames.append({"op": "join", "room": name})
    out.frames.extend(state.queued_global)
    state.queued_global = []


def on_joined(state: ChatState, out: Output, f: frames.Joined) -> None:
    key = irc_fold(f.room)
    room = state.rooms.get(key)
    if key not in state.asked:  # the server cannot add rooms we would then rejoin
        logger.info("ignored a joined for %r, a room we did not ask to join", f.room)
        return
    state.asked.discard(key)
    if room is None:
        if len(state.rooms) >= state.limits.max_rooms_per_client:
            logger.info("ignored a joined for %r: already in too many rooms", f.room)
            return
        room = state.rooms[key] = sync.Room(f.room)
    room.joined = True
    _member_list(state, room, f.members, f.marks)
    room.topic = f.topic
    room.modes = None  # (they may have changed while we were away: a /mode query says)
    if state.current is None or state.explicit_join == key or state.current not in state.rooms:
        state.current = key
        state.explicit_join = None
    count = len(room.members)
    out.lines.append(
        Line(
            Kind.SYSTEM,
            f"you joined {f.room} ({_plural(count, 'member')}: {', '.join(room.members)})"
            + (f"; topic: {f.topic}" if f.topic else ""),
            room=f.room,
        )
    )
    if room.last_mid is not None or room.floor_mid is not None:
        # A rejoin: hold the replay back and fetch exactly the gap. The server answers
        # requests in order, so every replayed message arrives before the gap reply.
        room.held = None
        sync.start_gap(state, out, room)
    out.frames.extend(room.queued)
    room.queued = []


def _member_list(
    state: ChatState, room: sync.Room, members: tuple[str, ...], marks: frames.Marks
) -> None:
    """A room's full member list (joined, who): its members, who is away, its ranks."""
    room.members = list(members)
    folded = {irc_fold(m) for m in members}
    state.away_nicks -= folded
    state.away_nicks |= {irc_fold(m) for m in marks.away} & folded
    ops, voiced = {irc_fold(m) for m in marks.ops}, {irc_fold(m) for m in marks.voiced}
    room.ranks = {
        m: "@" * (m in ops) + "+" * (m in voiced) for m in folded if m in ops or m in voiced
    }


def on_away_change(state: ChatState, out: Output, f: frames.AwayChange) -> None:
    """Somebody in one of our rooms went away or came back: the member list marks it."""
    nick = irc_fold(f.nick)
    if f.away and any(nick in map(irc_fold, room.members) for room in state.rooms.values()):
        state.away_nicks.add(nick)
    elif not f.away:
        state.away_nicks.discard(nick)


def on_history_end(state: ChatState, out: Output, f: frames.HistoryEnd) -> None:
    # A rejoin's replay needs no end marker (see on_joined). But if nothing at all has
    # been shown in this room (a quiet room, or a server that replays nothing), there
    # is no mid to fetch a later gap after: ask for the room's newest message instead.
    room = state.rooms.get(irc_fold(f.room))
    if room is None or room.last_mid is not None or room.floor_mid is not None:
        return
    key = irc_fold(f.room)
    if not any(p.purpose == "floor" and p.room == key for p in state.pending.values()):
        out.frames.append(sync.history_request(state, room, "floor", limit=1))


def on_join(state: ChatState, out: Output, f: frames.Join) -> None:
    room = state.rooms.get(irc_fold(f.room))
    if room is not None and not any(irc_fold(m) == irc_fold(f.nick) for m in room.members):
        room.members.append(f.nick)
    out.lines.append(Line(Kind.SYSTEM, f"{f.nick} joined {f.room}", room=f.room))


def on_part(state: ChatState, out: Output, f: frames.Part) -> None:
    suffix = f" ({f.reason})" if f.reason else ""
    key = irc_fold(f.room)
    room = state.rooms.get(key)
    if room is None:
        logger.info("ignored a part for %r, a room we are not in", f.room)
        return
    if state.is_me(f.nick):
        state.leave(key)
        out.lines.append(Line(Kind.SYSTEM, f"you left {f.room}{suffix}", room=f.room))
        if state.current_room:
            out.info(f"now talking in {state.current_room.name}")
        return
    room.members = [m for m in room.members if irc_fold(m) != irc_fold(f.nick)]
    room.ranks.pop(irc_fold(f.nick), None)
    if not any(irc_fold(f.nick) in map(irc_fold, r.members) for r in state.rooms.values()):
        state.away_nicks.discard(irc_fold(f.nick))  # known only while we share a room
    out.lines.append(Line(Kind.SYSTEM, f"{f.nick} left {f.room}{suffix}", room=f.room))


def on_kick(state: ChatState, out: Output, f: frames.Kick) -> None:
    why = f"kicked by {f.by}" + (f": {f.reason}" if f.reason else "")
    on_part(state, out, frames.Part(f.room, f.nick, why))  # the member is gone, as on part


def on_moderation(state: ChatState, out: Output, f: frames.Moderation) -> None:
    out.info(f.text)
    change = f.change
    room = state.rooms.get(irc_fold(change.target)) if change is not None else None
    if change is None or room is None or not room.joined:
        return  # not a mode change of a room we are in (a user mode, a list, ...)
    if not change.by:  # the answer to a query: all of its modes
        room.modes = {letter for plus, letter, _ in change.changes if plus}
        return
    for plus, letter, arg in change.changes:  # applied live: the member list shows ranks
        if letter in "ov":
            _set_rank(room, irc_fold(arg), "@" if letter == "o" else "+", plus)
        elif letter not in "bq" and room.modes is not None:  # (bans, mutes: no state here)
            (room.modes.add if plus else room.modes.discard)(letter)


def _set_rank(room: sync.Room, nick: str, mark: str, plus: bool) -> None:
    """Give or take ``mark`` ("@" or "+") for a member (its folded ``nick``)."""
    if nick not in map(irc_fold, room.members):
        return
    marks = set(room.ranks.get(nick, ""))
    marks = marks | {mark} if plus else marks - {mark}
    rank = "@" * ("@" in marks) + "+" * ("+" in marks)
    if rank:
        room.ranks[nick] = rank
    else:
        room.ranks.pop(nick, None)


def on_quit(state: ChatState, out: Output, f: frames.Quit) -> None:
    state.away_nicks.discard(irc_fold(f.nick))
    for room in state.rooms.values():
        room.members = [m for m in room.members if irc_fold(m) != irc_fold(f.nick)]
    out.lines.append(Line(Kind.SYSTEM, f"{f.nick} quit" + (f" ({f.reason})" if f.reason else "")))


def on_nick(state: ChatState, out: Output, f: frames.Nick) -> None:
    old = irc_fold(f.old)
    if old in state.away_nicks:
        state.away_nicks.discard(old)
        state.away_nicks.add(irc_fold(f.new))
    for room in state.rooms.values():
        room.members = [f.new if irc_fold(m) == old else m for m in room.members]
        if old in room.ranks:
            room.ranks[irc_fold(f.new)] = room.ranks.pop(old)
    if state.is_me(f.old):
        state.nick = state.wanted_nick = f.new
        out.lines.append(Line(Kind.SYSTEM, f"you are now known as {f.new}"))
    else:
        out.lines.append(Line(Kind.SYSTEM, f"{f.old} is now known as {f.new}"))


def on_msg(state: ChatState, out: Output, f: frames.Msg) -> None:
    room = state.rooms.get(irc_fold(f.room))
    if room is None:  # not ours (anymore): show it, but keep no books
        out.lines.append(state.message_line(f, earlier=f.history))
    elif room.held is not None:
        sync.hold(state, out, room, f)
    else:
        sync.show_message(state, out, room, f)


def on_privmsg(state: ChatState, out: Output, f: frames.PrivMsg) -> None:
    text = f"* {f.sender} {f.text}" if f.action else f.text  # a private /me
    own = state.is_me(f.sender)
    out.lines.append(
        Line(Kind.PRIVATE, text, ts=f.ts, nick=f.sender, target=f.to, own=own, mention=not own)
    )


def on_who(state: ChatState, out: Output, f: frames.Who) -> None:
    room = state.rooms.get(irc_fold(f.room))
    if room is not None and room.joined:
        _member_list(state, room, f.members, f.marks)
    out.info(f"{f.room}: {_plural(len(f.members), 'member')}: " + ", ".join(f.members))


def on_rooms(state: ChatState, out: Output, f: frames.Rooms) -> None:
    if not f.rooms:
        out.info("no rooms")
    for info in f.rooms:
        state.know_room(info.room)
        count = "?" if info.members is None else str(info.members)
        out.info(f"{info.room}  {count} members" + (f"  {info.topic}" if info.topic else ""))


def on_topic(state: ChatState, out: Output, f: frames.Topic) -> None:
    room = state.rooms.get(irc_fold(f.room))
    if room is not None:
        room.topic = f.topic
    if f.by:
        out.lines.append(
            Line(Kind.SYSTEM, f"{f.by} set the topic of {f.room}: {f.topic}", room=f.room)
        )
    elif f.topic:
        out.info(f"topic of {f.room}: {f.topic}")
    else:
        out.info(f"{f.room} has no topic")


def on_away(state: ChatState, out: Output, f: frames.Away) -> None:
    state.away = f.away
    if f.away:  # the member list marks me too (the server tells only the others)
        state.away_nicks.add(irc_fold(state.nick))
    else:
        state.away_nicks.discard(irc_fold(state.nick))
    out.info("you are marked as away" if f.away else "you are back")


def on_whois(state: ChatState, out: Output, f: frames.Whois) -> None:
    out.info(
        f"{f.nick} is in {', '.join(f.rooms) if f.rooms else 'no rooms'}"
        + (f"; logged in as {f.account}" if f.account else "; not logged in")
        + (f"; away: {f.away}" if f.away else "")
    )


def on_account(state: ChatState, out: Output, f: frames.Account) -> None:
    state.account = f.account
    out.info(f"account {f.event}: " + (f"logged in as {f.account}" if f.account else "logged out"))


def on_stats(state: ChatState, out: Output, f: frames.Stats) -> None:
    users = "?" if f.users is None else str(f.users)
    rooms = "?" if f.rooms is None else str(f.rooms)
    out.info(f"{users} users in {rooms} rooms")


def on_pong(state: ChatState, out: Output, f: frames.Pong) -> None:
    pass  # the app measures lag from any line received after its ping


def on_ping(state: ChatState, out: Output, f: frames.Ping) -> None:
    out.frames.append({"op": "ping"})  # any line answers the server's probe


def on_skipped(state: ChatState, out: Output, f: frames.Skipped) -> None:
    count = "some" if f.count is None else str(f.count)
    out.info(f"{count} messages were skipped while this client was slow; fetching them")
    for room in state.rooms.values():
        if room.joined and room.held is None:
            sync.start_gap(state, out, room)


def on_shutdown(state: ChatState, out: Output, f: frames.Shutdown) -> None:
    out.error("the server is shutting down" + (f": {f.reason}" if f.reason else ""))


def on_notice(state: ChatState, out: Output, f: frames.Notice) -> None:
    out.info(f.text)


def on_error(state: ChatState, out: Output, f: frames.Error) -> None:
    code, message = f.code, f.message
    if not state.registered:
        taken = code in ("nick_taken", "nick_registered")  # (registered: /identify, /nick)
        if taken and state.nick_tries < MAX_NICK_TRIES:
            state.nick_tries += 1
            state.nick = state.fallback_nick()
            out.frames.append(state.hello())
            return
        if code in _FATAL:
            out.fatal = _fatal_sentence(state, code, message)
            return
    # An error about a history request ends that request (e.g. history_off).
    if f.rid is not None and f.rid in state.pending:
        pending = state.pending.pop(f.rid)
        if pending.purpose == "floor":
            return  # our own bookkeeping (e.g. history_off): nothing to tell
        room = state.rooms.get(pending.room)
        if pending.purpose == "gap" and room is not None:
            sync.flush_held(state, out, room)
            if code == "history_off":
                return  # expected on a server without history: stay quiet
    if code == "not_registered":
        return  # a request raced the reconnect; the welcome will redo the joins
    out.error(f"{code}: {message}" if message else code)


def _fatal_sentence(state: ChatState, code: str, message: str) -> str:
    if code == "server_full":
        return f"the server is full: {message or code}"
    if code == "bad_password":
        if state.password is not None:
            return "the server refused the password"
        return "the server wants a password: set CHATD_PASSWORD or use --password-file"
    return f"the server refused nick {state.nick}: {message or code}"


Handler = Callable[["ChatState", "Output", Any], None]

HANDLERS: dict[type[frames.Frame], Handler] = {
    frames.Welcome: on_welcome,
    frames.Account: on_account,
    frames.Joined: on_joined,
    frames.Join: on_join,
    frames.Part: on_part,
    frames.Msg: on_msg,
    frames.PrivMsg: on_privmsg,
    frames.Nick: on_nick,
    frames.Who: on_who,
    frames.Rooms: on_rooms,
    frames.Topic: on_topic,
    frames.Pong: on_pong,
    frames.Ping: on_ping,
    frames.Quit: on_quit,
    frames.Error: on_error,
    frames.Skipped: on_skipped,
    frames.Shutdown: on_shutdown,
    frames.Notice: on_notice,
    frames.History: sync.on_history,
    frames.HistoryEnd: on_history_end,
    frames.Whois: on_whois,
    frames.Away: on_away,
    frames.AwayChange: on_away_change,
    frames.Stats: on_stats,
    frames.Kick: on_kick,
    frames.Moderation: on_moderation,
}
