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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output as PtOutput
from prompt_toolkit.patch_stdout import patch_stdout

from client import net, trust, ui
from client.core import ChatState, Line, Output

__all__ = ["Fatal", "Options", "run"]

logger = logging.getLogger(__name__)

# Reconnect delays: 0.5 s, doubling, at most 15 s, with +-20 % jitter so that a room full
# of clients does not come back in lockstep after a server restart.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 15.0
# A chatd server greets at once; anything slower is not one (or is not well).
WELCOME_TIMEOUT = 10.0
# After sending quit, how long to wait for the server to close the connection.
QUIT_LINGER = 1.0


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
    # TLS and trust on first use (client/trust.py); None: plain text, no questions (what
    # the command line gives by default is TLS first: see client/__main__.py). No
    # known_servers file: nothing is remembered (every server is new).
    tls: trust.Policy | None = None
    known_servers: Path | None = None
    ask_trust: trust.Ask | None = None


class ChatApp:
    """One client session: state, link, prompt."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.where = f"{opts.host}:{opts.port}"
        self.state = ChatState(opts.nick, opts.room, server=self.where, password=opts.password)
        self.link: net.Link | None = None
        self.quitting = False
        self.session: PromptSession[str] | None = None
        self.ui: ui.Ui | None = None
        self._early: list[Line] = []  # shown once the prompt exists
        self.crashed = False

    # ------------------------------------------------------------------ start-up

    async def start(self) -> AsyncIterator[str]:
        """Connect and register. Returns the line stream, to be read on by the link task.

        Raises:
            Fatal: the connection or the registration failed.
        """
        try:
            link = await self._open()
        except net.ConnectError as exc:
            raise Fatal(str(exc)) from None
        self.link = link
        lines = link.lines()
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
            out = self.state.server_line(line)
            if out.fatal:
                raise Fatal(out.fatal)
            self._early.extend(out.lines)
            await self._send(out)
            if self.state.registered:
                return
        raise Fatal(
            f"{self.where} closed the connection without a chatd greeting (is it a chatd server?)"
            if not self.state.greeted
            else f"{self.where} closed the connection during registration"
        )

    async def _open(self) -> net.Link:
        """Connect over TLS (or plain text) as the trust policy allows."""
        opts = self.opts
        known = trust.KnownServers(opts.known_servers)
        if opts.tls is None:
            link = await net.connect(opts.host, opts.port, opts.connect_timeout)
        else:
            link = await trust.open_link(
                opts.host, opts.port, opts.connect_timeout, opts.tls, known, opts.ask_trust
            )
        self.state.transport = link.transport
        return link

    # ------------------------------------------------------------------ plumbing

    async def _send(self, out: Output) -> None:
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

    def refresh(self) -> None:
        if self.ui is not None:
            self.ui.refresh()

    # ------------------------------------------------------------------ link task

    async def link_task(self, lines: AsyncIterator[str]) -> None:
        """Read the server forever; reconnect whenever the connection drops."""
        while True:
            async for line in lines:
                out = self.state.server_line(line)
                if out.fatal:  # e.g. every fallback nick taken: try again later
                    out.error(out.fatal)
                    await self.apply(out)
                    break
                await self.apply(out)
                self.refresh()
            if self.link is not None:
                await self.link.close()
            self.link = None
            if self.quitting:
                return
            await self.apply(self.state.disconnected())
            lines = await self._reconnect()

    async def _reconnect(self) -> AsyncIterator[str]:
        delay = BACKOFF_FIRST
        attempt = 0
        while True:
            attempt += 1
            self.state.link = f"reconnecting (attempt {attempt})"
            self.refresh()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            try:
                link = await self._open()
            except trust.TrustError as exc:  # a changed key: say so loudly, keep trying
                logger.warning("reconnect attempt %d refused: %s", attempt, exc)
                out = Output()
                out.error(str(exc))
                await self.apply(out)
                delay = BACKOFF_MAX
                continue
            except net.ConnectError as exc:
                logger.info("reconnect attempt %d failed: %s", attempt, exc)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self.link = link
            await self.apply(self.state.connected())
            self.refresh()
            return link.lines()

    # ------------------------------------------------------------------ input loop

    def cycle(self, step: int) -> None:
        if self.ui is not None:
            self.ui.show(self.state.cycle_room(step).lines)

    async def input_loop(self, session: PromptSession[str]) -> None:
        while True:
            try:
                text = await session.prompt_async()
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
        lines = await self.start()
        session = ui.make_session(
            self.state,
            history=ui.open_history(self.opts.history_file),
            on_cycle=self.cycle,
            input=input,
            output=output,
        )
        self.session = session
        with patch_stdout(raw=True):
            self.ui = ui.Ui(self.state, session)
            self.ui.show(self._early)
            reader = asyncio.create_task(self.link_task(lines))
            reader.add_done_callback(self._link_task_done)
            try:
                await self.input_loop(session)
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
        if self.session is not None and self.session.app.is_running:
            self.session.app.exit(exception=EOFError())


async def run(opts: Options, input: Input | None = None, output: PtOutput | None = None) -> int:
    """Run one client session to its end. Returns the exit status.

    Raises:
        Fatal: start-up failed (one sentence in ``str()``).
    """
    return await ChatApp(opts).run(input=input, output=output)
