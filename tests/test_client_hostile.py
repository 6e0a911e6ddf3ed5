"""The real client against a hostile or broken server (issue 17), in-process.

The impostor (tests/hostile.py) listens on 127.0.0.1 port 0 in the test's event loop; the
whole client runs there too, with pipe input and a plain-text output read back as the
screen. Every await is bounded; intervals are shortened through ``app.Options``.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hostile import NASTY, HostileServer, expect, frame, idle, opening
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import create_output

from client import app, sync

pytestmark = pytest.mark.timeout(60)


def run(coro: Awaitable[Any], timeout: float = 40) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def options(port: int, **kw: Any) -> app.Options:
    return app.Options(
        host="127.0.0.1", port=port, nick="alice", room="#lobby", history_file=None, **kw
    )


class Client:
    """The real client (ChatApp) with pipe input; ``text`` is everything it printed."""

    def __init__(self, opts: app.Options) -> None:
        self.app = app.ChatApp(opts)
        self.buffer = io.StringIO()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    async def wait_for(self, needle: str, timeout: float = 15) -> None:
        await self.until(lambda: needle in self.text, f"{needle!r} on screen", timeout)

    async def until(self, check: Callable[[], bool], what: str, timeout: float = 15) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, f"no {what}:\n{self.text[-3000:]}"
            await asyncio.sleep(0.02)

    async def run(self, script: Callable[[PipeInput], Awaitable[None]]) -> int:
        with (
            create_pipe_input() as pipe,
            create_app_session(input=pipe, output=create_output(stdout=self.buffer)),
        ):
            task = asyncio.create_task(self.app.run())
            await script(pipe)
            return await task


def assert_no_traceback(text: str) -> None:
    for needle in ("Traceback", "Unhandled exception", "Press ENTER"):
        assert needle not in text, text[-3000:]


def test_no_frame_ends_the_client_or_prints_a_traceback() -> None:
    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await opening(reader, writer, members=("bob",))
        for line in NASTY:
            writer.write(line + b"\n")
            await writer.drain()
        writer.write(b"x" * 5_000_000 + b"\n")  # longer than the client reads at all
        writer.write(
            frame(type="msg", room="#lobby", text="still here", ts=1.0, mid=50, **{"from": "bob"})
        )
        await writer.drain()
        while True:  # answer history requests (the gap after `skipped`) with nothing
            request = await expect(reader, "history")
            writer.write(frame(type="history", room="#lobby", id=request["id"], messages=[]))
            await writer.drain()

    server = HostileServer(plan)
    client: Client

    async def scenario() -> int:
        nonlocal client
        client = Client(options(await server.start()))

        async def script(pipe: PipeInput) -> None:
            await client.wait_for("<bob> still here")
            pipe.send_text("/quit\r")

        try:
            return await client.run(script)
        finally:
            await server.stop()

    assert run(scenario()) == 0
    text = client.text
    assert_no_traceback(text)
    state = client.app.state
    assert state.nick == "alice"  # the forced rename to "not a nick!" was refused
    assert state.room_names() == ["#lobby"]  # no phantom rooms
    assert "you left #never" not in text
    # the 3.5 MB message was cut to the default limit (2000 characters)
    rows = [line for line in text.splitlines() if "AAAA" in line]
    assert sum(row.count("A") for row in rows) == 2000 and "[…]" in rows[-1]
    # wrapped by the client with a hanging indent: no continuation row at column 0
    assert len(rows) > 1 and all(row.startswith("    A") for row in rows[1:]), rows
    for shown in ("ts 1e20", "ts inf", "ts nan", "big int ts"):
        assert shown in text  # shown, stamped with the local time instead


def test_gap_fill_gives_up_on_pages_that_do_not_advance() -> None:
    """A server answering every gap request with the same full page: the client stops
    asking, shows what it held, and says a gap remains."""
    page = [
        {"type": "msg", "room": "#lobby", "from": "bob", "text": f"p{n}", "ts": 1.0, "mid": n}
        for n in range(1, sync.GAP_PAGE + 1)
    ]
    gap_requests: list[dict[str, Any]] = []

    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await opening(reader, writer)
        writer.write(
            frame(type="msg", room="#lobby", text="first", ts=1.0, mid=500, **{"from": "bob"})
        )
        writer.write(frame(type="skipped", count=3))
        writer.write(
            frame(type="msg", room="#lobby", text="held", ts=1.0, mid=900, **{"from": "bob"})
        )
        await writer.drain()
        while True:
            request = await expect(reader, "history")
            gap_requests.append(request)
            writer.write(frame(type="history", room="#lobby", id=request["id"], messages=page))
            await writer.drain()

    server = HostileServer(plan)
    client: Client

    async def scenario() -> int:
        nonlocal client
        client = Client(options(await server.start()))

        async def script(pipe: PipeInput) -> None:
            await client.wait_for("some messages in #lobby are missing")
            await client.wait_for("<bob> held")
            pipe.send_text("/quit\r")

        try:
            return await client.run(script)
        finally:
            await server.stop()

    assert run(scenario()) == 0
    gaps = [r for r in gap_requests if r["limit"] == sync.GAP_PAGE]
    assert len(gaps) == 1  # one page that did not pass after=500: given up
    assert "did not advance" in client.text


def test_gap_fill_is_bounded_by_pages() -> None:
    """Advancing full pages forever: the client stops after MAX_GAP_PAGES."""
    gap_requests: list[dict[str, Any]] = []

    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await opening(reader, writer)
        writer.write(
            frame(type="msg", room="#lobby", text="first", ts=1.0, mid=1, **{"from": "bob"})
        )
        writer.write(frame(type="skipped", count=3))
        await writer.drain()
        while True:
            request = await expect(reader, "history")
            gap_requests.append(request)
            after = request["after"]
            messages = [
                {
                    "type": "msg",
                    "room": "#lobby",
                    "from": "bob",
                    "text": "",
                    "ts": 1.0,
                    "mid": after + i,
                }
                for i in range(1, sync.GAP_PAGE + 1)
            ]
            writer.write(frame(type="history", room="#lobby", id=request["id"], messages=messages))
            await writer.drain()

    server = HostileServer(plan)

    async def scenario() -> int:
        client = Client(options(await server.start()))

        async def script(pipe: PipeInput) -> None:
            await client.wait_for("some messages in #lobby are missing", timeout=30)
            pipe.send_text("/quit\r")

        try:
            return await client.run(script)
        finally:
            await server.stop()

    assert run(scenario()) == 0
    assert len([r for r in gap_requests if r["limit"] == sync.GAP_PAGE]) == sync.MAX_GAP_PAGES


def test_silent_server_is_noticed_by_ping_and_left() -> None:
    """Registered, then silent (no pong, nothing): the client pings, waits lag_max, and
    reconnects; the second connection behaves."""

    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await opening(reader, writer)
        if n == 1:
            await idle(reader)  # reads the ping, answers nothing
            return
        while True:
            await expect(reader, "ping")
            writer.write(frame(type="pong"))
            await writer.drain()

    server = HostileServer(plan)
    client: Client

    async def scenario() -> int:
        nonlocal client
        port = await server.start()
        client = Client(options(port, ping_after=0.3, lag_max=0.5, tick=0.05))

        async def script(pipe: PipeInput) -> None:
            await client.wait_for("no answer to a ping")
            await client.until(lambda: server.connections >= 2, "second connection")
            await client.until(lambda: client.app.state.registered, "registration")
            pipe.send_text("/quit\r")

        try:
            return await client.run(script)
        finally:
            await server.stop()

    assert run(scenario()) == 0
    assert_no_traceback(client.text)


def test_registration_timeout_on_a_reconnect() -> None:
    """Second connection: a banner and then nothing. The client gives up on it after
    welcome_timeout and tries again; the third connection registers."""

    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 2:
            writer.write(b"chatd impostor ready\n")
            await idle(reader)
            return
        await opening(reader, writer)
        if n == 1:
            return  # drop the first connection at once
        await idle(reader)

    server = HostileServer(plan)

    async def scenario() -> int:
        port = await server.start()
        client = Client(options(port, welcome_timeout=0.5, tick=0.05, backoff_first=0.05))

        async def script(pipe: PipeInput) -> None:
            await client.until(lambda: server.connections >= 3, "third connection")
            await client.until(lambda: client.app.state.registered, "registration")
            pipe.send_text("/quit\r")

        try:
            return await client.run(script)
        finally:
            await server.stop()

    assert run(scenario()) == 0


@pytest.mark.parametrize("when", ["after banner", "after welcome", "nick taken"])
def test_the_backoff_grows_when_connections_do_not_last(when: str) -> None:
    """The first connection registers; every later one fails in its own way. The delay
    between attempts must grow, not reset to the first each time."""

    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            await opening(reader, writer)
            return  # then drop it
        writer.write(b"chatd impostor ready\n")
        if when == "after banner":
            return
        hello = await expect(reader, "hello")
        if when == "after welcome":
            writer.write(frame(type="welcome", nick=hello["nick"], server="x", motd=[]))
        else:
            while True:
                writer.write(frame(type="error", code="nick_taken", message="taken"))
                await writer.drain()
                await expect(reader, "hello")
        await writer.drain()

    server = HostileServer(plan)
    client: Client

    async def scenario() -> int:
        nonlocal client
        port = await server.start()
        client = Client(options(port, backoff_first=0.02, backoff_max=0.3, tick=0.05))

        async def script(pipe: PipeInput) -> None:
            await client.until(lambda: len(client.app.delays) >= 6, "six reconnects", 30)
            pipe.send_text("/quit\r")

        try:
            return await client.run(script)
        finally:
            await server.stop()

    assert run(scenario()) == 0
    delays = client.app.delays[:6]
    assert all(b > a for a, b in zip(delays, delays[1:4], strict=False)), delays
    assert delays[-1] >= 0.3 * 0.8, delays


def test_retry_now_skips_the_wait() -> None:
    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await opening(reader, writer)
        if n == 1:
            return
        await idle(reader)

    server = HostileServer(plan)

    async def scenario() -> int:
        port = await server.start()
        # a first delay of 60 s: only the retry can bring the second connection in time
        client = Client(options(port, backoff_first=60.0, backoff_max=60.0))

        async def script(pipe: PipeInput) -> None:
            await client.until(lambda: "reconnecting in" in client.app.state.link, "countdown")
            pipe.send_text("/reconnect\r")
            await client.until(lambda: server.connections >= 2, "second connection")
            await client.until(lambda: client.app.state.registered, "registration")
            pipe.send_text("/quit\r")

        try:
            return await client.run(script)
        finally:
            await server.stop()

    assert run(scenario()) == 0


def test_frames_are_json_lines() -> None:  # the helpers themselves
    assert json.loads(frame(type="pong")) == {"type": "pong"}


def test_an_unexpected_error_goes_to_the_log_not_the_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """prompt_toolkit's own handler prints the traceback over the chat and waits for
    Enter; the client's logs it and goes on."""

    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await opening(reader, writer)
        await idle(reader)

    server = HostileServer(plan)
    client: Client

    def boom() -> None:
        raise RuntimeError("a bug in some callback")

    async def scenario() -> int:
        nonlocal client
        client = Client(options(await server.start()))

        async def script(pipe: PipeInput) -> None:
            await client.wait_for("you joined #lobby")
            asyncio.get_running_loop().call_soon(boom)
            await client.until(lambda: "a bug in some callback" in caplog.text, "a logged error")
            pipe.send_text("/help\r")
            await client.wait_for("this list")  # the prompt still works
            pipe.send_text("/quit\r")

        try:
            return await client.run(script)
        finally:
            await server.stop()

    assert run(scenario()) == 0
    assert_no_traceback(client.text)


