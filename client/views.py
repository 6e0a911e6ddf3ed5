"""Buffers for the full-screen client: one per room and per private conversation.

Pure state, no prompt_toolkit: lines are routed to buffers, each with its own bounded
scroll-back, unread and mention counts, and a scroll offset; the room bar and the member
list are computed from it. :mod:`client.fullscreen` draws it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from client.text import irc_fold
from client.values import Kind, Line

if TYPE_CHECKING:
    from client.core import ChatState

__all__ = ["SERVER", "Buffer", "Member", "Views"]

SERVER = "*"  # the key of the server buffer: connection news, replies, errors
SCROLLBACK = 2000  # lines kept per buffer
_COUNTED = (Kind.MSG, Kind.ACTION, Kind.PRIVATE)  # what makes a buffer "unread"


class Member(NamedTuple):
    nick: str
    rank: str  # "@" operator, "+" voiced, "@+" both, "" neither
    away: bool


@dataclass(slots=True)
class Buffer:
    key: str  # SERVER, a folded room name ("#lobby") or "@" + folded nick
    title: str  # what the bar shows: "server", "#lobby", "bob"
    lines: deque[Line] = field(default_factory=lambda: deque(maxlen=SCROLLBACK))
    unread: int = 0
    mentions: int = 0
    scroll: int = 0  # rows scrolled back from the bottom (0: following new lines)
    day: tuple[int, int, int] | None = None  # local date of the last stamped line

    @property
    def nick(self) -> str | None:
        """The other party of a private buffer."""
        return self.title if self.key.startswith("@") else None


class Views:
    """The buffers, in the order they were opened, and which one is shown."""

    def __init__(self) -> None:
        self.buffers: dict[str, Buffer] = {SERVER: Buffer(SERVER, "server")}
        self.active = SERVER
        self.show_members = True
        self.filter: str | None = None  # Ctrl-R: only the shown buffer's lines holding it
        self._followed: str | None = None  # the state's current room at the last sync

    @property
    def current(self) -> Buffer:
        return self.buffers[self.active]

    def _buffer(self, key: str, title: str) -> Buffer:
        if key not in self.buffers:
            self.buffers[key] = Buffer(key, title)
        return self.buffers[key]

    def route(self, line: Line, state: ChatState) -> Buffer:
        """Put ``line`` in its buffer; count it as unread there if that is not shown."""
        if line.kind is Kind.PRIVATE:
            other = line.target if line.own else line.nick
            buffer = self._buffer("@" + irc_fold(other or "?"), other or "?")
        elif line.room and irc_fold(line.room) in state.rooms:
            buffer = self._buffer(irc_fold(line.room), line.room)
        else:
            buffer = self.current
        if line.ts is not None and not line.earlier:
            day = time.localtime(line.ts)[:3]
            if buffer.day is not None and day != buffer.day:  # a day-change separator
                stamp = time.strftime("%A %d %B %Y", time.localtime(line.ts))
                buffer.lines.append(Line(Kind.SYSTEM, f"day changed to {stamp}", ts=line.ts))
            buffer.day = day
        buffer.lines.append(line)
        if buffer.key != self.active and line.kind in _COUNTED and not line.earlier:
            buffer.unread += 1
            buffer.mentions += line.mention or line.kind is Kind.PRIVATE
        return buffer

    def sync(self, state: ChatState) -> None:
        """Match the state: a buffer for every room, none for a room left; when the
        state's current room changed (/join, /switch, a part), show it."""
        for key in [k for k in self.buffers if k.startswith("#") and k not in state.rooms]:
            self.close(key)
        for room in state.rooms.values():
            self._buffer(irc_fold(room.name), room.name)
        if state.current != self._followed:
            self._followed = state.current
            if state.current in self.buffers:
                self.switch(state.current, state)

    def switch(self, key: str, state: ChatState) -> None:
        if key not in self.buffers:
            return
        self.active = key
        buffer = self.current
        buffer.unread = buffer.mentions = 0
        if key in state.rooms:
            state.current = key

    def cycle(self, step: int, state: ChatState) -> None:
        keys = list(self.buffers)
        self.switch(keys[(keys.index(self.active) + step) % len(keys)], state)

    def jump(self, number: int, state: ChatState) -> None:
        """Alt-1..9: the buffer with that number in the bar."""
        keys = list(self.buffers)
        if 1 <= number <= len(keys):
            self.switch(keys[number - 1], state)

    def next_active(self, state: ChatState) -> None:
        """Alt-A: the next buffer with mentions, else with unread lines."""
        keys = list(self.buffers)
        start = keys.index(self.active)
        order = keys[start + 1 :] + keys[:start]
        for key in [*[k for k in order if self.buffers[k].mentions], *order]:
            if self.buffers[key].unread:
                self.switch(key, state)
                return

    def close(self, key: str, state: ChatState | None = None) -> None:
        """Forget a buffer (a parted room, a closed conversation). If it was shown, the
        one before it is, switched to properly when ``state`` is given (its unread count
        cleared, and a room becomes the state's current room)."""
        if key == SERVER or key not in self.buffers:
            return
        keys = list(self.buffers)
        del self.buffers[key]
        if self.active == key:
            self.active = keys[max(keys.index(key) - 1, 0)]
            if state is not None:
                self.switch(self.active, state)

    def scroll(self, rows: int) -> None:
        """PageUp (positive) / PageDown (negative); the view code clamps the top."""
        self.current.scroll = max(self.current.scroll + rows, 0)

    def bar(self, width: int) -> list[tuple[str, str]]:
        """The room bar as (style, text): ``1:server 2:#lobby(3) 3:bob(1!)``; at a narrow
        width, inactive buffers without activity are left out first, then names cut."""
        entries = []
        for number, buffer in enumerate(self.buffers.values(), start=1):
            activity = ""
            if buffer.unread:
                activity = f"({buffer.unread}{'!' if buffer.mentions else ''})"
            style = (
                "class:bar.active"
                if buffer.key == self.active
                else "class:bar.mention"
                if buffer.mentions
                else "class:bar.unread"
                if buffer.unread
                else "class:bar"
            )
            entries.append((style, f"{number}:{buffer.title}{activity}", buffer))
        if sum(len(text) + 1 for _, text, _ in entries) > width:
            entries = [e for e in entries if e[2].key == self.active or e[2].unread]
        out: list[tuple[str, str]] = []
        used = 0
        for style, text, _ in entries:
            if used + len(text) + 1 > width:
                text = text[: max(width - used - 1, 0)]
            if text:
                out.append((style, text))
                out.append(("class:bar", " "))
                used += len(text) + 1
        return out

    def search(self, term: str, most: int = 50) -> list[Line]:
        """The shown buffer's lines holding ``term`` (any case), at most the last ``most``."""
        folded = term.casefold()
        found = [line for line in self.current.lines if folded in line.text.casefold()]
        return found[-most:]

    def shown_lines(self) -> list[Line] | deque[Line]:
        """What the message area draws: the shown buffer, or while Ctrl-R searches, its
        lines holding the search text."""
        if self.filter is None:
            return self.current.lines
        return self.search(self.filter, most=SCROLLBACK) if self.filter else []

    def topic(self, state: ChatState) -> str:
        """The topic of the shown buffer (a room), after its modes when they are known
        (``[+mnt] topic``), or ""."""
        room = state.rooms.get(self.active)
        if room is None:
            return ""
        modes = f"[+{''.join(sorted(room.modes))}]" if room.modes else ""
        return f"{modes} {room.topic}".strip()

    def members(self, state: ChatState) -> list[str]:
        """The member list of the shown buffer (a room), sorted: operators, voiced, the
        rest; within each, others then me, by name."""
        return [member.nick for member in self.member_rows(state)]

    def member_rows(self, state: ChatState) -> list[Member]:
        """The member list with its marks: rank ("@" operator, "+" voiced) and away."""
        room = state.rooms.get(self.active)
        if room is None:
            return []
        rows = [
            Member(m, room.ranks.get(irc_fold(m), ""), irc_fold(m) in state.away_nicks)
            for m in room.members
        ]
        order = {"@": 0, "@+": 0, "+": 1}
        return sorted(
            rows, key=lambda r: (order.get(r.rank, 2), state.is_me(r.nick), irc_fold(r.nick))
        )
