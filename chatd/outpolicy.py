"""Output policy: what the server does about a connection's unsent output. Pure.

One :class:`OutputPolicy` (the numbers, from :class:`~chatd.config.Config`) judges each
connection's :class:`Flow` after every flush, from how many bytes are still queued:

- above the **high-water** mark its reading pauses (its own commands would only add
  output for it) until it drains to the **low-water** mark (asyncio's flow control);
- above the **soft limit**, room messages are skipped for it and counted; if it stays
  above for ``out_soft_limit_seconds`` it is a slow consumer (Redis's pub/sub limits);
- above the **hard limit** it is a slow consumer at once;
- once it drains to the low-water mark, it is told how many room messages it missed.

Judging happens after the flush, never while queueing: within one loop turn every ready
client's lines run before anything is sent, so a burst can queue more than the soft (or
hard) limit for a reader that keeps up perfectly; only what the kernel will not take now
counts (as asyncio's ``write()`` tries to send before buffering). What to do about a
verdict (close, log, send ``Skipped``) is the server's business.
"""

from __future__ import annotations

import enum

from chatd.config import Config

__all__ = ["Flow", "OutputPolicy", "Verdict"]


class Verdict(enum.Enum):
    FINE = "fine"
    #: over the hard limit: disconnect now
    OVER_HARD = "over_hard"
    #: just went over the soft limit: room messages are skipped from now on
    OVER_SOFT = "over_soft"
    #: drained to the low-water mark with skipped messages to report (see take_skipped)
    CAUGHT_UP = "caught_up"


class Flow:
    """Flow-control state of one connection's output."""

    __slots__ = ("over_soft_since", "skipped", "paused")

    def __init__(self) -> None:
        self.over_soft_since: float | None = None  # above the soft limit since then
        self.skipped = 0  # room messages not queued while above the soft limit
        self.paused = False  # above the high-water mark: not reading it

    def admits(self, count: int) -> bool:
        """May ``count`` room messages be queued? If not, they are counted as skipped."""
        if self.over_soft_since is None:
            return True
        self.skipped += count
        return False

    def take_skipped(self) -> int:
        skipped, self.skipped = self.skipped, 0
        return skipped


class OutputPolicy:
    """The limits of docs/limits.md, applied to one :class:`Flow` at a time."""

    __slots__ = ("low", "high", "soft", "hard", "soft_seconds", "write_cap")

    def __init__(self, config: Config) -> None:
        self.low = config.out_low_water_bytes
        self.high = config.out_high_water_bytes
        self.soft = config.out_soft_limit_bytes
        self.hard = config.out_hard_limit_bytes
        self.soft_seconds = config.out_soft_limit_seconds
        #: most bytes written to one connection per loop turn (Redis NET_MAX_WRITES_PER_EVENT)
        self.write_cap = config.max_write_bytes_per_tick

    def judge(self, flow: Flow, queued: int, now: float) -> Verdict:
        """After a flush: update ``flow`` for the ``queued`` bytes left; the verdict."""
        if queued <= self.low:
            flow.paused = False
            flow.over_soft_since = None
            return Verdict.CAUGHT_UP if flow.skipped else Verdict.FINE
        if queued > self.high:
            flow.paused = True
        if queued <= self.soft:
            return Verdict.FINE
        if queued > self.hard:
            return Verdict.OVER_HARD
        if flow.over_soft_since is None:
            flow.over_soft_since = now
            return Verdict.OVER_SOFT
        return Verdict.FINE

    def soft_deadline(self, flow: Flow) -> float | None:
        """When a connection over the soft limit becomes a slow consumer (None: it is not)."""
        since = flow.over_soft_since
        return None if since is None else since + self.soft_seconds

    def expired(self, flow: Flow, since: float, now: float) -> bool:
        """Is it still over the soft limit, since ``since``, for too long at ``now``?"""
        return flow.over_soft_since == since and now - since >= self.soft_seconds
