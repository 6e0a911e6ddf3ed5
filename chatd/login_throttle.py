"""Login throttling: per address and per account, in front of every password check.

Pure; the clock is given. Two rules (docs/accounts.md):

- **Per address**, a token bucket of failures: ``burst`` wrong passwords at once, then
  ``rate`` a second. While the bucket is empty no password from that address is even
  hashed, so one host cannot make more than ``rate`` guesses a second, nor burn the
  server's CPU on scrypt.
- **Per account**, failures from anywhere only *slow* the next attempt: after ``free``
  failures each one doubles a delay from ``base`` up to ``cap`` seconds. An attacker
  spread over many addresses gets at most one guess per ``cap`` seconds at one account,
  and the real owner waits at most ``cap`` seconds, never more: nobody can lock an
  account up. A success resets it.

Memory is bounded: at most ``max_entries`` addresses and accounts are remembered; the
stalest are forgotten first (forgetting only ever errs on the side of letting a guess in).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from chatd.ratelimit import TokenBucket

__all__ = ["LoginThrottle"]


class LoginThrottle:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        rate: float = 1.0,
        burst: int = 5,
        free: int = 3,
        base: float = 0.25,
        cap: float = 2.0,
        max_entries: int = 10000,
    ) -> None:
        self._clock = clock
        self._rate, self._burst = rate, burst
        self._free, self._base, self._cap = free, base, cap
        self._max = max_entries
        self._addresses: OrderedDict[str, TokenBucket] = OrderedDict()
        self._accounts: OrderedDict[str, tuple[int, float]] = OrderedDict()  # failures, last

    def wait(self, address: str, account: str | None) -> float:
        """Seconds before a password from ``address`` for ``account`` may be checked."""
        now = self._clock()
        wait = 0.0
        bucket = self._addresses.get(address)
        if bucket is not None:
            wait = bucket.delay(now)
        if account is not None and account in self._accounts:
            failures, last = self._accounts[account]
            if failures >= self._free:
                delay = min(self._cap, self._base * 2 ** (failures - self._free))
                wait = max(wait, last + delay - now)
        return max(0.0, wait)

    def failed(self, address: str, account: str | None) -> None:
        now = self._clock()
        bucket = self._addresses.pop(address, None)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, now)
        bucket.take(now)
        self._addresses[address] = bucket  # most recent last
        if account is not None:
            failures, _ = self._accounts.pop(account, (0, now))
            self._accounts[account] = (failures + 1, now)
        self._trim()

    def succeeded(self, account: str) -> None:
        self._accounts.pop(account, None)

    def _trim(self) -> None:
        while len(self._addresses) > self._max:
            self._addresses.popitem(last=False)
        while len(self._accounts) > self._max:
            self._accounts.popitem(last=False)
