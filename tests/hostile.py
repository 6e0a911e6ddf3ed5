"""A hostile (or merely broken) chatd impostor, for driving the real client against it.

:class:`HostileServer` listens on 127.0.0.1 port 0 and runs one *plan* per connection: a
coroutine that gets the connection's number (1, 2, …) and its streams, and may send
anything at all. It runs in the test's event loop (:meth:`start`) or in a thread of its
own for a client in another process (:meth:`start_in_thread`). Helpers build the usual
opening (banner, welcome, joined) and the frames that broke the client once (issue 17).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

Plan = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

BANNER = b"chatd impostor ready\nsend hello\n"

# Frames that crashed the client or put a traceback over the chat (issue 17), and
# others no client should trust.
NASTY: list[bytes] = [
    b'{"type":"welcome","nick":"alice","server":"x","motd":5}',
    b'{"type":"msg","room":"#lobby","from":"bob","text":"big int ts","ts":1'
    + b"0" * 400
    + b',"mid":2}',
    b'{"type":"msg","room":"#lobby","from":"bob","text":"ts 1e20","ts":1e20,"mid":3}',
    b'{"type":"msg","room":"#lobby","from":"bob","text":"ts inf","ts":Infinity,"mid":4}',
    b'{"type":"msg","room":"#lobby","from":"bob","text":"ts nan","ts":NaN,"mid":5}',
    b'{"type":"msg","room":"#lobby","from":"bob","text":"ts -inf","ts":-Infinity,"mid":6}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"type":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"type":"msg","room":"#lobby","from":"bob","text":"huge mid","ts":1,"mid":'
    + b"9" * 5000
    + b"}",
    b"\xff\xfe not utf-8 \x00\x1b[2J",
    b'{"type":"msg","room":"#lobby","from":"bob\\u200b","text":"invisible nick","ts":1,"mid":7}',
    b'{"type":"msg","room":"#lob\\u200bby","from":"bob","text":"invisible room","ts":1,"mid":8}',
    b'{"type":"nick","old":"alice","new":"not a nick!"}',
    b'{"type":"part","room":"#never","nick":"alice"}',
    b'{"type":"joined","room":"#phantom","topic":"","members":"alice"}',
    b'{"type":"joined","room":"#phantom2","topic":5,"members":[1,2,null,"ok"]}',
    b'{"type":"msg","room":"#lobby","from":"bob","text":["list"],"ts":1,"mid":9}',
    b'{"type":"history","room":"#lobby","messages":{"a":1}}',
    b'{"type":"rooms","rooms":[1,{"room":5},{"room":"#ok","members":"many"}]}',
    b'{"type":"whois","nick":"bob","rooms":"#lobby","away":7}',
    b'{"type":"error"}',
    b'{"type":"skipped","count":"lots"}',
    b'{"type":"welcome"}',
    b"{}",
    b"null",
    b'"just a string"',
    b'{"type":null}',
    b'{"type":"msg","room":"#lobby","from":"bob","text":"'
    + b"A" * 3_500_000
    + b'","ts":1,"mid":10}',
]


def frame(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


async def read_request(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    line = await reader.readline()
    if not line:
        return None
    request: dict[str, Any] = json.loads(line)
    return request


async def expect(reader: asyncio.StreamReader, op: str) -> dict[str, Any]:
    while True:
        request = await read_request(reader)
        if request is None:
            raise ConnectionError(f"closed while waiting for {op}")
        if request["op"] == op:
            return request


async def opening(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, members: tuple[str, ...] = ()
) -> str:
    """Banner, welcome, joined #lobby, history_end: what a real server does. Returns the nick."""
    writer.write(BANNER)
    hello = await expect(reader, "hello")
    nick: str = hello["nick"]
    writer.write(frame(type="welcome", nick=nick, server="impostor", motd=[]))
    await expect(reader, "join")
    writer.write(frame(type="joined", room="#lobby", topic="", members=[nick, *members]))
    writer.write(frame(type="history_end", room="#lobby"))
    await writer.drain()
    return nick


async def idle(reader: asyncio.StreamReader) -> None:
    """Read (and ignore) until the client goes."""
    while await reader.read(65536):
        pass


class HostileServer:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.plan(self.connections, reader, writer)
        except (ConnectionError, OSError, json.JSONDecodeError):
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=1 << 22)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def start_in_thread(self) -> int:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the hostile server did not start"
        return self.port

    def stop_thread(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
