"""Bans and mutes: the ``ban``, ``unban`` and ban-list commands, for a room and for the
whole server, and how a ban entry is made from what an operator typed. Pure.

A third of the hub's moderation rules (:mod:`chatd.moderation` has the rules every room
applies, matching a ban included, and the docstring; :mod:`chatd.moderation_powers` the
modes, invitations and server operators' powers). :class:`BanCommands` extends
:class:`chatd.moderation.ModerationRules`, :class:`chatd.moderation_powers.ModerationPowers`
extends it, and the Hub inherits that.

What an operator may type for a ban (see docs/moderation.md): a nick (a present user's
account, or address when not logged in, is recorded too, so a new nick or a reconnect is
no way out), a ``nick!user@host`` glob, an address (IPv6 is banned by its /64, as
connections are counted), or ``$a:ACCOUNT``. A ban may expire; a room's lists and the
server's hold at most :data:`~chatd.moderation.MAX_BANS` live entries each.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from chatd.hub_accounts import _Refusal
from chatd.model import (
    Action,
    Ban,
    BanInfo,
    BanList,
    BanListReply,
    ErrorCode,
    Identify,
    Notice,
    SaveServerBans,
    Unban,
)
from chatd.moderation import MAX_BANS, MAX_MODES, ModerationRules, _matches
from chatd.names import clean_line, fold
from chatd.throttle import address_key

if TYPE_CHECKING:
    from chatd.hub import _Client

__all__ = ["BanCommands", "MAX_DURATION", "MAX_MASK_CHARS"]

MAX_MASK_CHARS = 100
MAX_DURATION = 10 * 365 * 86400


class BanCommands(ModerationRules):
    """Mixin (the Hub's, through ModerationPowers): ban, unban, ban lists."""

    def _ban(self, client: _Client, cmd: Ban, now: float) -> list[Action]:
        what = "mute" if cmd.quiet else "ban"
        if cmd.server:
            self._require_server_op(client, "ban from the server")
            info = self._ban_info(client, cmd.mask, cmd.duration, cmd.reason, now)
            self._server_bans = _live(self._server_bans, now)[-(MAX_BANS - 1) :]
            self._server_bans = [b for b in self._server_bans if b.mask != info.mask] + [info]
            actions: list[Action] = [SaveServerBans(tuple(self._server_bans))]
            actions.append(self._log(client, now, "server ban", info.mask, "", info.reason))
            for victim in [*self._clients.values(), *self._held.values()]:  # held ones too
                if (
                    victim.nick
                    and victim is not client
                    and _matches(info, victim, victim.nick, victim.account, now)
                    and not self.is_server_operator(victim)
                ):
                    actions += self._server_ban_gate(victim, Identify(None, None), now)
            text = f"{info.mask} is banned from the server" + _until(info, now)
            return actions + [self._reply(client, cmd, Notice(text))]
        room = self._target_room(client, cmd.room)
        self._require_op(client, room, f"{what} anyone")
        info = self._ban_info(client, cmd.mask, cmd.duration, cmd.reason, now)
        entries = room.rules.quiets if cmd.quiet else room.rules.bans
        kept = [b for b in _live(entries, now) if b.mask != info.mask or b.account != info.account]
        if len(kept) >= MAX_BANS:
            raise _Refusal(
                ErrorCode.BAD_REQUEST, f"{room.name} has {MAX_BANS} {what}s: lift one first"
            )
        entries[:] = kept + [info]
        return self._mode_done(
            client, cmd, room, "+" + "bq"[cmd.quiet], (info.mask,), now, info.reason
        )

    def _unban(self, client: _Client, cmd: Unban, now: float) -> list[Action]:
        what = "mute" if cmd.quiet else "ban"
        if cmd.server:
            self._require_server_op(client, "lift server bans")
            entries = self._server_bans
        else:
            room = self._target_room(client, cmd.room)
            self._require_op(client, room, f"lift {what}s")
            entries = room.rules.quiets if cmd.quiet else room.rules.bans
        text = cmd.mask.strip()
        wanted = {
            fold(text),
            fold(f"{text}!*@*"),
            fold(f"*!*@{text}"),
            fold("$a:" + text.split(":")[-1]),
        }
        gone = [b for b in entries if fold(b.mask) in wanted]
        if not gone:
            raise _Refusal(ErrorCode.BAD_REQUEST, f"no {what} matches {text[:40]}")
        entries[:] = [b for b in entries if b not in gone]
        if cmd.server:
            return [
                SaveServerBans(tuple(entries)),
                self._log(client, now, "server unban", gone[0].mask),
                self._reply(client, cmd, Notice(f"{gone[0].mask} may connect again")),
            ]
        masks = tuple(b.mask for b in gone[:MAX_MODES])
        return self._mode_done(client, cmd, room, "-" + "bq"[cmd.quiet] * len(masks), masks, now)

    def _ban_list(self, client: _Client, cmd: BanList, now: float) -> list[Action]:
        if cmd.server:
            self._require_server_op(client, "see the server's bans")
            return [
                self._reply(client, cmd, BanListReply("*", tuple(_live(self._server_bans, now))))
            ]
        # (anybody may look, as on IRC: a ban list is how you learn why you cannot join)
        room = self._room_of(client, None) if cmd.room is None else self._existing_room(cmd.room)
        entries = _live(room.rules.quiets if cmd.quiet else room.rules.bans, now)
        return [self._reply(client, cmd, BanListReply(room.name, tuple(entries), cmd.quiet))]

    def _ban_info(
        self, client: _Client, text: str, duration: int | None, reason: str, now: float
    ) -> BanInfo:
        text = text.strip()
        if (
            not text
            or len(text) > MAX_MASK_CHARS
            or text.startswith(":")
            or not text.isprintable()
            or any(c.isspace() or c == "," for c in text)
        ):
            raise _Refusal(
                ErrorCode.BAD_REQUEST,
                f"a ban names a nick, mask or address (at most {MAX_MASK_CHARS} characters, "
                "no spaces or commas)",
            )
        if duration is not None and not 1 <= duration <= MAX_DURATION:
            raise _Refusal(ErrorCode.BAD_REQUEST, "a duration is 1 second to 10 years")
        account = address = None
        if text.lower().startswith(("$a:", "account:")):
            mask = "$a:" + text.split(":", 1)[1]
        elif any(c in text for c in "!@*?"):
            nick, _, host = text.partition("@")
            nick, _, user = nick.partition("!")
            mask = f"{nick or '*'}!{user or '*'}@{host or '*'}"
        elif _is_address(text):  # as connections are counted: IPv4, or an IPv6 /64
            address = address_key(text)
            mask = f"*!*@{address}"
        else:
            mask = f"{text}!*@*"
            target = self._nicks.get(fold(text))
            if target is not None:  # a present user: a new nick or a reconnect is no way out
                account = target.account
                address = None if target.account else (target.address or None)
        expires = None if duration is None else round(now + duration, 3)
        reason = clean_line(reason)[:200]
        return BanInfo(mask, client.nick or "?", round(now, 3), expires, reason, account, address)


def _live(bans: list[BanInfo], now: float) -> list[BanInfo]:
    return [b for b in bans if b.expires is None or b.expires > now]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _until(info: BanInfo, now: float) -> str:
    return "" if info.expires is None else f" for {int(info.expires - now)}s"
