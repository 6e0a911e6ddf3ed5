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
from typing import Any

from chatd.config import Config
from chatd.hub_accounts import AccountRules, _Refusal
from chatd.hub_people import PeopleCommands
from chatd.hub_rooms import MID_SEQUENCE_BITS as MID_SEQUENCE_BITS
from chatd.hub_rooms import RoomCommands
from chatd.hub_state import MAX_REASON_CHARS as MAX_REASON_CHARS
from chatd.hub_state import MAX_TOPIC_CHARS as MAX_TOPIC_CHARS
from chatd.hub_state import _Client as _Client
from chatd.hub_state import _Room as _Room
from chatd.model import (
    Action,
    Announce,
    Away,
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
    Hello,
    History,
    Identify,
    Invite,
    Join,
    Kick,
    Kill,
    MemberInfo,
    Mode,
    ModLog,
    Nick,
    NickEvent,
    Notice,
    Oper,
    Part,
    Ping,
    Pong,
    PrivMsg,
    Quit,
    QuitEvent,
    Register,
    Rooms,
    Say,
    SetPassword,
    Stats,
    StatsReply,
    Topic,
    Unban,
    Users,
    Who,
    Whois,
)
from chatd.moderation import CONSOLE_CID
from chatd.moderation_powers import ModerationPowers
from chatd.names import (
    NICK_MAX,
    NICK_RULE,
    blank,
    clean_line,
    clean_text,
    fold,
    nick_skeleton,
    valid_nick,
)

__all__ = ["Hub"]


class Hub(AccountRules, ModerationPowers, RoomCommands, PeopleCommands):
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

    def _census(self) -> StatsReply:
        users = len(self._nicks)  # held sessions (hub_accounts) count as users
        online = users - len(self._held)
        opers = sum(1 for c in self._clients.values() if c.nick and self.is_server_operator(c))
        rooms = len(self._rooms)
        return StatsReply(users, len(self._clients) - online, rooms, self._max_users, opers)

    def _stats(self, client: _Client, cmd: Stats, now: float) -> list[Action]:
        return [self._reply(client, cmd, self._census())]

    def _ping(self, client: _Client, cmd: Ping, now: float) -> list[Action]:
        return [self._reply(client, cmd, Pong(cmd.token))]

    def _quit(self, client: _Client, cmd: Quit, now: float) -> list[Action]:
        reason = clean_line(cmd.reason)[:MAX_REASON_CHARS] or "quit"
        actions = self._depart(client, reason)
        actions.append(Close(client.cid, f"quit: {reason}", flush=True))
        return actions

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
