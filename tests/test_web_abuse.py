"""Hostile HTTP and WebSocket against a real chatd process, while other users chat.

Every attack gets its answer (a status, a close code, or the registration timeout), the
server's memory and descriptors stay bounded, and the chat goes on meanwhile.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest
from helpers import ChatdProcess, JsonClient, many_sockets, wait_until

pytest.importorskip("wsproto")
from wsclient import WsClient, masked_frame  # noqa: E402
from wsproto.frame_protocol import Opcode  # noqa: E402

TIMEOUT = 3  # registration timeout of these servers, seconds


@pytest.fixture
def server() -> Iterator[ChatdProcess]:
    # The crowds here connect from 127.0.0.1 but stand for many hosts: no per-address limit
    # (test_per_address_limit_counts_web_connections checks it on the web port).
    s = ChatdProcess(
        "--register-timeout-seconds", str(TIMEOUT), "--max-clients-per-ip", "0", web=True
    )  # fmt: skip
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def chatters(server: ChatdProcess) -> Iterator[tuple[JsonClient, JsonClient]]:
    alice, bob = JsonClient(server.port), JsonClient(server.port)
    alice.hello("alice")
    alice.join("#lobby")
    bob.hello("bob")
    bob.join("#lobby")
    yield alice, bob
    alice.close()
    bob.close()


def chat_works(pair: tuple[JsonClient, JsonClient], text: str) -> None:
    alice, bob = pair
    alice.say("#lobby", text)
    bob.expect_frame(type="msg", text=text)


def http(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request``; everything the server says until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR) if request.endswith(b"\r\n\r\n") else None
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return got


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before it closed ``sock`` (fails if it stays open)."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def test_hostile_http_requests(
    server: ChatdProcess, chatters: tuple[JsonClient, JsonClient]
) -> None:
    port = server.web_port
    assert port
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    # Oversized headers: 431, closed.
    big = b"GET / HTTP/1.1\r\n" + host + b"X-Filler: " + b"f" * 40000 + b"\r\n\r\n"
    assert http(port, big).startswith(b"HTTP/1.1 431 ")
    chat_works(chatters, "after the oversized headers")
    # A request line that never ends: 431 as soon as it passes the limit.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /" + b"a" * 20000)
        assert closed_within(s, 5).startswith(b"HTTP/1.1 431 ")
    # ... and one that trickles below the limit: cut by the registration timeout.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /aaaa")
        start = time.monotonic()
        assert closed_within(s, TIMEOUT + 5) == b""
        assert time.monotonic() - start < TIMEOUT + 4
    chat_works(chatters, "after the endless request line")
    # Path traversal, plain and encoded: never a file outside the allowlist.
    for path in (
        b"/../../etc/passwd",
        b"/%2e%2e/%2e%2e/etc/passwd",
        b"/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        b"/..%c0%af..%c0%afetc/passwd",
        b"/static/..%252f..%252fetc/passwd",
        b"/./app.js/../../../../etc/passwd",
        b"http://127.0.0.1/../../etc/passwd",
        b"*",
    ):
        answer = http(port, b"GET " + path + b" HTTP/1.1\r\n" + host + b"\r\n")
        assert answer.startswith((b"HTTP/1.1 404 ", b"HTTP/1.1 400 ")), (path, answer[:80])
        assert b"root:" not in answer
    chat_works(chatters, "after the traversal attempts")


def test_a_thousand_half_open_upgrades(
    server: ChatdProcess, chatters: tuple[JsonClient, JsonClient]
) -> None:
    port = server.web_port
    assert port
    fds_before = server.fd_count()
    rss_before = server.rss_kib()
    half = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    ).encode()  # ... and never the blank line that ends it
    socks = many_sockets(port, 1000)
    try:
        for s in socks:
            s.sendall(half)
        wait_until(lambda: server.fd_count() >= fds_before + 1000, timeout=20)
        chat_works(chatters, "while a thousand upgrades hang")
        grown = server.rss_kib() - rss_before
        assert grown < 40 * 1024, f"{grown} KiB for 1000 half-open upgrades"
        start = time.monotonic()
        for s in socks:  # every one is cut by the registration timeout
            assert closed_within(s, TIMEOUT + 20) == b""
        assert time.monotonic() - start < TIMEOUT + 20
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: server.fd_count() <= fds_before + 5, timeout=10)
    chat_works(chatters, "after the half-open upgrades")


def test_websocket_users_chat_with_tcp_users(
    server: ChatdProcess, chatters: tuple[JsonClient, JsonClient]
) -> None:
    alice, _ = chatters
    ws = WsClient(server.web_port or 0)
    assert ws.rejected is None
    ws.send_json(op="hello", nick="wendy")
    ws.expect_frame(type="welcome", nick="wendy")
    ws.send_json(op="join", room="#lobby")
    ws.expect_frame(type="history_end", room="#lobby")
    ws.send_json(op="say", room="#lobby", text="from a websocket")
    alice.expect_frame(type="msg", text="from a websocket", **{"from": "wendy"})
    alice.say("#lobby", "to a websocket")
    ws.expect_frame(type="msg", text="to a websocket")
    ws.send_text("not json")
    assert ws.expect_frame(type="error")["code"] == "bad_json"
    ws.send_text("x" * 10000)
    assert ws.expect_frame(type="error")["code"] == "line_too_long"
    ws.send_json(op="say", room="#lobby", text="still here")
    alice.expect_frame(type="msg", text="still here")
    ws.close()


def test_cross_site_upgrade_is_refused(server: ChatdProcess) -> None:
    ws = WsClient(server.web_port or 0, origin="http://evil.example")
    assert ws.rejected == 403
    ws.close()


@pytest.mark.parametrize(
    "attack,code",
    [
        (b"\x81\xff" + struct.pack("!Q", 1 << 63) + b"\x00" * 4, 1002),  # 2^63 bytes
        (masked_frame(Opcode.TEXT, b'{"op":"ping"}', mask=False), 1002),  # unmasked
        (masked_frame(Opcode.PING, b"") * 20000, 1008),  # a ping flood
        (masked_frame(Opcode.BINARY, b"\x00"), 1003),
        (masked_frame(Opcode.TEXT, b"\xff\xfe"), 1007),  # not UTF-8
        (masked_frame(Opcode.PING, b"x" * 200), 1002),  # a control frame over 125 bytes
    ],
)
def test_bad_frames_are_closed_with_their_code(
    server: ChatdProcess, chatters: tuple[JsonClient, JsonClient], attack: bytes, code: int
) -> None:
    ws = WsClient(server.web_port or 0)
    ws.send_raw(attack)
    assert ws.wait_closed().code == code
    ws.close()
    chat_works(chatters, f"after close code {code}")


def test_a_frame_claiming_2_to_the_62_bytes_costs_nothing(
    server: ChatdProcess, chatters: tuple[JsonClient, JsonClient]
) -> None:
    ws = WsClient(server.web_port or 0)
    rss_before = server.rss_kib()
    ws.send_raw(b"\x81\xff" + struct.pack("!Q", 1 << 62) + b"\x00" * 4)
    for _ in range(64):
        ws.send_raw(b"a" * 65536)  # 4 MiB of a message that is never kept
    chat_works(chatters, "while a giant frame streams")
    assert server.rss_kib() - rss_before < 8 * 1024
    assert ws.wait_closed(TIMEOUT + 10)  # never registered: the timeout ends it
    ws.close()


def test_a_websocket_that_never_reads_is_a_slow_consumer(make_server: type[ChatdProcess]) -> None:
    server = make_server(
        "--rate-limit", "0", "--out-soft-limit-bytes", "65536",
        "--out-hard-limit-bytes", "131072", "--send-buffer-bytes", "4096",
        "--out-soft-limit-seconds", "3",  # cut by the soft-limit timer well within the wait
        "--nick-hold-seconds", "0",  # a cut connection is announced at once, not held
        web=True,
    )  # fmt: skip
    ws = WsClient(server.web_port or 0)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws.send_json(op="hello", nick="sleepy")
    ws.send_json(op="join", room="#lobby")
    talker = JsonClient(server.port)
    talker.hello("talker")
    talker.join("#lobby")
    for n in range(400):
        talker.say("#lobby", f"{n} " + "x" * 1500)
    talker.expect_frame(type="quit", nick="sleepy", timeout=30)
    assert "slow consumer" in server.log()
    talker.close()
    ws.close()


def test_websocket_messages_are_rate_limited_like_lines(
    server: ChatdProcess, chatters: tuple[JsonClient, JsonClient]
) -> None:
    """Default limit: 10 commands/s after a burst of 30. 60 messages at once take >= 3 s
    to be executed (a lower bound: a slow machine only makes it longer)."""
    alice, _ = chatters
    ws = WsClient(server.web_port or 0)
    ws.send_json(op="hello", nick="flood")
    ws.send_json(op="join", room="#lobby")
    ws.expect_frame(type="history_end")
    start = time.monotonic()
    for n in range(60):
        ws.send_json(op="say", room="#lobby", text=f"flood {n}")
    alice.expect_frame(type="msg", text="flood 29")
    alice.expect_frame(type="msg", text="flood 59", timeout=20)
    assert time.monotonic() - start >= 2.5
    chat_works(chatters, "after the websocket flood")
    ws.close()


def test_per_address_limit_counts_web_connections(make_server: type[ChatdProcess]) -> None:
    server = make_server("--max-clients-per-ip", "3", web=True)
    tcp = JsonClient(server.port)
    tcp.hello("tcp")
    sockets = [WsClient(server.web_port or 0) for _ in range(2)]  # 3 from this address
    assert all(ws.rejected is None for ws in sockets)
    with socket.create_connection(("127.0.0.1", server.web_port or 0)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: chatd\r\n\r\n")  # the fourth: 503, why, closed
        status, headers, body = parse_response(closed_within(s, 5))
        assert status == 503 and headers[b"retry-after"] == b"30", (status, headers)
        assert b"too many connections from your address (3 allowed)" in body, body
    for ws in sockets:  # the three admitted ones are unharmed
        ws.send_json(op="ping")
        ws.expect_frame(type="pong")
        ws.close()
    tcp.close()


def parse_response(data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines)}
    return int(status_line.split()[1]), headers, body


def test_a_full_server_answers_browsers_503_and_holds_nothing_long(
    make_server: type[ChatdProcess],
) -> None:
    """Refused when full, a browser is told so in HTTP (503, Retry-After, one line of why)
    instead of a reset page; the refusal reads no more than a request head and holds a
    socket at most a couple of seconds (the cap on how many: the test below)."""
    from chatd.web.refusal import REFUSAL_SECONDS

    server = make_server("--max-clients", "1", "--max-clients-per-ip", "0", web=True)
    port = server.web_port or 0
    only = JsonClient(server.port)
    only.hello("only")
    # A page load and a WebSocket upgrade: both get the 503 and the reason.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: chatd\r\n\r\n")
        status, headers, body = parse_response(closed_within(s, 5))
    assert status == 503, (status, headers, body)
    assert headers[b"retry-after"] == b"30" and headers[b"connection"] == b"close", headers
    assert headers[b"content-type"].startswith(b"text/plain"), headers
    assert body == b"503 Service Unavailable: the server is full (1 clients); try again later\n"
    assert WsClient(port).rejected == 503
    # HEAD: the same answer, without a body.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: chatd\r\n\r\n")
        status, headers, body = parse_response(closed_within(s, 5))
    assert status == 503 and body == b"" and int(headers[b"content-length"]) > 0
    # A head over web_max_header_bytes, or garbage: closed, no answer, nothing more read.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000)
        assert closed_within(s, 5) == b""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x00\x01 not http\r\n\r\n")
        assert closed_within(s, 5) == b""
    # One that never asks is held at most REFUSAL_SECONDS, then closed without a word.
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert closed_within(s, REFUSAL_SECONDS + 10) == b""
    # Meanwhile the one admitted client is served as ever.
    only.send_json(op="ping")
    only.expect_frame(type="pong")
    only.close()


def test_refusals_hold_at_most_max_refusing_sockets_and_let_go_in_time() -> None:
    """The 503 machinery on a real loop and real sockets, the clock faked (a true edge):
    beyond MAX_REFUSING held at once, newcomers are closed at once; each held one is let go
    when REFUSAL_SECONDS pass without a request head."""
    from chatd.loop import Loop
    from chatd.web.refusal import MAX_REFUSING, REFUSAL_SECONDS, Refusals

    now = [100.0]
    loop = Loop(lambda: now[0])
    refusals = Refusals(loop, 16384)
    pairs = [socket.socketpair() for _ in range(MAX_REFUSING + 3)]
    try:
        for theirs, _ in pairs:
            refusals.refuse(theirs, "full")
        assert len(refusals) == MAX_REFUSING
        eof = [mine.recv(1, socket.MSG_DONTWAIT) if i >= MAX_REFUSING else None
               for i, (_, mine) in enumerate(pairs)]  # fmt: skip
        assert eof[MAX_REFUSING:] == [b""] * 3 and refusals.dropped == 3
        # One asks: it is answered at once, the others still wait.
        pairs[0][1].sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        loop.run_once(1.0)
        assert pairs[0][1].recv(4096).startswith(b"HTTP/1.1 503 ")
        assert len(refusals) == MAX_REFUSING - 1 and refusals.answered == 1
        now[0] += REFUSAL_SECONDS - 0.5
        loop.run_once(0)
        assert len(refusals) == MAX_REFUSING - 1
        now[0] += 1.0
        loop.run_once(0)
        assert len(refusals) == 0 and refusals.dropped == 3 + MAX_REFUSING - 1
        for _, mine in pairs[1:MAX_REFUSING]:
            assert mine.recv(1, socket.MSG_DONTWAIT) == b""
    finally:
        for theirs, mine in pairs:
            theirs.close()
            mine.close()
        loop.close()
