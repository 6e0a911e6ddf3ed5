"""Fan-out: the hub's ``Deliver`` actions in, byte chunks per connection out. Pure.

No socket, no clock: a :class:`Recipient` is anything with a codec that can take bytes
(a connection; a list in a test). Two rules make it cheap:

- **Encode once per codec cache key.** Every recipient whose codec has the same
  ``cache_key`` gets the same ``bytes`` object (plain TCP then queues it by reference);
  only the copy for ``reply_to`` (the sender's own message, carrying its request id) is
  encoded on its own - once, in one place (:func:`_encode_for`).
- **Batch room messages per group and loop turn.** Room messages (``droppable``) bound
  for the same group (``Deliver.group``: the room) are kept as events until
  :meth:`Fanout.flush`, then each recipient gets them as one blob: one append per
  recipient per turn, however many messages. Any other event flushes the batches first,
  so every connection sees events in the order the hub produced them.

A failure while encoding for or handing bytes to one recipient (a codec bug, a stream
that raises) costs that recipient its delivery - counted in ``dropped`` and logged once
per connection - never the loop or the other recipients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from chatd.codecs import Codec
from chatd.model import Deliver, Event

__all__ = ["Fanout", "Recipient"]

logger = logging.getLogger(__name__)


class Recipient(Protocol):
    """What the fan-out needs from a connection."""

    @property
    def cid(self) -> int: ...
    @property
    def codec(self) -> Codec | None: ...
    def admits(self, count: int) -> bool:
        """May ``count`` room messages be queued now (False: skipped and counted)?"""
        ...

    def queue(self, data: bytes) -> None: ...


class _Batch:
    """Events bound for one recipient tuple: a turn's room messages for one group, or one
    other event (``rid`` then goes on every copy but the repliers')."""

    __slots__ = ("cids", "events", "replies", "rid")

    def __init__(self, cids: tuple[int, ...], rid: object = None) -> None:
        self.cids = cids
        self.events: list[Event] = []
        self.replies: list[tuple[int, int, object]] = []  # (event index, cid, rid)
        self.rid = rid


class Fanout:
    """Turns actions into per-recipient bytes.

    Args:
        lookup: the live recipient with this id, or None (gone, or closing).
        fallback: the codec of a recipient that has not picked one yet.
    """

    def __init__(self, lookup: Callable[[int], Recipient | None], fallback: Codec) -> None:
        self._lookup = lookup
        self._fallback = fallback
        self._batches: dict[object, _Batch] = {}
        self.dropped = 0  # deliveries lost to a failure while encoding or queueing
        self._logged: set[int] = set()  # connections whose failure was logged

    def __bool__(self) -> bool:
        """True while room messages wait in batches (flush before the turn ends)."""
        return bool(self._batches)

    def deliver(self, action: Deliver) -> None:
        if action.droppable:
            group = action.cids if action.group is None else action.group
            batch = self._batches.get(group)
            if batch is not None and batch.cids is not action.cids:
                self.flush()  # the group's members changed this turn: keep the order
                batch = None
            if batch is None:
                batch = self._batches[group] = _Batch(action.cids)
            batch.events.append(action.event)
            if action.reply_to is not None:
                batch.replies.append((len(batch.events) - 1, action.reply_to, action.rid))
            return
        if self._batches:
            self.flush()
        reply_to = action.reply_to
        one = _Batch(action.cids, action.rid if reply_to is None else None)
        one.events.append(action.event)
        if reply_to is not None:
            one.replies.append((0, reply_to, action.rid))
        self._send(one, droppable=False)

    def flush(self) -> None:
        """Hand this turn's batched room messages to their recipients."""
        batches, self._batches = self._batches, {}
        for batch in batches.values():
            self._send(batch, droppable=True)

    def _send(self, batch: _Batch, droppable: bool) -> None:
        events = batch.events
        count = len(events)
        lookup = self._lookup
        fallback = self._fallback
        rid = batch.rid
        parts_by_key: dict[object, list[bytes]] = {}
        blobs: dict[object, bytes] = {}
        repliers = {cid for _, cid, _ in batch.replies} if batch.replies else ()
        for cid in batch.cids:
            conn = lookup(cid)
            if conn is None or (droppable and not conn.admits(count)):
                continue
            try:
                codec = conn.codec or fallback
                if not droppable:
                    codec.observe(events[0])
                key = codec.cache_key
                blob = blobs.get(key)
                if blob is not None and cid not in repliers:
                    conn.queue(blob)
                    continue
                parts = parts_by_key.get(key)
                if parts is None:
                    parts = parts_by_key[key] = [codec.encode(e, rid) for e in events]
                    blob = blobs[key] = parts[0] if count == 1 else b"".join(parts)
                if cid in repliers:
                    conn.queue(_encode_for(codec, cid, events, parts, batch.replies))
                else:
                    conn.queue(blobs[key])
            except Exception:
                self._failed(cid)

    def _failed(self, cid: int) -> None:
        self.dropped += 1
        if cid not in self._logged:
            self._logged.add(cid)
            logger.exception("delivery to #%d failed; dropped (logged once per connection)", cid)

    def forget(self, cid: int) -> None:
        """A connection is gone: a new one with the same id would be logged again."""
        self._logged.discard(cid)


def _encode_for(
    codec: Codec,
    cid: int,
    events: list[Event],
    shared: list[bytes],
    replies: list[tuple[int, int, object]],
) -> bytes:
    """The batch as ``cid`` sees it: the shared encoding, except that its own messages
    carry its request ids (the one place a copy is encoded for one recipient)."""
    parts = list(shared)
    for index, reply_cid, rid in replies:
        if reply_cid == cid:
            parts[index] = codec.encode(events[index], rid)
    return b"".join(parts)
