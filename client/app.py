"""Wiring: the core, the network shell and the terminal shell, in one event loop.

Two tasks share the loop. The *input loop* awaits the prompt and feeds each accepted
line to the core; the *link task* reads the server, feeds each line to the core, and
when the connection drops it reconnects with exponential backoff (the core re-registers,
rejoins and fetches the gap). The prompt is never interrupted by a disconnect, so what
the user is typing survives it.

Start-up is stricter than reconnection: if the very first connection or registration
fails, :class:`Fatal` carries one sentence for ``__main__`` to print, and nothing of the
terminal UI has been started.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prompt_toolkit import PromptSession
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output as PtOutput
from prompt_toolkit.patch_stdout import patch_stdout

from client import fullscreen, net, store, trust, ui
from client.core import ChatState, Kind, Line, Output, irc_fold

__all__ = ["Fatal", "Options", "run"]

logger = logging.getLogger(__name__)

# Reconnect delays: 0.5 s, doubling, at most 15 s, with +-20 % jitter so that a room full
# of clients does not come back in lockstep after a server restart. The delay goes back to
# the first only after a registration that lasted STABLE_AFTER: a server that closes after
# its banner, after welcome, or refuses every nick must not get a connection every 0.5 s.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 15.0
STABLE_AFTER = 30.0
# While the port refuses connections (the host answers, the server is down: stopped or
# restarting), the delay is capped this low instead: a refusal costs the server nothing,
# and people are back within seconds of a restart. A connection that is accepted but does
# not register, or does not last, still backs off to BACKOFF_MAX (a full or broken server).
BACKOFF_DOWN_MAX = 5.0
# A chatd server greets at once; anything slower is not one (or is not well). Applies to
# every connection, reconnects included.
WELCOME_TIMEOUT = 10.0
# Liveness (WeeChat's lag_reconnect, irssi's lag_max_before_disconnect): after PING_AFTER
# seconds without a line from the server, ping it; no line LAG_MAX later: reconnect.
PING_AFTER = 30.0
LAG_MAX = 30.0
# How often the watchdog looks (and feeds the core its clock, for the gap fill's bound).
TICK = 1.0
# After sending quit, how long to wait for the server to close the connection.
QUIT_LINGER = 1.0


class Shell(Protocol):
    """What the wiring needs of a terminal shell (line mode: ui.Ui; full screen)."""

    def show(self, lines: Iterable[Line]) -> None: ...

    def refresh(self) -> None: ...

    def flush(self) -> None: ...

    def stop(self) -> None: ...


class Fatal(Exception):
    """Start-up failed; ``str()`` is one sentence for the user."""


@dataclass(frozen=True, slots=True)
class Options:
    host: str
    port: int
    nick: str
    room: str
    history_file: Path | None
    password: str | None = None
    connect_timeout: float = 5.0
    welcome_timeout: float = WELCOME_TIMEOUT
    ping_after: float = PING_AFTER
    lag_max: float = LAG_MAX
    backoff_first: float = BACKOFF_FIRST
    backoff_max: float = BACKOFF_MAX
    backoff_down_max: float = BACKOFF_DOWN_MAX
    stable_after: float = STABLE_AFTER
    tick: float = TICK
    rooms_file: Path | None = None  # rooms remembered per server (client.store)
    room_explicit: bool = True  # --room was given: join it first, then the remembered
    full_screen: bool = False  # buffers per room (client.fullscreen) instead of line mode
    # TLS and trust on first use (client/trust.py); None: plain text, no questions (what
    # the command line gives by default is TLS first: see client/__main__.py). No
    # known_servers file: nothing is remembered (every server is new).
    tls: trust.Policy | None = None
    known_servers: Path | None = None
    ask_trust: trust.Ask | None = None
    # More nodes of the same chatd cluster (``chat host1,host2``): tried in turn when the
    # current one cannot be reached; the usual resume and gap fill make the move seamless.
    others: tuple[tuple[str, int], ...] = ()


class ChatApp:
    """One client session: state, link, prompt."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.where = f"{opts.host}:{opts.port}"
        self._node = 0  # which of the cluster's nodes (host, then ``others``) we use
        self._round_refused = True  # every node tried in this round refused the connection
        self.state = ChatState(opts.nick, opts.room, server=self.where, password=opts.password)
        self._saved_rooms: list[str] = []
        if opts.rooms_file is not None:
            self._saved_rooms = store.load_rooms(opts.rooms_file, self.where)
            if self._saved_rooms:
                first = [opts.room] if opts.room_explicit else []
                seen: dict[str, str] = {}
                for name in [*first, *self._saved_rooms]:
                    seen.setdefault(irc_fold(name), name)
                self.state.initial_rooms = list(seen.values())
        self.link: net.Link | None = None
        self.quitting = False
        self.session: PromptSession[str] | None = None
        self.ui: Shell | None = None
        self._early: list[Line] = []  # shown once the prompt exists
        self.crashed = False
        self.delay = opts.backoff_first  # the next reconnect's delay
        self.delays: list[float] = []  # every delay waited, for tests and the log
        self.attempt = 0  # reconnect attempts since the last registration that lasted
        self._connected_at = 0.0  # loop time of the current connection
        self._registered_at: float | None = None
        self._last_rx = 0.0  # loop time of the last line received
        self._ping_sent: float | None = None
        self._retry = asyncio.Event()
        self._why = ""

    # ------------------------------------------------------------------ start-up

    async def start(self) -> AsyncIterator[str]:
        """Connect and register. Returns the line stream, to be read on by the link task.

        Raises:
            Fatal: the connection or the registration failed.
        """
        nodes = [(self.opts.host, self.opts.port), *self.opts.others]
        for index, (host, port) in enumerate(nodes):
            try:
                link = await self._open(host, port)
                break
            except trust.TrustError as exc:  # never quietly on to the next node
                raise Fatal(str(exc)) from None
            except net.ConnectError as exc:
                if index == len(nodes) - 1:
                    raise Fatal(str(exc)) from None
        self._node = index
        if index:
            self.where = self.state.server = f"{host}:{port}"
        self.link = link
        self._connected_at = self._last_rx = self._now()
        lines = self._received(link)
        try:
            await asyncio.wait_for(self._register(link, lines), self.opts.welcome_timeout)
        except TimeoutError:
            await link.close()
            raise Fatal(
                f"{self.where} did not greet like a chatd server "
                f"within {self.opts.welcome_timeout:g} s"
            ) from None
        except Fatal:
            await link.close()
            raise
        return lines

    async def _register(self, link: net.Link, lines: AsyncIterator[str]) -> None:
        await self._send(self.state.connected())
        async for line in lines:
            out = self.feed(line)
            if out.fatal:
                raise Fatal(out.fatal)
            self._early.extend(out.lines)
            await self._send(out)
            if self.state.registered:
                self._registered_at = self._now()
                return
        raise Fatal(
            f"{self.where} closed the connection without a chatd greeting (is it a chatd server?)"
            if not self.state.greeted
            else f"{self.where} closed the connection during registration"
        )

    async def _open(self, host: str, port: int) -> net.Link:
        """Connect over TLS (or plain text) as the trust policy allows."""
        opts = self.opts
        known = trust.KnownServers(opts.known_servers)
        if opts.tls is None:
            link = await net.connect(host, port, opts.connect_timeout)
        else:
            link = await trust.open_link(
                host, port, opts.connect_timeout, opts.tls, known, opts.ask_trust
            )
        self.state.transport = link.transport
        return link

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def _received(self, link: net.Link) -> AsyncIterator[str]:
        """The link's lines, noting when each arrived (the watchdog's evidence of life)."""
        async for line in link.lines():
            self._last_rx = self._now()
            if self._ping_sent is not None:
                self.state.lag = self._last_rx - self._ping_sent
                self._ping_sent = None
            yield line

    def feed(self, line: str) -> Output:
        """One server line into the core. Whatever it holds, it cannot end the client."""
        try:
            return self.state.server_line(line)
        except Exception:
            logger.exception("a server line broke the core; skipped: %.200r", line)
            return Output()

    async def _send(self, out: Output) -> None:
        if out.reconnect:
            self.retry_now()
        for frame in out.frames:
            if self.link is None:
                logger.info("not sent (no connection): %s", frame.get("op"))
                continue
            try:
                await self.link.send(frame)
            except (ConnectionError, OSError) as exc:
                logger.info("send failed: %s", exc)  # the link task sees the end too

    async def apply(self, out: Output) -> None:
        if self.ui is not None:
            self.ui.show(out.lines)
        await self._send(out)
        self._remember_rooms()

    def _remember_rooms(self) -> None:
        """Save the room list when it changed, for the next start (per server)."""
        if self.opts.rooms_file is None or not self.state.registered:
            return
        names = self.state.room_names()
        if names != self._saved_rooms:
            self._saved_rooms = names
            store.save_rooms(self.opts.rooms_file, self.where, names)

    def refresh(self) -> None:
        if self.ui is not None:
            self.ui.refresh()

    # ------------------------------------------------------------------ link task

    async def link_task(self, lines: AsyncIterator[str]) -> None:
        """Read the server forever; reconnect whenever the connection drops."""
        while True:
            watchdog = asyncio.create_task(self._watchdog())
            try:
                async for line in lines:
                    out = self.feed(line)
                    if out.fatal:  # e.g. every fallback nick taken: try again later
                        out.error(out.fatal)
                        await self.apply(out)
                        break
                    if self.state.registered and self._registered_at is None:
                        self._registered_at = self._now()
                    await self.apply(out)
                    self.refresh()
            finally:
                watchdog.cancel()
            if self.link is not None:
                await self.link.close()
            self.link = None
            if self.quitting:
                return
            self._count_connection()
            await self.apply(self.state.disconnected(self._why or "connection lost"))
            lines = await self._reconnect()

    def _count_connection(self) -> None:
        """Back off further unless the connection registered and lasted."""
        lasted = self._registered_at is not None and (
            self._now() - self._registered_at >= self.opts.stable_after
        )
        if lasted:
            self.delay = self.opts.backoff_first
            self.attempt = 0
        elif self.delays:  # a short connection counts as a failed attempt
            self.delay = min(self.delay * 2, self.opts.backoff_max)
        self._registered_at = None

    async def _watchdog(self) -> None:
        """Registration timeout, ping-based lag detection, and the core's clock."""
        self._why = ""
        self._ping_sent = None
        while True:
            await asyncio.sleep(self.opts.tick)
            await self.apply(self.state.tick(time.time()))
            now = self._now()
            if not self.state.registered:
                if now - self._connected_at > self.opts.welcome_timeout:
                    self._drop(f"no welcome within {self.opts.welcome_timeout:g} s")
                    return
                continue
            if self._ping_sent is not None:
                self.state.lag = now - self._ping_sent
                self.refresh()
                if now - self._ping_sent > self.opts.lag_max:
                    self._drop(f"no answer to a ping for {self.opts.lag_max:g} s")
                    return
            elif now - self._last_rx > self.opts.ping_after:
                self._ping_sent = now
                await self._send(Output(frames=[{"op": "ping"}]))

    def _drop(self, why: str) -> None:
        logger.info("dropping the connection: %s", why)
        self._why = why
        if self.link is not None:
            self.link.abort()

    def retry_now(self) -> None:
        """``/reconnect`` or the retry key: drop the link, or stop waiting, and connect."""
        self.delay = 0.0
        if self.link is not None:
            self._drop("reconnect asked for")
        self._retry.set()

    async def _reconnect(self) -> AsyncIterator[str]:
        while True:
            self.attempt += 1
            attempt = self.attempt
            delay = self.delay * random.uniform(0.8, 1.2)
            self.delays.append(delay)
            logger.info("reconnect attempt %d in %.2f s", attempt, delay)
            self._retry.clear()
            deadline = self._now() + delay
            while (left := deadline - self._now()) > 0 and not self._retry.is_set():
                self.state.link = f"reconnecting in {left:.0f} s (attempt {attempt}; F5: now)"
                self.refresh()
                try:
                    await asyncio.wait_for(self._retry.wait(), min(left, 1.0))
                except TimeoutError:
                    pass
            if self._retry.is_set() and (left := deadline - self._now()) > 0:
                logger.info("reconnect attempt %d: retrying now, %.2f s early", attempt, left)
            self.state.link = f"reconnecting (attempt {attempt})"
            self.refresh()
            nodes = [(self.opts.host, self.opts.port), *self.opts.others]
            host, port = nodes[self._node]
            try:
                link = await self._open(host, port)
            except trust.TrustError as exc:  # a changed key: say so loudly, keep trying
                logger.warning("reconnect attempt %d refused: %s", attempt, exc)
                out = Output()
                out.error(str(exc))
                await self.apply(out)
                self._node = (self._node + 1) % len(nodes)  # another node may be trusted
                self.delay = self.opts.backoff_max
                continue
            except net.ConnectError as exc:
                logger.info("reconnect attempt %d failed: %s", attempt, exc)
                # a refusal costs nothing: back soon after a restart (BACKOFF_DOWN_MAX)
                self._round_refused &= isinstance(exc, net.Refused)
                self._node = (self._node + 1) % len(nodes)  # the next node of the cluster
                if self._node == 0:  # a whole round failed: back off
                    most = self.opts.backoff_max
                    if self._round_refused:  # every node down, none full or broken
                        most = min(most, self.opts.backoff_down_max)
                    self._round_refused = True
                    self.delay = min(max(self.delay, self.opts.backoff_first) * 2, most)
                else:
                    self.delay = 0.0
                continue
            if self.delay == 0.0:
                self.delay = self.opts.backoff_first
            self._round_refused = True
            if f"{host}:{port}" != self.state.server:
                self.state.server = f"{host}:{port}"  # "connected to ..." shows the move
            self.link = link
            self._connected_at = self._last_rx = self._now()
            await self.apply(self.state.connected())
            self.refresh()
            return self._received(link)

    # ------------------------------------------------------------------ input loop

    def notice(self, text: str) -> None:
        if self.ui is not None:
            self.ui.show([Line(Kind.INFO, text)])

    def cycle(self, step: int) -> None:
        if self.ui is not None:
            self.ui.show(self.state.cycle_room(step).lines)

    async def input_loop(self, read: Callable[[], Awaitable[str]]) -> None:
        while True:
            try:
                text = await read()
            except EOFError:
                out = self.state.quit()
                break
            out = self.state.user_input(text)
            await self.apply(out)
            if out.quit:
                break
            self.refresh()
        self.quitting = True
        if out.frames:
            await self._send(out)

    async def run(self, input: Input | None = None, output: PtOutput | None = None) -> int:
        if self.opts.full_screen:
            return await fullscreen.run(self, input=input, output=output)
        lines = await self.start()
        session = ui.make_session(
            self.state,
            history=ui.open_history(self.opts.history_file),
            on_cycle=self.cycle,
            on_retry=self.retry_now,
            on_notice=self.notice,
            input=input,
            output=output,
        )
        self.session = session
        asyncio.get_running_loop().set_exception_handler(_log_exception)
        with patch_stdout(raw=True):
            self.ui = ui.Ui(self.state, session)
            self.ui.show(self._early)
            reader = asyncio.create_task(self.link_task(lines))
            reader.add_done_callback(self._link_task_done)
            try:
                # prompt_toolkit's own handler prints the traceback over the chat and
                # waits for Enter; ours (set above) logs it and the app goes on.
                await self.input_loop(lambda: session.prompt_async(set_exception_handler=False))
                if self.link is not None and not reader.done():
                    # the server closes after flushing; give it a moment to do so
                    await asyncio.wait({reader}, timeout=QUIT_LINGER)
            finally:
                reader.cancel()
                if self.link is not None:
                    await self.link.close()
                self.ui.flush()
        return 1 if self.crashed else 0

    def _link_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        logger.error("the connection task failed", exc_info=task.exception())
        self.crashed = True
        if self.ui is not None:
            self.ui.stop()


def _log_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """The event loop's exception handler: into the log file, never onto the terminal."""
    exc = context.get("exception")
    logger.error(
        "unexpected error (the client goes on): %s",
        context.get("message"),
        exc_info=exc if isinstance(exc, BaseException) else None,
    )


async def run(opts: Options, input: Input | None = None, output: PtOutput | None = None) -> int:
    """Run one client session to its end. Returns the exit status.

    Raises:
        Fatal: start-up failed (one sentence in ``str()``).
    """
    return await ChatApp(opts).run(input=input, output=output)
