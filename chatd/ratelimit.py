"""A token bucket: ``rate`` tokens a second, at most ``burst`` saved up. Pure; time is given.

The server takes one token per line a client sends, and charges the rest of the line's
cost (:func:`command_cost`) once it is decoded, into debt if need be; when the bucket is
empty it stops reading that client until :meth:`TokenBucket.delay` has passed. Nothing
is dropped: the flooder's bytes wait in its own socket buffer, so TCP slows it down.

A line costs the sum of its commands' costs: an IRC line with 50 targets (50 commands)
costs 50. A long message costs more than one token: every line of it is a line on
everyone's screen and a PRIVMSG for every IRC member, so a 40-line paste costs what 10
short messages cost. The debt only makes the sender's next command wait longer.
"""

from __future__ import annotations

from chatd.model import Command, Echo, PrivMsg, Say

__all__ = ["TokenBucket", "command_cost", "LINES_PER_TOKEN", "BYTES_PER_TOKEN"]

# One token pays for what a typed message usually is: up to 4 lines and up to 1 KiB of
# UTF-8 (an IRC line carries at most ~400 bytes of text, so 1 KiB is 2-3 IRC lines).
LINES_PER_TOKEN = 4
BYTES_PER_TOKEN = 1024


_MESSAGES = (Say, PrivMsg)


def command_cost(command: Command) -> int:
    """Tokens ``command`` costs: 0 for a codec's own answer (``Echo``, paid by the line),
    1 for most commands, more for a message of many lines or bytes."""
    if isinstance(command, Echo):
        return 0
    if not isinstance(command, _MESSAGES):
        return 1
    text = command.text
    lines = text.count("\n") + 1
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return max(1, -(-lines // LINES_PER_TOKEN), -(-size // BYTES_PER_TOKEN))


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
