"""Moderation shared by the nodes of a cluster (docs/cluster.md, docs/moderation.md).

The hubs decide, Redis orders. A moderation command of a local user (kick, ban, unban,
mute, a room mode change, invite, kill, announce) is not carried out here at once: the
``mod`` script numbers it and publishes the command itself on the one channel. Every
node feeds it into its hub for the actor (a negative id on the other nodes) where it
sees it in the channel; this node where the script's reply arrives. Hubs that hold the
same state and apply the same commands in the same order decide the same thing: the
same refusals, the same bans, the same kicks - and what happens to a user of another
node (kicked, killed, banned from the server) happens on that user's own node too,
where its connection is (its hub's ``Close`` closes it there).

For that, every hub must know what the rules look at: each user's address and OPER name
travel with its user record (``a``, ``o``) and are mirrored into the other hubs.

What must outlive the nodes is in Redis (:mod:`chatd.cluster_mod_scripts`): the room
rules after each command (a snapshot, written by the node the command came from, that
never replaces a later one), the server's bans and the moderation log. A node loads
them when it (re)synchronises, so a new or restarted node enforces the same bans.

A command the hub here refuses without looking further (no operator status anywhere)
is answered here and costs Redis nothing. When Redis is away: ``cluster_unavailable``,
and nothing is applied anywhere.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import TYPE_CHECKING, Any

import hiredis

from chatd.cluster_mod_scripts import (
    LIVE,
    LOG,
    LOG_KEEP,
    MOD_SCRIPTS,
    MOD_SHA,
    ROOMS,
    SBANS,
    SEQ,
)
from chatd.cluster_scripts import CHANNEL
from chatd.cluster_sync import RemoteView
from chatd.model import (
    Action,
    Announce,
    Ban,
    BanInfo,
    Command,
    Deliver,
    Hello,
    Invite,
    InviteEvent,
    Join,
    Kick,
    KickEvent,
    Kill,
    LogModeration,
    Mode,
    ModeEvent,
    ModLogEntry,
    OperEvent,
    Part,
    SaveRoom,
    SaveServerBans,
    Unban,
)
from chatd.moderation_store import ModerationStore
from chatd.names import fold
from chatd.redis_link import LINK_DOWN

if TYPE_CHECKING:
    from chatd.config import Config
    from chatd.server import Server

__all__ = ["SharedModeration", "ClusterModerationStore", "SHARED_COMMANDS"]

logger = logging.getLogger(__name__)

#: The commands every node's hub applies (the rest - lists, modlog, oper - are local).
SHARED_COMMANDS: dict[str, type[Command]] = {
    cls.__name__: cls for cls in (Kick, Ban, Unban, Mode, Invite, Kill, Announce)
}
LOG_MEMORY = 1000  # moderation-log entries each node keeps to answer ``modlog``


def encode(command: Command) -> dict[str, Any]:
    """A shared command as JSON (its request id stays here)."""
    body = {f.name: getattr(command, f.name) for f in fields(command) if f.name != "rid"}
    return {"k": type(command).__name__, **body}


def decode(body: dict[str, Any]) -> Command:
    """The inverse of :func:`encode` (raises on anything else)."""
    body = dict(body)
    cls = SHARED_COMMANDS[body.pop("k")]
    if cls is Mode:
        body["args"] = tuple(str(a) for a in body["args"])
    return cls(**body)


def _ignore(reply: object) -> None:
    if isinstance(reply, hiredis.ReplyError):
        logger.error("cluster: a moderation write failed: %s", reply)


class ClusterModerationStore(ModerationStore):
    """The dispatcher's moderation store in cluster mode: writes go to Redis (from the
    node a command came from), the log is answered from the newest entries here."""

    def __init__(self, cluster: SharedModeration) -> None:  # no SQLite file here
        self.path = ":memory:"
        self._cluster = cluster
        self.entries: deque[ModLogEntry] = deque(maxlen=LOG_MEMORY)

    def close(self) -> None:
        pass

    def load(self) -> tuple[list[Any], list[BanInfo]]:
        return [], []

    def carry_out(self, action: Action) -> None:
        self._cluster._mod_action(action)

    def modlog(self, room: str | None, limit: int) -> tuple[ModLogEntry, ...]:
        found = [e for e in self.entries if room is None or e.room == room]
        return tuple(found[-limit:])


class SharedModeration(RemoteView):
    """Part of :class:`chatd.cluster.Cluster` (kept apart to keep files short)."""

    config: Config
    _server: Server
    mod_store: ClusterModerationStore
    _mod_seq = 0  # the last moderation command applied here
    _mod_origin = False  # applying a command of a local user: its writes are ours
    _touched: set[str]

    # The Cluster's, used here.
    def _send(self, cid: int, callback: Callable[[object], None], *args: Any) -> None:
        raise NotImplementedError

    def _update(self, callback: Callable[[object], None], cid: int, event: str) -> None:
        raise NotImplementedError

    def _event(self, kind: str, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def _unavailable(self, cid: int, rid: object, in_flight: bool = False) -> None:
        raise NotImplementedError

    def _init_moderation(self) -> None:
        self.mod_store = ClusterModerationStore(self)
        self.dispatch.moderation = self.mod_store
        self._server.moderation = self.mod_store
        self._server.console_acts = False  # chatd ctl would act on this node's hub alone
        self._touched = set()

    # ------------------------------------------------------------------ local commands

    def _moderate(self, cid: int, cmd: Command, wall: float) -> None:
        """A shared command of a local registered user."""
        hub = self.hub
        if isinstance(cmd, Mode) and _local_mode(cmd):
            self._apply(hub.handle(cid, cmd, wall))  # a query, or the user's own modes
            self._identity_changed(cid)
            return
        if not isinstance(cmd, Invite) and not hub.has_powers(cid):
            self._apply(hub.handle(cid, cmd, wall))  # refused here, as on every node
            return
        if not self.ready:
            self._unavailable(cid, cmd.rid)
            return
        cmd = _in_room(cmd, hub.rooms_of(cid))

        def done(reply: object) -> None:
            if reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError):
                self._unavailable(cid, cmd.rid, in_flight=True)
                return
            assert isinstance(reply, int)
            if self._open(cid) is None or not hub.is_registered(cid):
                actor = None  # gone meanwhile: the others apply it for a user who left
            else:
                actor = cid
            self._mod_seq = reply
            if actor is not None:
                self._mod_apply(actor, cmd, wall, origin=True)

        body = {"cid": cid, "w": wall, "c": encode(cmd)}
        args = [CHANNEL, self.node, json.dumps(body, separators=(",", ":"))]
        self._send(cid, done, "EVALSHA", MOD_SHA["mod"], 1, SEQ, *args)

    def _mod_apply(self, actor: int, cmd: Command, wall: float, origin: bool) -> None:
        self._mod_origin = origin
        self._touched = set()
        before = self._rooms_now()
        try:
            actions = self.hub.handle(actor, cmd, wall)
            self._apply(actions)
        finally:
            self._mod_origin = False
        if origin:
            for action in actions:
                if isinstance(action, Deliver):
                    event = action.event
                    if isinstance(event, KickEvent | InviteEvent):
                        self._touched.add(event.room)
                    elif isinstance(event, ModeEvent) and event.by:
                        self._touched.add(event.target)
            for room in sorted(self._touched):
                self._save_room(room)
        self._after_moderation(before)

    def _oper(self, cid: int, cmd: Command, wall: float) -> None:
        """OPER: checked here (the credentials are this node's); the others learn the
        user's new status with its user record."""
        self._mod_origin = True
        try:
            actions = self.hub.handle(cid, cmd, wall)
            self._apply(actions)
        finally:
            self._mod_origin = False
        if any(isinstance(a, Deliver) and isinstance(a.event, OperEvent) for a in actions):
            self._identity_changed(cid)

    def _identity_changed(self, cid: int) -> None:
        user = self._local.get(cid)
        address, oper = self.hub.identity(cid)
        if user is None or user.get("o") == oper:
            return
        user["o"] = oper
        if self.ready:  # (else SYNC writes the record as it is here)
            event = self._event("ident", {"cid": cid, "ip": address, "o": oper})
            self._update(_ignore, cid, event)

    def _identity(self, cid: int) -> dict[str, Any]:
        """What a new user's record carries for the other nodes' moderation rules."""
        address, oper = self.hub.identity(cid)
        return {"ip": address, "o": oper}

    def _join_refused(self, cid: int, cmd: Join, wall: float) -> bool:
        """Bans, +i, +k: refused here without asking Redis (the same state everywhere)."""
        return self.hub.join_refusal(cid, cmd.room, cmd.key, wall)

    def _hello_banned(self, cid: int, cmd: Hello, wall: float) -> bool:
        """A server-banned hello is refused (and closed) before its nick is claimed."""
        if not self.hub.server_banned(cid, cmd.nick, wall):
            return False
        self._apply(self.hub.handle(cid, cmd, wall))
        return True

    def _joined_here(self, cid: int, room: str, actions: list[Action]) -> None:
        """After a local join was applied (or refused, if a change came first)."""
        if self.hub.room_cids(room) == (cid,):  # created anew: old rules ended with it
            self.link.command(_ignore, "HDEL", LIVE, fold(room))
        for action in actions:
            if isinstance(action, SaveRoom):
                self._save_room(action.state.name)
        here = {fold(r) for r in self.hub.rooms_of(cid)}
        if self.hub.is_registered(cid) and fold(room) not in here:
            self._drop_rooms(cid, {fold(room)})

    # ------------------------------------------------------------------ other nodes

    def _remote_event(self, kind: str, node: str, arg: bytes, body: dict[str, Any]) -> None:
        if kind == "mod":
            rcid = self._remote.get((node, body["cid"]))
            self._mod_seq = int(arg)
            if rcid is None:
                logger.warning("cluster: moderation by an unknown user of %s: %.200r", node, body)
                return
            self._mod_apply(rcid, decode(body["c"]), float(body["w"]), origin=False)
        elif kind == "ident":
            rcid = self._remote.get((node, body["cid"]))
            if rcid is not None:
                self.hub.mirror(rcid, str(body.get("ip") or ""), body.get("o"))
        elif kind == "fix":
            self._fix_remote(node, body)
        else:
            super()._remote_event(kind, node, arg, body)

    def _add(self, node: str, cid: int, user: dict[str, Any], wall: float) -> int | None:
        rcid = super()._add(node, cid, user, wall)
        if rcid is not None:
            self.hub.mirror(rcid, str(user.get("ip") or ""), user.get("o"))
        return rcid

    def _reconcile(self, node: str, users: dict[int, dict[str, Any]]) -> None:
        """Where a node's users are is what their node decided: no rule says no here."""
        self.hub.admit_all = True
        try:
            super()._reconcile(node, users)
        finally:
            self.hub.admit_all = False
        for cid, user in users.items():
            rcid = self._remote.get((node, cid))
            if rcid is not None:
                self.hub.mirror(rcid, str(user.get("ip") or ""), user.get("o"))

    def _fix_remote(self, node: str, body: dict[str, Any]) -> None:
        """A user of ``node`` left rooms by another's command (a kick): where that
        command was missed (a node synchronising), the user leaves them now."""
        rcid = self._remote.get((node, body["cid"]))
        if rcid is None:
            return
        wanted = {fold(r) for r in body["rooms"]}
        for room in self.hub.rooms_of(rcid):
            if fold(room) not in wanted:
                self._apply(self.hub.handle(rcid, Part(room), self._wall()))

    def _rooms_now(self) -> dict[int, set[str]]:
        return {cid: {fold(r) for r in self.hub.rooms_of(cid)} for cid in self._local}

    def _after_moderation(self, before: dict[int, set[str]]) -> None:
        """What the hub did to users: remote users it removed (killed, banned) are
        forgotten here; local users it took out of rooms have their records rewritten."""
        for key, rcid in list(self._remote.items()):
            if not self.hub.is_registered(rcid):
                del self._remote[key]
        self.accounts.holds_ended()  # held users of ours it removed: their holds end too
        for cid, rooms in before.items():
            if self.hub.is_registered(cid):  # (else closing: its quit follows)
                self._drop_rooms(cid, rooms - {fold(r) for r in self.hub.rooms_of(cid)})

    def _drop_rooms(self, cid: int, lost: set[str]) -> None:
        """Rooms a local user is out of by another's doing (a kick; a join that a change
        before it in the channel's order refused): out of its record too. (Only those:
        the record also holds the joins and parts it has in flight.)"""
        user = self._local.get(cid)
        if user is None or not lost:
            return
        user["rooms"] = [r for r in user["rooms"] if fold(r) not in lost]
        if self.ready:  # (else SYNC writes the record as it is here)
            event = self._event("fix", {"cid": cid, "rooms": user["rooms"]})
            self._update(_ignore, cid, event)

    # ------------------------------------------------------------------ Redis

    def _mod_action(self, action: Action) -> None:
        """The hub's moderation writes (the dispatcher's store calls)."""
        if isinstance(action, LogModeration):
            self.mod_store.entries.append(action.entry)
            if self._mod_origin:
                entry = json.dumps(asdict(action.entry), separators=(",", ":"))
                self.link.command(_ignore, "LPUSH", LOG, entry)
                self.link.command(_ignore, "LTRIM", LOG, 0, LOG_KEEP - 1)
        elif isinstance(action, SaveServerBans) and self._mod_origin:
            bans = [asdict(b) for b in action.bans]
            data = json.dumps({"seq": self._mod_seq, "bans": bans}, separators=(",", ":"))
            self.link.command(
                _ignore, "EVALSHA", MOD_SHA["modsave"], 1, SBANS, "", self._mod_seq, data
            )
        elif isinstance(action, SaveRoom) and self._mod_origin:
            self._touched.add(action.state.name)

    def _save_room(self, room: str) -> None:
        snap = self.hub.room_snapshot(room)
        if snap is None:
            return
        snap["seq"] = self._mod_seq
        key = ROOMS if snap["founder"] else LIVE
        data = json.dumps(snap, separators=(",", ":"))
        self.link.command(
            _ignore, "EVALSHA", MOD_SHA["modsave"], 1, key, fold(room), self._mod_seq, data
        )

    def _up(self) -> None:
        """Connected: the cluster's SYNC, then the moderation state, in that order."""
        for text in MOD_SCRIPTS.values():
            self.link.command(_ignore, "SCRIPT", "LOAD", text)
        super()._up()
        keys = [ROOMS, LIVE, SBANS, LOG]
        self.link.command(self._loaded, "EVALSHA", MOD_SHA["modload"], len(keys), *keys, LOG_MEMORY)

    def _loaded(self, reply: object) -> None:
        if reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError):
            if reply is not LINK_DOWN:
                logger.error("cluster: loading the moderation state failed: %s", reply)
            return
        assert isinstance(reply, bytes)
        data = json.loads(reply)
        hub = self.hub
        for flat in (data.get("rooms"), data.get("live")):
            if isinstance(flat, list):
                for snap in flat[1::2]:
                    hub.load_room_snapshot(json.loads(snap))
        if data.get("sbans"):
            stored = json.loads(data["sbans"])
            hub.load_server_bans([BanInfo(**b) for b in stored["bans"]])
        log = data.get("log")
        if isinstance(log, list):
            self.mod_store.entries.clear()
            self.mod_store.entries.extend(ModLogEntry(**json.loads(e)) for e in reversed(log))
        logger.info("cluster: moderation state loaded")


def _local_mode(cmd: Mode) -> bool:
    """A mode query, a ban-list query or a user mode: answered by this node alone."""
    if cmd.target is not None and not cmd.target.startswith("#"):
        return True
    return not cmd.modes or (cmd.modes.strip("+") in ("b", "q") and not cmd.args)


def _in_room(cmd: Command, rooms: list[str]) -> Command:
    """The actor's current room named (the other hubs may list its rooms in another order)."""
    if not rooms:
        return cmd
    if isinstance(cmd, Mode) and cmd.target is None:
        return replace(cmd, target=rooms[-1])
    if isinstance(cmd, Kick | Ban | Unban | Invite) and cmd.room is None:
        return replace(cmd, room=rooms[-1])
    return cmd
