"""Room modes, invitations and the server operators' powers: the last third of the
hub's moderation rules (:mod:`chatd.moderation` has the first, and the docstring;
:mod:`chatd.moderation_bans` the ban commands). Pure.

:class:`ModerationPowers` extends :class:`chatd.moderation_bans.BanCommands` (which
extends :class:`chatd.moderation.ModerationRules`); the Hub inherits it.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from chatd.config import Config
from chatd.hub_accounts import _Refusal
from chatd.model import (
    Action,
    Announce,
    Ban,
    BanInfo,
    BanList,
    Close,
    Deliver,
    Error,
    ErrorCode,
    FetchModLog,
    Invite,
    InviteEvent,
    Kill,
    Mode,
    ModeEvent,
    ModLog,
    Notice,
    Oper,
    OperEvent,
    Unban,
)
from chatd.moderation import (
    MAX_ARG_CHARS,
    MAX_BANS,
    MAX_CHANGES,
    MAX_INVITES,
    MAX_KEY_CHARS,
    MAX_MODES,
    ROOM_FLAGS,
    RoomRules,
    _matches,
    _names,
)
from chatd.moderation_bans import BanCommands
from chatd.names import clean_line, fold

if TYPE_CHECKING:
    from chatd.hub import _Client, _Room

__all__ = ["ModerationPowers"]


class ModerationPowers(BanCommands):
    """Mixin (the Hub's): modes, invite, and oper, kill, announce, modlog; the console's
    lists."""

    def reconfigure(self, config: Config, credentials: dict[str, str]) -> None:
        """``chatd ctl reload``: the settings that can change while running."""
        self._config = config
        self.set_operators(_names(config.operators), credentials)

    def user_list(self, now: float) -> list[dict[str, object]]:
        """For the operator console: every user, with address and rooms."""
        return [
            {
                "nick": c.nick,
                "account": c.account,
                "address": c.address,
                "rooms": [room.name for room in c.rooms.values()],
                "idle": int(now - c.last_active),
                "oper": self.is_server_operator(c),
            }
            for c in self._nicks.values()
        ]

    def room_list(self) -> list[dict[str, object]]:
        """For the operator console: every room, and the registered ones that are empty."""
        rooms: list[dict[str, object]] = []
        for key in sorted(set(self._rooms) | set(self._saved_rooms)):
            room = self._rooms.get(key)
            rules = room.rules if room is not None else self._saved_rooms[key]
            rooms.append(
                {
                    "room": room.name if room is not None else key,
                    "members": len(room.members) if room is not None else 0,
                    "founder": rules.founder,
                    "modes": "+" + "".join(sorted(rules.modes)),
                    "bans": len(rules.bans),
                    "mutes": len(rules.quiets),
                }
            )
        return rooms

    # ------------------------------------------------------------------ the cluster's view
    # (chatd.cluster_moderation: every node's hub must decide a command the same way)

    def identity(self, cid: int) -> tuple[str, str | None]:
        """What bans and powers look at, beside nick and account: address, OPER name."""
        client = self._clients.get(cid)
        return (client.address, client.oper) if client is not None else ("", None)

    def mirror(self, cid: int, address: str, oper: str | None) -> None:
        """Another node's user: its address and OPER name, as its own node knows them."""
        client = self._clients.get(cid)
        if client is not None:
            client.address, client.oper = address, oper

    def has_powers(self, cid: int) -> bool:
        """A server operator, or an operator of some room (else a moderation command is
        refused without looking further)."""
        client = self._clients.get(cid)
        if client is None:
            return False
        return self.is_server_operator(client) or any(
            cid in room.ops for room in client.rooms.values()
        )

    def join_refusal(self, cid: int, name: str, key: str | None, now: float) -> bool:
        """Would a join of ``name`` be refused by its bans or modes? (Changes nothing.)"""
        client = self._clients.get(cid)
        room = self._rooms.get(fold(name))
        rules = room.rules if room is not None else self._saved_rooms.get(fold(name))
        if client is None or client.nick is None or rules is None:
            return False
        try:
            self._check_join(client, rules, name, key, now)
        except _Refusal:
            return True
        return False

    def server_banned(self, cid: int, nick: str, now: float) -> bool:
        """Would a hello as ``nick`` be refused by a server ban? (Changes nothing.)"""
        client = self._clients.get(cid)
        return client is not None and any(
            _matches(ban, client, nick, client.account, now) for ban in self._server_bans
        )

    def room_snapshot(self, name: str) -> dict[str, Any] | None:
        """A live room's moderation state, member statuses by nick (None: no such room)."""
        room = self._rooms.get(fold(name))
        if room is None:
            return None
        rules = room.rules

        def nicks(cids: set[int]) -> list[str]:
            return sorted(c.nick for c in room.members.values() if c.cid in cids and c.nick)

        return {
            "name": room.name,
            "founder": rules.founder,
            "modes": "".join(sorted(rules.modes)),
            "key": rules.key,
            "bans": [asdict(b) for b in rules.bans],
            "quiets": [asdict(b) for b in rules.quiets],
            "ops": nicks(room.ops),
            "voices": nicks(room.voices),
            "invited": sorted(room.invited),
        }

    def load_room_snapshot(self, snap: dict[str, Any]) -> None:
        """What :meth:`room_snapshot` gave (on another node): into the live room, or, for a
        registered room nobody is in, into the saved rules."""
        key = fold(snap["name"])
        room = self._rooms.get(key)
        if room is None and not snap["founder"]:
            return  # an unregistered room that is gone: its rules went with it
        rules = room.rules if room is not None else self._saved_rooms.setdefault(key, RoomRules())
        rules.founder = snap["founder"]
        rules.modes = {m for m in snap["modes"] if m in ROOM_FLAGS} | {"n"}
        rules.key = snap["key"]
        rules.bans = [BanInfo(**b) for b in snap["bans"]][-MAX_BANS:]
        rules.quiets = [BanInfo(**b) for b in snap["quiets"]][-MAX_BANS:]
        if room is not None:
            by_nick = {fold(c.nick): c.cid for c in room.members.values() if c.nick}
            room.ops = {by_nick[fold(n)] for n in snap["ops"] if fold(n) in by_nick}
            room.voices = {by_nick[fold(n)] for n in snap["voices"] if fold(n) in by_nick}
            room.invited = set(snap["invited"][:MAX_INVITES])

    def load_server_bans(self, bans: list[BanInfo]) -> None:
        self._server_bans = bans[-MAX_BANS:]

    def _mode(self, client: _Client, cmd: Mode, now: float) -> list[Action]:
        assert client.nick is not None
        if cmd.target is not None and not cmd.target.startswith("#"):
            return self._user_mode(client, cmd)
        if cmd.modes and cmd.modes.strip("+") not in ("b", "q"):
            room = self._target_room(client, cmd.target)
        elif cmd.target is None:
            room = self._room_of(client, None)
        else:  # a query: anybody may look
            room = self._existing_room(cmd.target)
        rules = room.rules
        if not cmd.modes:
            flags = "+" + "".join(sorted(rules.modes)) + ("k" if rules.key else "")
            show_key = rules.key is not None and (client.cid in room.members)
            args = (rules.key,) if show_key and rules.key else ()
            return [self._reply(client, cmd, ModeEvent(room.name, "", flags, args))]
        if cmd.modes.strip("+") in ("b", "q") and not cmd.args:
            listing = BanList(room.name, quiet="q" in cmd.modes, rid=cmd.rid)
            return self._ban_list(client, listing, now)
        changes = self._parse_modes(room, cmd)
        self._require_op(client, room, "change modes")
        done_modes, done_args, sign = "", [], ""
        for plus, letter, arg in changes:
            if letter in "bq":
                # Its own event, save and log are left out: one MODE below tells all.
                quiet = letter == "q"
                if plus:
                    self._ban(client, Ban(room.name, arg, quiet=quiet), now)
                else:
                    self._unban(client, Unban(room.name, arg, quiet=quiet), now)
                arg = self._ban_info(client, arg, None, "", now).mask if plus else arg
            elif letter in "ov":
                target = self._member(room, arg)
                group = room.ops if letter == "o" else room.voices
                if not plus and letter == "o" and self._is_founder(target, rules):
                    if not (self._is_founder(client, rules) or self.is_server_operator(client)):
                        raise _Refusal(ErrorCode.NOT_OPERATOR, f"{arg} founded {room.name}")
                (group.add if plus else group.discard)(target.cid)
                arg = target.nick or arg
            elif letter == "k":
                rules.key = arg if plus else None
                arg = "*" if not plus else rules.key or ""
            else:
                (rules.modes.add if plus else rules.modes.discard)(letter)
            want = "+" if plus else "-"
            done_modes += (want if want != sign else "") + letter
            sign = want
            if arg:
                done_args.append(arg)
        return self._mode_done(client, cmd, room, done_modes, tuple(done_args), now)

    def _parse_modes(self, room: _Room, cmd: Mode) -> list[tuple[bool, str, str]]:
        """``+mt-i``, ``+ov a b``, ``+k key``, ``+b mask`` -> (plus, letter, argument)."""
        args = list(cmd.args)
        changes: list[tuple[bool, str, str]] = []
        plus = True
        for letter in cmd.modes:
            if letter in "+-":
                plus = letter == "+"
            elif letter in "ovbq" or (letter == "k" and plus):
                if not args:
                    raise _Refusal(ErrorCode.BAD_MODE, f"mode {letter} needs an argument")
                arg = args.pop(0)
                if letter == "k" and not _good_key(arg):
                    raise _Refusal(
                        ErrorCode.BAD_MODE,
                        f"a key is 1..{MAX_KEY_CHARS} characters without spaces, commas or a "
                        "leading colon",
                    )
                changes.append((plus, letter, arg))
            elif letter == "k":
                if args:
                    args.pop(0)
                changes.append((plus, letter, ""))
            elif letter == "n" and not plus:
                raise _Refusal(ErrorCode.BAD_MODE, "chatd rooms are always +n: only members send")
            elif letter in ROOM_FLAGS:
                changes.append((plus, letter, ""))
            else:
                raise _Refusal(ErrorCode.BAD_MODE, f"{letter[:1]!r} is not a room mode here")
        if sum(1 for _, _, a in changes if a) > MAX_MODES or len(changes) > MAX_CHANGES:
            raise _Refusal(
                ErrorCode.BAD_MODE,
                f"at most {MAX_CHANGES} mode changes, {MAX_MODES} of them with arguments",
            )
        if sum(len(a) for _, _, a in changes) > MAX_ARG_CHARS:
            raise _Refusal(ErrorCode.BAD_MODE, "too much in one mode change: split it")
        return changes

    def _user_mode(self, client: _Client, cmd: Mode) -> list[Action]:
        assert client.nick is not None and cmd.target is not None
        if fold(cmd.target) != fold(client.nick):
            raise _Refusal(ErrorCode.BAD_MODE, "you can only see and change your own user modes")
        oper = self.is_server_operator(client)
        if not cmd.modes:
            return [self._reply(client, cmd, ModeEvent(client.nick, "", "+i" + "o" * oper))]
        if cmd.modes.strip("+i") == "":
            return []
        if cmd.modes in ("-o", "-io", "-oi") and client.oper is not None:
            client.oper = None
            return [self._reply(client, cmd, ModeEvent(client.nick, client.nick, "-o"))]
        raise _Refusal(ErrorCode.BAD_MODE, "user modes: +i (always); -o to stop being an operator")

    def _oper(self, client: _Client, cmd: Oper, now: float) -> list[Action]:
        if not self._oper_credentials:
            raise _Refusal(
                ErrorCode.NOT_SERVER_OPERATOR,
                "this server has no operator credentials (--oper-password-file)",
            )
        expected = self._oper_credentials.get(fold(cmd.name), "\0" * 16)
        if not hmac.compare_digest(cmd.password.encode(), expected.encode()):
            client.password_failures += 1
            actions = self._error(
                client, cmd, ErrorCode.BAD_PASSWORD, "wrong operator name or password"
            )
            if client.password_failures >= self._config.max_password_failures:
                actions.append(Close(client.cid, "too many wrong passwords"))
            return actions
        client.oper = cmd.name
        return [
            self._reply(client, cmd, OperEvent(cmd.name)),
            self._log(client, now, "oper", cmd.name),
        ]

    def _kill(self, client: _Client, cmd: Kill, now: float) -> list[Action]:
        self._require_server_op(client, "disconnect users")
        target = self._nicks.get(fold(cmd.nick))
        if target is None or target.nick is None:
            raise _Refusal(ErrorCode.NO_SUCH_NICK, f"nobody called {cmd.nick[:40]} is here")
        reason = clean_line(cmd.reason)[:200]
        why = f"killed by {client.nick}" + (f": {reason}" if reason else "")
        actions: list[Action] = [Deliver((target.cid,), Error(ErrorCode.KILLED, why))]
        actions += self._depart(target, why)
        actions.append(Close(target.cid, why))
        actions.append(self._log(client, now, "kill", target.nick, "", reason))
        if target is not client:
            actions.append(self._reply(client, cmd, Notice(f"{target.nick} was disconnected")))
        return actions

    def _announce(self, client: _Client, cmd: Announce, now: float) -> list[Action]:
        self._require_server_op(client, "announce")
        text = self._check_text(cmd.text)
        everyone = tuple(c.cid for c in self._clients.values() if c.nick is not None)
        notice = Notice(f"Announcement from {client.nick}: {text}")
        actions: list[Action] = [Deliver(everyone, notice)] if everyone else []
        if client.cid not in everyone:
            actions.append(self._reply(client, cmd, notice))
        return actions + [self._log(client, now, "announce", "*", "", text[:200])]

    def _modlog(self, client: _Client, cmd: ModLog, now: float) -> list[Action]:
        limit = cmd.limit if cmd.limit is not None else 50
        if not 1 <= limit <= 500:
            raise _Refusal(ErrorCode.BAD_REQUEST, "limit must be 1..500")
        room_name = None
        if cmd.room is None:
            self._require_server_op(client, "see the whole moderation log")
        else:
            room = self._target_room(client, cmd.room)
            self._require_op(client, room, "see its moderation log")
            room_name = room.name
        return [FetchModLog(client.cid, room_name, limit, rid=cmd.rid)]

    def _invite(self, client: _Client, cmd: Invite, now: float) -> list[Action]:
        room = self._target_room(client, cmd.room)
        if "i" in room.rules.modes:
            self._require_op(client, room, "invite to an invite-only room")
        target = self._nicks.get(fold(cmd.nick))
        if target is None or target.nick is None:
            raise _Refusal(ErrorCode.NO_SUCH_NICK, f"nobody called {cmd.nick[:40]} is here")
        if target.cid in room.members:
            raise _Refusal(ErrorCode.ALREADY_IN_ROOM, f"{target.nick} is in {room.name} already")
        if len(room.invited) >= MAX_INVITES:  # (the same one on every node of a cluster)
            room.invited.discard(min(room.invited))
        room.invited.add(fold(target.nick))
        assert client.nick is not None
        event = InviteEvent(room.name, target.nick, client.nick)
        return [
            Deliver((target.cid,), event),
            self._reply(client, cmd, event),
            self._log(client, now, "invite", target.nick, room.name),
        ]


def _good_key(key: str) -> bool:
    return (
        0 < len(key) <= MAX_KEY_CHARS
        and key.isprintable()
        and not (key.startswith(":") or any(c in key for c in " ,"))
    )
