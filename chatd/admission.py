"""Who may connect and how fast they may guess: per-address connection counts and the
password-guess throttle. No socket: the server asks, this answers and counts.

An address key (:func:`chatd.throttle.address_key`) holds at most ``max_clients_per_ip``
connections at once. On a password-protected server, wrong passwords are counted per
address; past ``password_guess_burst`` an address's next guesses wait (its lines are
held, not dropped), and its connections are logged at DEBUG, summed up per episode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chatd.config import Config
from chatd.model import Action, Deliver, Error, ErrorCode
from chatd.throttle import Throttle

__all__ = ["Admission"]

logger = logging.getLogger("chatd.server")


class Admission:
    def __init__(self, config: Config, clock: Callable[[], float], stats: dict[str, int]) -> None:
        self.config = config
        self.stats = stats
        stats.setdefault("rejected_full", 0)
        stats.setdefault("rejected_per_ip", 0)
        stats.setdefault("password_failures", 0)
        self._per_host: dict[str, int] = {}  # open connections per address key
        self._guesses = Throttle(config.password_guess_rate, config.password_guess_burst, clock)

    # ------------------------------------------------------------------ connections

    def refusal(self, connections: int, host: str, peer: str) -> Error | None:
        """Why ``peer`` may not connect now (counted and logged), or None: welcome."""
        config = self.config
        if connections >= config.max_clients:
            self.stats["rejected_full"] += 1
            refused = self.stats["rejected_full"]
            if refused in (1, 10, 100) or refused % 1000 == 0:
                logger.warning(
                    "server full (%d clients): refused %s (%d refused so far)",
                    config.max_clients,
                    peer,
                    refused,
                )
            why = f"the server is full ({config.max_clients} clients); try again later"
            return Error(ErrorCode.SERVER_FULL, why)
        limit = config.max_clients_per_ip
        if not limit or self._per_host.get(host, 0) < limit:
            return None
        self.stats["rejected_per_ip"] += 1
        refused = self.stats["rejected_per_ip"]
        if refused in (1, 10, 100) or refused % 1000 == 0:
            logger.warning(
                "%s already has %d connections: refused %s (%d refused so far)",
                host,
                limit,
                peer,
                refused,
            )
        why = f"too many connections from your address ({limit} allowed); close one first"
        return Error(ErrorCode.SERVER_FULL, why)

    def opened(self, host: str) -> None:
        self._per_host[host] = self._per_host.get(host, 0) + 1

    def closed(self, host: str) -> None:
        count = self._per_host.get(host, 0) - 1
        if count > 0:
            self._per_host[host] = count
        else:
            self._per_host.pop(host, None)

    def log_level(self, host: str) -> int:
        """A guesser's connections are summed up per address (see :meth:`sweep`)."""
        return logging.DEBUG if self._guesses.throttled(host) else logging.INFO

    # ------------------------------------------------------------------ passwords

    @property
    def guesses(self) -> Throttle:
        """The per-address guess budget (account logins spend from it too: chatd.accounts)."""
        return self._guesses

    def guess_delay(self, host: str) -> float:
        """Seconds ``host``'s next password guess must wait (0: none)."""
        return self._guesses.delay(host)

    def note_login(self, host: str, actions: list[Action]) -> None:
        """Count a wrong password (in the hub's answer to a hello) against ``host``."""
        for action in actions:
            if (
                isinstance(action, Deliver)
                and isinstance(action.event, Error)
                and action.event.code == ErrorCode.BAD_PASSWORD
            ):
                self.stats["password_failures"] += 1
                if self._guesses.failed(host):
                    logger.warning(
                        "%s: %d wrong passwords; slowing its guesses to %g/s",
                        host,
                        self.config.password_guess_burst,
                        self.config.password_guess_rate,
                    )
                return

    def sweep(self) -> None:
        """Forget recovered addresses; log each throttled episode once, at its end."""
        for episode in self._guesses.sweep():
            if episode.throttled:
                logger.warning(
                    "%s: %d wrong passwords in %.0fs (slowed to %g/s); no longer slowed",
                    episode.key,
                    episode.failures,
                    episode.seconds,
                    self.config.password_guess_rate,
                )
