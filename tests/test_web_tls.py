"""The web port with TLS on (real processes, real sockets): HTTPS and wss on the server's
certificate, plain HTTP on the same port unless TLS is required, and the handshake
deadline for TLS only."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ChatdProcess, JsonClient, wait_until

pytest.importorskip("cryptography")
pytest.importorskip("wsproto")
from wsclient import WsClient  # noqa: E402

from chatd.tls import client_context, fingerprint  # noqa: E402


def web_tls_server(tmp_path: Path, *args: str) -> ChatdProcess:
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    return ChatdProcess("--tls", "on", *args, env=env, web=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChatdProcess]:
    proc = web_tls_server(tmp_path, "--tls-handshake-seconds", "1")
    yield proc
    proc.stop()


def https_get(port: int, path: str = "/") -> tuple[http.client.HTTPResponse, bytes, str]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=client_context())
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    assert conn.sock is not None
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    conn.close()
    return response, body, fingerprint(der)


def http_get(port: int, path: str = "/") -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def test_https_page_on_the_servers_certificate(server: ChatdProcess) -> None:
    assert any("open:  https://" in line for line in server.stdout_lines)
    port = server.web_port or 0
    response, body, seen = https_get(port)
    assert response.status == 200
    assert seen == server.fingerprint  # the same certificate as the native port
    csp = response.getheader("Content-Security-Policy") or ""
    assert f"wss://127.0.0.1:{port}" in csp and "ws://" not in csp
    assert b"<html" in body.lower()


def test_wss_user_chats_with_a_plain_tcp_user(server: ChatdProcess) -> None:
    alice = JsonClient(server.port)
    alice.hello("alice")
    alice.join("#lobby")
    ws = WsClient(server.web_port or 0, tls=client_context())
    assert ws.rejected is None
    ws.send_json(op="hello", nick="wendy")
    ws.expect_frame(type="welcome", nick="wendy")
    ws.send_json(op="join", room="#lobby")
    ws.expect_frame(type="history_end", room="#lobby")
    ws.send_json(op="say", room="#lobby", text="from wss")
    alice.expect_frame(type="msg", text="from wss", **{"from": "wendy"})
    alice.say("#lobby", "to wss")
    ws.expect_frame(type="msg", text="to wss")
    ws.close()
    alice.close()


def test_wss_upgrade_from_a_plain_page_is_refused(server: ChatdProcess) -> None:
    # The origin check knows which scheme this connection came in on.
    port = server.web_port or 0
    ws = WsClient(port, tls=client_context(), origin=f"http://127.0.0.1:{port}")
    assert ws.rejected == 403


def test_plain_http_still_works_when_tls_is_not_required(server: ChatdProcess) -> None:
    port = server.web_port or 0
    response, body = http_get(port)
    assert response.status == 200 and b"<html" in body.lower()
    csp = response.getheader("Content-Security-Policy") or ""
    assert f"ws://127.0.0.1:{port}" in csp
    ws = WsClient(port)
    assert ws.rejected is None
    ws.send_json(op="hello", nick="plainweb")
    ws.expect_frame(type="welcome", nick="plainweb")
    ws.close()


def test_the_handshake_deadline_cuts_tls_but_not_plain_http(server: ChatdProcess) -> None:
    port = server.web_port or 0
    stalled = socket.create_connection(("127.0.0.1", port), timeout=5)
    stalled.sendall(b"\x16\x03\x01")  # a ClientHello that never finishes
    keep = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    keep.request("GET", "/")
    keep.getresponse().read()
    start = time.monotonic()
    assert stalled.recv(100) == b""  # cut by the 1 s deadline (the register timeout is longer)
    stalled.close()
    wait_until(lambda: time.monotonic() - start > 0.3, what="the keep-alive past the deadline")
    keep.request("GET", "/")  # the same plain connection, still open after the deadline
    assert keep.getresponse().status == 200
    keep.close()


def test_require_tls_refuses_plain_http_with_a_pointer(tmp_path: Path) -> None:
    proc = web_tls_server(tmp_path, "--require-tls")
    try:
        port = proc.web_port or 0
        response, body = http_get(port)
        assert response.status == 426
        assert b"https://" in body and str(port).encode() in body
        response, _, _ = https_get(port)
        assert response.status == 200
    finally:
        proc.stop()
