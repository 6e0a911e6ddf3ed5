"""The hub's moderation rules (a mixin of :class:`chatd.hub.Hub`; the ban commands are in
:mod:`chatd.moderation_bans`, modes, invitations and the server operators' powers in
:mod:`chatd.moderation_powers`). Pure.

docs/moderation.md is the user's view of the same rules. In short:

- **Server operators** are the accounts named in ``operators`` (while logged in), or a
  connection that gave ``oper NAME PASSWORD`` matching the operator credentials the
  server read from ``--oper-password-file`` (the hub gets them with
  :meth:`ModerationRules.set_operators`). They may do everything in every room, and
  ``kill``, server bans, ``announce``, the whole ``modlog``, addresses in ``whois``.
- **Rooms**: a room created by a logged-in user is *registered*: that account is its
  founder, gets operator status on every join, and the room's modes, key, topic, bans
  and mutes persist (``SaveRoom``). A room created by someone not logged in is
  unregistered and behaves as before (no operators but server operators, not saved).
- **Bans and mutes** name a mask (``nick!user@host`` glob over the user's address, or
  ``$a:ACCOUNT``). A ban that names a present user also records that user's account (or,
  when not logged in, address), so a new nick or a reconnect does not evade it.
- Every moderation action is logged (``LogModeration``): who, what, whom, why, when.

Refusals are ``_Refusal``\\ s with a clear message: ``not_operator`` (a room power),
``not_server_operator``, ``banned``, ``invite_only``, ``bad_key``, ``muted``,
``cannot_send``, ``bad_mode``, ``not_in_that_room``, ``already_in_room``.
"""

from __future__ import annotations

import fnmatch
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatd.config import Config
from chatd.hub_accounts import _Refusal
from chatd.model import (
    Action,
    BanInfo,
    Close,
    Command,
    Deliver,
    Error,
    ErrorCode,
    Event,
    Hello,
    Identify,
    Kick,
    KickEvent,
    LogModeration,
    ModeEvent,
    ModLogEntry,
    RoomState,
    SaveRoom,
)
from chatd.names import clean_line, fold

if TYPE_CHECKING:
    from chatd.hub import _Client, _Room

__all__ = [
    "ModerationRules",
    "RoomRules",
    "CONSOLE_CID",
    "ROOM_FLAGS",
    "USER_MODES",
    "MAX_BANS",
    "MAX_MODES",
    "parse_duration",
]

