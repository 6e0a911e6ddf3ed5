"""The stream seam end to end: a toy stream (a handshake, then rot13) under a real server.

The toy stream stands for TLS or WebSocket: it speaks first on the wire (a handshake
reply), holds application bytes until the handshake is done, transforms every byte both
ways, has an orderly close and a way for the peer to break it. Connections on the same
listener that do not start with its handshake byte stay plain, sharing rooms with it.
"""

from __future__ import annotations

import time

from inproc import InProcessServer, read_until

from chatd.config import Config
from chatd.streams import TLS_RECORD_HANDSHAKE, Stream, StreamError

HELLO = bytes([TLS_RECORD_HANDSHAKE]) + b"HELLO\n"
OK = bytes([TLS_RECORD_HANDSHAKE]) + b"OK\n"
BYE = b"\x15"  # the toy's close_notify; the peer may send it too
_ROT = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)


def rot13(data: bytes) -> bytes:
    return data.translate(_ROT)


class Rot13Stream:
    """Handshake ``HELLO`` -> ``OK``, then every byte rot13'd both ways; BYE closes."""

    def __init__(self) -> None:
        self._hello = b""
        self._ready = False
        self._held: list[bytes] = []
        self._out = bytearray()
        self._closed = False
        self._finished = False

    def receive(self, wire: bytes) -> bytes:
        if not wire:
            self._finished = True
            return b""
        if not self._ready:
            self._hello += wire
            if b"\n" not in self._hello:
                if not HELLO.startswith(self._hello):
                    raise StreamError("bad hello")
                return b""
            hello, _, wire = self._hello.partition(b"\n")
            if hello + b"\n" != HELLO:
                raise StreamError("bad hello")
            self._ready = True
            self._out += OK
            for app in self._held:
                self._out += rot13(app)
            self._held.clear()
        if BYE in wire:
            wire = wire[: wire.index(BYE)]
            self._finished = True
        return rot13(wire)

    def send(self, app: bytes) -> None:
        if self._closed:
            return
        if self._ready:
            self._out += rot13(app)
        else:
            self._held.append(app)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._out += BYE

    @property
    def buffered_bytes(self) -> int:
        return sum(map(len, self._held))

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def finished(self) -> bool:
        return self._finished


def sniff(first: bytes) -> Stream | None:
    return Rot13Stream() if first[:1] == bytes((TLS_RECORD_HANDSHAKE,)) else None


class StreamClient:
    """A peer that speaks the toy stream: handshake first, then rot13 both ways."""

    def __init__(self, srv: InProcessServer, port: int) -> None:
        self.sock = srv.connect(port)
        self.sock.sendall(HELLO)
        got = read_until(self.sock, lambda d: len(d) >= len(OK))
        assert got.startswith(OK), got
        self.pending = rot13(got[len(OK) :])

    def send(self, app: bytes) -> None:
        self.sock.sendall(rot13(app))

    def read(self, needle: bytes) -> bytes:
        data, self.pending = self.pending, b""
        return data + read_until(self.sock, lambda d: needle in data + d, rot13)


def test_sniffed_stream_and_plain_peers_share_a_room() -> None:
    # No nick hold (accounts): alice's close is announced at once.
    inproc = InProcessServer(Config(host="127.0.0.1", port=0, rate_limit=0, nick_hold_seconds=0))
    port = inproc.listen(sniff_stream=sniff)
    with inproc:
        wrapped = StreamClient(inproc, port)
        banner = wrapped.read(b"Enter.")
        assert b"*** chatd on" in banner  # the banner waited for the handshake
        wrapped.send(b"alice\n")
        wrapped.read(b"#lobby")

        plain = inproc.connect(port)
        assert b"*** chatd on" in read_until(plain, lambda d: b"Enter." in d)
        plain.sendall(b"bob\n")
        read_until(plain, lambda d: b"#lobby" in d)
        wrapped.read(b"bob joined")

        plain.sendall(b"hello through the seam\n")
        assert b"<bob> hello through the seam" in wrapped.read(b"seam")
        wrapped.send(b"and back\n")
        assert b"<alice> and back" in read_until(plain, lambda d: b"and back" in d)

        wrapped.sock.sendall(BYE)  # orderly close by the peer: the server answers, then closes
        rest = read_until(wrapped.sock, lambda d: False)
        assert rest.endswith(BYE)
        assert b"alice quit" in read_until(plain, lambda d: b"alice quit" in d)


def test_a_broken_stream_closes_only_its_connection() -> None:
    inproc = InProcessServer()
    port = inproc.listen(sniff_stream=sniff)
    with inproc:
        bad = inproc.connect(port)
        bad.sendall(bytes([TLS_RECORD_HANDSHAKE]) + b"HELO\n")
        assert read_until(bad, lambda d: False) == b""  # closed, nothing said
        good = StreamClient(inproc, port)
        assert b"Enter." in good.read(b"Enter.")


def test_a_listener_with_make_stream_wraps_every_connection_and_closes_it_in_order() -> None:
    config = Config(host="127.0.0.1", port=0, rate_limit=0, register_timeout_seconds=60)
    inproc = InProcessServer(config)
    port = inproc.listen(make_stream=Rot13Stream, banner=b"hi there\n")
    with inproc:
        sock = inproc.connect(port)
        sock.settimeout(0.1)
        try:  # nothing before the handshake (the banner is held in the stream)
            early = sock.recv(100)
        except TimeoutError:
            early = b""
        assert early == b""
        sock.settimeout(5)
        sock.sendall(HELLO)
        assert read_until(sock, lambda d: d.startswith(OK + rot13(b"hi there\n")))
        sock.sendall(rot13(b"carol\n"))
        read_until(sock, lambda d: b"#lobby" in rot13(d))
        inproc.server.request_stop("bye now")
        rest = rot13(read_until(sock, lambda d: False))
        assert b"bye now" in rest and rest.endswith(BYE)  # goodbye, then the close record


def test_a_silent_peer_on_a_sniffing_listener_is_greeted_as_plain() -> None:
    inproc = InProcessServer()
    port = inproc.listen(sniff_stream=sniff)
    with inproc:
        sock = inproc.connect(port)
        started = time.monotonic()
        assert b"*** chatd on" in read_until(sock, lambda d: b"Enter." in d)
        assert time.monotonic() - started < 5
        sock.sendall(b"dave\n")
        assert b"#lobby" in read_until(sock, lambda d: b"#lobby" in d)
