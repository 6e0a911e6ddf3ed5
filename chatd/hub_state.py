"""The hub's state: a client and a room (the data of :class:`chatd.hub.Hub`). Pure.

Kept apart from ``hub.py`` so that the Hub's mixins (``chatd.hub_rooms``,
``chatd.hub_people``, ...) can build and read them without importing the Hub itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatd.model import MemberInfo, PrivateMessage
from chatd.moderation import RoomRules

__all__ = ["MAX_TOPIC_CHARS", "MAX_REASON_CHARS"]

MAX_TOPIC_CHARS = 300
MAX_REASON_CHARS = 200


@dataclass(eq=False)
class _Client:
    cid: int
    connected_at: float
    nick: str | None = None
    # folded room name -> room, in join order: the last one is the current room
    rooms: dict[str, _Room] = field(default_factory=dict)
    password_failures: int = 0
    away: str | None = None
    last_active: float = 0.0
    # accounts and nick hold (chatd.hub_accounts)
    account: str | None = None
    token: str = ""
    held_until: float | None = None
    held_reason: str = ""
    kept: list[PrivateMessage] = field(default_factory=list)
    user: str = ""  # IRC's USER username and real name ("": show the nick)
    realname: str = ""
    address: str = ""  # the peer's address (moderation: bans; whois for operators)
    oper: str | None = None  # OPER name: a server operator (chatd.moderation)

    def info(self) -> MemberInfo:
        assert self.nick is not None
        return MemberInfo(
            self.nick, self.user or self.nick, self.realname or self.nick, self.away is not None
        )


@dataclass(eq=False)
class _Room:
    name: str
    topic: str = ""
    members: dict[int, _Client] = field(default_factory=dict)  # join order
    _cids: tuple[int, ...] | None = None
    # moderation (chatd.moderation): saved rules; operators, voiced, invited (folded nicks)
    rules: RoomRules = field(default_factory=RoomRules)
    ops: set[int] = field(default_factory=set)
    voices: set[int] = field(default_factory=set)
    invited: set[str] = field(default_factory=set)

    @property
    def cids(self) -> tuple[int, ...]:
        """Member ids, cached until membership changes (fan-out reads this per message)."""
        if self._cids is None:
            self._cids = tuple(self.members)
        return self._cids

    def add(self, client: _Client) -> None:
        self.members[client.cid] = client
        self._cids = None

    def remove(self, client: _Client) -> None:
        del self.members[client.cid]
        self._cids = None
        self.ops.discard(client.cid)
        self.voices.discard(client.cid)

    def nicks(self) -> tuple[str, ...]:
        return tuple(c.nick for c in self.members.values() if c.nick is not None)

    def away(self) -> tuple[str, ...]:
        return tuple(c.nick for c in self.members.values() if c.nick and c.away is not None)
