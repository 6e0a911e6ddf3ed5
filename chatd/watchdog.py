"""The deadlines every client connection lives under, and what happens when one passes.

Armed once per connection, at accept (:meth:`Watchdog.arm`), as timers on the loop:

- **registration**: no nickname within ``register_timeout_seconds`` -> an error line,
  and the connection closes after it;
- **sniffing** (a listener that picks plain or TLS from the first bytes): a client still
  silent after ``SNIFF_SECONDS`` is plain, and is greeted - a TLS client speaks first, a
  person in ``nc`` waits to be greeted;
- **handshake** (a listener with ``handshake_seconds``, TLS): a stalled handshake is cut
  sooner than a slow typist (OpenSSL keeps kilobytes for it), without a word - there is
  no session yet to say it in;
- **idle** (a codec that answers pings, IRC): silent for ``idle_ping_seconds`` -> a
  probe; silent for ``idle_drop_seconds`` -> an error line, and it closes.

Every callback first checks that the connection is still open: a timer outlives what it
watched, and firing for a connection that is gone does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from chatd.config import Config
from chatd.connection import Closer, Connection, State
from chatd.hub import Hub
from chatd.listeners import Listener
from chatd.loop import Loop
from chatd.model import Error, ErrorCode, Event, Probe

__all__ = ["SNIFF_SECONDS", "Watchdog"]

# A sniffing listener waits this long for the first bytes before it settles on plain
# (and shows its banner): a TLS client speaks first, a person in nc waits to be greeted.
SNIFF_SECONDS = 0.25


class Watchdog:
    """Arms each connection's deadlines and acts when one passes.

    Args:
        config: the timeouts (settings that change only with a restart).
        deliver_one: queue one event for one connection (through the fan-out).
        close: the server starts closing a connection.
    """

    def __init__(
        self,
        config: Config,
        loop: Loop,
        hub: Hub,
        deliver_one: Callable[[Connection, Event], None],
        close: Closer,
    ) -> None:
        self._loop = loop
        self._hub = hub
        self._deliver_one = deliver_one
        self._close = close
        self._register_seconds = config.register_timeout_seconds
        self._ping_after = config.idle_ping_seconds
        self._drop_after = config.idle_drop_seconds
        # Bound once: every connection's registration timer shares it (memory per client).
        self._on_register_timeout = self._register_timeout
        self._on_handshake_timeout = self._handshake_timeout

    def arm(self, conn: Connection, listener: Listener, now: float) -> None:
        """The timers of a connection ``listener`` has just accepted."""
        call_at = self._loop.call_at
        call_at(now + self._register_seconds, self._on_register_timeout, conn)
        if conn.codec is not None and conn.codec.pings_peer:
            call_at(now + self._ping_after, self._idle_check, conn)
        if listener.sniff_stream is not None:
            call_at(now + SNIFF_SECONDS, self._sniff_timeout, conn)
        if listener.handshake_seconds is not None:
            # The timer is gone once it fires, handshake or not.
            call_at(now + listener.handshake_seconds, self._on_handshake_timeout, conn)

    def _register_timeout(self, conn: Connection) -> None:
        if conn.state is State.OPEN and not self._hub.is_registered(conn.cid):
            self._deliver_one(conn, Error(ErrorCode.TIMEOUT, "no nickname given in time; goodbye"))
            self._close(conn, "registration timeout", flush=True)

    def _sniff_timeout(self, conn: Connection) -> None:
        if conn.state is State.OPEN and conn.sniffer is not None:
            conn.settle_stream(b"")  # it waits to be greeted: plain, and say hello
            if conn.at_eof:  # its stream refused it (plain text when TLS is required)
                self._close(conn, "refused by its stream", flush=True)

    def _handshake_timeout(self, conn: Connection) -> None:
        stream = conn.stream
        if (
            conn.state is State.OPEN
            and stream is not None
            and conn.handshaking
            and not stream.ready
        ):
            # Nothing can be said: there is no session to say it in.
            self._close(conn, "handshake timeout", flush=False, broken=True)

    def _idle_check(self, conn: Connection) -> None:
        """Ping a silent peer whose protocol answers pings (IRC); drop it if it stays so."""
        if conn.state is not State.OPEN:
            return
        now = self._loop.now
        ping_after = self._ping_after
        drop_after = self._drop_after
        silent = now - conn.last_heard
        if silent >= drop_after:
            why = f"ping timeout: silent for {silent:.0f}s"
            self._deliver_one(conn, Error(ErrorCode.TIMEOUT, why))
            self._close(conn, why, flush=True)
            return
        if silent >= ping_after and not conn.probed:
            conn.probed = True
            self._deliver_one(conn, Probe())
        due = conn.last_heard + (drop_after if conn.probed else ping_after)
        self._loop.call_at(due, self._idle_check, conn)
