"""The read side of every client connection: bytes in, lines executed at a fair pace.

:meth:`Intake.on_readable` is what a connection calls when its socket is readable (its
:class:`~chatd.connection.Owner`). It reads what the socket has, the connection's framer
cuts it into lines, and the lines go to the :class:`~chatd.dispatch.Dispatcher` one by
one while three things allow (what waits is the connection's *backlog*):

- the rate limit (its ``TokenBucket``): when that is empty, a timer resumes it;
- the password-guess throttle (:mod:`chatd.admission`): an unregistered client's lines
  wait while its address is out of guesses;
- its own output: above the high-water mark its lines wait, as unread bytes would (they
  could only add output for it); the write side (:mod:`chatd.flushing`) resumes it once
  its output has drained.

End of stream is executed like the rest: what the peer sent before it runs, then the
connection closes after its replies are flushed. A bug while running one connection's
lines stays with that connection: logged, counted (``bugs``), that connection closed
(asyncio's ``_fatal_error`` pattern). ``SystemExit`` and ``KeyboardInterrupt`` are not
caught.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chatd.admission import Admission
from chatd.config import Config
from chatd.connection import Closer, Connection, State
from chatd.dispatch import Dispatcher
from chatd.hub import Hub
from chatd.loop import Loop
from chatd.outpolicy import OutputPolicy
from chatd.streams import StreamError

__all__ = ["Intake"]

logger = logging.getLogger(__name__)


class Intake:
    """Reads client connections and runs their lines (see the module docstring).

    Args:
        close: the server starts closing a connection.
        stats: the server's counters (``bugs``).
        wall_clock: epoch seconds (message timestamps).
    """

    def __init__(
        self,
        config: Config,
        loop: Loop,
        policy: OutputPolicy,
        hub: Hub,
        admission: Admission,
        dispatch: Dispatcher,
        close: Closer,
        stats: dict[str, int],
        wall_clock: Callable[[], float],
    ) -> None:
        self._loop = loop
        self._policy = policy
        self._hub = hub
        self._admission = admission
        self._dispatch = dispatch
        self._close = close
        self._stats = stats
        self._wall = wall_clock
        self._password_required = config.password is not None
        # Without a rate limit every line read runs at once; with one, input may have to
        # wait, and what waits is bounded by max_input_backlog_bytes.
        self._recv_chunk = config.recv_chunk_bytes
        self._recv_size = min(config.recv_chunk_bytes, config.max_input_backlog_bytes)

    def on_readable(self, conn: Connection) -> None:
        try:
            data = conn.read(self._recv_size if conn.bucket else self._recv_chunk)
        except StreamError as exc:
            logger.info("#%d %s broke its stream: %s", conn.cid, conn.peer, exc.reason)
            self._close(conn, f"stream error: {exc.reason}", flush=True, broken=True)
            return
        except OSError as exc:
            self._close(conn, f"read error: {exc.strerror or exc}", flush=False)
            return
        if data is None:
            return
        now = self._loop.now
        conn.last_heard = now
        conn.probed = False
        if data and conn.take_input(data):
            self._run_backlog(conn, now)
        if conn.at_eof and not conn.has_input:
            # End of stream (the peer closed, or half-closed): what it sent before is
            # executed, replies are flushed, then we close.
            self._close(conn, "connection closed by peer", flush=True)

    def resume(self, conn: Connection) -> None:
        """A rate-limit pause ended, or its output drained: run its waiting frames."""
        if conn.state is not State.OPEN:
            return
        if conn.paused_until > self._loop.now:
            return  # still rate-limited: its own timer resumes it
        conn.paused_until = 0.0
        self._run_backlog(conn, self._loop.now)
        self._loop.update(conn)

    def _run_backlog(self, conn: Connection, now: float) -> None:
        """Execute queued frames while the rate limit and the client's own output allow.

        Above the high-water mark its remaining frames wait, as unread bytes would: they
        could only add output for it (a burst of commands in one read must not pile up
        more than the limits for a client that reads its replies perfectly well).
        """
        backlog = conn.backlog
        bucket = conn.bucket
        wall = self._wall()
        high = self._policy.high
        loop = self._loop
        try:
            while conn.state is State.OPEN:
                if not backlog:
                    backlog = conn.frame_next()
                    if backlog is None:
                        break
                if self._login_wait(conn, now):
                    return
                if conn.queued > high:
                    conn.flow.paused = True  # resumed when it drains (chatd.flushing)
                    loop.update(conn)
                    return
                if bucket is not None and not bucket.take(now):
                    conn.paused_until = now + bucket.delay(now)
                    loop.update(conn)
                    loop.call_at(conn.paused_until, self.resume, conn)
                    return
                self._dispatch.execute(conn, backlog.popleft(), wall)
            conn.backlog = None  # all done (or closing): free it
            if conn.at_eof and conn.state is State.OPEN:
                self._close(conn, "connection closed by peer", flush=True)
        except Exception:
            # A bug, not the peer's fault: keep it to this connection (asyncio's
            # _fatal_error pattern). SystemExit and KeyboardInterrupt are not caught.
            self._stats["bugs"] += 1
            logger.exception("bug while serving #%d %s; closing it", conn.cid, conn.peer)
            conn.backlog, conn.unframed = None, b""
            self._close(conn, "internal error", flush=False)

    def _login_wait(self, conn: Connection, now: float) -> bool:
        """Hold an unregistered client's lines while its address is out of guesses."""
        if not self._password_required or self._hub.is_registered(conn.cid):
            return False
        wait = self._admission.guess_delay(conn.host)
        if not wait:
            return False
        conn.paused_until = now + wait
        self._loop.update(conn)
        self._loop.call_at(conn.paused_until, self.resume, conn)
        return True
