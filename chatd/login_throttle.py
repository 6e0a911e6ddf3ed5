"""Login throttling: per address and per account, in front of every password check.

Pure; the clock is given. Three rules (docs/accounts.md):

- **Guesses per address**: a token bucket of failures, ``burst`` wrong passwords at
  once, then ``rate`` a second. While it is empty no password from that address is even
  hashed, so one host cannot make more than ``rate`` guesses a second.
- **Hashing per address**: every scrypt run (right or wrong password, a new password)
  takes a token from a second, larger bucket (``check_burst``, ``check_rate``), so even
  someone who knows a password cannot keep the server's one thread busy hashing.
- **Per account**, failures from anywhere only *slow* the next attempt: after ``free``
  failures each one doubles a delay from ``base`` up to ``cap`` seconds. An attacker
  spread over many addresses gets at most one guess per ``cap`` seconds at one account,
  and the real owner waits at most ``cap`` seconds, never more: nobody can lock an
  account up. A success resets it.

Memory is bounded: at most ``max_entries`` addresses and accounts are remembered; the
stalest are forgotten first (forgetting only ever errs on the side of letting a try in).
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
        check_rate: float = 4.0,
        check_burst: int = 20,
        free: int = 3,
        base: float = 0.25,
        cap: float = 2.0,
        max_entries: int = 10000,
    ) -> None:
        self._clock = clock
        self._rate, self._burst = rate, burst
        self._check_rate, self._check_burst = check_rate, check_burst
        self._free, self._base, self._cap = free, base, cap
        self._max = max_entries
        self._failures: OrderedDict[str, TokenBucket] = OrderedDict()  # by address
        self._checks: OrderedDict[str, TokenBucket] = OrderedDict()  # by address
        self._accounts: OrderedDict[str, tuple[int, float]] = OrderedDict()  # failures, last

    def wait(self, address: str, account: str | None) -> float:
        """Seconds before a password from ``address`` for ``account`` may be checked."""
        now = self._clock()
        wait = 0.0
        for table in (self._failures, self._checks):
            bucket = table.get(address)
            if bucket is not None:
                wait = max(wait, bucket.delay(now))
        if account is not None and account in self._accounts:
            failures, last = self._accounts[account]
            if failures >= self._free:
                delay = min(self._cap, self._base * 2 ** (failures - self._free))
                wait = max(wait, last + delay - now)
        return max(0.0, wait)

    def checked(self, address: str) -> None:
        """A password was hashed for ``address`` (whatever the outcome)."""
        self._take(self._checks, address, self._check_rate, self._check_burst)

    def failed(self, address: str, account: str | None) -> None:
        now = self._clock()
        self._take(self._failures, address, self._rate, self._burst)
        if account is not None:
            failures, _ = self._accounts.pop(account, (0, now))
            self._accounts[account] = (failures + 1, now)
            while len(self._accounts) > self._max:
                self._accounts.popitem(last=False)

    def succeeded(self, account: str) -> None:
        self._accounts.pop(account, None)

    def _take(
        self, table: OrderedDict[str, TokenBucket], key: str, rate: float, burst: int
    ) -> None:
        now = self._clock()
        bucket = table.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(rate, burst, now)
        bucket.take(now)
        table[key] = bucket  # most recent last
        while len(table) > self._max:
            table.popitem(last=False)
