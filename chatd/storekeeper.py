"""The server's side of the history store: commits, storage failures, timed upkeep.

The server hands every ``Store`` action to :meth:`StoreKeeper.append` and calls
:meth:`StoreKeeper.commit` before it queues any byte of those messages for a socket
(store before deliver). A commit that fails (disk full, I/O error) does not stop the
loop: the keeper gives the unstored ``Store`` actions back, so the server can take their
messages out of the turn's deliveries and refuse them to their senders, and the keeper
remembers the failure until a probe shows that writing works again.

:meth:`StoreKeeper.upkeep`, called from the server's sweep, does the timed work off the
hot path: a ``stat`` of the file (was it deleted or replaced?), a write probe while
failed, and one pruning batch when retention is on. Timers use the server's monotonic
clock; retention uses wall-clock seconds, passed in.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from chatd.historyfile import HistoryError
from chatd.model import Message, Store
from chatd.retention import PRUNE_BATCH

__all__ = ["HistoryStore", "StoreKeeper", "CHECK_SECONDS", "RETRY_SECONDS", "PRUNE_SECONDS"]

logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # how often the file's identity is compared (one stat)
RETRY_SECONDS = 2.0  # how often a failed store is probed
# A store that fails again within FLAP_SECONDS of recovering (a disk hovering at full)
# is probed half as often each time, up to MAX_RETRY_SECONDS: fewer notices to everyone.
FLAP_SECONDS = 60.0
MAX_RETRY_SECONDS = 60.0
PRUNE_SECONDS = 1.0  # how often retention runs when the last batch was not full


class HistoryStore(Protocol):
    """What the server needs from a message store (see :mod:`chatd.history`)."""

    def append(self, message: Message) -> None: ...
    def commit(self) -> None:
        """Raises HistoryError on failure; the queued messages stay queued."""

    def drop_pending(self) -> list[int]: ...
    def recent(self, room: str, limit: int) -> list[Message]: ...
    def query(
        self, room: str, before: int | None, after: int | None, limit: int
    ) -> list[Message]: ...
    def start(
        self, room: str, before: int | None, after: int | None, got: int, limit: int
    ) -> int | None: ...
    def check_file(self) -> HistoryError | None: ...
    def probe(self) -> HistoryError | None: ...
    def prune(self, now: float) -> int: ...


class StoreKeeper:
    """Commit, fail over to read-only, recover, prune.

    Args:
        store: the history store.
        now: the server's monotonic clock now (the first check is due a period later).
    """

    def __init__(self, store: HistoryStore, now: float) -> None:
        self.store = store
        self.failed: HistoryError | None = None
        self._unstored: list[Store] = []
        self._next_check = now + CHECK_SECONDS
        self._next_prune = now
        self._next_probe = now
        self._now = now  # the last upkeep's time (commit() has no clock)
        self.retry_seconds = RETRY_SECONDS
        self._recovered_at: float | None = None
        self._pruning = False  # the last batch was full: more is due at the next sweep
        self.prune_batches = 0
        self.prune_rows = 0
        self.prune_max_seconds = 0.0

    @property
    def busy(self) -> bool:
        """Timed work is due soon (a pruning backlog, or a failure to probe)."""
        return self.failed is not None or self._pruning

    def append(self, action: Store) -> None:
        """Queue a message for the next commit."""
        self.store.append(action.message)
        self._unstored.append(action)

    def commit(self) -> list[Store]:
        """Commit what is queued. Returns the ``Store`` actions that could *not* be stored
        (empty when all is well): their messages must not be delivered.

        While the store is failed nothing is written (a deleted file still accepts
        writes, into a file nobody will open again).
        """
        if not self._unstored:
            return []
        if self.failed is None:
            try:
                self.store.commit()
            except HistoryError as exc:
                self._fail(exc)
            else:
                self._unstored.clear()
                return []
        self.store.drop_pending()
        unstored, self._unstored = self._unstored, []
        return unstored

    def _fail(self, exc: HistoryError) -> None:
        if self.failed is None:
            flapping = self._recovered_at is not None and (
                self._now - self._recovered_at < FLAP_SECONDS
            )
            self.retry_seconds = (
                min(self.retry_seconds * 2, MAX_RETRY_SECONDS) if flapping else RETRY_SECONDS
            )
            self._next_probe = self._now + self.retry_seconds
            logger.error(
                "%s; room messages are refused until it can be written again (checked every %gs)",
                exc,
                self.retry_seconds,
            )
        self.failed = exc

    def upkeep(self, now: float, wall: float) -> str | None:
        """Timed work; returns ``"failed"`` or ``"recovered"`` when the state changed."""
        self._now = now
        if self.failed is not None:
            if now < self._next_probe:
                return None
            self._next_probe = now + self.retry_seconds
            problem = self.store.probe()
            if problem is not None:
                logger.debug("history still unusable: %s", problem)
                return None
            logger.warning("history can be written again; room messages are accepted again")
            self.failed = None
            self._recovered_at = now
            return "recovered"
        if now >= self._next_check:
            self._next_check = now + CHECK_SECONDS
            problem = self.store.check_file()
            if problem is not None:
                self._fail(problem)
                return "failed"
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_SECONDS
            started = time.perf_counter()
            try:
                rows = self.store.prune(wall)
            except HistoryError as exc:
                self._fail(exc)
                return "failed"
            self._pruning = rows >= PRUNE_BATCH
            if rows:
                took = time.perf_counter() - started
                self.prune_batches += 1
                self.prune_rows += rows
                self.prune_max_seconds = max(self.prune_max_seconds, took)
                logger.debug("pruned %d messages in %.1f ms", rows, took * 1000)
                self._next_prune = now  # more may be due: the next sweep continues
        return None
