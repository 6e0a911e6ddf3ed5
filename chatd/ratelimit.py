"""A token bucket: ``rate`` tokens a second, at most ``burst`` saved up. Pure; time is given.

The server takes one token per line a client sends, and charges the rest of the line's
cost (:func:`command_cost`) once it is decoded, into debt if need be; when the bucket is
empty it stops reading that client until :meth:`TokenBucket.delay` has passed. Nothing
is dropped: the flooder's bytes wait in its own socket buffer, so TCP slows it down.
"""

from __future__ import annotations

from chatd.model import Command, Echo

__all__ = ["TokenBucket", "command_cost"]


def command_cost(command: Command) -> int:
    """Tokens ``command`` costs. A line costs the sum of its commands' costs, at least
    one: an IRC line with 50 targets (50 commands) costs 50; a codec's own answer
    (``Echo``) is paid by the line."""
    return 0 if isinstance(command, Echo) else 1


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

    def charge(self, tokens: float) -> None:
        """Take ``tokens`` more, into debt if need be (the next :meth:`take` waits)."""
        self.tokens -= tokens

    def delay(self, now: float) -> float:
        """Seconds until one token is available (0 if one is)."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)
