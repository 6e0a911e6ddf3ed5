"""The web port: a browser client served by chatd itself (see docs/web.md).

HTTP and WebSocket run on the server's one loop like every other connection: the
listener gives each connection a :class:`~chatd.web.stream.WebStream` (HTTP, then maybe
a WebSocket) and the JSON codec, so the hub sees one more JSON client. ``h11`` and
``wsproto`` (the ``web`` extra) are imported only here, when the web port is on; the
plain server runs on the standard library alone.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatd.server import Server
    from chatd.streams import Stream

__all__ = ["listen_web", "lan_address", "WebUnavailable"]


class WebUnavailable(RuntimeError):
    """The web port was asked for but its libraries are not installed."""


def listen_web(
    server: Server,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
    handshake_seconds: float | None = None,
) -> tuple[str, int]:
    """Serve the web client on ``host:port``; returns the bound address.

    With ``tls``, the first byte a browser sends decides: a TLS ClientHello (0x16) gets
    HTTPS and wss (TLS around the web stream, on the server's certificate), anything else
    plain HTTP, or with ``--require-tls`` one answer saying to use https, then the end.
    ``handshake_seconds`` cuts a TLS handshake that stalls (plain HTTP has no handshake).

    Raises:
        WebUnavailable: h11 or wsproto is missing (install the 'web' extra).
        OSError: the port cannot be bound.
    """
    try:
        from chatd.web.refusal import Refusals
        from chatd.web.site import Site
        from chatd.web.stream import FrameCache, WebStream
    except ImportError as exc:
        raise WebUnavailable(
            f"the web port needs {exc.name}: pip install 'chatd[web]' (h11, wsproto)"
        ) from None
    from chatd.codecs import JsonCodec

    config = server.config
    site = Site(config.max_line_bytes, config.web_max_header_bytes)
    cache = FrameCache()
    refusals = Refusals(server.loop, config.web_max_header_bytes)  # 503 when full
    if tls is None:
        return server.listen(
            host,
            port,
            name="web",
            make_codec=JsonCodec,
            banner=b"",
            make_stream=lambda: WebStream(site, cache),
            refuse_with=refusals.refuse,
        )
    from chatd.streams import TLS_RECORD_HANDSHAKE, LayeredStream
    from chatd.tls import PlainRefused, TlsStream

    secure = Site(config.max_line_bytes, config.web_max_header_bytes, tls=True)
    refusal: list[bytes] = []  # (the bound port is known once it listens)
    hello = bytes((TLS_RECORD_HANDSHAKE,))

    def choose(first: bytes) -> Stream:
        if first[:1] == hello:
            return LayeredStream(TlsStream(tls), WebStream(secure, cache))
        if refusal:
            return PlainRefused(refusal[0])
        return WebStream(site, cache)

    bound = server.listen(
        host,
        port,
        name="web",
        make_codec=JsonCodec,
        banner=b"",
        sniff_stream=choose,
        handshake_seconds=handshake_seconds,
        refuse_with=refusals.refuse,
    )
    if config.require_tls:
        refusal.append(_https_only(config.server_name, bound[1]))
    return bound


def _https_only(name: str, port: int) -> bytes:
    """The one answer a plain-HTTP request gets when TLS is required."""
    body = f"this server takes HTTPS only: open https://{name}:{port}/\n".encode()
    head = (
        "HTTP/1.1 426 Upgrade Required\r\nUpgrade: TLS/1.3, HTTP/1.1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def lan_address() -> str | None:
    """This machine's address on the LAN (not loopback), if it can be told without
    sending anything: the addresses its host name resolves to."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return None
    for info in infos:
        address = str(info[4][0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None
