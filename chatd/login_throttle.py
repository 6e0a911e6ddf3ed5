"""Login throttling for accounts: per address and per account, before any password hash.

Pure; the clock is given. Built on :class:`chatd.throttle.Throttle` (per-key token
buckets that only failures drain). Three rules (docs/accounts.md):

- **Guesses per address**: the server's one guess budget per address, shared with the
  server password (``password_guess_burst`` wrong passwords at once, then
  ``password_guess_rate`` a second, over all of that address's connections). While it is
  empty no password from that address is even hashed.
- **Hashing per address**: every scrypt run (right or wrong password, a new password)
  spends from a second, larger budget (``check_burst``, then ``check_rate`` a second),
  so even someone who knows a password cannot keep the server's one thread hashing.
- **Per account**, failures from anywhere only *slow* the next attempt: after ``free``
  failures each one doubles a delay from ``base`` up to ``cap`` seconds. An attacker
  spread over many addresses gets at most one guess per ``cap`` seconds at one account,
  and the real owner waits at most ``cap`` seconds, never more: nobody can lock an
  account up. A success resets it.

Memory is bounded: at most ``max_entries`` accounts are remembered (the stalest are
forgotten first, which only ever errs on the side of letting a try in); the address
budgets bound themselves (chatd.throttle).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from chatd.throttle import Throttle

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """Args:
    clock: monotonic seconds.
    guesses: the per-address budget of wrong passwords; the server passes its own, so
        account logins and the server password share it. Default: ``rate``/``burst``.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        guesses: Throttle | None = None,
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
        # (not "guesses or ...": an empty Throttle is falsy, it has a __len__)
        self.guesses = guesses if guesses is not None else Throttle(rate, burst, clock, max_entries)
        self.checks = Throttle(check_rate, check_burst, clock, max_entries)
        self._free, self._base, self._cap = free, base, cap
        self._max = max_entries
        self._accounts: OrderedDict[str, tuple[int, float]] = OrderedDict()  # failures, last

    def wait(self, address: str, account: str | None) -> float:
        """Seconds before a password from ``address`` for ``account`` may be checked."""
        wait = max(self.guesses.delay(address), self.checks.delay(address))
        if account is not None and account in self._accounts:
            failures, last = self._accounts[account]
            if failures >= self._free:
                delay = min(self._cap, self._base * 2 ** (failures - self._free))
                wait = max(wait, last + delay - self._clock())
        return max(0.0, wait)

    def checked(self, address: str) -> None:
        """A password was hashed for ``address`` (whatever the outcome)."""
        self.checks.failed(address)  # (Throttle counts "failures": here, spent checks)

    def failed(self, address: str, account: str | None) -> bool:
        """A wrong password; True if it is the one that starts slowing ``address``."""
        if account is not None:
            failures, _ = self._accounts.pop(account, (0, 0.0))
            self._accounts[account] = (failures + 1, self._clock())
            while len(self._accounts) > self._max:
                self._accounts.popitem(last=False)
        return self.guesses.failed(address)

    def succeeded(self, account: str) -> None:
        self._accounts.pop(account, None)