def test_a_refusing_port_caps_the_backoff_lower() -> None:
    """Connections that are accepted but closed after the banner back off to backoff_max
    (the storm rule); once the port refuses (the server is down), the delay drops to
    backoff_down_max at most."""

    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            await opening(reader, writer)
            return  # then drop it
        writer.write(b"chatd impostor ready\n")
        await writer.drain()

    server = HostileServer(plan)
    client: Client
    accepted = 0

    async def scenario() -> int:
        nonlocal client, accepted
        port = await server.start()
        client = Client(
            options(port, backoff_first=0.02, backoff_max=0.6, backoff_down_max=0.1, tick=0.05)
        )

        async def script(pipe: PipeInput) -> None:
            nonlocal accepted
            await client.until(lambda: client.app.delay >= 0.6, "the storm backoff at its top")
            await server.stop()  # the port refuses from now on
            accepted = len(client.app.delays)
            await client.until(lambda: len(client.app.delays) >= accepted + 5, "refusals", 30)
            pipe.send_text("/quit\r")

        return await client.run(script)

    assert run(scenario()) == 0
    delays = client.app.delays
    assert max(delays[:accepted]) >= 0.6 * 0.8, delays  # the storm rule still holds
    later = delays[accepted + 1 :]  # the first wait was decided before the refusal
    assert later and all(d <= 0.1 * 1.2 for d in later), delays


def test_a_stopped_and_restarted_server_is_rejoined_soon(chatd_server) -> None:  # type: ignore[no-untyped-def]
    """The real server stops (its port refuses) and starts again on the same port: the
    waits stay at the lower cap, and the client is back in its room."""
    client: Client
    stopped_at = 0

    async def scenario() -> int:
        nonlocal client, stopped_at
        client = Client(
            options(chatd_server.port, backoff_first=0.05, backoff_max=3.0, backoff_down_max=0.2)
        )

        async def script(pipe: PipeInput) -> None:
            nonlocal stopped_at
            await client.wait_for("you joined #lobby")
            await asyncio.to_thread(chatd_server.stop)
            stopped_at = len(client.app.delays)
            await client.until(lambda: len(client.app.delays) >= stopped_at + 6, "refusals", 30)
            await asyncio.to_thread(chatd_server.start)
            await client.until(lambda: client.text.count("you joined #lobby") >= 2, "rejoined")
            pipe.send_text("/quit\r")

        return await client.run(script)

    assert run(scenario()) == 0
    waits = client.app.delays[stopped_at:]
    assert max(waits) >= 0.2 * 0.8, waits  # it did double up to the cap
    assert all(d <= 0.2 * 1.2 for d in waits), waits  # and no further
