"""Accounts, the nick hold and away, shared by the nodes of a cluster (docs/cluster.md).

Part of :class:`chatd.cluster.Cluster` (its ``accounts``), by the same rule: each change
is one script in Redis (:mod:`chatd.cluster_account_scripts`) that writes the shared
state and publishes the event on the one channel; every node applies it in channel order,
the node that ran it where the reply arrives.

- **Accounts** live in Redis (hash ``chatd:acct``, the same scrypt records as
  :class:`~chatd.accounts_store.AccountStore`). Each node keeps a mirror of them
  (:class:`ClusterAccountStore`), loaded when its link comes up and kept current by the
  channel, so the account gate checks passwords and nick owners as on one node (same
  passwords module, same per-address throttle - per node). Registering is one atomic
  script: of two nodes registering one name at once, exactly one wins.
- **The nick hold**: a local user that drops stays held here (the hub's hold), its nick
  keys stay this node's, and ``chatd:hold:NICK`` says so with the hash of its resume
  token and its account. A ``hello`` with the token (or logged in to the account) on
  *any* node runs ``resume``: the session moves there silently (no quit, no join), the
  private messages kept for it follow.
- **Away** and the logged-in account are part of a user's record in Redis (``aw``,
  ``a``), and a ``look`` event tells the other nodes of a change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import hiredis

from chatd.cluster_account_scripts import ACCOUNT_SCRIPTS, ACCOUNTS, HOLD
from chatd.cluster_account_store import ClusterAccountStore
from chatd.cluster_scripts import CHANNEL, PREFIX, sha
from chatd.cluster_sync import _ignore, _message, _nick_keys
from chatd.hub_state import MAX_REASON_CHARS
from chatd.model import (
    Action,
    Away,
    DeleteAccount,
    Deliver,
    Disconnected,
    DropAccount,
    ErrorCode,
    Hello,
    Identify,
    Join,
    Nick,
    PrivMsg,
    Register,
    Replay,
    SaveAccount,
    SetPassword,
    Verified,
)
from chatd.names import clean_line, fold, nick_skeleton, valid_nick
from chatd.redis_link import LINK_DOWN

if TYPE_CHECKING:
    from chatd.cluster import Cluster

__all__ = ["ClusterAccounts", "MAX_ACCOUNTS"]

logger = logging.getLogger(__name__)

#: Accounts a cluster keeps (each node mirrors them all: ~200 bytes each).
MAX_ACCOUNTS = 100_000
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


class ClusterAccounts:
    """The cluster layer's part for accounts, holds and away (see the module doc)."""

    def __init__(self, cluster: Cluster, store: ClusterAccountStore | None) -> None:
        self.c = cluster
        self.store = store
        if store is not None:
            store.writer = self._write
        self.loaded = False  # the mirror is current (loaded since the link came up)
        self._holds: dict[int, str] = {}  # local cid held here -> its record in Redis
        self._until: dict[int, float] = {}  # local cid held here -> when its hold ends
        self._users: dict[int, dict[str, Any]] = {}  # remote hub id -> its user record

    @property
    def ready(self) -> bool:
        return self.c.ready and (self.loaded or self.store is None)

    def _hold_key(self, nick: str) -> str:
        return HOLD + fold(nick)

    def _eval(self, callback: Any, name: str, keys: list[str], args: list[Any]) -> None:
        self.c.link.command(callback, "EVALSHA", SHA[name], len(keys), *keys, *args)

    # ------------------------------------------------------------------ link

    def up(self) -> None:
        """The link is up (SYNC sent): load the scripts, then the accounts' mirror."""
        self.loaded = False
        for text in ACCOUNT_SCRIPTS.values():
            self.c.link.command(_ignore, "SCRIPT", "LOAD", text)
        for cid in list(self._holds):
            self._write_hold(cid)
        if self.store is None:
            return

        def done(reply: object) -> None:
            if not _failed(reply) and self.store is not None:
                self.store.load(reply)
                self.loaded = True
                logger.info("cluster: %d accounts loaded", len(self.store))

        self.c.link.command(done, "HGETALL", ACCOUNTS)

    # ------------------------------------------------------------------ local commands

    def hello(self, cid: int, cmd: Hello, wall: float) -> bool:
        """Before the cluster's hello: a resume, or an account refusal (before any
        claim in Redis). False: go on with the ordinary hello."""
        hub = self.c.hub
        if hub.is_registered(cid) or not valid_nick(cmd.nick):
            return False
        if self.c.ready and not self.ready:  # the accounts' mirror is loading
            self.c._unavailable(cid, cmd.rid)
            return True
        verified = cmd.verified or Verified()
        if verified.error:
            return self._refuse(cid, cmd, wall)
        holder = hub.nick_holder(cmd.nick)
        if holder is not None and (cmd.resume or verified.account):
            password = self.c.config.password
            given = (cmd.password or "").encode()
            if password is not None and not hmac.compare_digest(given, password.encode()):
                return self._refuse(cid, cmd, wall)  # the server password, first
            banned = hub.banned_hello(cid, cmd, wall)
            if banned:
                self.c._apply(banned)
            elif holder > 0 and holder not in self._holds:
                why = f'nick "{cmd.nick[:40]}" is already in use (a live session)'
                self.c._error(cid, ErrorCode.NICK_TAKEN, why, cmd.rid)
            else:
                self._resume(cid, cmd, holder, wall)
            return True
        return self._admission(cid, cmd, wall)

    def _admission(self, cid: int, cmd: Hello, wall: float) -> bool:
        """The hub's account refusals of a hello, decided before the nick is claimed."""
        verified = cmd.verified or Verified()
        account, owner = verified.account, verified.owner
        if (self.c.config.accounts == "required" and account is None) or (
            owner is not None and (account is None or fold(account) != fold(owner))
        ):
            return self._refuse(cid, cmd, wall)
        holder = self.c.hub.nick_holder(cmd.nick)
        if holder is not None and (holder in self._holds or self._held_remote(holder)):
            why = f'nick "{cmd.nick[:40]}" is held for its owner, who lost the connection'
            self.c._error(cid, ErrorCode.NICK_TAKEN, why, cmd.rid)
            return True
        return False

    def _held_remote(self, rcid: int) -> bool:
        return rcid < 0 and bool(self._users.get(rcid, {}).get("h"))

    def _refuse(self, cid: int, cmd: Hello, wall: float) -> bool:
        refused = self.c.hub.handle(cid, replace(cmd, autojoin=(), resume=None), wall)
        self.c.dispatch.password_attempt(cid, refused)
        self.c._apply(refused)
        return True

    def nick_refused(self, cid: int, cmd: Nick, wall: float) -> bool:
        """A registered (or held) nick is refused before it is claimed in Redis."""
        hub = self.c.hub
        if self.c.ready and not self.ready:  # the accounts' mirror is loading
            self.c._unavailable(cid, cmd.rid)
            return True
        old = hub.nick_of(cid) or ""
        verified = cmd.verified or Verified()
        owner, account = verified.owner, hub.account_of(cid)
        if fold(cmd.nick) != fold(old) and (
            verified.error
            or (owner is not None and (account is None or fold(account) != fold(owner)))
        ):
            self.c._apply(hub.handle(cid, cmd, wall))  # the hub's refusal
            return True
        holder = hub.nick_holder(cmd.nick)
        if holder is not None and holder != cid and self._held_remote(holder):
            why = f'nick "{cmd.nick[:40]}" is held for its owner, who lost the connection'
            self.c._error(cid, ErrorCode.NICK_TAKEN, why, cmd.rid)
            return True
        return False

    def run(self, cid: int, command: object, wall: float) -> None:
        """register, identify, passwd, unregister, away from a local client."""
        hub, c = self.c.hub, self.c
        if not isinstance(command, Away) and not self.ready:
            c._unavailable(cid, getattr(command, "rid", None))
            return
        match command:
            case Register():
                self._register(cid, command, wall)
                return
            case Away(message=message):
                c._apply(hub.handle(cid, command, wall))
                away = clean_line(message or "")[:MAX_REASON_CHARS] or None
                if cid in c._local:
                    c._local[cid]["aw"] = away
            case SetPassword() | DropAccount():
                self._change(cid, command, hub.handle(cid, command, wall))
                return
            case Identify():
                c._apply(hub.handle(cid, command, wall))
                if cid in c._local:
                    c._local[cid]["a"] = hub.account_of(cid)
        self._look(cid)

    def _change(self, cid: int, cmd: SetPassword | DropAccount, actions: list[Action]) -> None:
        """A new password or a dropped account: written in Redis before it is confirmed
        to the user (so every node knows it by then)."""
        c = self.c
        writes = [a for a in actions if isinstance(a, SaveAccount | DeleteAccount)]
        rest = [a for a in actions if not isinstance(a, SaveAccount | DeleteAccount)]
        if not writes or self.store is None:
            c._apply(rest)  # refused
            return
        store, name = self.store, writes[0].name
        secret = writes[0].secret if isinstance(writes[0], SaveAccount) else None
        record, args = self._set_args(name, secret)

        def done(reply: object) -> None:
            if _failed(reply):
                c._unavailable(cid, cmd.rid, in_flight=True)
                return
            if record:
                store.put(record)
            else:
                store.remove(name)
            c._apply(rest)
            if cid in c._local:
                c._local[cid]["a"] = c.hub.account_of(cid)
            self._look(cid)

        c._send(cid, done, "EVALSHA", SHA["acct_set"], 0, *args)

    def _look(self, cid: int) -> None:
        """Tell the other nodes this user's account and away now."""
        c = self.c
        user = c._local.get(cid)
        if user is None or not c.ready:
            return  # SYNC writes it when Redis is back
        event = c._event("look", {"cid": cid, "a": user.get("a"), "aw": user.get("aw")})
        c._update(lambda reply: None, cid, event)

    def _register(self, cid: int, cmd: Register, wall: float) -> None:
        hub, c, config = self.c.hub, self.c, self.c.config
        verified = cmd.verified or Verified()
        nick = hub.nick_of(cid)
        if (
            nick is None
            or self.store is None
            or config.accounts == "off"
            or config.registration != "open"
            or hub.account_of(cid) is not None
            or verified.owner is not None
            or verified.error
            or verified.secret is None
        ):
            c._apply(hub.handle(cid, cmd, wall))  # the hub's refusal
            return
        store = self.store
        record = json.dumps({"n": nick, "s": verified.secret.decode(), "c": round(wall, 3)})
        event = c._event("acct", {"op": "add", "rec": record})

        def done(reply: object) -> None:
            if _failed(reply):
                c._unavailable(cid, cmd.rid, in_flight=True)
            elif reply == 0:
                why = f"{nick} (or a nick like it) is registered already"
                c._error(cid, ErrorCode.ACCOUNT_EXISTS, why, cmd.rid)
            elif reply != 1:
                why = "this cluster has as many accounts as it keeps; ask the operator"
                c._error(cid, ErrorCode.REGISTRATION_CLOSED, why, cmd.rid)
            else:
                store.put(record)
                if c._open(cid) is not None and hub.nick_of(cid) == nick:
                    c._apply(hub.handle(cid, cmd, c._wall()))  # -> registered
                    if cid in c._local:
                        c._local[cid]["a"] = hub.account_of(cid)
                    self._look(cid)

        args = [fold(nick), nick_skeleton(nick), record, MAX_ACCOUNTS, CHANNEL, event]
        c._send(cid, done, "EVALSHA", SHA["acct_add"], 0, *args)

    def _set_args(self, name: str, secret: bytes | None) -> tuple[str, list[Any]]:
        """The new record ("" to drop the account) and the ``acct_set`` script's args."""
        record = ""
        if secret is not None and self.store is not None:
            found = self.store.get(name)
            created = found.created if found is not None else 0.0
            record = json.dumps({"n": name, "s": secret.decode(), "c": created})
        body = {"op": "set" if record else "del", "n": name, "rec": record}
        event = self.c._event("acct", body)
        return record, [fold(name), nick_skeleton(name), record, CHANNEL, event]

    def _write(self, op: str, name: str, secret: bytes | None) -> None:
        """The store's writer (a change not made through ``_change``)."""

        def done(reply: object) -> None:
            if _failed(reply):
                logger.error("cluster: account %s: %s not confirmed by Redis", name, op)

        self._eval(done, "acct_set", [], self._set_args(name, secret)[1])

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

    # ------------------------------------------------------------------ other nodes

    def describe(self, rcid: int, user: dict[str, Any]) -> None:
        """What another node says of its user (hello, SYNC): account, away, held."""
        self._users[rcid] = user
        away = HELD_AWAY if user.get("h") else user.get("aw")
        self.c.hub.describe_remote(rcid, user.get("a"), away)
        if len(self._users) > 2 * len(self.c._remote) + 64:
            alive = set(self.c._remote.values())
            self._users = {k: v for k, v in self._users.items() if k in alive}

    def event(self, kind: str, node: str, body: dict[str, Any]) -> bool:
        """An event of another node's on the channel; False: not one of ours."""
        c = self.c
        if kind == "acct":
            if self.store is not None:
                if body["op"] == "del":
                    self.store.remove(body["n"])
                else:
                    self.store.put(body["rec"])
            return True
        if kind == "resume":
            self._moved(node, body)
            return True
        if kind not in ("hold", "look"):
            return False
        rcid = c._remote.get((node, body["cid"]))
        user = self._users.get(rcid) if rcid is not None else None
        if rcid is None or user is None:
            return True
        if kind == "hold":
            self.describe(rcid, {**user, "h": 1})
            return True
        before = user.get("aw")
        self.describe(rcid, {**user, "a": body.get("a"), "aw": body.get("aw")})
        if before != body.get("aw") and not user.get("h"):
            c.hub.describe_remote(rcid, user.get("a"), before)  # the hub tells the room
            c._apply(c.hub.handle(rcid, Away(body.get("aw")), c._wall()))
        return True

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
