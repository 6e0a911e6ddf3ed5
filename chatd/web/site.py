"""What the web port serves: the web client's own files, their headers, and who may
upgrade to a WebSocket. Pure: no socket, no clock.

- **Files**: a fixed allowlist of names (:data:`FILES`), read once from the package with
  :mod:`importlib.resources`. A request path is looked up in that table as it came, after
  cutting the query string: nothing is decoded, joined to a directory or listed, so
  ``/../../etc/passwd`` and every encoded variant of it are simply not in the table (404).
- **Caching**: each file has a strong ``ETag`` (a hash of its bytes) and
  ``Cache-Control: no-cache``: the browser keeps the file and revalidates it with
  ``If-None-Match``, which costs a ``304`` with no body.
- **Content-Security-Policy**: scripts, styles, images and connections from this origin
  only; no inline script or style, no frames, no plugins, no forms sent anywhere.
- **Upgrade checks** (:meth:`Site.upgrade_refusal`): the ``Host`` must be a name of this
  machine (an IP literal, ``localhost``, its host name) - a DNS-rebinding page has a name
  of its own - and a browser's ``Origin`` must be this same host (cross-site WebSocket
  hijacking: a page elsewhere that a LAN user visits must not drive their browser into
  the chat).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

__all__ = ["FILES", "Site", "StaticFile", "WS_PATH"]

#: The WebSocket endpoint.
WS_PATH = b"/ws"

#: URL path -> (file name in chatd/web/static, content type). Nothing else is served.
FILES: dict[bytes, tuple[str, str]] = {
    b"/": ("index.html", "text/html; charset=utf-8"),
    b"/index.html": ("index.html", "text/html; charset=utf-8"),
    b"/app.js": ("app.js", "text/javascript; charset=utf-8"),
    b"/style.css": ("style.css", "text/css; charset=utf-8"),
    b"/icon.svg": ("icon.svg", "image/svg+xml"),
}

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "manifest-src 'self'; connect-src 'self'{ws}; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
# A Host header we are willing to echo into connect-src: a name or address, and a port.
_HOST_RE = re.compile(rb"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?$")


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: bytes


class Site:
    """The files and rules of one web listener (shared by all its connections).

    Args:
        max_line_bytes: the longest line a message may become (the framer's limit).
        max_header_bytes: the longest request head (h11's max_incomplete_event_size).
        tls: served over TLS (wss: and https: in the policy and origin checks).
        names: extra host names this machine answers to (besides IPs, localhost and
            the host name).
    """

    def __init__(
        self,
        max_line_bytes: int,
        max_header_bytes: int,
        tls: bool = False,
        names: tuple[str, ...] = (),
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_header_bytes = max_header_bytes
        self.tls = tls
        host = socket.gethostname().lower()
        self._names = {"localhost", host, host.split(".")[0], *(n.lower() for n in names)}
        self._names |= {n + suffix for n in set(self._names) for suffix in (".local", ".lan")}
        self.files: dict[bytes, StaticFile] = {}
        static = resources.files("chatd.web").joinpath("static")
        loaded: dict[str, bytes] = {}
        for path, (name, content_type) in FILES.items():
            body = loaded.get(name)
            if body is None:
                body = loaded[name] = static.joinpath(name).read_bytes()
            etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
            self.files[path] = StaticFile(body, content_type, etag)

    def lookup(self, target: bytes) -> StaticFile | None:
        """The file a request target names, or None (not ours: 404)."""
        path = target.split(b"?", 1)[0]
        return self.files.get(path)

    def security_headers(self, host: bytes | None) -> list[tuple[bytes, bytes]]:
        """Headers on every response: the content policy and its companions."""
        ws = ""
        if host is not None and _HOST_RE.match(host):
            # 'self' covers ws:/wss: of this host in CSP Level 3; older engines need it said.
            name = host.decode("ascii")
            ws = f" wss://{name}" if self.tls else f" ws://{name} wss://{name}"
        return [
            (b"Content-Security-Policy", _CSP.format(ws=ws).encode()),
            (b"X-Content-Type-Options", b"nosniff"),
            (b"Referrer-Policy", b"no-referrer"),
            (b"X-Frame-Options", b"DENY"),
            (b"Cross-Origin-Opener-Policy", b"same-origin"),
            (b"Cross-Origin-Resource-Policy", b"same-origin"),
        ]

    def is_our_host(self, host: bytes | None) -> bool:
        """Is ``host`` (a Host header: name[:port]) a name of this machine?"""
        if host is None or not _HOST_RE.match(host):
            return False
        name = host.decode("ascii").lower()
        if name.startswith("["):
            name = name[1 : name.index("]")]
        elif ":" in name:
            name = name.rsplit(":", 1)[0]
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name.rstrip(".") in self._names

    def upgrade_refusal(self, host: bytes | None, origin: bytes | None) -> str | None:
        """Why a WebSocket upgrade is refused (a sentence), or None if it may go on.

        A browser always sends ``Origin`` on a WebSocket upgrade; a program need not, and
        cannot be hijacked, so a missing Origin is accepted.
        """
        if not self.is_our_host(host):
            return "the Host header is not a name of this server"
        if origin is None:
            return None
        try:
            parts = urlsplit(origin.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return "the Origin header is malformed"
        scheme = "https" if self.tls else "http"
        assert host is not None
        if parts.scheme != scheme or parts.netloc.lower() != host.decode("ascii").lower():
            return "the page that opened this WebSocket is not served by this server"
        return None
