"""The write side, at the end of every loop turn: flush, then act on what is left.

Fan-out and replies only *queue* output; a connection puts itself on the turn's
``dirty`` list the first time it has something queued. :meth:`Flusher.flush` sends each
one's queue (gather writes, at most ``max_write_bytes_per_tick`` each) and hands what a
flush left to the :class:`~chatd.outpolicy.OutputPolicy`, then carries out its verdict:

- above high water its reading pauses; back at low water its waiting lines run again
  (:meth:`chatd.intake.Intake.resume`);
- above the soft limit room messages are skipped for it (one log line), and a timer gives
  it ``out_soft_limit_seconds``; back at low water it is told how many it missed;
- above the hard limit, or over the soft one for too long, it is cut as a slow consumer
  (one warning, the ``slow_consumers`` counter): its buffer is full of older lines, so it
  would never reach a goodbye.

``EVENT_WRITE`` is registered (:meth:`~chatd.loop.Loop.update`) only for connections
left with unsent bytes; a closing connection whose goodbyes are out is finalized here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chatd.connection import Closer, Connection, State
from chatd.loop import READ, Loop
from chatd.model import Event, Skipped
from chatd.outpolicy import OutputPolicy, Verdict

__all__ = ["Flusher"]

logger = logging.getLogger(__name__)


class Flusher:
    """Flushes the turn's connections with queued output and judges what is left.

    Args:
        dirty: the turn's connections with queued output (the list every connection
            appends itself to; emptied here, never replaced).
        close: the server starts closing a connection.
        finalize: the server closes a connection's socket now.
        deliver_one: queue one event for one connection (through the fan-out).
        resume: run a connection's waiting lines (its output drained).
        stats: the server's counters (``slow_consumers``).
    """

    def __init__(
        self,
        loop: Loop,
        policy: OutputPolicy,
        dirty: list[Connection],
        close: Closer,
        finalize: Callable[[Connection], None],
        deliver_one: Callable[[Connection, Event], None],
        resume: Callable[[Connection], None],
        stats: dict[str, int],
    ) -> None:
        self._loop = loop
        self._policy = policy
        self._dirty = dirty
        self._close = close
        self._finalize = finalize
        self._deliver_one = deliver_one
        self._resume = resume
        self._stats = stats

    def flush(self, now: float) -> None:
        """Send what every dirty connection has queued; judge those left with output."""
        dirty = self._dirty[:]
        self._dirty.clear()  # (connections hold this list: it is emptied, not replaced)
        cap = self._policy.write_cap
        closed = State.CLOSED
        for conn in dirty:
            conn.pending = False
            if conn.state is closed:
                continue
            try:
                conn.flush(cap)
            except OSError as exc:
                self._close(conn, f"write error: {exc.strerror or exc}", flush=False)
                if conn.state is State.CLOSING:
                    self._finalize(conn)  # nothing more can be sent to it
                continue
            stream = conn.stream  # (a TLS stream holds bytes only before its handshake)
            if (
                not conn.out.size
                and conn.mask == READ
                and (stream is None or not stream.buffered_bytes)
            ):
                flow = conn.flow  # the usual case: all sent, reading on, nothing owed
                if not flow.skipped and flow.over_soft_since is None:
                    continue
            self._judge(conn, now)

    def _judge(self, conn: Connection, now: float) -> None:
        """Apply the output policy to what a flush left queued."""
        policy = self._policy
        paused = conn.flow.paused
        verdict = policy.judge(conn.flow, conn.queued, now)
        if paused and not conn.flow.paused and conn.has_input:
            self._loop.call_at(now, self._resume, conn)  # its waiting frames
        if verdict is Verdict.OVER_HARD:
            self._slow_consumer(conn, f"output buffer over the hard limit ({policy.hard} bytes)")
        elif verdict is Verdict.OVER_SOFT:
            since = conn.flow.over_soft_since
            assert since is not None
            logger.info(
                "#%d %s is reading slowly (%d bytes queued): skipping room messages",
                conn.cid,
                conn.peer,
                conn.queued,
            )
            self._loop.call_at(since + policy.soft_seconds, self._soft, conn)
        elif verdict is Verdict.CAUGHT_UP and conn.state is State.OPEN:
            skipped = conn.flow.take_skipped()
            logger.info("#%d caught up; %d messages were skipped", conn.cid, skipped)
            self._deliver_one(conn, Skipped(skipped))  # flushed next turn
        if conn.state is State.CLOSING and not conn.out.size:
            self._finalize(conn)  # its goodbyes are out
        elif conn.state is not State.CLOSED:
            self._loop.update(conn)

    def _soft(self, conn: Connection) -> None:
        """Its soft-limit timer: cut it if it is still over since the same moment."""
        since = conn.flow.over_soft_since  # None, or a later episode: expired() says no
        if since is None:
            return
        policy = self._policy
        if conn.state is State.OPEN and policy.expired(conn.flow, since, self._loop.now):
            self._slow_consumer(conn, f"over the soft limit for {policy.soft_seconds:g}s")

    def _slow_consumer(self, conn: Connection, why: str) -> None:
        self._stats["slow_consumers"] += 1
        logger.warning(
            "#%d %s disconnected as a slow consumer: %s (%d messages skipped)",
            conn.cid,
            conn.peer,
            why,
            conn.flow.skipped,
        )
        # Its buffer is full of older lines; it would never reach a goodbye. Cut it.
        self._close(conn, f"slow consumer: {why}", flush=False)