CONSOLE_CID = 0  # `chatd ctl` acts as this pseudo-client (the server's cids start at 1)
ROOM_FLAGS = "imnt"  # flag modes; with k (key), b/q (lists), o/v (member status)
USER_MODES = "io"  # everybody is +i; +o: server operator
MAX_BANS = 100  # per list (bans, mutes) of a room, and of the server
MAX_MODES = 6  # mode changes with an argument per command (IRC's MODES)
MAX_KEY_CHARS = 23
MAX_INVITES = 100  # pending invitations per room
MAX_CHANGES = 12  # mode letters per command
MAX_ARG_CHARS = 300  # all arguments of one mode command (one IRC line must hold them)
MAX_ROOMS_PER_FOUNDER = 20  # registered rooms per account; more are created unregistered
MAX_REGISTERED_ROOMS = 10_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int | None:
    """``"90"``, ``"30s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"1w"`` -> seconds; None if it
    is not a duration (then it is the start of a reason)."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    if not number.isascii() or not number.isdigit() or len(number) > 9:
        return None
    return int(number) * _UNITS[unit]


@dataclass(eq=False)
class RoomRules:
    """A room's moderation state (mutable; the hub's; persisted when ``founder`` is set)."""

    founder: str | None = None
    modes: set[str] = field(default_factory=lambda: {"n"})
    key: str | None = None
    topic: str = ""
    bans: list[BanInfo] = field(default_factory=list)
    quiets: list[BanInfo] = field(default_factory=list)

    def state(self, name: str) -> RoomState:
        assert self.founder is not None
        modes = "".join(sorted(self.modes))
        return RoomState(
            name, self.founder, modes, self.key, self.topic, tuple(self.bans), tuple(self.quiets)
        )

    @classmethod
    def from_state(cls, state: RoomState) -> RoomRules:
        modes = {m for m in state.modes if m in ROOM_FLAGS} | {"n"}
        return cls(
            state.founder, modes, state.key, state.topic, list(state.bans), list(state.quiets)
        )


def _matches(ban: BanInfo, client: _Client, nick: str, account: str | None, now: float) -> bool:
    if ban.expires is not None and ban.expires <= now:
        return False
    if ban.account and account and fold(ban.account) == fold(account):
        return True
    if ban.address and client.address and ban.address == client.address:
        return True
    if ban.mask.startswith("$a:"):
        return account is not None and fold(ban.mask[3:]) == fold(account)
    who = f"{nick}!{client.user or nick}@{client.address or '*'}"
    return fnmatch.fnmatchcase(fold(who), fold(ban.mask))


class ModerationRules:
    """Mixin: needs the Hub's ``_config``, ``_clients``, ``_nicks``, ``_rooms`` and its
    room helpers."""

    _config: Config
    _clients: dict[int, _Client]
    _held: dict[int, _Client]
    _nicks: dict[str, _Client]
    _rooms: dict[str, _Room]
    _saved_rooms: dict[str, RoomRules]
    _server_bans: list[BanInfo]
    _operators: frozenset[str]
    _oper_credentials: dict[str, str]
    admit_all = False

    if TYPE_CHECKING:  # the Hub's, used here

        def _error(
            self, client: _Client, command: Command, code: str, message: str
        ) -> list[Action]: ...
        def _reply(self, client: _Client, command: Command, event: Event) -> Deliver: ...
        def _room_of(self, client: _Client, name: str | None) -> _Room: ...
        def _existing_room(self, name: str) -> _Room: ...
        def _leave(self, client: _Client, room: _Room) -> None: ...
        def _depart(self, client: _Client, reason: str) -> list[Action]: ...
        def _check_text(self, text: str) -> str: ...

    def _init_moderation(self) -> None:
        self._saved_rooms = {}
        self._server_bans = []
        self._operators = frozenset(fold(name) for name in _names(self._config.operators))
        self._oper_credentials = {}

    # ------------------------------------------------------------------ the server's calls

    def load_moderation(self, rooms: Iterable[RoomState], server_bans: Iterable[BanInfo]) -> None:
        """What the store kept: registered rooms and the server's bans (at startup)."""
        for state in rooms:
            self._saved_rooms[fold(state.name)] = RoomRules.from_state(state)
        self._server_bans = list(server_bans)[-MAX_BANS:]

    def set_operators(self, accounts: Iterable[str], credentials: dict[str, str]) -> None:
        """Operator accounts and OPER credentials (name -> password); at start and reload."""
        self._operators = frozenset(fold(name) for name in accounts)
        self._oper_credentials = {fold(k): v for k, v in credentials.items()}

    def is_server_operator(self, client: _Client) -> bool:
        if client.cid == CONSOLE_CID or client.oper is not None:
            return True
        return client.account is not None and fold(client.account) in self._operators

    # ------------------------------------------------------------------ hooks of the hub

    def _room_rules(self, key: str, client: _Client) -> RoomRules:
        """The rules of a room being created: saved ones, or new (registered when the
        creator is logged in)."""
        rules = self._saved_rooms.get(key)
        if rules is not None:
            return rules
        if client.account is None or not self._may_register(client.account):
            return RoomRules()
        rules = self._saved_rooms[key] = RoomRules(client.account, {"n", "t"})
        return rules

    def _may_register(self, account: str) -> bool:
        """Registered rooms are kept forever: bounded per founder and in all."""
        if len(self._saved_rooms) >= MAX_REGISTERED_ROOMS:
            return False
        mine = sum(
            1 for r in self._saved_rooms.values() if r.founder and fold(r.founder) == fold(account)
        )
        return mine < MAX_ROOMS_PER_FOUNDER

    def _check_join(
        self, client: _Client, rules: RoomRules, name: str, key: str | None, now: float
    ) -> None:
        if self.admit_all or self.is_server_operator(client) or self._is_founder(client, rules):
            return  # (admit_all: the cluster restoring who is where, decided elsewhere)
        assert client.nick is not None
        room = self._rooms.get(fold(name))
        invited = room is not None and fold(client.nick) in room.invited
        for ban in rules.bans:
            if _matches(ban, client, client.nick, client.account, now):
                why = f" ({ban.reason})" if ban.reason else ""
                raise _Refusal(ErrorCode.BANNED, f"you are banned from {name}{why}")
        if "i" in rules.modes and not invited:
            raise _Refusal(ErrorCode.INVITE_ONLY, f"{name} is invite-only: ask an operator")
        if (
            rules.key is not None
            and not invited
            and not hmac.compare_digest((key or "").encode(), rules.key.encode())
        ):
            raise _Refusal(ErrorCode.BAD_KEY, f"{name} needs the right key (/join {name} KEY)")

    def _joined(self, client: _Client, room: _Room) -> list[Action]:
        """After ``client`` joined ``room``: the founder is an operator; a new registered
        room is saved."""
        assert client.nick is not None
        room.invited.discard(fold(client.nick))
        if self._is_founder(client, room.rules):
            room.ops.add(client.cid)
            if len(room.members) == 1:  # (re)created: make sure the store has it
                return self._save(room)
        return []

    def _check_speak(self, client: _Client, room: _Room, now: float) -> None:
        if client.cid in room.ops or self.is_server_operator(client):
            return
        assert client.nick is not None
        for quiet in room.rules.quiets:
            if _matches(quiet, client, client.nick, client.account, now):
                raise _Refusal(ErrorCode.MUTED, f"you are muted in {room.name}; nobody saw that")
        if "m" in room.rules.modes and client.cid not in room.voices:
            raise _Refusal(
                ErrorCode.CANNOT_SEND,
                f"{room.name} is moderated (+m): only voiced users and operators speak",
            )

    def _check_topic(self, client: _Client, room: _Room) -> None:
        if "t" in room.rules.modes:
            self._require_op(client, room, "set the topic (the room is +t)")

    def _prefix(self, room: _Room, cid: int) -> str:
        return ("@" if cid in room.ops else "") + ("+" if cid in room.voices else "")

    def _prefixes(self, room: _Room) -> tuple[str, ...]:
        """Per member (as ``room.nicks()``); () when nobody has operator or voice."""
        if not room.ops and not room.voices:
            return ()
        return tuple(self._prefix(room, c.cid) for c in room.members.values() if c.nick)

    def _server_ban_gate(
        self, client: _Client, command: Hello | Identify, now: float
    ) -> list[Action]:
        """A server-banned address or account gets a clear refusal and is closed."""
        verified = command.verified
        account = verified.account if verified is not None else None
        account = account or client.account
        nick = command.nick if isinstance(command, Hello) else (client.nick or "*")
        for ban in self._server_bans:
            if _matches(ban, client, nick, account, now):
                until = "" if ban.expires is None else f" for {int(ban.expires - now) + 1}s more"
                why = f": {ban.reason}" if ban.reason else ""
                error = Error(ErrorCode.BANNED, f"you are banned from this server{until}{why}")
                actions: list[Action] = [Deliver((client.cid,), error, rid=command.rid)]
                actions += self._depart(client, "banned")
                return actions + [Close(client.cid, "banned from the server")]
        return []

    # ------------------------------------------------------------------ helpers

    def _is_founder(self, client: _Client, rules: RoomRules) -> bool:
        return (
            rules.founder is not None
            and client.account is not None
            and fold(client.account) == fold(rules.founder)
        )

    def _require_op(self, client: _Client, room: _Room, what: str) -> None:
        if client.cid in room.ops or self.is_server_operator(client):
            return
        raise _Refusal(ErrorCode.NOT_OPERATOR, f"only {room.name}'s operators may {what}")

    def _require_server_op(self, client: _Client, what: str) -> None:
        if not self.is_server_operator(client):
            raise _Refusal(ErrorCode.NOT_SERVER_OPERATOR, f"only server operators may {what}")

    def _target_room(self, client: _Client, name: str | None) -> _Room:
        if name is None or self.is_server_operator(client):
            return self._room_of(client, None) if name is None else self._existing_room(name)
        return self._room_of(client, name)

    def _member(self, room: _Room, nick: str) -> _Client:
        for member in room.members.values():
            if member.nick is not None and fold(member.nick) == fold(nick):
                return member
        raise _Refusal(ErrorCode.NOT_IN_THAT_ROOM, f"{nick[:40]} is not in {room.name}")

    def _save(self, room: _Room) -> list[Action]:
        if room.rules.founder is None:
            return []
        room.rules.topic = room.topic
        return [SaveRoom(room.rules.state(room.name))]

    @staticmethod
    def _log(
        client: _Client, now: float, action: str, target: str, room: str = "", reason: str = ""
    ) -> LogModeration:
        by = client.nick or "?"
        if client.account is not None and fold(client.account) != fold(by):
            by += f" ({client.account})"
        return LogModeration(ModLogEntry(round(now, 3), by, action, target, room, reason))

    # ------------------------------------------------------------------ commands

    def _mode_done(
        self,
        client: _Client,
        cmd: Command,
        room: _Room,
        modes: str,
        args: tuple[str, ...],
        now: float,
        reason: str = "",
    ) -> list[Action]:
        """Tell the room about a change, save the room, log it."""
        assert client.nick is not None
        event = ModeEvent(room.name, client.nick, modes, args)
        actions = _to_all(room, client, cmd, event)
        actions += self._save(room)
        shown = " ".join((modes, *args))
        return actions + [self._log(client, now, "mode", shown, room.name, reason)]

    def _kick(self, client: _Client, cmd: Kick, now: float) -> list[Action]:
        room = self._target_room(client, cmd.room)
        self._require_op(client, room, "kick")
        target = self._member(room, cmd.nick)
        assert client.nick is not None and target.nick is not None
        reason = clean_line(cmd.reason)[:200]
        event = KickEvent(room.name, target.nick, client.nick, reason)
        actions = _to_all(room, client, cmd, event)
        self._leave(target, room)
        return actions + [self._log(client, now, "kick", target.nick, room.name, reason)]


def _to_all(room: _Room, client: _Client, cmd: Command, event: Event) -> list[Action]:
    """``event`` to the room; the actor's copy carries the request id (a server operator
    acting from outside the room gets a copy of its own)."""
    if client.cid not in room.members:
        return [Deliver(room.cids, event), Deliver((client.cid,), event, rid=cmd.rid)]
    reply_to = client.cid if cmd.rid is not None else None
    return [Deliver(room.cids, event, rid=cmd.rid, reply_to=reply_to)]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]
