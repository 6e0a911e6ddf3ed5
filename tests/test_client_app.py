"""The network shell and the wiring, in-process: stub servers on port 0 and the real one.

The whole client runs in the test's event loop with pipe input and a plain-text output,
so what it would print can be read back; every await is bounded.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from helpers import ROOT
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import create_output

from client import app, net

T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro: Awaitable[T], timeout: float = 15) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def options(port: int, nick: str = "alice", **kw: Any) -> app.Options:
    return app.Options(
        host="127.0.0.1", port=port, nick=nick, room="#lobby", history_file=None, **kw
    )


async def send(writer: asyncio.StreamWriter, **frame: Any) -> None:
    writer.write(json.dumps(frame).encode() + b"\n")
    await writer.drain()


async def expect(reader: asyncio.StreamReader, op: str) -> dict[str, Any]:
    while True:
        line = await reader.readline()
        assert line, f"closed while waiting for {op}"
        request: dict[str, Any] = json.loads(line)
        if request["op"] == op:
            return request


def msg(mid: int, **kw: Any) -> dict[str, Any]:
    return {
        "type": "msg",
        "room": "#lobby",
        "from": "bob",
        "text": f"m{mid}",
        "ts": 1.0,
        "mid": mid,
        **kw,
    }


class Screen:
    """Runs the client with pipe input; ``text`` is everything it printed."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    async def wait_for(self, needle: str, timeout: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while needle not in self.text:
            assert asyncio.get_running_loop().time() < deadline, f"{needle!r} not in {self.text}"
            await asyncio.sleep(0.02)

    async def run(self, opts: app.Options, script: Callable[[PipeInput], Awaitable[None]]) -> int:
        with (
            create_pipe_input() as pipe,
            create_app_session(input=pipe, output=create_output(stdout=self.buffer)),
        ):
            client = asyncio.create_task(app.run(opts))
            await script(pipe)
            return await client


# --------------------------------------------------------------------------- start-up


def test_refused_connection_is_fatal() -> None:
    async def scenario() -> None:
        server, port = await serve(lambda r, w: asyncio.sleep(0))
        server.close()
        await server.wait_closed()
        with pytest.raises(app.Fatal, match="connection refused"):
            await app.run(options(port))

    run(scenario())


def test_unknown_host_is_fatal() -> None:
    with pytest.raises(app.Fatal, match="unknown host"):
        run(app.run(app.Options("no-such-host.invalid", 7777, "a", "#lobby", None)))


def test_not_a_chatd_server() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        writer.close()

    async def scenario() -> None:
        server, port = await serve(http)
        async with server:
            with pytest.raises(app.Fatal, match="without a chatd greeting"):
                await app.run(options(port))

    run(scenario())


def test_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def scenario() -> None:
        server, port = await serve(silent)
        async with server:
            with pytest.raises(app.Fatal, match="did not greet"):
                await app.run(options(port, welcome_timeout=0.3))

    run(scenario())


def test_taken_nick_falls_back_on_the_real_server(chatd_server) -> None:
    holder = chatd_server.json_client("alice", "#lobby")
    screen = Screen()

    async def script(pipe: PipeInput) -> None:
        await screen.wait_for("you joined #lobby")
        pipe.send_text("hello from the fallback\r")
        await screen.wait_for("<alice_> hello from the fallback")
        pipe.send_text("/quit done\r")

    try:
        assert run(screen.run(options(chatd_server.port), script)) == 0
        assert "alice was taken; you are alice_" in screen.text
        holder.expect_frame(type="msg", text="hello from the fallback")
        holder.expect_frame(type="quit", nick="alice_", reason="done")
    finally:
        holder.close()


