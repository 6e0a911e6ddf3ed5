"""The second baseline: a bare ``selectors`` loop, the floor for one delivery in Python.

Where bench/baseline_asyncio.py is the straightforward asyncio design, this is the least
Python one can put around a send: one ``DefaultSelector``, each readable socket read and
split into lines, each line parsed with ``json.loads``, and a room message encoded once
and ``send()``-ed to each member's socket at once. No batching, no output policy, no
history, no limits; an unsent tail (the kernel buffer full) is kept and written on
``EVENT_WRITE`` so nothing is lost. It measures what chatd's unbatched path costs above
the floor (issue 11: at 100 msgs/s every message goes out in a loop turn of its own).

It speaks the same subset of docs/protocol.md as the asyncio baseline (see its
docstring), prints ``listening on HOST:PORT`` and accepts chatd's flags and ignores them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import selectors
import signal
import socket
import sys
import time

SERVER_NAME = "baseline-selectors"
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Client:
    __slots__ = ("sock", "inbuf", "outbuf", "nick", "rooms")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.nick: str | None = None
        self.rooms: set[str] = set()


class Loop:
    def __init__(self, listener: socket.socket) -> None:
        self.sel = selectors.DefaultSelector()
        self.listener = listener
        self.sel.register(listener, _READ, None)
        self.nicks: dict[str, Client] = {}
        self.rooms: dict[str, dict[str, Client]] = {}
        self.mids = itertools.count(1)
        self.running = True

    def send(self, client: Client, data: bytes) -> None:
        if client.outbuf:  # already waiting for EVENT_WRITE: keep the order
            client.outbuf += data
            return
        try:
            sent = client.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return  # gone: its read side cleans up
        if sent < len(data):
            client.outbuf = data[sent:]
            self.sel.modify(client.sock, _READ | _WRITE, client)

    def on_writable(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(client)
            return
        client.outbuf = client.outbuf[sent:]
        if not client.outbuf:
            self.sel.modify(client.sock, _READ, client)

    def frame(self, client: Client, obj: dict[str, object]) -> None:
        self.send(client, (json.dumps(obj) + "\n").encode())

    def on_readable(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(client)
            return
        client.inbuf += data
        *lines, client.inbuf = client.inbuf.split(b"\n")
        for line in lines:
            self.on_line(client, line.strip())

    def on_line(self, client: Client, line: bytes) -> None:
        if not line.startswith(b"{"):
            return
        try:
            req = json.loads(line)
        except ValueError:
            self.frame(client, {"type": "error", "code": "bad_json", "message": "not JSON"})
            return
        op = req.get("op")
        if op == "say" and client.nick is not None:
            room = self.rooms.get(str(req.get("room", "")).lower())
            if room is None or client.nick not in room:
                self.frame(client, {"type": "error", "code": "not_in_room", "message": "join"})
                return
            msg = {
                "type": "msg",
                "room": req.get("room"),
                "from": client.nick,
                "text": req.get("text", ""),
                "ts": round(time.time(), 3),
                "mid": next(self.mids),
            }
            data = (json.dumps(msg) + "\n").encode()
            for member in room.values():
                self.send(member, data)
        elif op == "hello" and client.nick is None:
            nick = str(req.get("nick", ""))
            if not nick or nick.lower() in self.nicks:
                self.frame(client, {"type": "error", "code": "nick_taken", "message": "in use"})
                return
            client.nick = nick
            self.nicks[nick.lower()] = client
            self.frame(client, {"type": "welcome", "nick": nick, "server": SERVER_NAME, "motd": []})
        elif op == "join" and client.nick is not None:
            name = str(req.get("room", ""))
            room = self.rooms.setdefault(name.lower(), {})
            if client.nick in room:
                return
            data = (json.dumps({"type": "join", "room": name, "nick": client.nick}) + "\n").encode()
            for member in room.values():
                self.send(member, data)
            room[client.nick] = client
            client.rooms.add(name.lower())
            self.frame(client, {"type": "joined", "room": name, "topic": "", "members": list(room)})
        else:
            self.frame(client, {"type": "error", "code": "unknown_op", "message": "unsupported"})

    def drop(self, client: Client) -> None:
        self.sel.unregister(client.sock)
        client.sock.close()
        if client.nick is not None:
            self.nicks.pop(client.nick.lower(), None)
            for name in client.rooms:
                room = self.rooms.get(name)
                if room is not None:
                    room.pop(client.nick, None)
                    if not room:
                        del self.rooms[name]

    def accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = Client(sock)
            self.sel.register(sock, _READ, client)
            self.send(client, b"*** chatd benchmark baseline (bare selectors)\n")

    def run(self) -> None:
        while self.running:
            for key, mask in self.sel.select(1.0):
                client = key.data
                if client is None:
                    self.accept()
                    continue
                if mask & _WRITE:
                    self.on_writable(client)
                if mask & _READ and client.sock.fileno() >= 0:
                    self.on_readable(client)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    for flag in ("--db", "--rate-limit", "--log-level", "--max-clients"):
        parser.add_argument(flag)
    args = parser.parse_args(argv)
    listener = socket.create_server((args.host, args.port), backlog=socket.SOMAXCONN)
    listener.setblocking(False)
    host, port = listener.getsockname()[:2]
    loop = Loop(listener)

    def stop(*_: object) -> None:
        loop.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on {host}:{port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
