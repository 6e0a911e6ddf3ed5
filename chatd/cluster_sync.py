"""The other nodes, as one node sees them: pushes from the channel, (re)synchronising
after the link to Redis comes back, liveness and reaping. Part of :class:`chatd.cluster.Cluster`
(kept apart only to keep files short); see that module for the design.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import hiredis

from chatd.cluster_scripts import CHANNEL, PREFIX, SCRIPTS, mid_of, sha, stream_id
from chatd.connection import Connection
from chatd.dispatch import Dispatcher
from chatd.hub import Hub
from chatd.loop import Loop
from chatd.model import (
    Action,
    Close,
    Deliver,
    Disconnected,
    Error,
    ErrorCode,
    Join,
    Message,
    Nick,
    Part,
    PrivateMessage,
    Skipped,
    Topic,
)
from chatd.names import fold, nick_skeleton
from chatd.redis_link import LINK_DOWN, RedisLink

if TYPE_CHECKING:
    from chatd.cluster_accounts import ClusterAccounts

__all__ = ["RemoteView"]

logger = logging.getLogger(__name__)

LOST = "this node lost touch with the cluster for too long; please reconnect"


def _pairs(flat: Any) -> list[tuple[Any, Any]]:
    """A flat ``[k, v, k, v]`` (Lua's HGETALL; ``{}`` when empty, from cjson)."""
    if not isinstance(flat, list):
        return []
    return list(zip(flat[0::2], flat[1::2], strict=True))


class RemoteView:
    """Mixed into :class:`chatd.cluster.Cluster`."""

    hub: Hub
    dispatch: Dispatcher
    loop: Loop
    link: RedisLink
    node: str
    ready: bool
    _ttl_ms: int
    _registered: bool
    _up_since: float
    _local: dict[int, dict[str, Any]]
    _released: list[str]
    _remote: dict[tuple[str, int], int]
    _next_rcid: int
    _last: dict[str, int]
    _syncing: bool = False
    accounts: ClusterAccounts

    def _apply(self, actions: list[Action]) -> None:
        raise NotImplementedError

    def _wall(self) -> float:
        raise NotImplementedError

    def _open(self, cid: int) -> Connection | None:
        raise NotImplementedError

    def _deliver(self, message: Message, sender: int | None, rid: object) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ link up/down

    def _up(self) -> None:
        """Connected: load the scripts, subscribe, and resynchronise in one script."""
        link = self.link
        self._up_since = self.loop.now
        for text in SCRIPTS.values():
            link.command(_ignore, "SCRIPT", "LOAD", text)
        link.command(None, "SUBSCRIBE", CHANNEL, PREFIX + "pm:" + self.node)
        released = list(self._released)
        state = {
            "users": {str(cid): json.dumps(user) for cid, user in self._local.items()},
            "release": released,
            "nicks": [key for user in self._local.values() for key in _nick_keys(user["n"])],
        }
        pairs: list[str] = []
        for key, last in list(self._last.items()):
            if any(cid > 0 for cid in self.hub.room_cids(key)):
                pairs += [PREFIX + "s:" + key, "(" + stream_id(last)]
            else:
                del self._last[key]  # no member here any more: nothing to catch up
        self._syncing = True
        args = [
            self.node,
            self._ttl_ms,
            "1" if self._registered else "0",
            CHANNEL,
            json.dumps(state),
            self.dispatch.config.history_max_limit,
            *pairs,
        ]

        def done(reply: object) -> None:
            if reply is LINK_DOWN:
                return
            if isinstance(reply, hiredis.ReplyError):
                logger.error("cluster: SYNC failed: %s", reply)
                return
            assert isinstance(reply, bytes), repr(reply)
            self._synced(json.loads(reply), len(released))

        link.command(done, "EVALSHA", sha(SCRIPTS["sync"]), 0, *args)
        self.accounts.up()

    def _synced(self, data: dict[str, Any], released: int) -> None:
        if data.get("reaped"):
            self._reaped()
            return
        self._registered = True
        del self._released[:released]
        nodes = data.get("nodes") or {}
        for node in {node for node, _ in self._remote} - set(nodes):
            self._reconcile(node, {})
        for node, flat in nodes.items():
            self._reconcile(node, {int(c): json.loads(u) for c, u in _pairs(flat)})
        for room, topic in _pairs(data.get("topics")):
            self.hub.set_topic(room, topic)
        cap = self.dispatch.config.history_max_limit
        for entries in data.get("msgs") or []:
            for entry in entries:
                self._deliver(_message(entry), None, None)
            if len(entries) >= cap:  # maybe more: the members fill the rest from history
                room = _message(entries[-1]).room
                local = tuple(cid for cid in self.hub.room_cids(room) if cid > 0)
                self._apply([Deliver(local, Skipped(len(entries)))])
        self._syncing = False
        self.ready = True
        logger.info("cluster: node %s in sync (%d remote users)", self.node, len(self._remote))

    def _down(self) -> None:
        self.ready = False
        self._syncing = False
        logger.warning("cluster: Redis away; shared commands get cluster_unavailable")

    # ------------------------------------------------------------------ liveness

    def _heartbeat(self) -> None:
        ttl = self._ttl_ms / 1000
        now = self.loop.now
        self.loop.call_at(now + ttl / 3, self._heartbeat)
        if not self.ready:
            return
        # Reap others only after a whole TTL connected: after Redis itself was away,
        # every live node gets the time to come back before anyone is declared dead.
        reap = "1" if now - self._up_since > ttl else "0"

        def done(reply: object) -> None:
            if reply == -1:
                self._reaped()

        args: list[str | int] = [self.node, self._ttl_ms, "1", reap, CHANNEL]
        self.link.command(done, "EVALSHA", sha(SCRIPTS["heartbeat"]), 0, *args)

    def _reaped(self) -> None:
        """Others declared this node dead (it was away longer than the TTL): its users'
        quits were announced and their nicks may be taken. Start over under a new id."""
        logger.error("cluster: node %s was declared dead; closing its connections", self.node)
        for cid in list(self._local):
            why = Error(ErrorCode.CLUSTER_UNAVAILABLE, LOST)
            self._apply([Deliver((cid,), why), Close(cid, "cluster lost", flush=True)])
        self._local.clear()
        self._released.clear()
        for node in {node for node, _ in self._remote}:
            self._reconcile(node, {})
        self._last.clear()
        self.node = uuid.uuid4().hex[:12]
        self._registered = False
        self.ready = False
        self.link.reset("node declared dead")

    # ------------------------------------------------------------------ pushes

    def _push(self, channel: bytes, payload: bytes) -> None:
        if self._syncing:
            return  # SYNC's reply, right behind, includes what this says
        try:
            kind, node_b, arg, body_b = payload.split(b" ", 3)
            node = node_b.decode()
            if node == self.node:
                return  # ours: applied where its script's reply arrived
            self._remote_event(kind.decode(), node, arg, json.loads(body_b))
        except Exception:
            logger.exception("cluster: bad message on %r: %.200r", channel, payload)

    def _remote_event(self, kind: str, node: str, arg: bytes, body: dict[str, Any]) -> None:
        hub, wall = self.hub, self._wall()
        if kind == "say":
            self._deliver(_message([arg, [b"m", json.dumps(body)]], history=False), None, None)
            return
        if kind == "state":
            users = {int(c): json.loads(u) for c, u in body["users"].items()}
            self._reconcile(node, users)
            return
        if kind == "reap":
            self._reconcile(node, {})
            return
        if self.accounts.event(kind, node, body):
            return  # accounts, holds, away (chatd.cluster_accounts)
        cid = body["cid"]
        if kind == "pm":
            if self._open(cid) is not None:
                event = PrivateMessage(
                    body["s"], body["to"], body["t"], body["ts"], body["no"], body["me"]
                )
                self._apply([Deliver((cid,), event)])
            else:
                self.accounts.keep(cid, body)  # for a user held here
            return
        if kind == "hello":
            self._add(node, cid, body, wall)
            return
        rcid = self._remote.get((node, cid))
        if rcid is None:
            return
        if kind == "quit":
            del self._remote[(node, cid)]
            self._apply(hub.handle(rcid, Disconnected(body["why"]), wall))
        elif kind == "join":
            self._apply(hub.handle(rcid, Join(body["room"], body.get("key")), wall))
        elif kind == "part":
            self._apply(hub.handle(rcid, Part(body["room"], body["why"]), wall))
        elif kind == "topic":
            self._apply(hub.handle(rcid, Topic(body["room"], body["topic"]), wall))
        elif kind == "nick":
            self._apply(hub.handle(rcid, Nick(body["n"]), wall))

    def _evict(self, nick: str, wall: float) -> None:
        """Redis granted ``nick`` to someone new: a remote holder still in the hub is a
        user of a dead node not reaped yet (Redis refuses a live node's nick)."""
        holder = self.hub.nick_holder(nick)
        if holder is None or holder >= 0:
            return
        for key, rcid in list(self._remote.items()):
            if rcid == holder:
                del self._remote[key]
        self._apply(self.hub.handle(holder, Disconnected("connection lost"), wall))

    def _add(self, node: str, cid: int, user: dict[str, Any], wall: float) -> int | None:
        rcid = self._next_rcid
        self._evict(user["n"], wall)
        if not self.hub.add_remote(rcid, user["n"], user.get("u", ""), user.get("r", ""), wall):
            logger.warning("cluster: %s on %s clashes with a nick held here", user["n"], node)
            return None
        self._next_rcid -= 1
        self._remote[(node, cid)] = rcid
        self.accounts.describe(rcid, user)
        return rcid

    def _reconcile(self, node: str, users: dict[int, dict[str, Any]]) -> None:
        """Make the hub's view of ``node`` match ``users`` (joins, parts, quits, nicks
        for the differences, so local members hear of them)."""
        hub, wall = self.hub, self._wall()
        for (where, cid), rcid in list(self._remote.items()):
            if where == node and cid not in users:
                del self._remote[(node, cid)]
                self._apply(hub.handle(rcid, Disconnected("connection lost"), wall))
        for cid, user in users.items():
            found = self._remote.get((node, cid))
            if found is None:
                found = self._add(node, cid, user, wall)
                if found is None:
                    continue
            elif hub.nick_of(found) != user["n"]:
                self._apply(hub.handle(found, Nick(user["n"]), wall))
            self.accounts.describe(found, user)
            current = {fold(r): r for r in hub.rooms_of(found)}
            wanted = {fold(r): r for r in user["rooms"]}
            for key, room in current.items():
                if key not in wanted:
                    self._apply(hub.handle(found, Part(room), wall))
            for key, room in wanted.items():
                if key not in current:
                    self._apply(hub.handle(found, Join(room), wall))


def _nick_keys(nick: str) -> tuple[str, str]:
    """The two keys that hold a nick: its case-folded form and its look-alike skeleton."""
    return PREFIX + "nick:f:" + fold(nick), PREFIX + "nick:s:" + nick_skeleton(nick)


def _ignore(reply: object) -> None:
    pass


def _message(entry: Any, room: str | None = None, history: bool = True) -> Message:
    """A stream entry ``[id, [b"m", json]]`` as a message (of ``room``, or its own)."""
    ident, fields = entry[0], entry[1]
    body = json.loads(fields[1])
    return Message(
        room or body["room"], body["n"], body["t"], body["ts"], mid_of(ident),
        action=bool(body.get("me")), history=history, notice=bool(body.get("no")),
    )  # fmt: skip
