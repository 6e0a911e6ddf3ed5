"""The web stream on its own (pure: bytes in, bytes out): HTTP answers, the upgrade and
its checks, WebSocket messages <-> lines, control frames, the shared framing cache."""

from __future__ import annotations

import struct

import pytest

pytest.importorskip("h11")
pytest.importorskip("wsproto")

from wsclient import masked_frame  # noqa: E402
from wsproto.frame_protocol import Opcode  # noqa: E402

from chatd.web.site import Site  # noqa: E402
from chatd.web.stream import (  # noqa: E402
    MAX_CONTROL_PER_READ,
    MAX_REQUESTS_PER_READ,
    FrameCache,
    WebStream,
)

HOST = b"127.0.0.1:8080"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


@pytest.fixture(scope="module")
def site() -> Site:
    return Site(max_line_bytes=4096, max_header_bytes=16384)


def stream(site: Site, cache: FrameCache | None = None) -> WebStream:
    return WebStream(site, cache or FrameCache())


def get(path: bytes, *headers: bytes) -> bytes:
    return (
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
    )


def status(wire: bytes) -> int:
    return int(wire.split(b" ", 2)[1])


def upgraded(site: Site, cache: FrameCache | None = None, origin: bytes = b"") -> WebStream:
    s = stream(site, cache)
    origin = origin or b"Origin: http://127.0.0.1:8080\r\n"
    assert s.receive(UPGRADE + origin + b"\r\n") == b""
    assert status(s.data_to_send()) == 101
    assert s.ready
    return s


def unframe(wire: bytes) -> list[tuple[int, bytes]]:
    """Server frames (unmasked) -> (opcode, payload)."""
    out = []
    while wire:
        op, n = wire[0] & 0x0F, wire[1] & 0x7F
        assert not wire[1] & 0x80, "server frames are not masked"
        at = 2
        if n == 126:
            (n,) = struct.unpack("!H", wire[2:4])
            at = 4
        elif n == 127:
            (n,) = struct.unpack("!Q", wire[2:10])
            at = 10
        out.append((op, wire[at : at + n]))
        wire = wire[at + n :]
    return out


# ---------------------------------------------------------------------- HTTP


def test_index_with_policy_type_and_etag(site: Site) -> None:
    s = stream(site)
    s.receive(get(b"/"))
    wire = s.data_to_send()
    head, body = wire.split(b"\r\n\r\n", 1)
    assert status(wire) == 200
    assert b"content-type: text/html; charset=utf-8" in head.lower()
    assert b"default-src 'none'; script-src 'self'" in head
    assert b"connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080" in head
    assert b"X-Content-Type-Options: nosniff" in head
    assert b'<script src="/app.js" defer></script>' in body
    assert b"<script>" not in body and b" on" not in body.replace(b" one", b"")  # no inline
    etag = site.files[b"/"].etag
    s.receive(get(b"/", b"If-None-Match: " + etag))
    again = s.data_to_send()
    assert status(again) == 304 and again.endswith(b"\r\n\r\n") and not s.finished


@pytest.mark.parametrize(
    "path,kind",
    [(b"/app.js", b"text/javascript"), (b"/style.css", b"text/css"), (b"/icon.svg", b"image/svg")],
)
def test_each_file_has_its_type(site: Site, path: bytes, kind: bytes) -> None:
    s = stream(site)
    s.receive(get(path + b"?v=1"))
    wire = s.data_to_send()
    assert status(wire) == 200 and kind in wire.split(b"\r\n\r\n")[0]


@pytest.mark.parametrize(
    "path",
    [
        b"/../../etc/passwd",
        b"/%2e%2e/%2e%2e/etc/passwd",
        b"/%252e%252e/etc/passwd",
        b"/..%2f..%2fetc%2fpasswd",
        b"/static/../../../etc/passwd",
        b"/app.js/../../etc/passwd",
        b"//etc/passwd",
        b"/.%00./etc/passwd",
        b"/static/",
        b"/web/static/app.js",
        b"/__init__.py",
        b"/site.py",
    ],
)
def test_nothing_outside_the_allowlist(site: Site, path: bytes) -> None:
    s = stream(site)
    s.receive(get(path))
    wire = s.data_to_send()
    assert status(wire) == 404 and b"root:" not in wire
    assert not s.finished  # a 404 is an answer; the connection may go on


