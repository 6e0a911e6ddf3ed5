"""What chatd keeps in Redis, and how a node's hub learns what the other nodes do.

Every node keeps its own clients, loop and :class:`~chatd.hub.Hub`. The hub stays pure:
clients of other nodes enter it as clients with negative ids (:meth:`Hub.add_remote`),
and what they do is replayed into it as ordinary commands (``Join``, ``Part``, ``Nick``,
``Topic``, ``Disconnected``) - so rooms, ``who``, ``whois``, nick checks and the events
local members see come from the same code as in single-node mode. Deliveries to a
negative id reach no connection here: the user's own node delivers to it.

One order for everybody. A local client's shared command (hello, join, part, topic,
nick, say) is not applied here at once: it runs as a Lua script in Redis
(:mod:`chatd.cluster_scripts`) that writes the shared state and publishes the event on
one channel. Every node applies the event where it sees it in the channel; the node that
sent it applies it where the script's reply arrives - on the same RESP3 connection, next
to its own push - so every node applies every change in the same order. A room message
is stored (``XADD``) by that same script before it is published: store before deliver,
and its stream id is its cluster-wide ``mid``. Moderation commands take the same road
(:mod:`chatd.cluster_moderation`); messages and history: :mod:`chatd.cluster_messages`.

When Redis is away, shared commands get ``cluster_unavailable`` and nothing else changes:
connections stay, ``who`` shows the last known view. When it is back, one ``SYNC`` script
re-registers the node, rewrites its users, and returns everything the node missed (the
other nodes' users, topics, the room messages after the last one it delivered).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from dataclasses import replace
from typing import Any

import hiredis

from chatd.cluster_account_store import ClusterAccountStore
from chatd.cluster_accounts import ClusterAccounts
from chatd.cluster_messages import ClusterMessages, _stream
from chatd.cluster_moderation import SharedModeration
from chatd.cluster_scripts import CHANNEL, PREFIX, SCRIPTS, sha
from chatd.cluster_sync import _message, _nick_keys
from chatd.connection import Connection, State
from chatd.model import (
    Action,
    Announce,
    Away,
    Ban,
    Deliver,
    DropAccount,
    Error,
    ErrorCode,
    Hello,
    Identify,
    Invite,
    Join,
    Kick,
    Kill,
    Message,
    Mode,
    Nick,
    Oper,
    Part,
    PrivMsg,
    Register,
    Say,
    SetPassword,
    Topic,
    Unban,
)
from chatd.names import clean_line, fold, nfkc, room_problem, valid_nick
from chatd.redis_link import LINK_DOWN, RedisLink, parse_url
from chatd.server import Server

__all__ = ["Cluster"]

logger = logging.getLogger(__name__)

UNAVAILABLE = "the cluster's store (Redis) is unreachable: not sent; try again shortly"
#: A command in flight when the link was lost: Redis may have run it (TCP may yet deliver
#: it); if it did, its result (a message) reaches everyone as usual.
UNCONFIRMED = "the cluster's store (Redis) stopped answering: not confirmed; it may still arrive"
#: Commands of one client waiting behind its command in flight; beyond: refused.
MAX_WAITING = 256
TOO_MANY = "too many commands waiting for the cluster's store; slow down"
SHA = {name: sha(text) for name, text in SCRIPTS.items()}


class Cluster(SharedModeration, ClusterMessages):
    """The cluster layer of one node: a :class:`RedisLink` and the hub's remote view."""

    def __init__(self, server: Server, accounts: ClusterAccountStore | None = None) -> None:
        config = server.config
        self.config = config
        self.hub = server.hub
        self.dispatch = server.dispatcher
        self.loop = server.loop
        self._server = server
        self.node = uuid.uuid4().hex[:12]
        self.link = RedisLink(
            server.loop,
            parse_url(config.cluster),
            config.cluster_timeout_seconds,
            self._up,
            self._down,
            self._push,
        )
        self.ready = False  # link up and synchronised: shared commands are accepted
        self._registered = False  # this node id has been in Redis (reaped if it vanishes)
        self._up_since = 0.0
        self._local: dict[int, dict[str, Any]] = {}  # cid -> {n, u, r, rooms}: ours
        self._claims: set[str] = set()  # folded nicks being claimed by local clients
        self._released: list[str] = []  # nick keys to free once Redis is back
        self._remote: dict[tuple[str, int], int] = {}  # (node, cid) -> hub id (< 0)
        self._next_rcid = -1
        self._last: dict[str, int] = {}  # folded room -> mid of the last message here
        self._replay: list[Message] = []  # the replay of the join being applied
        self._inflight: dict[int, int] = {}  # cid -> its commands waiting for Redis
        self._queued: dict[int, deque[tuple[object, float]]] = {}  # its next commands
        self.dispatch.cluster = self
        self.accounts = ClusterAccounts(self, accounts)  # accounts, nick hold, away
        self._init_moderation()  # chatd.cluster_moderation
        ttl = config.cluster_ttl_seconds
        self._ttl_ms = max(1, int(ttl * 1000))
        self.loop.call_at(self.loop.now + ttl / 3, self._heartbeat)

    def start(self) -> None:
        self.link.start()

    def close(self) -> None:
        """Leave the cluster: this node's users quit everywhere at once."""
        self.link.finish("EVALSHA", SHA["leave"], 0, self.node, CHANNEL)

    # ------------------------------------------------------------------ helpers

    def _wall(self) -> float:
        return time.time()

    def _open(self, cid: int) -> Connection | None:
        conn = self._server.connection(cid)
        return conn if conn is not None and conn.state is State.OPEN else None

    def _apply(self, actions: list[Action]) -> None:
        self.dispatch.apply(actions)

    def _error(self, cid: int, code: str, why: str, rid: object) -> None:
        self._apply([Deliver((cid,), Error(code, why), rid=rid)])

    def _unavailable(self, cid: int, rid: object, in_flight: bool = False) -> None:
        why = UNCONFIRMED if in_flight else UNAVAILABLE
        self._error(cid, ErrorCode.CLUSTER_UNAVAILABLE, why, rid)

    def _script(self, cid: int, name: str, callback: Any, keys: list[str], args: list[Any]) -> None:
        self._send(cid, callback, "EVALSHA", SHA[name], len(keys), *keys, *args)

    def _send(self, cid: int, callback: Any, *args: Any) -> None:
        """A command for ``cid``'s sake; its later commands wait until the reply (they
        were checked against what this one changes)."""
        self._inflight[cid] = self._inflight.get(cid, 0) + 1

        def answered(reply: object) -> None:
            try:
                callback(reply)
            finally:
                left = self._inflight[cid] - 1
                if left:
                    self._inflight[cid] = left
                else:
                    del self._inflight[cid]
                    self._drain(cid)

        self.link.command(answered, *args)

    def _drain(self, cid: int) -> None:
        queue = self._queued.get(cid)
        while queue and not self._inflight.get(cid):
            command, wall = queue.popleft()
            self._run(cid, command, wall)
        if queue is not None and not queue:
            del self._queued[cid]

    def _user_json(self, cid: int) -> str:
        return json.dumps(self._local[cid], separators=(",", ":"))

    def _event(self, kind: str, body: dict[str, Any]) -> str:
        return f"{kind} {self.node} - " + json.dumps(body, separators=(",", ":"))

    # ------------------------------------------------------------------ local commands

    def submit(self, cid: int, command: object, wall: float) -> None:
        """A command from a local client (the dispatcher's hook), in the client's order:
        behind its commands still waiting for Redis."""
        if self._inflight.get(cid):
            queue = self._queued.setdefault(cid, deque())
            if len(queue) >= MAX_WAITING:
                rid = getattr(command, "rid", None)
                self._error(cid, ErrorCode.CLUSTER_UNAVAILABLE, TOO_MANY, rid)
                return
            queue.append((command, wall))
            return
        self._run(cid, command, wall)

    def _run(self, cid: int, command: object, wall: float) -> None:
        hub = self.hub
        if not hub.is_registered(cid) and not isinstance(command, Hello):
            self._apply(hub.handle(cid, command, wall))  # type: ignore[arg-type]
            return
        match command:
            case Hello() if self.accounts.hello(cid, command, wall):
                pass  # a resume, or refused (chatd.cluster_accounts)
            case Hello():
                self._hello(cid, command, wall)
            case Join():
                self._join(cid, command, wall)
            case Part():
                self._part(cid, command, wall)
            case Topic(topic=str()):
                self._topic(cid, command, wall)
            case Nick() if self.accounts.nick_refused(cid, command, wall):
                pass
            case Nick():
                self._nick(cid, command, wall)
            case Register() | Identify() | SetPassword() | DropAccount() | Away():
                self.accounts.run(cid, command, wall)
            case Say():
                self._say(cid, command, wall)
            case PrivMsg():
                self._privmsg(cid, command, wall)
            case Kick() | Ban() | Unban() | Mode() | Invite() | Kill() | Announce():
                self._moderate(cid, command, wall)  # chatd.cluster_moderation
            case Oper():
                self._oper(cid, command, wall)
            case _:
                self._apply(hub.handle(cid, command, wall))  # type: ignore[arg-type]

    def _hello(self, cid: int, cmd: Hello, wall: float) -> None:
        hub = self.hub
        holder = hub.nick_holder(cmd.nick)
        if hub.is_registered(cid) or not valid_nick(cmd.nick) or (holder or 0) > 0:
            self._apply(hub.handle(cid, replace(cmd, autojoin=()), wall))  # its refusal
            return
        if self._hello_banned(cid, cmd, wall):
            return
        # Held by another node's user: Redis decides (free if that node is dead).
        if self._cannot_claim(cid, cmd):
            return
        password = self.config.password
        if password is not None and cmd.password != password:
            refused = hub.handle(cid, replace(cmd, autojoin=()), wall)  # counted, refused
            self.dispatch.password_attempt(cid, refused)
            self._apply(refused)
            return
        self._claim_nick(cid, cmd, None)

    def _claim_nick(self, cid: int, cmd: Hello, seen: tuple[float, float] | None) -> None:
        """Claim ``cmd.nick`` in Redis for a hello. Held by another node: look again a
        heartbeat later; if that node did not refresh its liveness key meanwhile (its
        time left ran down with the clock) it is dead: wait for the key to expire and
        take the nick - a user whose node died keeps their nick on another node. If it
        refreshed, refuse. (Redis alone grants the nick: a wrong guess costs time only.)"""
        hub = self.hub
        account = cmd.verified.account if cmd.verified else None
        user: dict[str, Any] = {
            "n": cmd.nick, "u": cmd.user, "r": cmd.realname, "rooms": [], "a": account
        }  # fmt: skip
        user |= self._identity(cid)  # address, OPER name: for the others' moderation rules
        key = fold(cmd.nick)
        self._claims.add(key)
        ttl = self.config.cluster_ttl_seconds

        def retry(left: float) -> None:
            look = (left, self.loop.now)
            self._claims.add(key)  # still ours while we wait
            self._inflight[cid] = self._inflight.get(cid, 0) + 1  # its next commands wait

            def again() -> None:
                self._claims.discard(key)
                self._inflight[cid] -= 1
                if self._open(cid) is not None and self.ready:
                    self._claim_nick(cid, cmd, look)
                elif self._open(cid) is not None:
                    self._unavailable(cid, cmd.rid)
                if not self._inflight[cid]:
                    del self._inflight[cid]
                    self._drain(cid)

            wait = ttl / 3 + 0.25 if seen is None else left + 0.05
            self.loop.call_at(self.loop.now + wait, again)

        def done(reply: object) -> None:
            self._claims.discard(key)
            if reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError):
                self._released.extend(_nick_keys(cmd.nick))  # if it ran: freed on SYNC
                self._unavailable(cid, cmd.rid, in_flight=True)
            elif (
                isinstance(reply, int)
                and reply < 0
                and self._open(cid) is not None
                and (seen is None or -reply / 1000 <= seen[0] - (self.loop.now - seen[1]) + 0.1)
            ):
                retry(-reply / 1000)  # first look, or its time kept running out
            elif reply != 1:
                why = f'nick "{cmd.nick}" is already in use (on another node)'
                self._error(cid, ErrorCode.NICK_TAKEN, why, cmd.rid)
            elif self._open(cid) is None:
                self._released.extend(_nick_keys(cmd.nick))
                self._publish_quit(cid, "connection lost", user, announce=True)
            else:
                self._local[cid] = user
                self._evict(cmd.nick, self._wall())
                welcome = hub.handle(cid, replace(cmd, autojoin=()), self._wall())
                self.dispatch.password_attempt(cid, welcome)
                self._apply(welcome)
                for room in cmd.autojoin:
                    self._join(cid, Join(room), self._wall())

        body = {"cid": cid, "n": cmd.nick, "u": cmd.user, "r": cmd.realname, "a": account}
        body |= self._identity(cid)
        self._script(
            cid,
            "claim",
            done,
            [*_nick_keys(cmd.nick), self._users_key()],
            [self.node, cid, json.dumps(user), CHANNEL, self._event("hello", body)],
        )

    def _users_key(self, node: str | None = None) -> str:
        return PREFIX + "users:" + (node or self.node)

    def _join(self, cid: int, cmd: Join, wall: float) -> None:
        hub = self.hub
        name = nfkc(cmd.room)
        rooms = [fold(r) for r in hub.rooms_of(cid)]
        if (
            room_problem(name) is not None
            or fold(name) in rooms
            or len(rooms) >= self.config.max_rooms_per_client
            or self._join_refused(cid, cmd, wall)
        ):
            self._apply(hub.handle(cid, cmd, wall))  # refused, or already there
            return
        if not self.ready:
            self._unavailable(cid, cmd.rid)
            return
        user = self._local[cid]
        user["rooms"] = [*user["rooms"], name]

        def done(reply: object) -> None:
            if reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError):
                # Not applied here; SYNC writes what is true here back to Redis.
                user["rooms"] = [r for r in user["rooms"] if fold(r) != fold(name)]
                self._unavailable(cid, cmd.rid, in_flight=True)
                return
            if self._open(cid) is None or not hub.is_registered(cid):
                return
            assert isinstance(reply, list)
            stored = [_message(entry, name) for entry in reversed(reply)]
            newest = stored[-1].mid if stored else 0
            stored = [m for m in stored if not m.notice]  # history keeps no notices
            # The newest before the join (later ones arrive live): where a catch-up
            # after an outage starts (0: the room's stream was empty).
            self._last[fold(name)] = max(self._last.get(fold(name), 0), newest)
            self._replay = stored[max(0, len(stored) - self.config.history_replay) :]
            actions = hub.handle(cid, cmd, self._wall())  # -> Replay -> self.replay
            self._apply(actions)
            self._replay = []
            self._joined_here(cid, name, actions)  # refused if a mode change came first

        event = self._event("join", {"cid": cid, "room": name, "key": cmd.key})  # +k: theirs too
        self._update(done, cid, event, _stream(name))

    def _update(
        self,
        callback: Any,
        cid: int,
        event: str,
        stream: str = "",
        topic: tuple[str, str] | None = None,
        release: tuple[str, ...] = (),
    ) -> None:
        user = self._user_json(cid) if cid in self._local else ""
        keys = [self._users_key(), stream or PREFIX + "none", *release]
        count = max(1, self.config.history_replay) if stream else 0  # 1: the newest mid
        tkey, tvalue = topic if topic is not None else ("", "")
        args = [self.node, cid, user, CHANNEL, event, count, tkey, tvalue]
        self._script(cid, "update", callback, keys, args)

    def _part(self, cid: int, cmd: Part, wall: float) -> None:
        hub = self.hub
        room = cmd.room if cmd.room is not None else (hub.rooms_of(cid) or [""])[-1]
        names = {fold(r): r for r in hub.rooms_of(cid)}
        key = fold(nfkc(room))
        if key not in names:
            self._apply(hub.handle(cid, cmd, wall))  # not in that room: refused
            return
        if not self.ready:
            self._unavailable(cid, cmd.rid)
            return
        user = self._local[cid]
        before = user["rooms"]
        user["rooms"] = [r for r in before if fold(r) != key]
        emptied = hub.room_cids(room) == (cid,)
        reason = clean_line(cmd.reason)[:200]

        def done(reply: object) -> None:
            if reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError):
                user["rooms"] = before  # not applied here; SYNC writes it back
                self._unavailable(cid, cmd.rid, in_flight=True)
            elif self._open(cid) is not None:
                self._apply(hub.handle(cid, replace(cmd, room=names[key]), self._wall()))

        event = self._event("part", {"cid": cid, "room": names[key], "why": reason})
        self._update(done, cid, event, topic=(key, "") if emptied else None)

    def _cannot_claim(self, cid: int, cmd: Hello | Nick) -> bool:
        """Refuse a nick this node is claiming already, or any claim while Redis is away."""
        if fold(cmd.nick) in self._claims:
            self._error(cid, ErrorCode.NICK_TAKEN, f'nick "{cmd.nick}" is already in use', cmd.rid)
            return True
        if not self.ready:
            self._unavailable(cid, cmd.rid)
            return True
        return False

    def _nick(self, cid: int, cmd: Nick, wall: float) -> None:
        hub = self.hub
        old = hub.nick_of(cid)
        assert old is not None
        holder = hub.nick_holder(cmd.nick)
        if cmd.nick == old or not valid_nick(cmd.nick) or holder not in (None, cid):
            self._apply(hub.handle(cid, cmd, wall))  # nothing to do, or refused
            return
        if self._cannot_claim(cid, cmd):
            return
        key = fold(cmd.nick)
        self._claims.add(key)
        user = self._local[cid]
        user["n"] = cmd.nick

        def done(reply: object) -> None:
            self._claims.discard(key)
            if reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError):
                user["n"] = hub.nick_of(cid) or old
                self._released.extend(_nick_keys(cmd.nick))  # if it ran: freed on SYNC
                self._unavailable(cid, cmd.rid, in_flight=True)
            elif reply != 1:
                user["n"] = hub.nick_of(cid) or old
                why = f'nick "{cmd.nick}" is already in use (on another node)'
                self._error(cid, ErrorCode.NICK_TAKEN, why, cmd.rid)
            elif self._open(cid) is not None:
                self._apply(hub.handle(cid, cmd, self._wall()))

        old_keys = [k for k in _nick_keys(old) if k not in _nick_keys(cmd.nick)]
        self._script(
            cid,
            "claim",
            done,
            [*_nick_keys(cmd.nick), self._users_key(), *old_keys],
            [self.node, cid, self._user_json(cid), CHANNEL,
             self._event("nick", {"cid": cid, "n": cmd.nick})],
        )  # fmt: skip

    # ------------------------------------------------------------------ departures

    def departed(self, cid: int, reason: str) -> None:
        """A local client is gone (the hub forgets it next)."""
        if self.accounts.hold(cid, reason):
            return  # held cluster-wide (chatd.cluster_hold)
        self._queued.pop(cid, None)
        user = self._local.pop(cid, None)
        if user is None:
            return
        self._publish_quit(cid, reason, user, announce=self.ready)

    def _publish_quit(self, cid: int, reason: str, user: dict[str, Any], announce: bool) -> None:
        keys = _nick_keys(user["n"])
        if not announce:
            self._released.extend(keys)  # SYNC rewrites our users and frees these
            return
        event = self._event("quit", {"cid": cid, "why": reason.removeprefix("quit: ")})
        self._update(lambda reply: None, cid, event, release=keys)
