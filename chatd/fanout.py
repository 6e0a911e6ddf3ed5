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

A failure while encoding one event for one recipient (a codec bug) costs that delivery
only - counted in ``dropped_deliveries`` and ``bugs``, logged with the connection id -
never the loop, the other recipients, or the other events of its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from chatd.codecs import Codec
from chatd.model import Deliver, Event, Message
from chatd.outpolicy import Flow

__all__ = ["Fanout", "Recipient"]

logger = logging.getLogger(__name__)


class Recipient(Protocol):
    """What the fan-out needs from a connection."""

    @property
    def cid(self) -> int: ...
    @property
    def codec(self) -> Codec | None: ...
    @property
    def flow(self) -> Flow: ...
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
        stats: counters to update (``bugs``: encodes that raised; ``dropped_deliveries``).
        before_flush: called before batched room messages are handed out (the server
            commits history there: store before deliver), may call :meth:`discard`.
    """

    def __init__(
        self,
        lookup: Callable[[int], Recipient | None],
        fallback: Codec,
        stats: dict[str, int] | None = None,
        before_flush: Callable[[], object] | None = None,
    ) -> None:
        self._lookup = lookup
        self._fallback = self.fallback = fallback
        self._batches: dict[object, _Batch] = {}
        self.stats = stats if stats is not None else {}
        self.stats.setdefault("bugs", 0)
        self.stats.setdefault("dropped_deliveries", 0)
        self._before_flush = before_flush

    def __bool__(self) -> bool:
        """True while room messages wait in batches (flush before the turn ends)."""
        return bool(self._batches)

    @property
    def dropped(self) -> int:
        return self.stats["dropped_deliveries"]

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
        if self._before_flush is not None:
            self._before_flush()
        batches, self._batches = self._batches, {}
        for batch in batches.values():
            self._send(batch, droppable=True)

    def discard(self, lost: set[int]) -> None:
        """Take room messages with these ids out of the waiting batches (not stored)."""
        for key, batch in list(self._batches.items()):
            keep = [
                i
                for i, event in enumerate(batch.events)
                if not (isinstance(event, Message) and event.mid in lost)
            ]
            if len(keep) < len(batch.events):
                where = {old: new for new, old in enumerate(keep)}
                batch.events = [batch.events[i] for i in keep]
                batch.replies = [(where[i], c, r) for i, c, r in batch.replies if i in where]
            if not batch.events:
                del self._batches[key]

    def _send(self, batch: _Batch, droppable: bool) -> None:
        events = batch.events
        count = len(events)
        lookup = self._lookup
        fallback = self._fallback
        rid = batch.rid
        parts_by_key: dict[object, tuple[list[bytes], int]] = {}  # parts, failures
        blobs: dict[object, bytes] = {}  # only for keys that encoded without a failure
        repliers = {cid for _, cid, _ in batch.replies} if batch.replies else ()
        for cid in batch.cids:
            conn = lookup(cid)
            if conn is None:
                continue
            if droppable and conn.flow.over_soft_since is not None and not conn.admits(count):
                continue  # over its soft limit: skipped and counted
            codec = conn.codec or fallback
            if not droppable:
                if not self._observe(conn, codec, events[0]):
                    self._drop()
                    continue
                if cid in repliers:  # a direct reply: only its own copy is encoded
                    data = self._encode(conn, codec, events[0], batch.replies[0][2])
                    if data is None:
                        self._drop()
                    else:
                        conn.queue(data)
                    continue
            key = codec.cache_key
            blob = blobs.get(key)
            if blob is not None and cid not in repliers:
                conn.queue(blob)
                continue
            entry = parts_by_key.get(key)
            if entry is None:
                entry = parts_by_key[key] = self._encode_all(conn, codec, events, rid)
                if not entry[1]:
                    blobs[key] = entry[0][0] if count == 1 else b"".join(entry[0])
            parts, failures = entry
            if failures:
                self._drop(failures)
            if cid in repliers:
                conn.queue(self._encode_replies(conn, codec, cid, events, parts, batch.replies))
            elif failures < count:
                conn.queue(blobs.get(key) or b"".join(parts))

    # A failure to encode or observe an event is a bug, never the peer's fault; it must
    # cost that one delivery and nothing else: not the loop, not the other recipients.

    def _encode(self, conn: Recipient, codec: Codec, event: Event, rid: object) -> bytes | None:
        """``codec.encode(event, rid)``, or None if that raised."""
        try:
            return codec.encode(event, rid)
        except Exception:
            self._encode_failed(conn, event)
            return None

    def _observe(self, conn: Recipient, codec: Codec, event: Event) -> bool:
        try:
            codec.observe(event)
        except Exception:
            self._encode_failed(conn, event)
            return False
        return True

    def _encode_all(
        self, conn: Recipient, codec: Codec, events: list[Event], rid: object
    ) -> tuple[list[bytes], int]:
        """Each event's bytes (``b""`` for one that failed), and how many failed."""
        try:
            return [codec.encode(e, rid) for e in events], 0
        except Exception:
            pass  # the slow way, one at a time, to keep the others
        parts: list[bytes] = []
        failures = 0
        for event in events:
            data = self._encode(conn, codec, event, rid)
            failures += data is None
            parts.append(data or b"")
        return parts, failures

    def _encode_replies(
        self,
        conn: Recipient,
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
                data = self._encode(conn, codec, events[index], rid)
                if data is None:
                    self._drop()
                parts[index] = data or b""
        return b"".join(parts)

    def _encode_failed(self, conn: Recipient, event: Event) -> None:
        self.stats["bugs"] += 1
        failures = self.stats["bugs"]
        if failures <= 10 or failures % 1000 == 0:  # a bug repeated per line must not flood
            codec = conn.codec
            logger.exception(
                "bug: cannot encode %s for #%d (%s mode); that delivery is dropped "
                "(%d bugs so far)",
                type(event).__name__,
                conn.cid,
                codec.name if codec else "?",
                failures,
            )

    def _drop(self, count: int = 1) -> None:
        self.stats["dropped_deliveries"] += count
