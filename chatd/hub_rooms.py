"""The hub's room commands (a mixin of :class:`chatd.hub.Hub`). Pure.

Join, part, say, topic, the rooms list, who and history: kept apart from ``hub.py`` so
each file stays readable. The rules are the Hub's (see its docstring): a room exists while
it has members, the current room is the one joined last, a room message is stored before
it is delivered.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from chatd.config import Config
from chatd.hub_accounts import _Refusal
from chatd.hub_state import MAX_REASON_CHARS, MAX_TOPIC_CHARS, _Client, _Room
from chatd.model import (
    MAX_MID,
    Action,
    Command,
    Deliver,
    ErrorCode,
    Event,
    FetchHistory,
    History,
    Join,
    Joined,
    JoinEvent,
    Message,
    Part,
    PartEvent,
    Replay,
    RoomInfo,
    Rooms,
    RoomsReply,
    Say,
    Store,
    Topic,
    TopicEvent,
    Who,
    WhoReply,
)
from chatd.names import clean_line, fold, nfkc, room_problem

if TYPE_CHECKING:
    from chatd.moderation import RoomRules

__all__ = ["RoomCommands", "MID_SEQUENCE_BITS", "ROOMS_LINE_OVERHEAD"]

# A new mid is (milliseconds since the epoch) << MID_SEQUENCE_BITS, or the last one + 1
# if that is not larger: increasing even when the history file is lost or restored, up
# to 1024 messages per millisecond before borrowing from the next, and below 2**53 (so
# JavaScript reads it exactly) until the year 2248. docs/protocol.md states the rule.
MID_SEQUENCE_BITS = 10
# Bytes of one rooms-list entry besides its name and topic, in the widest mode (an IRC
# 322 line carries the server name and the nick): the list is cut at max_reply_bytes.
ROOMS_LINE_OVERHEAD = 120


class RoomCommands:
    """Mixin (the Hub's): the room commands and the room helpers."""

    _config: Config
    _rooms: dict[str, _Room]
    _next_mid: int
    _storage_down: str | None

    if TYPE_CHECKING:  # the Hub's and its other mixins', used here

        def _reply(self, client: _Client, command: Command, event: Event) -> Deliver: ...
        def _to_room(
            self,
            room: _Room,
            client: _Client,
            command: Command,
            event: Event,
            droppable: bool = False,
        ) -> list[Action]: ...
        def _check_text(self, text: str) -> str: ...
        def is_server_operator(self, client: _Client) -> bool: ...
        def _room_rules(self, key: str, client: _Client) -> RoomRules: ...
        def _check_join(
            self, client: _Client, rules: RoomRules, name: str, key: str | None, now: float
        ) -> None: ...
        def _joined(self, client: _Client, room: _Room) -> list[Action]: ...
        def _check_speak(self, client: _Client, room: _Room, now: float) -> None: ...
        def _check_topic(self, client: _Client, room: _Room) -> None: ...
        def _prefix(self, room: _Room, cid: int) -> str: ...
        def _prefixes(self, room: _Room) -> tuple[str, ...]: ...
        def _save(self, room: _Room) -> list[Action]: ...

    # ------------------------------------------------------------------ room helpers

    def _room_of(self, client: _Client, name: str | None) -> _Room:
        """The member room ``name`` (None: the current room), or a refusal."""
        if name is None:
            if not client.rooms:
                raise _Refusal(ErrorCode.NOT_IN_ROOM, "you are not in any room: /join #room")
            return next(reversed(client.rooms.values()))
        room = client.rooms.get(fold(name))
        if room is None:
            name = _room_name(name)
            raise _Refusal(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        return room

    def _existing_room(self, name: str) -> _Room:
        name = _room_name(name)
        room = self._rooms.get(fold(name))
        if room is None:
            raise _Refusal(ErrorCode.NO_SUCH_ROOM, f"there is no room {name}")
        return room

    def _join(self, client: _Client, cmd: Join, now: float) -> list[Action]:
        name = _room_name(cmd.room)
        key = fold(name)
        room = self._rooms.get(key)
        if room is not None and client.cid in room.members:
            # Already there: make it current again and repeat the room's state.
            client.rooms[key] = client.rooms.pop(key)
            joined = Joined(
                room.name, room.topic, room.nicks(), self._prefixes(room), away=room.away()
            )
            return [self._reply(client, cmd, joined)]
        if len(client.rooms) >= self._config.max_rooms_per_client:
            raise _Refusal(
                ErrorCode.BAD_REQUEST,
                f"you are in {len(client.rooms)} rooms already; part one first",
            )
        rules = room.rules if room is not None else self._room_rules(key, client)
        self._check_join(client, rules, name, cmd.key, now)
        if room is None:
            room = self._rooms[key] = _Room(name, topic=rules.topic, rules=rules)
        others = room.cids
        room.add(client)
        client.rooms[key] = room
        assert client.nick is not None
        saved = self._joined(client, room)
        joined = Joined(room.name, room.topic, room.nicks(), self._prefixes(room), away=room.away())
        actions: list[Action] = [self._reply(client, cmd, joined), *saved]
        if others:
            actions.append(Deliver(others, JoinEvent(room.name, client.nick)))
        # Always, even with history_replay 0: history_end tells the client the replay
        # (possibly empty) is over, which is what docs/protocol.md promises.
        actions.append(Replay(client.cid, room.name, self._config.history_replay))
        return actions

    def _leave(self, client: _Client, room: _Room) -> None:
        room.remove(client)
        del client.rooms[fold(room.name)]
        if not room.members:
            del self._rooms[fold(room.name)]

    def _part(self, client: _Client, cmd: Part, now: float) -> list[Action]:
        room = self._room_of(client, cmd.room)
        assert client.nick is not None
        actions = self._to_room(
            room,
            client,
            cmd,
            PartEvent(room.name, client.nick, clean_line(cmd.reason)[:MAX_REASON_CHARS]),
        )
        self._leave(client, room)
        return actions

    def _say(self, client: _Client, cmd: Say, now: float) -> list[Action]:
        room = self._room_of(client, cmd.room)
        text = self._check_text(cmd.text)
        self._check_speak(client, room, now)
        if self._storage_down is not None:
            raise _Refusal(
                ErrorCode.STORAGE_UNAVAILABLE,
                f"not sent: room messages cannot be stored right now ({self._storage_down})",
            )
        assert client.nick is not None
        mid = max(self._next_mid, int(now * 1000) << MID_SEQUENCE_BITS)
        self._next_mid = mid + 1
        message = Message(
            room.name,
            client.nick,
            text,
            round(now, 3),
            mid,
            action=cmd.action,
            account=client.account,
            notice=cmd.notice,
        )
        actions: list[Action] = [Store(message, client.cid, cmd.rid)]
        actions += self._to_room(room, client, cmd, message, droppable=True)
        return actions

    def _who(self, client: _Client, cmd: Who, now: float) -> list[Action]:
        room = self._room_of(client, None) if cmd.room is None else self._existing_room(cmd.room)
        details = tuple(
            replace(c.info(), prefix=self._prefix(room, c.cid), oper=self.is_server_operator(c))
            for c in room.members.values()
            if c.nick is not None
        )
        reply = WhoReply(room.name, room.nicks(), details, self._prefixes(room))
        return [self._reply(client, cmd, reply)]

    def _rooms_list(self, client: _Client, cmd: Rooms, now: float) -> list[Action]:
        infos: list[RoomInfo] = []
        size = 0
        for _, room in sorted(self._rooms.items()):
            size += len(room.name.encode()) + len(room.topic.encode()) + ROOMS_LINE_OVERHEAD
            if infos and size > self._config.max_reply_bytes:
                break
            infos.append(RoomInfo(room.name, len(room.members), room.topic))
        more = len(self._rooms) - len(infos)
        budget = self._config.max_reply_bytes if more else 0
        return [self._reply(client, cmd, RoomsReply(tuple(infos), more, budget))]

    def _topic(self, client: _Client, cmd: Topic, now: float) -> list[Action]:
        if cmd.topic is None:
            room = (
                self._room_of(client, None) if cmd.room is None else self._existing_room(cmd.room)
            )
            return [self._reply(client, cmd, TopicEvent(room.name, room.topic, ""))]
        room = self._room_of(client, cmd.room)
        self._check_topic(client, room)
        topic = clean_line(cmd.topic)
        if len(topic) > MAX_TOPIC_CHARS:
            raise _Refusal(
                ErrorCode.TEXT_TOO_LONG, f"a topic may have at most {MAX_TOPIC_CHARS} characters"
            )
        room.topic = topic
        assert client.nick is not None
        event = TopicEvent(room.name, topic, client.nick)
        return self._to_room(room, client, cmd, event) + self._save(room)

    def _history(self, client: _Client, cmd: History, now: float) -> list[Action]:
        room = self._room_of(client, cmd.room)
        limit = cmd.limit if cmd.limit is not None else min(50, self._config.history_max_limit)
        if not 1 <= limit <= self._config.history_max_limit:
            raise _Refusal(
                ErrorCode.BAD_REQUEST, f"limit must be 1..{self._config.history_max_limit}"
            )
        for name, mid in (("before", cmd.before), ("after", cmd.after)):
            if mid is not None and not 0 <= mid <= MAX_MID:
                raise _Refusal(ErrorCode.BAD_REQUEST, f"{name} must be a message id (0..{MAX_MID})")
        return [FetchHistory(client.cid, room.name, cmd.before, cmd.after, limit, rid=cmd.rid)]


def _room_name(name: str) -> str:
    """``name`` in NFKC form (``#ｌｏｂｂｙ`` is ``#lobby``), or a bad_room refusal."""
    normal = nfkc(name)
    problem = room_problem(normal)
    if problem is not None:
        shown = name[:40].encode("unicode_escape").decode()
        raise _Refusal(ErrorCode.BAD_ROOM, f'"{shown}" is not a valid room: {problem}')
    return normal
