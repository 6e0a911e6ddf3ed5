"""The server's periodic upkeep: one timer on the loop, every ``HOUSEKEEPING_SECONDS``.

Each round does the timed work that belongs to no connection:

- storage (:meth:`chatd.storekeeper.StoreKeeper.upkeep`): is the history file still
  there, a write probe while storage is failed, a pruning batch; a failure or a recovery
  is told to everyone, once (:meth:`~chatd.dispatch.Dispatcher.storage_state`);
- nick holds that ran out (docs/accounts.md): the hub lets those nicks go;
- every fourth round, addresses that stopped guessing passwords are forgotten, and a
  throttled episode that ended is logged once (:meth:`chatd.admission.Admission.sweep`).

It runs only when there is such work: a history store, a server password, or nick holds.
"""

from __future__ import annotations

from collections.abc import Callable

from chatd.admission import Admission
from chatd.dispatch import Dispatcher
from chatd.hub import Hub
from chatd.loop import Loop
from chatd.storekeeper import StoreKeeper

__all__ = ["HOUSEKEEPING_SECONDS", "Housekeeping"]

# Storage upkeep (failure probes, pruning) and password-guess episodes run this often.
HOUSEKEEPING_SECONDS = 0.25


class Housekeeping:
    """The upkeep timer; :meth:`start` arms its first round.

    Args:
        keeper: the history store's keeper (None: no history).
        wall_clock: epoch seconds (retention, nick holds).
    """

    def __init__(
        self,
        loop: Loop,
        keeper: StoreKeeper | None,
        dispatch: Dispatcher,
        hub: Hub,
        admission: Admission,
        wall_clock: Callable[[], float],
    ) -> None:
        self._loop = loop
        self._keeper = keeper
        self._dispatch = dispatch
        self._hub = hub
        self._admission = admission
        self._wall = wall_clock
        self._turns = 0

    def start(self) -> None:
        self._loop.call_at(self._loop.now + HOUSEKEEPING_SECONDS, self._round)

    def _round(self) -> None:
        """Storage upkeep (probes after a failure, pruning); password-guess episodes;
        nick holds that ran out."""
        now = self._loop.now
        if self._keeper is not None:
            change = self._keeper.upkeep(now, self._wall())
            if change is not None:
                self._dispatch.storage_state(change)
        self._dispatch.apply(self._hub.expire(self._wall()))  # nick holds that ran out
        self._turns += 1
        if self._turns % 4 == 0:
            self._admission.sweep()
        self._loop.call_at(now + HOUSEKEEPING_SECONDS, self._round)
