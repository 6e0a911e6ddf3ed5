"""OutBuffer and Connection: partial writes, gather writes, EOF — on real socketpairs
and on a fake socket whose send() takes only part of what it is given."""

from __future__ import annotations

import socket

import pytest

from chatd.buffers import OutBuffer
from chatd.connection import Connection
from chatd.framing import LineFramer
from chatd.ratelimit import TokenBucket


def test_outbuffer_consume_keeps_the_unsent_tail_without_copying() -> None:
    buf = OutBuffer()
    first, second = b"hello ", b"world\n"
    buf.append(first)
    buf.append(b"")  # ignored
    buf.append(second)
    assert buf.size == 12 and len(buf.peek(10)) == 2
    buf.consume(3)
    head = buf.peek(1)[0]
    assert isinstance(head, memoryview) and head.obj is first and bytes(head) == b"lo "
    buf.consume(5)
    assert [bytes(c) for c in buf.peek(5)] == [b"rld\n"]
    with pytest.raises(ValueError):
        buf.consume(99)
    buf.consume(4)
    assert not buf and buf.size == 0


class PartialSocket:
    """Takes at most ``per_call`` bytes per send, then raises BlockingIOError when full."""

    def __init__(self, per_call: int, capacity: int) -> None:
        self.per_call, self.capacity = per_call, capacity
        self.received = bytearray()

    def fileno(self) -> int:
        return -1

    def _take(self, data: bytes) -> int:
        room = self.capacity - len(self.received)
        if room <= 0:
            raise BlockingIOError
        n = min(self.per_call, room, len(data))
        self.received += data[:n]
        return n

    def send(self, data: bytes) -> int:
        return self._take(bytes(data))

    def sendmsg(self, buffers: list[bytes]) -> int:
        return self._take(b"".join(bytes(b) for b in buffers))


def make_conn(sock: object) -> Connection:
    return Connection(1, sock, "test", LineFramer(100), None, None)  # type: ignore[arg-type]


def test_flush_handles_partial_sends_and_a_full_kernel_buffer() -> None:
    sock = PartialSocket(per_call=3, capacity=10)
    conn = make_conn(sock)
    for chunk in (b"abcd", b"efgh", b"ijkl"):
        conn.out.append(chunk)
    sent = conn.flush(max_bytes=1000)
    assert sent == 3  # a short send means "full for now": stop and wait for EVENT_WRITE
    assert conn.out.size == 9
    while conn.out.size:
        before = conn.out.size
        conn.flush(1000)
        if conn.out.size == before:
            sock.capacity += 10  # the peer read something
    assert bytes(sock.received) == b"abcdefghijkl"
    assert conn.bytes_out == 12


def test_flush_respects_the_per_tick_cap() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    conn = make_conn(a)
    for _ in range(100):
        conn.out.append(b"x" * 1000)
    assert conn.flush(max_bytes=10_000) >= 10_000
    assert conn.out.size <= 90_000
    a.close()
    b.close()


class GreedySocket:
    """Takes everything it is given: a peer that reads as fast as we can write."""

    def __init__(self) -> None:
        self.received = 0

    def fileno(self) -> int:
        return -1

    def send(self, data: bytes) -> int:
        self.received += len(data)
        return len(data)

    def sendmsg(self, buffers: list[bytes]) -> int:
        n = sum(map(len, buffers))
        self.received += n
        return n


def test_one_flush_stops_at_the_cap_even_for_a_peer_that_takes_everything() -> None:
    # Without the cap, one flush would send all 600 KB (more chunks than one sendmsg
    # takes, so it loops): one fast reader would hog the loop turn.
    sock = GreedySocket()
    conn = make_conn(sock)
    for _ in range(6000):
        conn.out.append(b"z" * 100)
    cap = 64 * 1024
    sent = conn.flush(max_bytes=cap)
    assert cap <= sent < cap + 1024 * 100  # at most one gather write past the cap
    assert conn.out.size == 600_000 - sent
    while conn.out.size:
        assert conn.flush(cap) <= cap + 1024 * 100
    assert sock.received == 600_000


def test_real_partial_writes_on_a_small_socket_buffer() -> None:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.setblocking(False)
    conn = make_conn(a)
    payload = [bytes([65 + i % 26]) * 997 for i in range(300)]  # ~300 KB, odd-sized chunks
    for chunk in payload:
        conn.out.append(chunk)
    conn.flush(10**9)
    assert conn.out.size > 0  # the kernel could not take it all: a genuine partial write
    received = bytearray()
    b.settimeout(5)
    while len(received) < sum(map(len, payload)):
        received += b.recv(65536)
        conn.flush(10**9)
    assert bytes(received) == b"".join(payload)
    a.close()
    b.close()


def test_recv_reports_nothing_data_and_eof() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    conn = make_conn(a)
    assert conn.recv(100) is None
    b.sendall(b"hi\n")
    assert conn.recv(100) == b"hi\n"
    b.shutdown(socket.SHUT_WR)  # half-close
    assert conn.recv(100) == b""
    a.close()
    b.close()


def test_flush_raises_on_a_reset_peer() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    conn = make_conn(a)
    b.close()
    conn.out.append(b"x" * 100)
    with pytest.raises(OSError):
        for _ in range(3):
            conn.flush(1000)
            conn.out.append(b"x" * 100)
    a.close()


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.delay(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert bucket.take(100.0) and bucket.tokens == pytest.approx(2.0)  # capped at burst
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0.0)
