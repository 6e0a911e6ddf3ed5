"""The hub's commands about people (a mixin of :class:`chatd.hub.Hub`). Pure.

Private messages, the users list, away and whois: kept apart from ``hub.py`` so each
file stays readable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.hub_accounts import _Refusal
from chatd.hub_state import MAX_REASON_CHARS, _Client
from chatd.model import (
    Action,
    Away,
    AwayEvent,
    AwayNotice,
    AwayReply,
    Command,
    Deliver,
    ErrorCode,
    Event,
    PrivateMessage,
    PrivMsg,
    Users,
    Whois,
    WhoisReply,
    WhoReply,
)
from chatd.names import clean_line, fold

__all__ = ["PeopleCommands"]


class PeopleCommands:
    """Mixin (the Hub's): private messages, users, away, whois."""

    _clients: dict[int, _Client]
    _nicks: dict[str, _Client]
    _held: dict[int, _Client]

    if TYPE_CHECKING:  # the Hub's and its other mixins', used here

        def _reply(self, client: _Client, command: Command, event: Event) -> Deliver: ...
        def _check_text(self, text: str) -> str: ...
        def _neighbours(self, client: _Client) -> set[int]: ...
        def is_server_operator(self, client: _Client) -> bool: ...
        def _keep_for_held(
            self, client: _Client, target: _Client, cmd: Command, event: PrivateMessage
        ) -> list[Action]: ...

    # ------------------------------------------------------------------ commands

    def _privmsg(self, client: _Client, cmd: PrivMsg, now: float) -> list[Action]:
        target = self._nicks.get(fold(cmd.to))
        if target is None or target.nick is None:
            raise _Refusal(ErrorCode.NO_SUCH_NICK, f"nobody called {cmd.to[:40]} is here")
        text = self._check_text(cmd.text)
        assert client.nick is not None
        event = PrivateMessage(
            client.nick, target.nick, text, round(now, 3), cmd.notice, cmd.action, client.account
        )
        if target.held_until is not None:
            return self._keep_for_held(client, target, cmd, event)
        actions: list[Action] = []
        if target is not client:
            actions.append(Deliver((target.cid,), event))
        actions.append(self._reply(client, cmd, event))
        if target.away and not cmd.notice:
            away = AwayNotice(target.nick, target.away)
            actions.append(self._reply(client, cmd, away))
        return actions

    def _users(self, client: _Client, cmd: Users, now: float) -> list[Action]:
        others = (self._clients.get(cid) or self._held.get(cid) for cid in self._neighbours(client))
        seen = [client] + sorted((c for c in others if c), key=lambda c: c.cid)
        details = tuple(c.info() for c in seen if c.nick is not None)
        members = tuple(info.nick for info in details)
        return [self._reply(client, cmd, WhoReply("*", members, details))]

    def _away(self, client: _Client, cmd: Away, now: float) -> list[Action]:
        message = clean_line(cmd.message or "")[:MAX_REASON_CHARS]
        was_away = client.away is not None
        client.away = message or None
        away = client.away is not None
        actions: list[Action] = [self._reply(client, cmd, AwayReply(away))]
        others = tuple(sorted(self._neighbours(client))) if away != was_away else ()
        if others and client.nick is not None:  # only a change is news to the others
            actions.append(Deliver(others, AwayEvent(client.nick, away)))
        return actions

    def _whois(self, client: _Client, cmd: Whois, now: float) -> list[Action]:
        target = self._nicks.get(fold(cmd.nick))
        if target is None or target.nick is None:
            raise _Refusal(ErrorCode.NO_SUCH_NICK, f"nobody called {cmd.nick[:40]} is here")
        rooms = tuple(room.name for room in target.rooms.values())
        idle = max(0, int(now - target.last_active))
        info = target.info()
        away = target.away
        if target.held_until is not None:
            away = "lost the connection; the nick is held for them"
        oper = self.is_server_operator(client)
        reply = WhoisReply(
            target.nick,
            rooms,
            away,
            idle,
            info.user,
            info.realname,
            account=target.account,
            address=(target.address or None) if oper else None,
            oper=self.is_server_operator(target),
        )
        return [self._reply(client, cmd, reply)]
