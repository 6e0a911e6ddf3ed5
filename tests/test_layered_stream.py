"""LayeredStream on its own (pure, in memory): TLS around the web stream, driven by an
in-memory TLS client (ssl.SSLObject) doing an HTTP GET, then a WebSocket upgrade."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

pytest.importorskip("cryptography")
pytest.importorskip("h11")
pytest.importorskip("wsproto")

from wsproto import ConnectionType, WSConnection  # noqa: E402
from wsproto.events import AcceptConnection, Request, TextMessage  # noqa: E402

from chatd.certs import generate  # noqa: E402
from chatd.streams import LayeredStream, StreamError  # noqa: E402
from chatd.tls import TlsStream, client_context, server_context  # noqa: E402
from chatd.web.site import Site  # noqa: E402
from chatd.web.stream import FrameCache, WebStream  # noqa: E402

HOST = "127.0.0.1:8443"


@pytest.fixture(scope="module")
def sctx(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory = tmp_path_factory.mktemp("cert")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    generate(cert_file, key_file, ["chatd-test", "localhost", "127.0.0.1"])
    return server_context(str(Path(cert_file)), str(Path(key_file)))


@pytest.fixture(scope="module")
def site() -> Site:
    return Site(max_line_bytes=4096, max_header_bytes=16384, tls=True)


def layered(sctx: ssl.SSLContext, site: Site) -> LayeredStream:
    return LayeredStream(TlsStream(sctx), WebStream(site, FrameCache()))


def pump(client: TlsStream, server: LayeredStream) -> tuple[bytes, bytes]:
    """Move wire bytes both ways until quiet; (plaintext the client got, app bytes the
    server's inner stream yielded)."""
    got_client: list[bytes] = []
    got_server: list[bytes] = []
    for _ in range(100):
        moved = False
        wire = client.data_to_send()
        if wire:
            moved = True
            got_server.append(server.receive(wire))
        wire = server.data_to_send()
        if wire:
            moved = True
            got_client.append(client.receive(wire))
        if not moved:
            return b"".join(got_client), b"".join(got_server)
    raise AssertionError("the streams never went quiet")


def connected(sctx: ssl.SSLContext, site: Site) -> tuple[TlsStream, LayeredStream]:
    client = TlsStream(client_context(), server_side=False)
    server = layered(sctx, site)
    assert not server.ready
    pump(client, server)
    assert client.ready and server.ready
    return client, server


def test_https_get_through_tls_and_web(sctx: ssl.SSLContext, site: Site) -> None:
    client, server = connected(sctx, site)
    client.send(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    answer, app = pump(client, server)
    assert app == b""  # HTTP is the web stream's business: no lines for the framer
    assert answer.startswith(b"HTTP/1.1 200 ")
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert b"content-security-policy:" in head
    assert f"wss://{HOST}".encode() in head
    assert b"<html" in answer.lower()
    assert server.ready and not server.finished


def test_wss_lines_both_ways_and_close(sctx: ssl.SSLContext, site: Site) -> None:
    client, server = connected(sctx, site)
    ws = WSConnection(ConnectionType.CLIENT)
    origin = [(b"Origin", f"https://{HOST}".encode())]
    client.send(ws.send(Request(host=HOST, target="/ws", extra_headers=origin)))
    answer, _ = pump(client, server)
    ws.receive_data(answer)
    assert any(isinstance(e, AcceptConnection) for e in ws.events())
    client.send(ws.send(TextMessage(data='{"op": "hello"}')))
    _, app = pump(client, server)
    assert app == b'{"op": "hello"}\n'
    server.send(b'{"type": "a"}\n{"type": "b"}\n')
    answer, _ = pump(client, server)
    ws.receive_data(answer)
    assert [e.data for e in ws.events() if isinstance(e, TextMessage)] == [
        '{"type": "a"}',
        '{"type": "b"}',
    ]
    server.close()
    server.close()  # idempotent
    answer, _ = pump(client, server)
    assert client.finished  # the WebSocket close frame, then close_notify
    ws.receive_data(answer)
    assert server.finished


def test_bytes_before_the_handshake_are_held_and_counted(sctx: ssl.SSLContext, site: Site) -> None:
    outer, inner = TlsStream(sctx), WebStream(site, FrameCache())
    server = LayeredStream(outer, inner)
    outer.send(b"held\n")
    assert server.buffered_bytes == len(b"held\n")
    assert server.data_to_send() == b""


def test_the_inner_finishing_closes_the_outer(sctx: ssl.SSLContext, site: Site) -> None:
    client, server = connected(sctx, site)
    client.send(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    answer, _ = pump(client, server)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert server.finished
    assert client.finished  # close_notify followed the last response


def test_the_peer_closing_reaches_the_inner(sctx: ssl.SSLContext, site: Site) -> None:
    client, server = connected(sctx, site)
    assert server.receive(b"") == b""
    assert server.finished


def test_garbage_is_a_stream_error(sctx: ssl.SSLContext, site: Site) -> None:
    server = layered(sctx, site)
    with pytest.raises(StreamError):
        server.receive(b"GET / HTTP/1.1\r\n\r\n")
    assert server.finished


def test_a_bad_request_inside_tls_gets_its_answer(sctx: ssl.SSLContext, site: Site) -> None:
    client, server = connected(sctx, site)
    client.send(b"\x00\x01 not http at all\r\n\r\n")
    answer, _ = pump(client, server)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert server.finished
