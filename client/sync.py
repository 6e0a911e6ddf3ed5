"""Keeping each room's stream whole: dedupe, history requests and bounded gap fill.

For every room the client remembers the newest message it showed. After a rejoin or a
``skipped`` notice it asks ``history after=<that mid>`` and holds the room's new messages
back until the gap is in, then shows gap and held messages merged in mid order, each
once (a message is ``(mid, from, text)``: a restarted history-less server reuses mids).

The server may never answer, or answer forever (issue 17). The fill is bounded:

- by pages: at most :data:`MAX_GAP_PAGES` full pages per gap (each shown as it comes);
- by progress: a full page whose newest mid does not pass the ``after`` asked for ends it;
- by memory: at most :data:`MAX_HELD` live messages are held;
- by time: :func:`tick` (fed the clock by the app) ends a fill whose server has not
  answered for :data:`GAP_TIMEOUT` seconds.

Giving up shows what was held and says that a gap remains.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from client import frames
from client.text import irc_fold

if TYPE_CHECKING:
    from client.core import ChatState
    from client.values import Output, Request

__all__ = ["GAP_PAGE", "GAP_TIMEOUT", "MAX_GAP_PAGES", "MAX_HELD", "Room"]

# How many messages one gap request asks for; a full page means "ask again".
GAP_PAGE = 200
MAX_GAP_PAGES = 100
MAX_HELD = 5000
GAP_TIMEOUT = 20.0
# Ids of messages remembered per room for de-duplication; a gap is never this long
# without being paged in order, so an older duplicate cannot slip through.
SEEN_PER_ROOM = 4000

Key = tuple[int, str, str]


@dataclass(slots=True)
class Room:
    """What the client knows about one joined room."""

    name: str
    members: list[str] = field(default_factory=list)
    ranks: dict[str, str] = field(default_factory=dict)  # folded nick: "@", "+" or "@+"
    joined: bool = False  # a `joined` arrived on the current connection
    last_mid: int | None = None  # newest message shown
    # While nothing has been shown: a mid that every message not yet shown follows
    # (the room's newest at join time, 0 if it had none), so a gap can still be fetched.
    floor_mid: int | None = None
    oldest_mid: int | None = None  # oldest message shown (for /history)
    seen: set[Key] = field(default_factory=set)
    seen_order: deque[Key] = field(default_factory=deque)
    # Messages held back while a gap is fetched; None when no fetch is running.
    held: list[frames.Msg] | None = None
    gap_pages: int = 0  # pages of the running fill
    gap_since: float | None = None  # when tick() first saw the running fill
    queued: list[Request] = field(default_factory=list)  # typed while offline
    topic: str = ""
    # Its modes ("mnt"...) once a query's answer told them all (None: not known, since
    # `joined` does not say); kept up to date by `mode` events from then on.
    modes: set[str] | None = None
    unread: int = 0

    def remember(self, key: Key) -> None:
        self.seen.add(key)
        self.seen_order.append(key)
        if len(self.seen_order) > SEEN_PER_ROOM:
            self.seen.discard(self.seen_order.popleft())


@dataclass(frozen=True, slots=True)
class Pending:
    """A history request in flight."""

    purpose: str  # "gap" | "floor" | "older"
    room: str  # folded name
    after: int | None = None


def history_request(
    state: ChatState,
    room: Room,
    purpose: str,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int,
) -> Request:
    rid = state.next_id()
    state.pending[rid] = Pending(purpose, irc_fold(room.name), after)
    return {
        "op": "history",
        "room": room.name,
        "before": before,
        "after": after,
        "limit": limit,
        "id": rid,
    }


def start_gap(state: ChatState, out: Output, room: Room) -> None:
    """Fetch what was missed since ``room.last_mid``, holding new messages back."""
    after = room.last_mid if room.last_mid is not None else room.floor_mid
    if after is None:
        return
    if room.held is None:
        room.held = []
        room.gap_pages = 0
        room.gap_since = None
    out.frames.append(history_request(state, room, "gap", after=after, limit=GAP_PAGE))


def claim(state: ChatState, rid: int | None, room_key: str) -> Pending | None:
    """Match a history reply (or an error) to the request it answers."""
    if rid is not None and rid in state.pending:
        return state.pending.pop(rid)
    for pid, pending in state.pending.items():  # a server that drops ids
        if pending.room == room_key:
            del state.pending[pid]
            return pending
    return None


def hold(state: ChatState, out: Output, room: Room, message: frames.Msg) -> None:
    assert room.held is not None
    room.held.append(message)
    if len(room.held) > MAX_HELD:
        give_up(state, out, room, f"more than {MAX_HELD} messages were waiting for it")


def on_history(state: ChatState, out: Output, f: frames.History) -> None:
    key = irc_fold(f.room)
    pending = claim(state, f.rid, key)
    room = state.rooms.get(key)
    if room is None or pending is None:
        return  # not asked for (or no longer): nothing to show
    if pending.purpose == "floor":
        if room.floor_mid is None:
            room.floor_mid = max((m.mid for m in f.messages), default=0)
        return
    if pending.purpose == "gap":
        if room.held is None:
            return  # the fill was given up meanwhile
        if f.start is not None:  # retention removed part of what we missed
            out.info(f"some messages you missed in {room.name} are no longer kept by the server")
        # A page is older than anything a later page or a held live message can bring
        # (pages go up from `after`; a held message inside a page's range is in the page),
        # so it is shown at once: only live messages are held.
        for m in sorted(f.messages, key=lambda m: m.mid):
            show_message(state, out, room, m, live=True)
        room.gap_pages += 1
        room.gap_since = None  # an answer: the time bound starts again
        if f.size < GAP_PAGE and not (f.more and f.messages):  # complete
            flush_held(state, out, room)
            return
        newest = max((m.mid for m in f.messages), default=None)
        if newest is None or (pending.after is not None and newest <= pending.after):
            give_up(state, out, room, "the server's history pages did not advance")
        elif room.gap_pages >= MAX_GAP_PAGES:
            give_up(state, out, room, f"it is longer than {MAX_GAP_PAGES * GAP_PAGE} messages")
        else:
            out.frames.append(history_request(state, room, "gap", after=newest, limit=GAP_PAGE))
        return
    # /history: older messages, shown now, marked as earlier
    before = len(out.lines)
    for m in sorted(f.messages, key=lambda m: m.mid):
        show_message(state, out, room, m, older=True)
    if len(out.lines) == before:
        out.info(f"no earlier messages in {room.name}")
    elif f.more:  # the server's page was full: /history goes on from here
        out.info("more earlier messages: /history again shows them")


def flush_held(state: ChatState, out: Output, room: Room) -> None:
    held, room.held = room.held or [], None
    room.gap_since = None
    for m in sorted(held, key=lambda m: m.mid):
        show_message(state, out, room, m, live=True)


def give_up(state: ChatState, out: Output, room: Room, why: str) -> None:
    """End a fill that will not complete: show what was held, say a gap remains."""
    key = irc_fold(room.name)
    for rid, pending in list(state.pending.items()):
        if pending.room == key and pending.purpose == "gap":
            del state.pending[rid]
    flush_held(state, out, room)
    out.error(f"some messages in {room.name} are missing: gave up fetching them ({why})")


def tick(state: ChatState, out: Output, now: float) -> None:
    """Give up gap fills older than :data:`GAP_TIMEOUT` (``now`` from the app's clock)."""
    for room in state.rooms.values():
        if room.held is None:
            continue
        if room.gap_since is None:
            room.gap_since = now
        elif now - room.gap_since > GAP_TIMEOUT:
            give_up(state, out, room, f"no answer within {GAP_TIMEOUT:g} s")


def show_message(
    state: ChatState,
    out: Output,
    room: Room,
    m: frames.Msg,
    *,
    older: bool = False,
    live: bool = False,
) -> None:
    """Show ``m`` once (dedupe) and keep the room's books."""
    key = (m.mid, m.sender, m.text)
    if key in room.seen:
        return
    room.remember(key)
    if not older:
        room.last_mid = m.mid
    if room.oldest_mid is None or m.mid < room.oldest_mid:
        room.oldest_mid = m.mid
    out.lines.append(state.message_line(m, earlier=older or (m.history and not live)))
