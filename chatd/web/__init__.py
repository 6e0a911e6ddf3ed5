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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatd.server import Server

__all__ = ["listen_web", "lan_address", "WebUnavailable"]


class WebUnavailable(RuntimeError):
    """The web port was asked for but its libraries are not installed."""


def listen_web(server: Server, host: str, port: int) -> tuple[str, int]:
    """Serve the web client on ``host:port``; returns the bound address.

    Raises:
        WebUnavailable: h11 or wsproto is missing (install the 'web' extra).
        OSError: the port cannot be bound.
    """
    try:
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
    return server.listen(
        host,
        port,
        name="web",
        make_codec=JsonCodec,
        banner=b"",
        make_stream=lambda: WebStream(site, cache),
    )


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