def test_head_and_methods(site: Site) -> None:
    s = stream(site)
    s.receive(b"HEAD /app.js HTTP/1.1\r\nHost: x\r\n\r\n")
    wire = s.data_to_send()
    assert status(wire) == 200 and wire.endswith(b"\r\n\r\n")
    s.receive(b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(s.data_to_send()) == 405
    s.receive(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert status(s.data_to_send()) == 413 and s.finished


def test_oversized_head_and_endless_request_line(site: Site) -> None:
    s = stream(site)
    s.receive(b"GET /" + b"a" * 20000)  # the request line never ends
    wire = s.data_to_send()
    assert status(wire) == 431 and s.finished
    s = stream(site)
    s.receive(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n")
    assert status(s.data_to_send()) == 431 and s.finished
    s = stream(site)  # complete, in one read: h11 alone would take it
    s.receive(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n")
    assert status(s.data_to_send()) == 431 and s.finished
    s = stream(site)
    s.receive(b"BLAH\x00\r\n\r\n")
    assert status(s.data_to_send()) == 400 and s.finished


def test_pipelining_flood_is_cut(site: Site) -> None:
    s = stream(site)
    s.receive(get(b"/app.js") * 200)
    wire = s.data_to_send()
    assert wire.count(b"HTTP/1.1 200") == MAX_REQUESTS_PER_READ
    assert s.finished


def test_lines_sent_before_an_upgrade_are_dropped(site: Site) -> None:
    s = stream(site)
    s.receive(get(b"/"))
    s.data_to_send()
    s.send(b'{"type":"error","code":"timeout"}\n')
    assert s.data_to_send() == b"" and s.buffered_bytes == 0


# ---------------------------------------------------------------------- upgrade


@pytest.mark.parametrize(
    "origin",
    [
        b"Origin: http://evil.example\r\n",
        b"Origin: null\r\n",
        b"Origin: https://127.0.0.1:8080\r\n",  # another scheme is another origin
        b"Origin: http://127.0.0.1:8081\r\n",
    ],
)
def test_upgrade_from_another_origin_is_refused(site: Site, origin: bytes) -> None:
    s = stream(site)
    s.receive(UPGRADE + origin + b"\r\n")
    wire = s.data_to_send()
    assert status(wire) == 403 and s.finished and not s.ready


def test_upgrade_for_a_rebound_name_is_refused(site: Site) -> None:
    s = stream(site)
    evil = UPGRADE.replace(HOST, b"attacker.example:8080")
    s.receive(evil + b"Origin: http://attacker.example:8080\r\n\r\n")
    assert status(s.data_to_send()) == 403


def test_upgrade_without_origin_is_a_program(site: Site) -> None:
    s = stream(site)
    s.receive(UPGRADE + b"\r\n")
    assert status(s.data_to_send()) == 101 and s.ready


def test_bad_upgrades(site: Site) -> None:
    s = stream(site)
    s.receive(get(b"/ws"))
    assert status(s.data_to_send()) == 426
    s = stream(site)
    s.receive(UPGRADE.replace(b"Version: 13", b"Version: 8") + b"\r\n")
    assert status(s.data_to_send()) == 400


def test_frames_right_behind_the_upgrade(site: Site) -> None:
    s = stream(site)
    got = s.receive(UPGRADE + b"\r\n" + masked_frame(Opcode.TEXT, b'{"op":"ping"}'))
    assert got == b'{"op":"ping"}\n'


# ---------------------------------------------------------------------- WebSocket


def test_text_messages_become_lines(site: Site) -> None:
    s = upgraded(site)
    data = masked_frame(Opcode.TEXT, b"one\ntwo\r") + masked_frame(Opcode.TEXT, "é".encode())
    assert s.receive(data) == b"one two \n" + "é".encode() + b"\n"
    part = masked_frame(Opcode.TEXT, b"fra", fin=False) + masked_frame(Opcode.CONTINUATION, b"g")
    assert s.receive(part) == b"frag\n"


def test_lines_become_text_messages_and_a_shared_blob_is_framed_once(site: Site) -> None:
    cache = FrameCache()
    a, b = upgraded(site, cache), upgraded(site, cache)
    blob = b'{"type":"msg","text":"1"}\n{"type":"msg","text":"2"}\n'
    a.send(blob)
    b.send(blob)
    wire_a, wire_b = a.data_to_send(), b.data_to_send()
    assert wire_a is wire_b  # the same bytes object: encoded once
    assert unframe(wire_a) == [(1, b'{"type":"msg","text":"1"}'), (1, b'{"type":"msg","text":"2"}')]
    assert (cache.hits, cache.misses) == (1, 1)
    b.send(b'{"type":"pong"}\n')
    assert unframe(b.data_to_send()) == [(1, b'{"type":"pong"}')]


def test_a_message_over_the_limit_becomes_a_refused_line(site: Site) -> None:
    s = upgraded(site)
    got = s.receive(masked_frame(Opcode.TEXT, b"x" * 10000))
    assert len(got) == site.max_line_bytes + 2 and not s.finished  # framer: line_too_long
    assert s.receive(masked_frame(Opcode.TEXT, b"fine")) == b"fine\n"


def test_a_frame_claiming_2_to_the_63_bytes(site: Site) -> None:
    s = upgraded(site)
    s.receive(b"\x81\xff" + struct.pack("!Q", 1 << 63) + b"\x00" * 4)
    assert unframe(s.data_to_send())[0][0] == Opcode.CLOSE and s.finished


def test_a_frame_claiming_2_to_the_62_bytes_is_discarded_as_it_comes(site: Site) -> None:
    s = upgraded(site)
    got = s.receive(b"\x81\xff" + struct.pack("!Q", 1 << 62) + b"\x00" * 4)
    for _ in range(64):
        got += s.receive(b"a" * 65536)  # 4 MiB of it: nothing is kept
    assert got == b"" and not s.finished
    assert sum(len(p) for p in s._partial) == 0 and s._too_long


def test_unmasked_client_frames_are_refused(site: Site) -> None:
    s = upgraded(site)
    s.receive(masked_frame(Opcode.TEXT, b"hi", mask=False))
    frames = unframe(s.data_to_send())
    assert frames[0][0] == Opcode.CLOSE and struct.unpack("!H", frames[0][1][:2])[0] == 1002
    assert s.finished


def test_binary_is_refused(site: Site) -> None:
    s = upgraded(site)
    s.receive(masked_frame(Opcode.BINARY, b"\x00\x01"))
    frames = unframe(s.data_to_send())
    assert struct.unpack("!H", frames[0][1][:2])[0] == 1003 and s.finished


def test_pings_get_one_pong_per_read_and_a_flood_is_cut(site: Site) -> None:
    s = upgraded(site)
    s.receive(masked_frame(Opcode.PING, b"a") + masked_frame(Opcode.PING, b"b"))
    assert unframe(s.data_to_send()) == [(Opcode.PONG, b"b")]
    s.receive(masked_frame(Opcode.PING, b"x") * (MAX_CONTROL_PER_READ + 1))
    frames = unframe(s.data_to_send())
    assert [op for op, _ in frames] == [Opcode.CLOSE]
    assert struct.unpack("!H", frames[0][1][:2])[0] == 1008 and s.finished


def test_closing_handshake(site: Site) -> None:
    s = upgraded(site)
    s.receive(masked_frame(Opcode.CLOSE, struct.pack("!H", 1000)))
    assert unframe(s.data_to_send())[0][0] == Opcode.CLOSE and s.finished
    s = upgraded(site)
    s.close()
    assert unframe(s.data_to_send())[0][0] == Opcode.CLOSE
    s.close()  # idempotent
    assert s.data_to_send() == b""
    s = upgraded(site)
    s.receive(b"")
    assert s.finished


def test_an_upgrade_to_something_else_is_declined_with_the_page(site: Site) -> None:
    s = stream(site)
    s.receive(get(b"/app.js", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                  b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"))  # fmt: skip
    assert status(s.data_to_send()) == 200 and not s.finished and not s.ready
    s.receive(get(b"/style.css"))
    assert status(s.data_to_send()) == 200
