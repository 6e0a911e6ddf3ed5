"""Every deadline of the server in one heap: registration timeouts, slow consumers over the
soft limit for too long, rate-limit pauses ending, close lingers, idle probes, listeners
backing off after EMFILE.

A :class:`Timer` is a handle (as asyncio's ``TimerHandle``): :meth:`Timer.cancel` marks it
and the heap drops it when it reaches the top, so cancelling costs nothing. Times are
whatever the caller's clock says (monotonic seconds in the server; a test's fake clock).
Pure: no clock of its own, no socket.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

__all__ = ["Timer", "Timers"]

_NONE: object = object()  # no argument


class Timer:
    """One scheduled call, ``callback(arg)`` or ``callback()``; ``when`` is the deadline.

    A callback with an argument (a bound method and the connection it is about) costs
    less memory than a closure: every connection has a registration deadline."""

    __slots__ = ("when", "callback", "arg")

    def __init__(self, when: float, callback: Callable[..., object], arg: object = _NONE) -> None:
        self.when = when
        self.callback: Callable[..., object] | None = callback
        self.arg = arg

    def cancel(self) -> None:
        """It will not run (and no longer keeps what it refers to alive)."""
        self.callback = None
        self.arg = _NONE

    @property
    def cancelled(self) -> bool:
        return self.callback is None


class Timers:
    """A min-heap of :class:`Timer`, in deadline order (ties: in the order scheduled)."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def call_at(self, when: float, callback: Callable[..., object], arg: object = _NONE) -> Timer:
        """Run ``callback(arg)`` (or ``callback()`` without ``arg``) once ``when`` is due."""
        timer = Timer(when, callback, arg)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def next_deadline(self) -> float | None:
        """The earliest deadline still to run, or None."""
        heap = self._heap
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Run every timer due at ``now`` (including ones a callback schedules for ``now``
        or earlier); returns how many ran."""
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            callback = timer.callback
            if callback is not None:
                arg = timer.arg
                timer.callback = None
                timer.arg = _NONE
                if arg is _NONE:
                    callback()
                else:
                    callback(arg)
                ran += 1
        return ran
