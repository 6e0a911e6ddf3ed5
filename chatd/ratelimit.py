"""A token bucket: ``rate`` tokens a second, at most ``burst`` saved up. Pure; time is given.

The server takes one token per line a client sends, and charges the rest of the line's
cost (:attr:`chatd.model.Command.cost`) once it is decoded; when the bucket is empty it
stops reading that client until :meth:`TokenBucket.delay` has passed. Nothing is dropped: the
flooder's bytes wait in its own socket buffer, so TCP slows it down for us.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def charge(self, tokens: int) -> None:
        """Take ``tokens`` more after a successful :meth:`take`, even into debt: a line
        found to cost more than one token (many targets) makes the next one wait."""
        self.tokens -= tokens

    def delay(self, now: float) -> float:
        """Seconds until one token is available (0 if one is)."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)
