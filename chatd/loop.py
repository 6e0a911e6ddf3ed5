"""The event loop: one ``selectors`` selector, one deadline heap, one waker.

Anything with a socket can live in the loop if it implements :class:`Handler`: client
connections, listening sockets, the waker, and later a link to Redis. The loop registers
exactly the events a handler wants (:meth:`Loop.update`: ``EVENT_WRITE`` only while it
has bytes to send, never permanently - that would spin), and dispatches what
``select()`` reports to :meth:`Handler.on_ready`. It knows nothing about chat.
"""

from __future__ import annotations

import logging
import selectors
import socket
from collections.abc import Callable
from typing import Protocol

from chatd.timers import Timer, Timers

__all__ = ["Handler", "Loop"]

logger = logging.getLogger(__name__)

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
#: select() never sleeps longer than this, so a stop request from a thread is noticed.
MAX_WAIT_SECONDS = 1.0


class Handler(Protocol):
    """One registered socket. ``mask`` is owned by the loop (the events registered)."""

    sock: socket.socket
    mask: int

    @property
    def wants_read(self) -> bool: ...
    @property
    def wants_write(self) -> bool: ...
    def on_ready(self, mask: int) -> None: ...


class _Waker:
    """A socketpair that makes ``select()`` return (from a signal handler or a thread)."""

    def __init__(self) -> None:
        self.sock, self._w = socket.socketpair()
        self.sock.setblocking(False)
        self._w.setblocking(False)
        self.mask = 0
        self.wants_read = True
        self.wants_write = False

    def wake(self) -> None:
        try:
            self._w.send(b"\0")
        except OSError:
            pass  # the waker is full or closed: the loop is awake or gone anyway

    def on_ready(self, mask: int) -> None:
        try:
            while self.sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        self.sock.close()
        self._w.close()


class Loop:
    """select() -> dispatch -> due timers, one turn per :meth:`run_once`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.now = clock()  # the time of this turn (read once, after select())
        self.timers = Timers()
        self._selector = selectors.DefaultSelector()
        self._waker = _Waker()
        self.update(self._waker)

    def call_at(self, when: float, callback: Callable[..., object], *args: object) -> Timer:
        """``callback(*args)`` at ``when`` (at most one argument: see Timer)."""
        return self.timers.call_at(when, callback, *args)

    def wake(self) -> None:
        """Interrupt ``select()``. Safe from a signal handler or another thread."""
        self._waker.wake()

    def update(self, handler: Handler) -> None:
        """Register exactly the events ``handler`` needs now."""
        want = (READ if handler.wants_read else 0) | (WRITE if handler.wants_write else 0)
        mask = handler.mask
        if want == mask:
            return
        if mask == 0:
            self._selector.register(handler.sock, want, handler)
        elif want == 0:
            self._selector.unregister(handler.sock)
        else:
            self._selector.modify(handler.sock, want, handler)
        handler.mask = want

    def remove(self, handler: Handler) -> None:
        """Stop watching ``handler`` (before its socket is closed)."""
        if handler.mask:
            try:
                self._selector.unregister(handler.sock)
            except (KeyError, ValueError):
                pass
            handler.mask = 0

    def timeout(self, now: float, busy: bool) -> float:
        """How long select() may sleep: 0 when ``busy``, else until the next deadline."""
        if busy:
            return 0.0
        deadline = self.timers.next_deadline()
        if deadline is None:
            return MAX_WAIT_SECONDS
        return min(MAX_WAIT_SECONDS, max(0.0, deadline - now))

    def run_once(self, timeout: float) -> float:
        """Wait up to ``timeout`` seconds, dispatch the ready handlers, run due timers.
        Returns the clock's time after the wait."""
        ready = self._selector.select(timeout)
        self.now = now = self.clock()
        for key, mask in ready:
            key.data.on_ready(mask)
        self.timers.run_due(now)
        return now

    def close(self) -> None:
        self.remove(self._waker)
        self._waker.close()
        self._selector.close()
