"""The nick hold across the nodes of a cluster: a dropped user's session held, and
resumed through any node (docs/cluster.md "Accounts, the nick hold and away").

The part of :class:`chatd.cluster_accounts.ClusterAccounts` (its base) that holds
sessions. A local user that drops stays held here (the hub's hold), its nick keys stay
this node's, and ``chatd:hold:NICK`` says so with the hash of its resume token and its
account. A ``hello`` with the token (or logged in to the account) on *any* node runs
``resume``: the session moves there silently (no quit, no join), the private messages
kept for it follow (:meth:`NickHold.keep`, :meth:`NickHold._moved`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import hiredis

from chatd.cluster_account_scripts import ACCOUNT_SCRIPTS, HOLD
from chatd.cluster_account_store import ClusterAccountStore
from chatd.cluster_scripts import CHANNEL, PREFIX, sha
from chatd.cluster_sync import _ignore, _message, _nick_keys
from chatd.model import (
    Deliver,
    Disconnected,
    ErrorCode,
    Hello,
    Join,
    PrivMsg,
    Replay,
    Verified,
)
from chatd.names import fold
from chatd.redis_link import LINK_DOWN

if TYPE_CHECKING:
    from chatd.cluster import Cluster

__all__ = ["NickHold", "HELD_AWAY"]


#: What others see as a held user's away message (whois, a private message's notice).
HELD_AWAY = "lost the connection; the nick is held for them (messages are kept)"
#: A hold ends here this much before the hub's own (so the hub never frees a nick that
#: Redis still gives this node).
_MARGIN = 0.3
SHA = {name: sha(text) for name, text in ACCOUNT_SCRIPTS.items()}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest() if token else ""


def _failed(reply: object) -> bool:
    return reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError)


class NickHold:
    """Holds and resumes (see the module doc); :class:`ClusterAccounts` is the rest."""

    c: Cluster
    store: ClusterAccountStore | None
    loaded: bool
    _holds: dict[int, str]  # local cid held here -> its record in Redis
    _until: dict[int, float]  # local cid held here -> when its hold ends
    _users: dict[int, dict[str, Any]]  # remote hub id -> its user record

    # ClusterAccounts', used here.
    def _admission(self, cid: int, cmd: Hello, wall: float) -> bool:
        raise NotImplementedError

    def describe(self, rcid: int, user: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        return self.c.ready and (self.loaded or self.store is None)

    def _hold_key(self, nick: str) -> str:
        return HOLD + fold(nick)

    def _eval(self, callback: Any, name: str, keys: list[str], args: list[Any]) -> None:
        self.c.link.command(callback, "EVALSHA", SHA[name], len(keys), *keys, *args)

    # ------------------------------------------------------------------ the nick hold

    def hold(self, cid: int, reason: str) -> bool:
        """A local user dropped (the hub holds it next): hold its nick cluster-wide."""
        c, hub = self.c, self.c.hub
        seconds = c.config.nick_hold_seconds
        user = c._local.get(cid)
        if seconds <= 0 or user is None or not hub.is_registered(cid):
            return False  # no hold, or a quit
        c._queued.pop(cid, None)
        # Bounded as the hub bounds its holds (no more than connections): past it the
        # oldest hold ends early, here and so in the hub and everywhere at once.
        while len(self._holds) >= max(1, c.config.max_clients):
            oldest = next(iter(self._holds))
            self._hold_over(oldest, self._holds[oldest], "connection lost")
        user["h"] = 1
        account = hub.account_of(cid)
        record = json.dumps(
            {
                "node": c.node,
                "cid": str(cid),
                "t": _digest(hub.session_token(cid)),
                "a": fold(account) if account else "",
            }
        )
        self._holds[cid] = record
        when = c.loop.now + max(0.0, seconds - _MARGIN)
        self._until[cid] = when
        if c.ready:
            self._write_hold(cid)
        c.loop.call_at(when, lambda: self._hold_over(cid, record, reason))
        return True

    def holds_ended(self) -> None:
        """After a moderation command: held users of this node's that the hub removed (a
        kill, a server ban - as every node's hub did) are gone; their holds end now,
        in Redis too, so their nicks are free everywhere at once."""
        c = self.c
        for cid, record in list(self._holds.items()):
            nick = c._local.get(cid, {}).get("n")
            if nick is not None and c.hub.nick_holder(nick) != cid:
                self._hold_over(cid, record, "disconnected by a server operator")

    def _write_hold(self, cid: int) -> None:
        """The hold in Redis (again, after Redis was away: it may have lost it)."""
        c = self.c
        px = int((self._until[cid] - c.loop.now + _MARGIN) * 1000)
        user = c._local.get(cid)
        if user is None or px <= 0:
            return
        keys = [self._hold_key(user["n"]), c._users_key()]
        event = c._event("hold", {"cid": cid})
        args = [self._holds[cid], px, cid, c._user_json(cid), CHANNEL, event]
        self._eval(_ignore, "hold_set", keys, args)

    def _hold_over(self, cid: int, record: str, reason: str) -> None:
        c = self.c
        if self._holds.get(cid) != record:
            return  # resumed meanwhile
        del self._holds[cid]
        self._until.pop(cid, None)
        user = c._local.pop(cid, None)
        if user is None:
            return
        c._apply(c.hub.end_hold(cid))  # the hub frees it now, with Redis (not later)
        if c.ready:
            self._eval(_ignore, "hold_end", [self._hold_key(user["n"])], [record])
        c._publish_quit(cid, reason, user, announce=c.ready)

    def _resume(self, cid: int, cmd: Hello, holder: int, wall: float) -> None:
        """Take back a held session (here or on another node) with its token or account."""
        c, hub = self.c, self.c.hub
        if not self.ready:
            c._unavailable(cid, cmd.rid)
            return
        verified = cmd.verified or Verified()
        source = c._local.get(holder) if holder > 0 else self._users.get(holder)
        if source is None:
            self._resume_refused(cid, cmd, holder, wall)
            return
        rooms = source["rooms"] if holder > 0 else hub.rooms_of(holder)
        user = {
            "n": source["n"], "u": source.get("u", ""), "r": source.get("r", ""),
            "rooms": list(rooms), "a": source.get("a"), "aw": source.get("aw"),
        }  # fmt: skip
        streams = [PREFIX + "s:" + fold(room) for room in rooms]
        keys = [self._hold_key(cmd.nick), *_nick_keys(cmd.nick), c._users_key(), *streams]
        account = verified.account
        args = [
            c.node, cid, _digest(cmd.resume or ""), fold(account) if account else "",
            json.dumps(user), CHANNEL, max(1, c.config.history_replay),
        ]  # fmt: skip

        def done(reply: object) -> None:
            if _failed(reply):
                c._unavailable(cid, cmd.rid, in_flight=True)
            elif not isinstance(reply, bytes):
                self._resume_refused(cid, cmd, holder, c._wall())
            else:
                self._resumed(cid, cmd, user, json.loads(reply))

        c._send(cid, done, "EVALSHA", SHA["resume"], len(keys), *keys, *args)

    def _resume_refused(self, cid: int, cmd: Hello, holder: int, wall: float) -> None:
        """Not a session this token or account may take: an ordinary hello."""
        c = self.c
        if c._open(cid) is None:
            return
        if holder > 0 and c.hub.nick_holder(cmd.nick) == holder:
            why = f'nick "{cmd.nick[:40]}" is held for its owner, who lost the connection'
            c._error(cid, ErrorCode.NICK_TAKEN, why, cmd.rid)
            return
        plain = replace(cmd, resume=None)
        if not self._admission(cid, plain, wall):
            c._hello(cid, plain, wall)

    def _resumed(self, cid: int, cmd: Hello, user: dict[str, Any], data: dict[str, Any]) -> None:
        c, hub, wall = self.c, self.c.hub, self.c._wall()
        node, ocid = data["node"], int(data["ocid"])
        if node == c.node:
            self._holds.pop(ocid, None)
            self._until.pop(ocid, None)
            c._local.pop(ocid, None)
            old: int | None = ocid
        else:
            old = c._remote.pop((node, ocid), None)
            self._users.pop(old or 0, None)
        c._local[cid] = user
        if c._open(cid) is None:  # gone meanwhile: the session is this node's to end
            if old is not None and old < 0:
                c._apply(hub.handle(old, Disconnected("connection lost"), wall))
            c._local.pop(cid)
            c._publish_quit(cid, "connection lost", user, announce=True)
            return
        actions = hub.take_over(cid, old, cmd) if old is not None else []
        if not actions:  # this node did not see that session: a new one
            actions = hub.handle(cid, replace(cmd, resume=None, autojoin=()), wall)
        hub.describe_remote(cid, user.get("a"), user.get("aw"))
        replays: dict[str, list[Any]] = {}
        for room, entries in zip(user.get("rooms", []), data.get("msgs") or [], strict=False):
            stored = [
                _message(e, room) for e in reversed(entries if isinstance(entries, list) else [])
            ]
            if stored:
                c._last[fold(room)] = max(c._last.get(fold(room), 0), stored[-1].mid)
            stored = [m for m in stored if not m.notice]
            replays[fold(room)] = stored[max(0, len(stored) - c.config.history_replay) :]
        for action in actions:
            if isinstance(action, Replay):
                c._replay = replays.get(fold(action.room), [])
            c._apply([action])
            c._replay = []

    def _moved(self, node: str, body: dict[str, Any]) -> None:
        """A held session was resumed on ``node`` (as its client ``cid``)."""
        c, hub = self.c, self.c.hub
        was, ocid, cid = body["node"], int(body["ocid"]), int(body["cid"])
        if was != c.node:
            rcid = c._remote.pop((was, ocid), None)
            if rcid is not None:
                c._remote[(node, cid)] = rcid
                seen = self._users.pop(rcid, {})
                self.describe(rcid, {k: v for k, v in seen.items() if k != "h"})
            return
        self._holds.pop(ocid, None)
        self._until.pop(ocid, None)
        mine = c._local.pop(ocid, None) or {}
        user = {k: v for k, v in mine.items() if k != "h"}
        rcid = c._next_rcid
        kept = hub.move_session(ocid, rcid)
        if kept is None:  # the hold ended here meanwhile: the user comes back
            back = c._add(node, cid, user, c._wall()) if user else None
            if back is not None:
                for room in user.get("rooms", []):
                    c._apply(hub.handle(back, Join(room), c._wall()))
            return
        c._next_rcid -= 1
        c._remote[(node, cid)] = rcid
        self.describe(rcid, user)
        for pm in kept:  # the private messages kept here follow their owner
            body = {
                "cid": cid, "s": pm.sender, "to": pm.to, "t": pm.text,
                "ts": pm.ts, "no": pm.notice, "me": pm.action,
            }  # fmt: skip
            c.link.command(_ignore, "PUBLISH", PREFIX + "pm:" + node, c._event("pm", body))

    def keep(self, cid: int, body: dict[str, Any]) -> bool:
        """A private message from another node to a user held here: kept for them."""
        hub, c = self.c.hub, self.c
        if cid not in self._holds:
            return False
        sender = hub.nick_holder(body["s"])
        nick = c._local.get(cid, {}).get("n")
        if sender is not None and sender < 0 and nick:
            command = PrivMsg(nick, body["t"], bool(body.get("no")), bool(body.get("me")))
            c._apply([a for a in hub.handle(sender, command, c._wall()) if _to_local(a)])
        return True


def _to_local(action: object) -> bool:
    return not isinstance(action, Deliver) or any(cid > 0 for cid in action.cids)
