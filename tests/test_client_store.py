"""Rooms remembered per server and rejoined on the next start; /close parts a room."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hostile import HostileServer, expect, frame
from prompt_toolkit.input import PipeInput
from test_client_hostile import Client, options, run

from client import store


def test_rooms_round_trip_per_server(tmp_path: Path) -> None:
    path = tmp_path / "state" / "rooms.json"
    assert store.load_rooms(path, "h:1") == []
    store.save_rooms(path, "h:1", ["#a", "#b"])
    store.save_rooms(path, "h:2", ["#c"])
    assert store.load_rooms(path, "h:1") == ["#a", "#b"]
    assert store.load_rooms(path, "h:2") == ["#c"]
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"h:1": "#a"}',
        b"[" * 100_000,
        b'{"h:1": [5, "#ok", "bad room"]}',
    ],
)
def test_a_garbled_rooms_file_is_no_rooms(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "rooms.json"
    path.write_bytes(content)
    assert store.load_rooms(path, "h:1") in ([], ["#ok"])
    store.save_rooms(path, "h:1", ["#x"])  # and it can be written over
    assert store.load_rooms(path, "h:1") == ["#x"]


def test_rooms_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "rooms.json"
    for n in range(store.MAX_SERVERS + 10):
        store.save_rooms(path, f"h:{n}", [f"#r{i}" for i in range(store.MAX_ROOMS + 10)])
    data = json.loads(path.read_text())
    assert len(data) == store.MAX_SERVERS
    assert all(len(rooms) == store.MAX_ROOMS for rooms in data.values())


def test_rooms_are_rejoined_on_the_next_start_and_close_parts(tmp_path: Path) -> None:
    joins: list[list[str]] = []

    async def plan(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"impostor\n")
        hello = await expect(reader, "hello")
        writer.write(frame(type="welcome", nick=hello["nick"], server="x", motd=[]))
        joins.append([])
        while True:  # a server that lets you join and part anything
            request = json.loads(await reader.readline())
            if request["op"] == "join":
                joins[-1].append(request["room"])
                writer.write(
                    frame(type="joined", room=request["room"], topic="", members=["alice"])
                )
            elif request["op"] == "part":
                writer.write(frame(type="part", room=request["room"], nick="alice", reason=""))
            elif request["op"] == "quit":
                return
            await writer.drain()

    server = HostileServer(plan)
    rooms_file = tmp_path / "rooms.json"

    async def session(steps: list[tuple[str, str]], wait: str, explicit: bool) -> None:
        opts = options(server.port, rooms_file=rooms_file, room_explicit=explicit)
        client = Client(opts)

        async def script(pipe: PipeInput) -> None:
            await client.wait_for(wait)
            for line, effect in steps:  # one at a time: lines typed at once are a paste
                pipe.send_text(line + "\r")
                await client.wait_for(effect)
            pipe.send_text("/quit\r")

        assert await client.run(script) == 0

    async def scenario() -> None:
        await server.start()
        try:
            steps = [("/join #dev", "you joined #dev"), ("/join #ops", "you joined #ops")]
            await session(steps, "you joined #lobby", True)
            where = f"127.0.0.1:{server.port}"
            assert store.load_rooms(rooms_file, where) == ["#lobby", "#dev", "#ops"]
            # next start, no --room: the remembered rooms; /close #dev parts it for good
            await session([("/close #dev", "you left #dev")], "you joined #ops", False)
            await session([], "you joined #ops", False)
        finally:
            await server.stop()

    run(scenario())
    assert joins[0] == ["#lobby", "#dev", "#ops"]
    assert joins[1] == ["#lobby", "#dev", "#ops"]
    assert joins[2] == ["#lobby", "#ops"]
