"""The hub: rooms, nicks and the meaning of every command. Pure (sans-I/O).

``Hub.handle(cid, command, now)`` returns a list of :mod:`chatd.model` actions for the
server to carry out, in order; the hub never touches a socket, a selector, a clock or a
codec. ``now`` is wall-clock seconds, used only to stamp messages. Connections are known
by integer ids; the server calls :meth:`Hub.connect` when one is accepted and delivers
``Disconnected`` when it goes (handling it twice is harmless).

Rules kept here and nowhere else:

- nick and room names (:mod:`chatd.names`), unique case-insensitively;
- every command except ``Hello``, ``Ping`` and ``Quit`` needs a registered client;
- a room exists while it has members; the *current room* of a client is the one it
  joined last (text mode's plain lines and bare ``/part`` use it);
- a room message is stored (``Store``) before it is delivered, and is ``droppable`` for
  slow consumers; its ``mid`` is server-wide increasing;
- a departing client is announced once, with ``QuitEvent``, to everyone sharing a room;
- while storage is down (:meth:`Hub.set_storage_down`, called by the server) room
  messages are refused with ``storage_unavailable``; everyone is told once per change.

Replies to a request carry its ``rid``. When an event goes to a room *and* is the reply
to the sender's request, one ``Deliver`` names the sender as ``reply_to``: only that copy
carries the ``rid``, and everybody else's copy can still be encoded once.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from chatd.config import Config
from chatd.hub_accounts import AccountRules, _Refusal
from chatd.model import (
    MAX_MID,
    Action,
    Announce,
    Away,
    AwayEvent,
    AwayNotice,
    AwayReply,
    Ban,
    BanList,
    Close,
    Command,
    Deliver,
    Disconnected,
    DropAccount,
    Error,
    ErrorCode,
    Event,
    FetchHistory,
    Hello,
    History,
    Identify,
    Invite,
    Join,
    Joined,
    JoinEvent,
    Kick,
    Kill,
    MemberInfo,
    Message,
    Mode,
    ModLog,
    Nick,
    NickEvent,
    Notice,
    Oper,
    Part,
    PartEvent,
    Ping,
    Pong,
    PrivateMessage,
    PrivMsg,
    Quit,
    QuitEvent,
    Register,
    Replay,
    RoomInfo,
    Rooms,
    RoomsReply,
    Say,
    SetPassword,
    Stats,
    StatsReply,
    Store,
    Topic,
    TopicEvent,
    Unban,
    Users,
    Who,
    Whois,
    WhoisReply,
    WhoReply,
)
from chatd.moderation import CONSOLE_CID, RoomRules
from chatd.moderation_powers import ModerationPowers
from chatd.names import (
    NICK_MAX,
    NICK_RULE,
    blank,
    clean_line,
    clean_text,
    fold,
    nfkc,
    nick_skeleton,
    room_problem,
    valid_nick,
)

__all__ = ["Hub"]

MAX_TOPIC_CHARS = 300
MAX_REASON_CHARS = 200
# A new mid is (milliseconds since the epoch) << MID_SEQUENCE_BITS, or the last one + 1
# if that is not larger: increasing even when the history file is lost or restored, up
# to 1024 messages per millisecond before borrowing from the next, and below 2**53 (so
# JavaScript reads it exactly) until the year 2248. docs/protocol.md states the rule.
MID_SEQUENCE_BITS = 10
# Bytes of one rooms-list entry besides its name and topic, in the widest mode (an IRC
# 322 line carries the server name and the nick): the list is cut at max_reply_bytes.
ROOMS_LINE_OVERHEAD = 120


@dataclass(eq=False)
class _Client:
    cid: int
    connected_at: float
    nick: str | None = None
    # folded room name -> room, in join order: the last one is the current room
    rooms: dict[str, _Room] = field(default_factory=dict)
    password_failures: int = 0
    away: str | None = None
    last_active: float = 0.0
    # accounts and nick hold (chatd.hub_accounts)
    account: str | None = None
    token: str = ""
    held_until: float | None = None
    held_reason: str = ""
    kept: list[PrivateMessage] = field(default_factory=list)
    user: str = ""  # IRC's USER username and real name ("": show the nick)
    realname: str = ""
    address: str = ""  # the peer's address (moderation: bans; whois for operators)
    oper: str | None = None  # OPER name: a server operator (chatd.moderation)

    def info(self) -> MemberInfo:
        assert self.nick is not None
        return MemberInfo(
            self.nick, self.user or self.nick, self.realname or self.nick, self.away is not None
        )


@dataclass(eq=False)
class _Room:
    name: str
    topic: str = ""
    members: dict[int, _Client] = field(default_factory=dict)  # join order
    _cids: tuple[int, ...] | None = None
    # moderation (chatd.moderation): saved rules; operators, voiced, invited (folded nicks)
    rules: RoomRules = field(default_factory=RoomRules)
    ops: set[int] = field(default_factory=set)
    voices: set[int] = field(default_factory=set)
    invited: set[str] = field(default_factory=set)

    @property
    def cids(self) -> tuple[int, ...]:
        """Member ids, cached until membership changes (fan-out reads this per message)."""
        if self._cids is None:
            self._cids = tuple(self.members)
        return self._cids

    def add(self, client: _Client) -> None:
        self.members[client.cid] = client
        self._cids = None

    def remove(self, client: _Client) -> None:
        del self.members[client.cid]
        self._cids = None
        self.ops.discard(client.cid)
        self.voices.discard(client.cid)

    def nicks(self) -> tuple[str, ...]:
        return tuple(c.nick for c in self.members.values() if c.nick is not None)

    def away(self) -> tuple[str, ...]:
        return tuple(c.nick for c in self.members.values() if c.nick and c.away is not None)


class Hub(AccountRules, ModerationPowers):
    """All chat state of one server.

    Args:
        config: limits and settings (server name, password, history replay, …).
        next_mid: the first message id to hand out (history resumes the sequence).
        new_token: a fresh unguessable resume token per call (randomness is injected:
            the server passes ``secrets``; tests pass something predictable).
    """

    def __init__(
        self, config: Config, next_mid: int = 1, new_token: Callable[[], str] | None = None
    ) -> None:
        self._config = config
        self._next_mid = next_mid
        self._new_token = new_token or _no_token
        self._held: dict[int, _Client] = {}  # dropped connections' sessions, by old cid
        self._storage_down: str | None = None  # why room messages are refused, if they are
        self._clients: dict[int, _Client] = {}
        self._nicks: dict[str, _Client] = {}  # folded nick -> registered client
        self._skeletons: dict[str, _Client] = {}  # nick_skeleton -> registered client
        self._rooms: dict[str, _Room] = {}  # folded room name -> room
        self._max_users = 0  # the most registered clients at once (IRC's LUSERS)
        self._handlers: dict[type[Command], Callable[[_Client, Any, float], list[Action]]] = {
            Hello: self._hello,
            Join: self._join,
            Part: self._part,
            Say: self._say,
            PrivMsg: self._privmsg,
            Nick: self._nick,
            Who: self._who,
            Rooms: self._rooms_list,
            Topic: self._topic,
            Ping: self._ping,
            Quit: self._quit,
            History: self._history,
            Away: self._away,
            Whois: self._whois,
            Register: self._register,
            Identify: self._identify,
            SetPassword: self._set_password,
            DropAccount: self._drop_account,
            Users: self._users,
            Stats: self._stats,
            # moderation (chatd.moderation)
            Kick: self._kick,
            Ban: self._ban,
            Unban: self._unban,
            BanList: self._ban_list,
            Mode: self._mode,
            Invite: self._invite,
            Oper: self._oper,
            Kill: self._kill,
            Announce: self._announce,
            ModLog: self._modlog,
        }
        self._init_moderation()

    # ------------------------------------------------------------------ introspection

    @property
    def next_mid(self) -> int:
        return self._next_mid

    @property
    def storage_down(self) -> str | None:
        return self._storage_down

    def set_storage_down(self, reason: str | None) -> list[Action]:
        """Enter (``reason``) or leave (None) the read-only state, in which room messages
        are refused with ``storage_unavailable``. Returns the notice for everyone, once
        per change."""
        was, self._storage_down = self._storage_down, reason
        if (was is None) == (reason is None):
            return []
        cids = tuple(client.cid for client in self._nicks.values())
        return [Deliver(cids, self._storage_notice())] if cids else []

    def _storage_notice(self) -> Notice:
        if self._storage_down is None:
            return Notice("Room messages are stored and delivered again.", "storage_available")
        return Notice(
            f"Room messages cannot be stored right now ({self._storage_down}), so they are "
            f"refused until the server can store them again. Private messages and "
            f"everything else still work.",
            ErrorCode.STORAGE_UNAVAILABLE,
        )

    def nick_of(self, cid: int) -> str | None:
        client = self._clients.get(cid)
        return client.nick if client else None

    def is_registered(self, cid: int) -> bool:
        client = self._clients.get(cid)
        return client is not None and client.nick is not None

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self._clients),
            "registered": len(self._nicks),
            "rooms": len(self._rooms),
        }

    def rooms_of(self, cid: int) -> list[str]:
        client = self._clients.get(cid)
        return [room.name for room in client.rooms.values()] if client else []

    # ------------------------------------------------------------------ cluster view
    # What other chatd nodes report (chatd/cluster.py) enters the hub as clients with
    # ids of their own (negative): they are members, nicks and who entries like local
    # ones; deliveries to them reach no connection here (their own node delivers).

    def add_remote(self, cid: int, nick: str, user: str, realname: str, now: float) -> bool:
        """Register a client of another node (its node has claimed the nick cluster-wide).
        False (nothing changed) if the nick is held here; no welcome is sent."""
        if fold(nick) in self._nicks or nick_skeleton(nick) in self._skeletons:
            return False
        client = _Client(cid, connected_at=now, last_active=now, nick=nick)
        client.user, client.realname = user, realname
        self._clients[cid] = client
        self._nicks[fold(nick)] = client
        self._skeletons[nick_skeleton(nick)] = client
        return True

    def nick_holder(self, nick: str) -> int | None:
        """The id of the client holding ``nick`` (or one too much like it), or None."""
        client = self._nicks.get(fold(nick)) or self._skeletons.get(nick_skeleton(nick))
        return client.cid if client is not None else None

    def member_info(self, cid: int) -> MemberInfo | None:
        client = self._clients.get(cid)
        return client.info() if client is not None and client.nick is not None else None

    def room_cids(self, room: str) -> tuple[int, ...]:
        """The members of ``room`` (any spelling), or () if it does not exist."""
        found = self._rooms.get(fold(room))
        return found.cids if found is not None else ()

    def set_topic(self, room: str, topic: str) -> None:
        """Silently set an existing room's topic (a node catching up with the cluster)."""
        found = self._rooms.get(fold(room))
        if found is not None:
            found.topic = topic

    # ------------------------------------------------------------------ entry points

    def connect(self, cid: int, now: float, address: str = "") -> list[Action]:
        """A connection was accepted (from ``address``, for bans and operators' whois)."""
        self._clients[cid] = _Client(cid, connected_at=now, last_active=now, address=address)
        return []

    def console(self, command: Command, now: float) -> list[Action]:
        """``command`` from the operator console (``chatd ctl``): a server operator whose
        replies go to :data:`~chatd.moderation.CONSOLE_CID`."""
        client = _Client(CONSOLE_CID, now, nick="console")
        handler = self._handlers.get(type(command))
        if handler is None:
            raise TypeError(f"the hub does not handle {command!r}")
        try:
            return handler(client, command, now)
        except _Refusal as refusal:
            return self._error(client, command, refusal.code, refusal.message)

    def handle(self, cid: int, command: Command, now: float) -> list[Action]:
        """Carry out ``command`` from ``cid``; return what the server must do."""
        client = self._clients.get(cid)
        if client is None:  # already gone (a second Disconnected, say): nothing to do
            return []
        if isinstance(command, Disconnected):
            return self._dropped(client, command.reason, now)
        handler = self._handlers.get(type(command))
        if handler is None:
            raise TypeError(f"the hub does not handle {command!r}")
        if client.nick is None and not isinstance(command, Hello | Ping | Quit | Identify):
            return self._error(
                client, command, ErrorCode.NOT_REGISTERED, "say hello first: pick a nick"
            )
        client.last_active = now
        try:
            if isinstance(command, Hello | Identify):
                if banned := self._server_ban_gate(client, command, now):
                    return banned
            return handler(client, command, now)
        except _Refusal as refusal:
            return self._error(client, command, refusal.code, refusal.message)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _error(client: _Client, command: Command, code: str, message: str) -> list[Action]:
        return [Deliver((client.cid,), Error(code, message), rid=command.rid)]

    @staticmethod
    def _reply(client: _Client, command: Command, event: Event) -> Deliver:
        return Deliver((client.cid,), event, rid=command.rid)

    @staticmethod
    def _to_room(
        room: _Room, client: _Client, command: Command, event: Event, droppable: bool = False
    ) -> list[Action]:
        """``event`` to every member; the sender's copy carries the request id."""
        reply_to = client.cid if command.rid is not None else None
        group = room.name if droppable else None  # the fan-out batches a room's messages
        return [Deliver(room.cids, event, command.rid, droppable, reply_to, group)]

    def _room_of(self, client: _Client, name: str | None) -> _Room:
        """The member room ``name`` (None: the current room), or a refusal."""
        if name is None:
            if not client.rooms:
                raise _Refusal(ErrorCode.NOT_IN_ROOM, "you are not in any room: /join #room")
            return next(reversed(client.rooms.values()))
        room = client.rooms.get(fold(name))
        if room is None:
            name = _room_name(name)
            raise _Refusal(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        return room

    def _existing_room(self, name: str) -> _Room:
        name = _room_name(name)
        room = self._rooms.get(fold(name))
        if room is None:
            raise _Refusal(ErrorCode.NO_SUCH_ROOM, f"there is no room {name}")
        return room

    def _check_text(self, text: str) -> str:
        if len(text) > self._config.max_text_chars:
            raise _Refusal(
                ErrorCode.TEXT_TOO_LONG,
                f"message is {len(text)} characters; the limit is {self._config.max_text_chars}",
            )
        text = clean_text(text).strip("\n")  # a trailing newline is not a line of its own
        if blank(text):  # also only zero-width or other invisible characters
            raise _Refusal(ErrorCode.BAD_REQUEST, "empty message")
        lines = text.count("\n") + 1
        if lines > self._config.max_message_lines:
            raise _Refusal(
                ErrorCode.TOO_MANY_LINES,
                f"message has {lines} lines; the limit is {self._config.max_message_lines}"
                " (share a long paste as a file or a link)",
            )
        return text

    def _neighbours(self, client: _Client) -> set[int]:
        """Everybody sharing at least one room with ``client`` (not the client itself)."""
        cids: set[int] = set()
        for room in client.rooms.values():
            cids.update(room.cids)
        cids.discard(client.cid)
        return cids

    # ------------------------------------------------------------------ commands

    def _hello(self, client: _Client, cmd: Hello, now: float) -> list[Action]:
        if client.nick is not None:
            raise _Refusal(ErrorCode.ALREADY_REGISTERED, f"you are already {client.nick}")
        password = self._config.password
        if password is not None:
            given = (cmd.password or "").encode()
            if not hmac.compare_digest(given, password.encode()):
                client.password_failures += 1
                left = self._config.max_password_failures - client.password_failures
                refusal = self._error(
                    client,
                    cmd,
                    ErrorCode.BAD_PASSWORD,
                    "wrong password" if cmd.password else "this server needs a password",
                )
                if left <= 0:
                    refusal.append(Close(client.cid, "too many wrong passwords"))
                return refusal
        admitted = self._admit(client, cmd)  # login, policy, resume (hub_accounts)
        if admitted is not None:
            return admitted
        self._check_new_nick(cmd.nick, client)
        client.nick = cmd.nick
        self._nicks[fold(cmd.nick)] = client
        self._skeletons[nick_skeleton(cmd.nick)] = client
        client.user = clean_line(cmd.user)[:NICK_MAX]
        client.realname = clean_line(cmd.realname)[:MAX_REASON_CHARS]
        self._max_users = max(self._max_users, len(self._nicks))
        actions: list[Action] = [self._welcome(client, cmd)]
        if self._storage_down is not None:
            actions.append(Deliver((client.cid,), self._storage_notice()))
        for room in cmd.autojoin:
            actions += self.handle(client.cid, Join(room), now)
        return actions

    def _limits(self) -> tuple[tuple[str, int], ...]:
        """What a client must respect, advertised in ``welcome`` (clients copy nothing)."""
        c = self._config
        return (
            ("max_text_chars", c.max_text_chars),
            ("max_line_bytes", c.max_line_bytes),
            ("history_max_limit", c.history_max_limit),
            ("max_rooms_per_client", c.max_rooms_per_client),
        )

    def _check_new_nick(self, nick: str, client: _Client) -> None:
        if not valid_nick(nick):
            raise _Refusal(ErrorCode.BAD_NICK, _bad_nick_message(nick))
        holder = self._nicks.get(fold(nick))
        if holder is not None and holder is not client:
            if holder.held_until is not None:
                raise self._held_refusal(nick)
            raise _Refusal(ErrorCode.NICK_TAKEN, f'nick "{nick}" is already in use')
        twin = self._skeletons.get(nick_skeleton(nick))
        if twin is not None and twin is not client:
            raise _Refusal(
                ErrorCode.NICK_TAKEN, f'nick "{nick}" looks too much like "{twin.nick}", in use'
            )

    def _join(self, client: _Client, cmd: Join, now: float) -> list[Action]:
        name = _room_name(cmd.room)
        key = fold(name)
        room = self._rooms.get(key)
        if room is not None and client.cid in room.members:
            # Already there: make it current again and repeat the room's state.
            client.rooms[key] = client.rooms.pop(key)
            joined = Joined(
                room.name, room.topic, room.nicks(), self._prefixes(room), away=room.away()
            )
            return [self._reply(client, cmd, joined)]
        if len(client.rooms) >= self._config.max_rooms_per_client:
            raise _Refusal(
                ErrorCode.BAD_REQUEST,
                f"you are in {len(client.rooms)} rooms already; part one first",
            )
        rules = room.rules if room is not None else self._room_rules(key, client)
        self._check_join(client, rules, name, cmd.key, now)
        if room is None:
            room = self._rooms[key] = _Room(name, topic=rules.topic, rules=rules)
        others = room.cids
        room.add(client)
        client.rooms[key] = room
        assert client.nick is not None
        saved = self._joined(client, room)
        joined = Joined(room.name, room.topic, room.nicks(), self._prefixes(room), away=room.away())
        actions: list[Action] = [self._reply(client, cmd, joined), *saved]
        if others:
            actions.append(Deliver(others, JoinEvent(room.name, client.nick)))
        # Always, even with history_replay 0: history_end tells the client the replay
        # (possibly empty) is over, which is what docs/protocol.md promises.
        actions.append(Replay(client.cid, room.name, self._config.history_replay))
        return actions

    def _leave(self, client: _Client, room: _Room) -> None:
        room.remove(client)
        del client.rooms[fold(room.name)]
        if not room.members:
            del self._rooms[fold(room.name)]

    def _part(self, client: _Client, cmd: Part, now: float) -> list[Action]:
        room = self._room_of(client, cmd.room)
        assert client.nick is not None
        actions = self._to_room(
            room,
            client,
            cmd,
            PartEvent(room.name, client.nick, clean_line(cmd.reason)[:MAX_REASON_CHARS]),
        )
        self._leave(client, room)
        return actions

    def _say(self, client: _Client, cmd: Say, now: float) -> list[Action]:
        room = self._room_of(client, cmd.room)
        text = self._check_text(cmd.text)
        self._check_speak(client, room, now)
        if self._storage_down is not None:
            raise _Refusal(
                ErrorCode.STORAGE_UNAVAILABLE,
                f"not sent: room messages cannot be stored right now ({self._storage_down})",
            )
        assert client.nick is not None
        mid = max(self._next_mid, int(now * 1000) << MID_SEQUENCE_BITS)
        self._next_mid = mid + 1
        message = Message(
            room.name,
            client.nick,
            text,
            round(now, 3),
            mid,
            action=cmd.action,
            account=client.account,
            notice=cmd.notice,
        )
        actions: list[Action] = [Store(message, client.cid, cmd.rid)]
        actions += self._to_room(room, client, cmd, message, droppable=True)
        return actions

    def _privmsg(self, client: _Client, cmd: PrivMsg, now: float) -> list[Action]:
        target = self._nicks.get(fold(cmd.to))
        if target is None or target.nick is None:
            raise _Refusal(ErrorCode.NO_SUCH_NICK, f"nobody called {cmd.to[:40]} is here")
        text = self._check_text(cmd.text)
        assert client.nick is not None
        event = PrivateMessage(
            client.nick, target.nick, text, round(now, 3), cmd.notice, cmd.action, client.account
        )
        if target.held_until is not None:
            return self._keep_for_held(client, target, cmd, event)
        actions: list[Action] = []
        if target is not client:
            actions.append(Deliver((target.cid,), event))
        actions.append(self._reply(client, cmd, event))
        if target.away and not cmd.notice:
            away = AwayNotice(target.nick, target.away)
            actions.append(self._reply(client, cmd, away))
        return actions

    def _nick(self, client: _Client, cmd: Nick, now: float) -> list[Action]:
        old = client.nick
        assert old is not None
        if cmd.nick == old:
            return []
        if fold(cmd.nick) != fold(old):
            self._check_registered_nick(cmd.nick, client.account, cmd.verified)
        self._check_new_nick(cmd.nick, client)
        del self._nicks[fold(old)]
        del self._skeletons[nick_skeleton(old)]
        client.nick = cmd.nick
        self._nicks[fold(cmd.nick)] = client
        self._skeletons[nick_skeleton(cmd.nick)] = client
        event = NickEvent(old, cmd.nick)
        actions: list[Action] = []
        others = tuple(sorted(self._neighbours(client)))
        if others:
            actions.append(Deliver(others, event))
        actions.append(self._reply(client, cmd, event))
        return actions

    def _who(self, client: _Client, cmd: Who, now: float) -> list[Action]:
        room = self._room_of(client, None) if cmd.room is None else self._existing_room(cmd.room)
        details = tuple(
            replace(c.info(), prefix=self._prefix(room, c.cid), oper=self.is_server_operator(c))
            for c in room.members.values()
            if c.nick is not None
        )
        reply = WhoReply(room.name, room.nicks(), details, self._prefixes(room))
        return [self._reply(client, cmd, reply)]

    def _users(self, client: _Client, cmd: Users, now: float) -> list[Action]:
        others = (self._clients.get(cid) or self._held.get(cid) for cid in self._neighbours(client))
        seen = [client] + sorted((c for c in others if c), key=lambda c: c.cid)
        details = tuple(c.info() for c in seen if c.nick is not None)
        members = tuple(info.nick for info in details)
        return [self._reply(client, cmd, WhoReply("*", members, details))]

    def _census(self) -> StatsReply:
        users = len(self._nicks)  # held sessions (hub_accounts) count as users
        online = users - len(self._held)
        opers = sum(1 for c in self._clients.values() if c.nick and self.is_server_operator(c))
        rooms = len(self._rooms)
        return StatsReply(users, len(self._clients) - online, rooms, self._max_users, opers)

    def _stats(self, client: _Client, cmd: Stats, now: float) -> list[Action]:
        return [self._reply(client, cmd, self._census())]

    def _rooms_list(self, client: _Client, cmd: Rooms, now: float) -> list[Action]:
        infos: list[RoomInfo] = []
        size = 0
        for _, room in sorted(self._rooms.items()):
            size += len(room.name.encode()) + len(room.topic.encode()) + ROOMS_LINE_OVERHEAD
            if infos and size > self._config.max_reply_bytes:
                break
            infos.append(RoomInfo(room.name, len(room.members), room.topic))
        more = len(self._rooms) - len(infos)
        return [self._reply(client, cmd, RoomsReply(tuple(infos), more))]

    def _topic(self, client: _Client, cmd: Topic, now: float) -> list[Action]:
        if cmd.topic is None:
            room = (
                self._room_of(client, None) if cmd.room is None else self._existing_room(cmd.room)
            )
            return [self._reply(client, cmd, TopicEvent(room.name, room.topic, ""))]
        room = self._room_of(client, cmd.room)
        self._check_topic(client, room)
        topic = clean_line(cmd.topic)
        if len(topic) > MAX_TOPIC_CHARS:
            raise _Refusal(
                ErrorCode.TEXT_TOO_LONG, f"a topic may have at most {MAX_TOPIC_CHARS} characters"
            )
        room.topic = topic
        assert client.nick is not None
        event = TopicEvent(room.name, topic, client.nick)
        return self._to_room(room, client, cmd, event) + self._save(room)

    def _ping(self, client: _Client, cmd: Ping, now: float) -> list[Action]:
        return [self._reply(client, cmd, Pong(cmd.token))]

    def _quit(self, client: _Client, cmd: Quit, now: float) -> list[Action]:
        reason = clean_line(cmd.reason)[:MAX_REASON_CHARS] or "quit"
        actions = self._depart(client, reason)
        actions.append(Close(client.cid, f"quit: {reason}", flush=True))
        return actions

    def _history(self, client: _Client, cmd: History, now: float) -> list[Action]:
        room = self._room_of(client, cmd.room)
        limit = cmd.limit if cmd.limit is not None else min(50, self._config.history_max_limit)
        if not 1 <= limit <= self._config.history_max_limit:
            raise _Refusal(
                ErrorCode.BAD_REQUEST, f"limit must be 1..{self._config.history_max_limit}"
            )
        for name, mid in (("before", cmd.before), ("after", cmd.after)):
            if mid is not None and not 0 <= mid <= MAX_MID:
                raise _Refusal(ErrorCode.BAD_REQUEST, f"{name} must be a message id (0..{MAX_MID})")
        return [FetchHistory(client.cid, room.name, cmd.before, cmd.after, limit, rid=cmd.rid)]

    def _away(self, client: _Client, cmd: Away, now: float) -> list[Action]:
        message = clean_line(cmd.message or "")[:MAX_REASON_CHARS]
        was_away = client.away is not None
        client.away = message or None
        away = client.away is not None
        actions: list[Action] = [self._reply(client, cmd, AwayReply(away))]
        others = tuple(sorted(self._neighbours(client))) if away != was_away else ()
        if others and client.nick is not None:  # only a change is news to the others
            actions.append(Deliver(others, AwayEvent(client.nick, away)))
        return actions

    def _whois(self, client: _Client, cmd: Whois, now: float) -> list[Action]:
        target = self._nicks.get(fold(cmd.nick))
        if target is None or target.nick is None:
            raise _Refusal(ErrorCode.NO_SUCH_NICK, f"nobody called {cmd.nick[:40]} is here")
        rooms = tuple(room.name for room in target.rooms.values())
        idle = max(0, int(now - target.last_active))
        info = target.info()
        away = target.away
        if target.held_until is not None:
            away = "lost the connection; the nick is held for them"
        oper = self.is_server_operator(client)
        reply = WhoisReply(
            target.nick,
            rooms,
            away,
            idle,
            info.user,
            info.realname,
            account=target.account,
            address=(target.address or None) if oper else None,
            oper=self.is_server_operator(target),
        )
        return [self._reply(client, cmd, reply)]

    # ------------------------------------------------------------------ leaving

    def _depart(self, client: _Client, reason: str) -> list[Action]:
        """Forget ``client``; tell everyone who shared a room with it, once."""
        actions: list[Action] = []
        if client.nick is not None:
            others = tuple(sorted(self._neighbours(client)))
            if others:
                actions.append(Deliver(others, QuitEvent(client.nick, clean_line(reason))))
            del self._nicks[fold(client.nick)]
            del self._skeletons[nick_skeleton(client.nick)]
        for room in list(client.rooms.values()):
            self._leave(client, room)
        self._clients.pop(client.cid, None)
        self._held.pop(client.cid, None)
        return actions


def _no_token() -> str:
    return ""  # no token source: sessions cannot be resumed by token


def _bad_nick_message(nick: str) -> str:
    shown = nick[:40].encode("unicode_escape").decode()
    return f'"{shown}" is not a valid nick: {NICK_RULE}'


def _room_name(name: str) -> str:
    """``name`` in NFKC form (``#ｌｏｂｂｙ`` is ``#lobby``), or a bad_room refusal."""
    normal = nfkc(name)
    problem = room_problem(normal)
    if problem is not None:
        shown = name[:40].encode("unicode_escape").decode()
        raise _Refusal(ErrorCode.BAD_ROOM, f'"{shown}" is not a valid room: {problem}')
    return normal
