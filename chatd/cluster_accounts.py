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
- **The nick hold** (a dropped user's session held, and resumed through any node) is
  this class's base, :class:`chatd.cluster_hold.NickHold`; the hello and nick checks
  here refuse a held nick to anyone else.
- **Away** and the logged-in account are part of a user's record in Redis (``aw``,
  ``a``), and a ``look`` event tells the other nodes of a change.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chatd.cluster_account_scripts import ACCOUNT_SCRIPTS, ACCOUNTS
from chatd.cluster_account_store import ClusterAccountStore
from chatd.cluster_hold import HELD_AWAY, SHA, NickHold, _failed
from chatd.cluster_scripts import CHANNEL
from chatd.cluster_sync import _ignore
from chatd.hub_state import MAX_REASON_CHARS
from chatd.model import (
    Action,
    Away,
    DeleteAccount,
    DropAccount,
    ErrorCode,
    Hello,
    Identify,
    Nick,
    Register,
    SaveAccount,
    SetPassword,
    Verified,
)
from chatd.names import clean_line, fold, nick_skeleton, valid_nick

if TYPE_CHECKING:
    from chatd.cluster import Cluster

__all__ = ["ClusterAccounts", "MAX_ACCOUNTS"]

logger = logging.getLogger(__name__)

#: Accounts a cluster keeps (each node mirrors them all: ~200 bytes each).
MAX_ACCOUNTS = 100_000


class ClusterAccounts(NickHold):
    """The cluster layer's part for accounts and away; holds in its base (module doc)."""

    def __init__(self, cluster: Cluster, store: ClusterAccountStore | None) -> None:
        self.c = cluster
        self.store = store
        if store is not None:
            store.writer = self._write
        self.loaded = False  # the mirror is current (loaded since the link came up)
        self._holds = {}
        self._until = {}
        self._users = {}

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
