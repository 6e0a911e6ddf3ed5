"""The hub's account and session rules (a mixin of :class:`chatd.hub.Hub`). Pure.

Kept apart from ``hub.py`` so each file stays readable; docs/accounts.md is the user's
view of the same rules.

**Nick hold.** A connection that drops without ``quit`` keeps its nick, rooms and
account for ``nick_hold_seconds``: its ``_Client`` stays in ``_nicks`` and in its rooms
(under its dead connection id, which the server skips when delivering), and nobody is
told anything. Only a ``hello`` with that session's resume token (from its ``welcome``),
or logged in to the session's account, takes it back: the new connection gets a
``welcome`` with ``resumed``, a ``joined`` and a replay for each room, and the private
messages kept for it; the others see nothing at all. When the hold runs out (``expire``),
the others see the usual ``quit``. A ``hello`` with the token of a session that is still
connected (the old TCP connection is not known to be dead yet) takes it over and closes
the old connection.
In a cluster (chatd.cluster_accounts) a user of another node (id < 0) is never held
here: its own node holds it, and moves it here (``take_over``) or away
(``move_session``) when it is resumed through another node.

Private messages to a held nick are kept for its owner (at most ``MAX_KEPT``), the sender
is told so, and they are delivered on resume or dropped with the hold: never to anyone
else. Beyond ``MAX_KEPT``: ``nick_held``.

**Accounts.** Passwords never reach the hub: the server's account gate
(:mod:`chatd.accounts`) checks or hashes them and fills ``verified`` in. The hub decides
what that allows: a registered nick (``verified.owner``) is only given to a client logged
in to that account, at ``hello`` and at ``nick`` (refused, not renamed later);
``register`` registers the nick one holds; policy ``off``/``optional``/``required`` and
``registration`` open/closed are applied here.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatd.config import Config
from chatd.model import (
    AccountEvent,
    Action,
    AwayNotice,
    Close,
    Command,
    DeleteAccount,
    Deliver,
    DropAccount,
    ErrorCode,
    Hello,
    Identify,
    Joined,
    Notice,
    PrivateMessage,
    Register,
    Replay,
    SaveAccount,
    SetPassword,
    StatsReply,
    Verified,
    Welcome,
)
from chatd.names import fold, nick_skeleton

if TYPE_CHECKING:
    from chatd.hub import _Client, _Room

__all__ = ["AccountRules", "MAX_KEPT"]

MAX_KEPT = 10  # private messages kept for a held nick


class _Refusal(Exception):
    """Internal to the hub: a command is refused with an error reply to its sender."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class AccountRules:
    """Mixin: needs the Hub's ``_config``, ``_clients``, ``_nicks``, ``_new_token``."""

    _config: Config
    _clients: dict[int, _Client]
    _nicks: dict[str, _Client]
    _skeletons: dict[str, _Client]
    _rooms: dict[str, _Room]
    _held: dict[int, _Client]
    _new_token: Callable[[], str]

    # Provided by Hub.
    if TYPE_CHECKING:  # (ModerationPowers': declared here for the type checker only)

        def _server_ban_gate(
            self, client: _Client, command: Hello | Identify, now: float
        ) -> list[Action]: ...

    def _error(self, client: _Client, command: Command, code: str, message: str) -> list[Action]:
        raise NotImplementedError

    def _depart(self, client: _Client, reason: str) -> list[Action]:
        raise NotImplementedError

    def _census(self) -> StatsReply:
        raise NotImplementedError

    def _limits(self) -> tuple[tuple[str, int], ...]:
        raise NotImplementedError

    # ------------------------------------------------------------------ introspection

    def account_of(self, cid: int) -> str | None:
        client = self._clients.get(cid)
        return client.account if client else None

    def held_nicks(self) -> list[str]:
        return sorted(c.nick for c in self._held.values() if c.nick)

    # ------------------------------------------------------------------ cluster
    # (chatd.cluster_accounts)

    def session_token(self, cid: int) -> str:
        """The resume token of ``cid``'s session ("" if none)."""
        client = self._clients.get(cid) or self._held.get(cid)
        return client.token if client is not None else ""

    def describe_remote(self, cid: int, account: str | None, away: str | None) -> None:
        """Silently set a user's account and away (what another node says of its user)."""
        client = self._clients.get(cid)
        if client is not None:
            client.account, client.away = account, away

    def banned_hello(self, cid: int, cmd: Hello, now: float) -> list[Action]:
        """A server ban's refusal of ``cmd`` (and the close), or [] - what ``handle``
        checks before any hello, for a resume the cluster decides first."""
        client = self._clients.get(cid)
        return self._server_ban_gate(client, cmd, now) if client is not None else []

    def end_hold(self, cid: int) -> list[Action]:
        """End ``cid``'s hold now (the cluster ends it with Redis): the usual quit."""
        client = self._held.get(cid)
        return self._depart(client, client.held_reason) if client is not None else []

    def take_over(self, cid: int, old_cid: int, cmd: Hello) -> list[Action]:
        """The cluster granted ``cid`` the held session ``old_cid`` (held here, or a user
        of another node): resume it as a local resume does."""
        client = self._clients.get(cid)
        old = self._held.get(old_cid) or self._clients.get(old_cid)
        if client is None or client.nick is not None or old is None or old.nick is None:
            return []
        return self._resume(client, old, cmd)

    def move_session(self, old_cid: int, new_cid: int) -> list[PrivateMessage] | None:
        """A session held here was resumed on another node: it lives on, silently, as
        that node's user ``new_cid``. Returns the private messages kept for it (None:
        no such session any more)."""
        old = self._held.pop(old_cid, None) or self._clients.pop(old_cid, None)
        if old is None or old.nick is None:
            return None
        self._clients.pop(old_cid, None)
        kept, old.kept = old.kept, []
        old.cid, old.held_until, old.token = new_cid, None, ""
        self._clients[new_cid] = old
        for room in old.rooms.values():
            room.members = {new_cid if c == old_cid else c: m for c, m in room.members.items()}
            room._cids = None
            for group in (room.ops, room.voices):
                if old_cid in group:
                    group.discard(old_cid)
                    group.add(new_cid)
        return kept

    # ------------------------------------------------------------------ nick hold

    def _dropped(self, client: _Client, reason: str, now: float) -> list[Action]:
        """The connection went without quit: hold the session, or depart at once."""
        hold = self._config.nick_hold_seconds
        if client.nick is None or hold <= 0 or client.cid < 0:  # (< 0: its node holds it)
            return self._depart(client, reason)
        del self._clients[client.cid]
        client.held_until = now + hold
        client.held_reason = reason
        self._held[client.cid] = client
        actions: list[Action] = []
        # Bounded: no more held sessions than connections (one who connects and drops in
        # a loop would otherwise pile them up); past it the oldest hold ends early.
        while len(self._held) > self._config.max_clients:
            oldest = next(iter(self._held.values()))
            actions += self._depart(oldest, oldest.held_reason)
        return actions

    def expire(self, now: float) -> list[Action]:
        """Release every hold that has run out (the server calls this now and then)."""
        actions: list[Action] = []
        for client in [c for c in self._held.values() if (c.held_until or 0.0) <= now]:
            actions += self._depart(client, client.held_reason)
        return actions

    def _resumable(self, cmd: Hello, account: str | None) -> _Client | None:
        """The session ``cmd`` may take back: same nick, and its token or its account."""
        if not cmd.nick:
            return None
        holder = self._nicks.get(fold(cmd.nick))
        if holder is None:
            return None
        # bytes: compare_digest refuses str with non-ASCII characters (a client may send any)
        given = cmd.resume.encode("utf-8", "surrogatepass") if cmd.resume else b""
        token = holder.token.encode()
        if given and token and hmac.compare_digest(given, token):
            return holder
        if account is not None and holder.account == account:
            return holder
        return None

    def _resume(self, client: _Client, old: _Client, cmd: Hello) -> list[Action]:
        """Move ``old``'s session onto ``client``'s connection; the others see nothing."""
        actions: list[Action] = []
        if old.cid in self._clients:  # still connected as far as we know: close it
            del self._clients[old.cid]
            note = Notice("this session was taken over by a new connection (resume token)")
            actions.append(Deliver((old.cid,), note))
            actions.append(Close(old.cid, "resumed from another connection", flush=True))
        self._held.pop(old.cid, None)
        client.nick, client.account, client.away = old.nick, old.account, old.away
        assert client.nick is not None
        self._nicks[fold(client.nick)] = client
        self._skeletons[nick_skeleton(client.nick)] = client
        actions.append(self._welcome(client, cmd, resumed=True))
        for key, room in old.rooms.items():
            room.remove(old)
            room.add(client)
            client.rooms[key] = room
            actions.append(Deliver((client.cid,), Joined(room.name, room.topic, room.nicks())))
            actions.append(Replay(client.cid, room.name, self._config.history_replay))
        old.rooms = {}
        for message in old.kept:
            actions.append(Deliver((client.cid,), message))
        old.kept = []
        return actions

    def _welcome(self, client: _Client, cmd: Hello, resumed: bool = False) -> Deliver:
        """The welcome of a new session, or of a resumed one: with a fresh token."""
        assert client.nick is not None
        client.token = self._new_token()
        motd = tuple(line for line in self._config.motd.split("\\n") if line)
        welcome = Welcome(
            client.nick,
            self._config.server_name,
            motd,
            self._census(),
            self._limits(),
            resume=client.token,
            account=client.account,
            resumed=resumed,
        )
        return Deliver((client.cid,), welcome, rid=cmd.rid)

    def _held_refusal(self, nick: str) -> _Refusal:
        return _Refusal(
            ErrorCode.NICK_TAKEN,
            f'nick "{nick[:40]}" is held for its owner, who lost the connection '
            f"(up to {self._config.nick_hold_seconds:g}s)",
        )

    def _keep_for_held(
        self, client: _Client, target: _Client, cmd: Command, event: PrivateMessage
    ) -> list[Action]:
        """A private message to a held nick: keep it for the owner, tell the sender."""
        assert target.nick is not None
        if len(target.kept) >= MAX_KEPT:
            return self._error(
                client,
                cmd,
                ErrorCode.NICK_HELD,
                f"{target.nick} is disconnected and {MAX_KEPT} messages are already "
                "waiting for them; try again later",
            )
        target.kept.append(event)
        note = AwayNotice(
            target.nick,
            "disconnected; your message is kept for them if they come back within "
            f"{self._config.nick_hold_seconds:g}s",
        )
        return [Deliver((client.cid,), event, rid=cmd.rid), Deliver((client.cid,), note)]

    # ------------------------------------------------------------------ accounts

    def _admit(self, client: _Client, cmd: Hello) -> list[Action] | None:
        """The account part of ``hello``: a refusal, a resumed session, or None (go on)."""
        refusal = self._login_refusal(cmd.verified)
        if refusal is not None:
            return self._failed_login(client, cmd, *refusal)
        if cmd.verified is not None and cmd.verified.account is not None:
            client.account = cmd.verified.account
        old = self._resumable(cmd, client.account)  # the token is proof enough, also
        if old is not None:  # with accounts required (the session had logged in)
            return self._resume(client, old, cmd)
        refusal = self._policy_refusal(client.account)
        if refusal is not None:
            raise _Refusal(*refusal)
        self._check_registered_nick(cmd.nick, client.account, cmd.verified)
        return None

    def _login_refusal(self, verified: Verified | None) -> tuple[str, str] | None:
        """(code, message) when credentials came with the command and were refused."""
        if verified is not None and verified.error:
            return verified.error, verified.message or "login refused"
        return None

    def _check_registered_nick(
        self, nick: str, account: str | None, verified: Verified | None
    ) -> None:
        """A registered nick only for its account (refused at hello and nick)."""
        if verified is not None and verified.error:  # the store could not tell: refuse
            raise _Refusal(verified.error, verified.message)
        owner = verified.owner if verified is not None else None
        if owner is not None and (account is None or fold(account) != fold(owner)):
            raise _Refusal(
                ErrorCode.NICK_REGISTERED,
                f'nick "{nick[:40]}" is registered: log in to it (/identify, or account '
                "and account_password in hello, or SASL) or pick another",
            )

    def _policy_refusal(self, account: str | None) -> tuple[str, str] | None:
        if self._config.accounts == "required" and account is None:
            return (
                ErrorCode.ACCOUNT_REQUIRED,
                "this server admits logged-in users only: give account and account_password",
            )
        return None

    def _register(self, client: _Client, cmd: Register, now: float) -> list[Action]:
        if self._config.accounts == "off":
            return self._error(client, cmd, ErrorCode.ACCOUNTS_OFF, "accounts are off here")
        if self._config.registration != "open":
            return self._error(
                client,
                cmd,
                ErrorCode.REGISTRATION_CLOSED,
                "registration is closed here: ask the operator (chatd account add)",
            )
        if client.account is not None:
            return self._error(
                client, cmd, ErrorCode.ALREADY_REGISTERED, f"you are logged in as {client.account}"
            )
        verified = cmd.verified or Verified()
        if verified.owner is not None:
            return self._error(
                client, cmd, ErrorCode.ACCOUNT_EXISTS, f"{client.nick} is registered already"
            )
        if verified.error:
            return self._error(client, cmd, verified.error, verified.message)
        if verified.secret is None:
            return self._error(client, cmd, ErrorCode.BAD_REQUEST, "register: password missing")
        assert client.nick is not None
        client.account = client.nick
        return [
            SaveAccount(client.nick, verified.secret, True, client.cid, rid=cmd.rid),
            Deliver((client.cid,), AccountEvent(client.nick, "registered"), rid=cmd.rid),
        ]

    def _identify(self, client: _Client, cmd: Identify, now: float) -> list[Action]:
        if self._config.accounts == "off":
            return self._error(client, cmd, ErrorCode.ACCOUNTS_OFF, "accounts are off here")
        refusal = self._login_refusal(cmd.verified)
        if refusal is not None:
            return self._failed_login(client, cmd, *refusal)
        account = cmd.verified.account if cmd.verified else None
        if account is None:
            return self._error(client, cmd, ErrorCode.BAD_LOGIN, "wrong account or password")
        client.account = account
        return [Deliver((client.cid,), AccountEvent(account, "identified"), rid=cmd.rid)]

    def _failed_login(self, client: _Client, cmd: Command, code: str, message: str) -> list[Action]:
        actions = self._error(client, cmd, code, message)
        if code == ErrorCode.BAD_LOGIN:
            client.password_failures += 1
            if client.password_failures >= self._config.max_password_failures:
                actions.append(Close(client.cid, "too many wrong passwords"))
        return actions

    def _set_password(self, client: _Client, cmd: SetPassword, now: float) -> list[Action]:
        if client.account is None:
            return self._error(client, cmd, ErrorCode.NOT_LOGGED_IN, "you are not logged in")
        refusal = self._login_refusal(cmd.verified)
        if refusal is not None:
            return self._failed_login(client, cmd, *refusal)
        verified = cmd.verified or Verified()
        if verified.account is None or verified.secret is None:
            return self._error(client, cmd, ErrorCode.BAD_LOGIN, "wrong password")
        return [
            SaveAccount(client.account, verified.secret, False, client.cid, rid=cmd.rid),
            Deliver((client.cid,), AccountEvent(client.account, "password_changed"), rid=cmd.rid),
        ]

    def _drop_account(self, client: _Client, cmd: DropAccount, now: float) -> list[Action]:
        if client.account is None:
            return self._error(client, cmd, ErrorCode.NOT_LOGGED_IN, "you are not logged in")
        refusal = self._login_refusal(cmd.verified)
        if refusal is not None:
            return self._failed_login(client, cmd, *refusal)
        if cmd.verified is None or cmd.verified.account is None:
            return self._error(client, cmd, ErrorCode.BAD_LOGIN, "wrong password")
        name, client.account = client.account, None
        return [
            DeleteAccount(name),
            Deliver((client.cid,), AccountEvent(None, "dropped"), rid=cmd.rid),
        ]
