"""Per-address failure throttling (wrong passwords, failed logins). Pure; the clock is given.

A :class:`Throttle` keeps one token bucket per key (an address, see :func:`address_key`)
that only *failures* drain: a key may fail ``burst`` times at once, then ``rate`` times a
second. Successes cost nothing, so a classroom behind one NAT that types its password
right is never slowed, while a guesser gets ``rate`` guesses a second however many
connections it opens. The caller asks :meth:`Throttle.delay` before letting a key try,
and reports :meth:`Throttle.failed` after a failure.

Memory is bounded: at most ``max_keys`` keys are kept; a key whose bucket is full again
is forgotten by :meth:`Throttle.sweep`, which returns one :class:`Episode` per key that
was throttled, so the caller logs one line per address, not one per connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Throttle", "Episode", "address_key"]


def address_key(host: str) -> str:
    """The unit per-address limits count: an IPv4 address, or an IPv6 /64.

    One IPv6 host can use any address of its /64 (SLAAC privacy addresses), so a /64 is
    "one address" here; an IPv4-mapped IPv6 address counts as its IPv4 address.
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # not an IP address (a Unix socket path, say): itself
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Entry:
    tokens: float
    stamp: float
    first: float  # time of the first failure of this episode
    failures: int = 0
    throttled: bool = False  # the bucket ran dry at least once this episode


@dataclass(frozen=True, slots=True)
class Episode:
    """What one key did between its first failure and its bucket filling up again."""

    key: str
    failures: int
    seconds: float
    throttled: bool


class Throttle:
    """Failures per key: ``burst`` at once, then ``rate`` a second.

    Args:
        rate: failures a second a key may sustain (> 0).
        burst: failures a key may make at once (>= 1).
        clock: monotonic seconds (injected; tests pass a fake).
        max_keys: most keys remembered; past it the oldest is forgotten.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float], max_keys: int = 10000
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst and max_keys at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _refill(self, entry: _Entry, now: float) -> None:
        if now > entry.stamp:
            entry.tokens = min(self.burst, entry.tokens + (now - entry.stamp) * self.rate)
            entry.stamp = now

    def delay(self, key: str) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        self._refill(entry, self._clock())
        return max(0.0, (1.0 - entry.tokens) / self.rate)

    def throttled(self, key: str) -> bool:
        """True if ``key`` has run out of free failures in its current episode."""
        entry = self._entries.get(key)
        return entry is not None and entry.throttled

    def failed(self, key: str) -> bool:
        """Count one failure of ``key``; True if it is the one that starts throttling."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self._max_keys:
                self.sweep()
                if len(self._entries) >= self._max_keys:
                    del self._entries[next(iter(self._entries))]  # the oldest
            entry = self._entries[key] = _Entry(self.burst, now, now)
        self._refill(entry, now)
        entry.tokens -= 1.0
        entry.failures += 1
        if entry.tokens < 1.0 and not entry.throttled:
            entry.throttled = True
            return True
        return False

    def sweep(self) -> list[Episode]:
        """Forget keys whose budget is full again; return their episodes."""
        now = self._clock()
        done: list[Episode] = []
        for key, entry in list(self._entries.items()):
            self._refill(entry, now)
            if entry.tokens >= self.burst:
                del self._entries[key]
                done.append(Episode(key, entry.failures, now - entry.first, entry.throttled))
        return done
