"""The baseline: what a Python developer would write with asyncio streams.

This is deliberately the *straightforward* design the benchmark compares chatd against
(issue 5): ``asyncio.start_server``, one task per client, ``reader.readline()`` for
framing, and for every delivery a ``writer.write`` followed by ``await writer.drain()``.
A message is JSON-encoded once and the same bytes are written to every member, so the
difference it measures is the I/O design, not serialisation.

It speaks the subset of docs/protocol.md (JSON mode) that the load generator uses:

    banner line(s)  (none starts with "{")
    {"op":"hello","nick":N}           -> {"type":"welcome","nick","server","motd"}
    {"op":"join","room":R}            -> {"type":"joined","room","topic","members"} to you,
                                         {"type":"join","room","nick"} to the others
    {"op":"say","room":R,"text":T}    -> {"type":"msg","room","from","text","ts","mid"}
                                         to every member, the sender included
    anything else                     -> {"type":"error","code":"unknown_op",...}

Usage:  python bench/baseline_asyncio.py [--host 127.0.0.1] [--port 0]
It prints ``listening on HOST:PORT`` on stdout once it accepts connections. Flags that
chatd takes (--db, --rate-limit, ...) are accepted and ignored so both servers can be
started the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import socket
import sys
import time

SERVER_NAME = "baseline-asyncio"


class ChatState:
    """Nicks and rooms, shared by every client task (one event loop, so no locks)."""

    def __init__(self) -> None:
        self.nicks: dict[str, asyncio.StreamWriter] = {}
        self.rooms: dict[str, dict[str, asyncio.StreamWriter]] = {}
        self.mids = itertools.count(1)


def frame(obj: dict[str, object]) -> bytes:
    return (json.dumps(obj) + "\n").encode()


async def send_to(writer: asyncio.StreamWriter, data: bytes) -> None:
    """One delivery: write, then wait until the transport's buffer is below its mark."""
    if writer.is_closing():
        return
    writer.write(data)
    try:
        await writer.drain()
    except ConnectionError:
        pass  # that recipient is gone; its own task cleans up


async def broadcast(room: dict[str, asyncio.StreamWriter], data: bytes) -> None:
    for writer in list(room.values()):
        await send_to(writer, data)


async def handle_client(  # noqa: C901 (the baseline stays one plain coroutine: what it measures)
    state: ChatState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    nick: str | None = None
    joined: set[str] = set()
    room: dict[str, asyncio.StreamWriter] | None
    writer.write(b"*** chatd benchmark baseline (asyncio streams)\n")
    try:
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"{"):
                continue
            try:
                req = json.loads(line)
            except ValueError:
                await send_to(
                    writer, frame({"type": "error", "code": "bad_json", "message": "not JSON"})
                )
                continue
            op = req.get("op")
            if op == "hello" and nick is None:
                wanted = str(req.get("nick", ""))
                if not wanted or wanted.lower() in state.nicks:
                    await send_to(
                        writer,
                        frame({"type": "error", "code": "nick_taken", "message": "nick in use"}),
                    )
                    continue
                nick = wanted
                state.nicks[nick.lower()] = writer
                await send_to(
                    writer,
                    frame({"type": "welcome", "nick": nick, "server": SERVER_NAME, "motd": []}),
                )
            elif nick is None:
                await send_to(
                    writer,
                    frame(
                        {"type": "error", "code": "not_registered", "message": "say hello first"}
                    ),
                )
            elif op == "join":
                name = str(req.get("room", ""))
                room = state.rooms.setdefault(name.lower(), {})
                if nick in room:
                    continue
                await broadcast(room, frame({"type": "join", "room": name, "nick": nick}))
                room[nick] = writer
                joined.add(name.lower())
                await send_to(
                    writer,
                    frame({"type": "joined", "room": name, "topic": "", "members": list(room)}),
                )
            elif op == "say":
                name = str(req.get("room", ""))
                room = state.rooms.get(name.lower())
                if room is None or nick not in room:
                    await send_to(
                        writer,
                        frame({"type": "error", "code": "not_in_room", "message": "join first"}),
                    )
                    continue
                msg = {
                    "type": "msg",
                    "room": name,
                    "from": nick,
                    "text": req.get("text", ""),
                    "ts": round(time.time(), 3),
                    "mid": next(state.mids),
                }
                await broadcast(room, frame(msg))
            else:
                await send_to(
                    writer,
                    frame(
                        {
                            "type": "error",
                            "code": "unknown_op",
                            "message": "not supported by the baseline",
                        }
                    ),
                )
    except ConnectionError:
        pass
    finally:
        if nick is not None:
            state.nicks.pop(nick.lower(), None)
            for name in joined:
                room = state.rooms.get(name)
                if room is not None:
                    room.pop(nick, None)
                    if not room:
                        del state.rooms[name]
        writer.close()


async def serve(host: str, port: int) -> None:
    state = ChatState()
    # backlog: asyncio's default of 100 would make the 10,000-connection scenario measure
    # SYN retransmissions instead of the server; chatd listens with SOMAXCONN too.
    server = await asyncio.start_server(
        lambda r, w: handle_client(state, r, w), host, port, backlog=socket.SOMAXCONN
    )
    addr = server.sockets[0].getsockname()
    print(f"listening on {addr[0]}:{addr[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    # Ignored; accepted so the harness can start both servers with the same flags.
    for flag in ("--db", "--rate-limit", "--log-level", "--max-clients"):
        parser.add_argument(flag)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
