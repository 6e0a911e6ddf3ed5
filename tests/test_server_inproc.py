"""The server in-process, driven turn by turn on a fake clock: timers and output limits
without waiting on real time. Real sockets on 127.0.0.1; the clock is the only fake."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from inproc import SteppedServer, drain, is_closed


def frame(**obj: object) -> bytes:
    return (json.dumps(obj) + "\n").encode()


@pytest.fixture
def stepped() -> Iterator[type[SteppedServer]]:
    made: list[SteppedServer] = []

    def make(**config: object) -> SteppedServer:
        srv = SteppedServer(**config)
        made.append(srv)
        return srv

    yield make  # type: ignore[misc]
    for srv in made:
        srv.close()


def register(srv: SteppedServer, nick: str, room: str | None = None, **kw: int) -> socket.socket:
    sock = srv.connect(**kw)
    sock.sendall(frame(op="hello", nick=nick))
    if room:
        sock.sendall(frame(op="join", room=room))
    got = b""

    def ready() -> bool:
        nonlocal got
        got += drain(sock)
        return b'"history_end"' in got if room else b'"welcome"' in got

    srv.until(ready)
    return sock


def test_registration_timeout_fires_on_the_clock_not_before(stepped) -> None:
    srv = stepped(register_timeout_seconds=30)
    sock = srv.connect()
    srv.turn(3)
    assert b"chatd on" in drain(sock)
    srv.advance(29.9)
    assert srv.server.connections == 1 and not is_closed(sock)
    srv.advance(0.2)
    srv.until(lambda: srv.server.connections == 0)
    got = b""

    def closed() -> bool:
        nonlocal got
        got += drain(sock)
        return is_closed(sock)

    srv.until(closed)
    assert b"no nickname given in time" in got


def test_rate_limit_pauses_reading_until_the_clock_refills_the_bucket(stepped) -> None:
    srv = stepped(rate_limit=1.0, rate_burst=3)
    sock = register(srv, "alice")  # hello took a token: 2 left
    sock.sendall(b"".join(frame(op="ping", id=i) for i in range(6)))
    got = b""

    def pongs() -> int:
        nonlocal got
        got += drain(sock)
        return got.count(b'"pong"')

    srv.until(lambda: pongs() == 2)
    srv.turn(20)
    assert pongs() == 2  # the bucket is empty: the rest wait, nothing is lost
    srv.advance(1.0)
    srv.until(lambda: pongs() == 3)
    srv.turn(20)
    assert pongs() == 3
    srv.advance(3.0)
    srv.until(lambda: pongs() == 6)


def test_over_the_soft_limit_for_too_long_is_a_slow_consumer(stepped) -> None:
    srv = stepped(
        out_high_water_bytes=8192,
        out_low_water_bytes=2048,
        out_soft_limit_bytes=16384,
        out_hard_limit_bytes=1 << 24,
        out_soft_limit_seconds=30,
        send_buffer_bytes=4096,
    )
    sleeper = register(srv, "sleeper", "#r", rcvbuf=4096)
    talker = register(srv, "talker", "#r")
    text = "x" * 400
    sent = 0
    while "is over the soft limit":
        talker.sendall(b"".join(frame(op="say", room="#r", text=text) for _ in range(10)))
        sent += 10
        srv.turn(2)
        drain(talker)
        conn = srv.server.connection(1)
        if conn is not None and conn.flow.over_soft_since is not None:
            break
        assert sent < 2000, "the sleeper never went over the soft limit"
    srv.advance(29.0)
    assert srv.server.connection(1) is not None  # skipped, counted, still connected
    srv.advance(1.5)
    srv.until(lambda: srv.server.connection(1) is None)
    assert srv.server.stats["slow_consumers"] == 1
    del sleeper


def test_a_closing_connection_lingers_then_is_cut(stepped) -> None:
    # A client that never reads is closed with its goodbye still queued: it gets
    # close_linger_seconds to take it, then the server cuts it.
    srv = stepped(
        register_timeout_seconds=5,
        close_linger_seconds=2,
        send_buffer_bytes=4096,
        out_high_water_bytes=1 << 20,
        out_soft_limit_bytes=1 << 22,
        out_hard_limit_bytes=1 << 24,
    )
    sock = srv.connect(rcvbuf=4096)
    # Bad lines before registering each get an error line: more than the kernel holds.
    sock.sendall(b"{}\n" * 3000)
    srv.until(lambda: (c := srv.server.connection(1)) is not None and c.out.size > 50_000)
    srv.advance(5.0)  # registration timeout: goodbye queued behind the rest, closing
    conn = srv.server.connection(1)
    assert conn is not None and conn.state.value == "closing"
    srv.advance(1.9)
    assert srv.server.connection(1) is not None  # still lingering
    srv.advance(0.2)
    assert srv.server.connection(1) is None
    assert srv.server.connections == 0


def test_a_client_above_high_water_is_not_read_until_it_drains(stepped) -> None:
    # Remove the read pause (Connection.wants_read ignoring flow.paused) and the queued
    # output grows with everything the client sends.
    high, chunk = 8192, 4096
    srv = stepped(
        out_high_water_bytes=high,
        out_low_water_bytes=2048,
        out_soft_limit_bytes=1 << 24,
        out_hard_limit_bytes=1 << 25,
        recv_chunk_bytes=chunk,
        send_buffer_bytes=4096,
    )
    sock = register(srv, "flood", "#f", rcvbuf=4096)
    line = frame(op="say", room="#f", text="y" * 200)
    total = 3000
    data = memoryview(line * total)
    peak = 0
    for _ in range(400):  # the client writes what the kernel takes; it never reads
        try:
            data = data[sock.send(data) :]
        except BlockingIOError:
            pass
        srv.turn()
        conn = srv.server.connection(1)
        assert conn is not None
        peak = max(peak, conn.queued)
    assert conn.flow.paused and not conn.mask & 1  # not watched for reading
    assert peak <= high + 3 * chunk, peak  # bounded by the mark, not by what it sent
    # It reads: the server resumes and every message comes back, in order.
    got = b""

    def echoes() -> int:
        nonlocal got, data
        got += drain(sock)
        if data:
            try:
                data = data[sock.send(data) :]
            except BlockingIOError:
                pass
        return got.count(b'"msg"')

    srv.until(lambda: echoes() >= total, turns=20000)
    assert echoes() == total