def test_password_protected_server(make_server, tmp_path) -> None:
    server = make_server(env={"CHATD_PASSWORD": "sesame"})
    with pytest.raises(app.Fatal, match="wants a password"):
        run(app.run(options(server.port)))
    with pytest.raises(app.Fatal, match="refused the password"):
        run(app.run(options(server.port, password="guess")))
    watcher = server.json_client("watcher", "#lobby", password="sesame")
    screen = Screen()

    async def script(pipe: PipeInput) -> None:
        await screen.wait_for("you joined #lobby")
        pipe.send_text("let me in\r")
        await screen.wait_for("<alice> let me in")
        pipe.send_text("/quit\r")

    try:
        assert run(screen.run(options(server.port, password="sesame"), script)) == 0
        watcher.expect_frame(type="msg", text="let me in")
    finally:
        watcher.close()
    # The command line reads it from a file or CHATD_PASSWORD, never from an argument.
    secret = tmp_path / "pw"
    secret.write_text("wrong\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            f"127.0.0.1:{server.port}",
            "--password-file",
            str(secret),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1 and done.stderr.strip() == "chat: the server refused the password"


# --------------------------------------------------------------------------- reconnect


def test_reconnect_fetches_the_gap_once_and_in_order() -> None:
    """First connection: m1, m2, then the server drops us. Second: replay of m2 and
    a live m5 arrive before the gap reply (m3..m5); the screen must read m1..m5 once."""
    connections: list[int] = []
    history_requests: list[dict[str, Any]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.write(b"stub chatd\nhello\n")
        hello = await expect(reader, "hello")
        await send(writer, type="welcome", nick=hello["nick"], server="stub", motd=[])
        await expect(reader, "join")
        await send(writer, type="joined", room="#lobby", topic="", members=["alice", "bob"])
        if len(connections) == 1:
            await send(writer, type="history_end", room="#lobby")
            await send(writer, **msg(1))
            await send(writer, **msg(2))
            writer.close()  # the connection drops
            return
        await send(writer, **msg(2, history=True))
        await send(writer, type="history_end", room="#lobby")
        await send(writer, **msg(5))
        request = await expect(reader, "history")
        history_requests.append(request)
        await send(
            writer,
            type="history",
            room="#lobby",
            id=request["id"],
            messages=[msg(3), msg(4), msg(5)],
        )
        await reader.read()  # until the client quits

    screen = Screen()

    async def scenario() -> int:
        server, port = await serve(handler)
        async with server:

            async def script(pipe: PipeInput) -> None:
                await screen.wait_for("<bob> m5")
                pipe.send_text("/quit\r")

            return await screen.run(options(port), script)

    assert run(scenario()) == 0
    assert len(connections) == 2
    assert history_requests[0]["after"] == 2
    shown = [line.split("<bob> ")[1] for line in screen.text.splitlines() if "<bob> m" in line]
    assert shown == ["m1", "m2", "m3", "m4", "m5"]
    assert "disconnected from" in screen.text


# --------------------------------------------------------------------------- net


def test_lines_survive_odd_segmentation_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(net, "MAX_RECEIVED_LINE", 64)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for chunk in (b"ban", b'ner\r\n{"a"', b":1}\n", b"x" * 300, b"\nafter long\n", b"cut off"):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.close()

    async def scenario() -> list[str]:
        server, port = await serve(handler)
        async with server:
            link = await net.connect("127.0.0.1", port)
            got = [line async for line in link.lines()]
            await link.close()
            return got

    assert run(scenario()) == ["banner", '{"a":1}', "after long"]


def test_bad_utf8_is_replaced_not_fatal() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\xff\xfe ok\n")
        writer.close()

    async def scenario() -> list[str]:
        server, port = await serve(handler)
        async with server:
            link = await net.connect("127.0.0.1", port)
            return [line async for line in link.lines()]

    assert run(scenario()) == ["\ufffd\ufffd ok"]


def test_send_after_close_raises_connection_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def scenario() -> None:
        server, port = await serve(handler)
        async with server:
            link = await net.connect("127.0.0.1", port)
            await link.close()
            with pytest.raises(ConnectionError):
                await link.send({"op": "ping"})

    run(scenario())
