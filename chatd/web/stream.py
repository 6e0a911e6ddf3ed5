"""The web port's byte stream (a :class:`chatd.streams.Stream`): HTTP until the upgrade,
then WebSocket. Pure: no socket, no clock; ``h11`` parses HTTP, ``wsproto`` frames.

- **Before the upgrade** the stream answers requests itself: the web client's files
  (:mod:`chatd.web.site`) or an error status. Lines the server queues for it are dropped
  (there is no chat on it yet: it has not spoken JSON). At most
  :data:`MAX_REQUESTS_PER_READ` requests are answered per read (browsers do not
  pipeline; a pipelining flood closes the connection after those answers), any request
  with a body is refused (413), and a request head over ``max_header_bytes`` - or a
  request line that never ends - gets 431 and the connection closes.
- **``GET /ws`` with an upgrade** whose Host and Origin pass (:meth:`Site.upgrade_refusal`)
  becomes a WebSocket. From then on one text message in is one line out (``\\r`` and
  ``\\n`` in it become spaces) and each line sent becomes one text message. A message
  longer than ``max_line_bytes`` is discarded as it arrives and becomes a line the
  framer refuses (``line_too_long``, as on every port); binary messages close with 1003.
- **Control frames**: pings are answered with one pong per read, for the last of them
  (RFC 6455 5.5.3 allows it); more than :data:`MAX_CONTROL_PER_READ` control frames in
  one read close the connection with 1008 (a ping flood costs parsing and nothing else).
- **Fan-out**: a room blob is the same ``bytes`` object for every recipient, so its
  framing is cached by identity (:class:`FrameCache`, one per listener): one tick's
  blob is framed once, however many WebSocket members the room has.
"""

from __future__ import annotations

import h11
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WsRequest
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from chatd.streams import StreamError
from chatd.web.site import WS_PATH, Site

__all__ = ["FrameCache", "WebStream", "MAX_REQUESTS_PER_READ", "MAX_CONTROL_PER_READ"]

#: Requests answered per read before the connection is closed (pipelining flood).
MAX_REQUESTS_PER_READ = 8
#: Ping/pong frames accepted per read (a peer answers or pings once in a while).
MAX_CONTROL_PER_READ = 32

_REASONS = {
    200: b"OK",
    304: b"Not Modified",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
}


class FrameCache:
    """The framing of the last room blob sent (by identity), shared by a listener's
    streams: server frames are unmasked and uncompressed, the same for every peer."""

    __slots__ = ("source", "wire", "hits", "misses")

    def __init__(self) -> None:
        self.source: bytes | None = None  # held, so its id cannot be reused meanwhile
        self.wire = b""
        self.hits = 0
        self.misses = 0


class WebStream:
    """One web connection: HTTP requests, then (maybe) a WebSocket."""

    __slots__ = (
        "_site",
        "_cache",
        "_http",
        "_ws",
        "_out",
        "_partial",
        "_partial_len",
        "_too_long",
        "_finished",
        "_host",
    )

    def __init__(self, site: Site, cache: FrameCache) -> None:
        self._site = site
        self._cache = cache
        self._http: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=site.max_header_bytes
        )
        self._ws: WsConnection | None = None
        self._out: list[bytes] = []
        self._partial: list[str] = []  # a text message arriving in pieces
        self._partial_len = 0
        self._too_long = False  # the message arriving is over the limit: discarded
        self._finished = False
        self._host: bytes | None = None

    # ------------------------------------------------------------------ the Stream seam

    @property
    def ready(self) -> bool:
        return self._ws is not None and self._ws.state is ConnectionState.OPEN

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def buffered_bytes(self) -> int:
        return 0  # every line is framed as it is sent

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def receive(self, wire: bytes) -> bytes:
        if self._finished:
            return b""
        if self._ws is not None:
            return self._receive_ws(wire)
        return self._receive_http(wire)

    def send(self, app: bytes) -> None:
        ws = self._ws
        if ws is None or ws.state is not ConnectionState.OPEN:
            return  # not a WebSocket (yet, or any more): nothing to carry JSON lines
        cache = self._cache
        if app is cache.source:
            cache.hits += 1
            self._out.append(cache.wire)
            return
        cache.misses += 1
        lines = app.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        send = ws.send
        frames = [send(TextMessage(data=line.decode("utf-8", "replace"))) for line in lines]
        wire = frames[0] if len(frames) == 1 else b"".join(frames)
        cache.source, cache.wire = app, wire
        self._out.append(wire)

    def close(self) -> None:
        ws = self._ws
        if ws is not None and ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._out.append(ws.send(CloseConnection(code=CloseReason.NORMAL_CLOSURE)))
        self._finished = True

    # ------------------------------------------------------------------ HTTP

    def _receive_http(self, wire: bytes) -> bytes:
        http = self._http
        assert http is not None
        http.receive_data(wire)
        answered = 0
        while not self._finished:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint in _REASONS else 400
                self._error(status, str(exc), close=True)
                return b""
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.ConnectionClosed):
                self._finished = True
                break
            if isinstance(event, h11.Request):
                if answered >= MAX_REQUESTS_PER_READ:
                    self._finished = True  # the answers so far go out, then it closes
                    break
                answered += 1
                upgraded = self._request(event)
                if upgraded is not None:
                    return upgraded
            elif isinstance(event, h11.EndOfMessage):
                self._next_cycle()
        return b""

    def _next_cycle(self) -> None:
        http = self._http
        assert http is not None
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
        elif http.our_state is h11.MUST_CLOSE or http.their_state is h11.MUST_CLOSE:
            self._finished = True

    def _request(self, request: h11.Request) -> bytes | None:
        """Answer one request; the application bytes if it became a WebSocket."""
        headers = {name: value for name, value in request.headers}  # lower-cased by h11
        self._host = headers.get(b"host")
        size = len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if size > self._site.max_header_bytes:
            # h11 bounds an *incomplete* head; a complete one that came in one read is
            # bounded here.
            self._error(431, "request head too large", close=True)
            return None
        if (
            b"content-length" in headers
            and headers[b"content-length"] != b"0"
            or (b"transfer-encoding" in headers)
        ):
            self._error(413, "requests to this server have no body", close=True)
            return None
        path = request.target.split(b"?", 1)[0]
        if path == WS_PATH:
            if request.method != b"GET" or headers.get(b"upgrade", b"").lower() != b"websocket":
                self._error(426, "this is the WebSocket endpoint", close=False)
                return None
            return self._upgrade(request, headers)
        if request.method not in (b"GET", b"HEAD"):
            self._error(405, "only GET and HEAD", close=False, allow=True)
            return None
        static = self._site.lookup(request.target)
        if static is None:
            self._error(404, "not found", close=False)
            return None
        common = [(b"ETag", static.etag), (b"Cache-Control", b"no-cache")]
        if headers.get(b"if-none-match") == static.etag:
            self._respond(304, common, b"")
            return None
        common += [(b"Content-Type", static.content_type.encode())]
        self._respond(200, common, static.body, head=request.method == b"HEAD")
        return None

    def _respond(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        head: bool = False,
        close: bool = False,
    ) -> None:
        http = self._http
        assert http is not None
        headers = [
            *headers,
            *self._site.security_headers(self._host),
            (b"Content-Length", str(len(body)).encode()),
        ]
        if close:
            headers.append((b"Connection", b"close"))
        out = self._out
        response = h11.Response(status_code=status, headers=headers, reason=_REASONS[status])
        out.append(http.send(response) or b"")
        if body and not head:
            out.append(http.send(h11.Data(data=body)) or b"")
        out.append(http.send(h11.EndOfMessage()) or b"")
        if close:
            self._finished = True
        elif http.their_state is h11.DONE:
            self._next_cycle()

    def _error(self, status: int, why: str, *, close: bool, allow: bool = False) -> None:
        http = self._http
        assert http is not None
        if http.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self._finished = True  # mid-response already: nothing clean left to say
            return
        headers = [(b"Content-Type", b"text/plain; charset=utf-8")]
        if allow:
            headers.append((b"Allow", b"GET, HEAD"))
        body = f"{status} {_REASONS[status].decode()}: {why}\n".encode()
        self._respond(status, headers, body, close=close)

    def _upgrade(self, request: h11.Request, headers: dict[bytes, bytes]) -> bytes | None:
        http = self._http
        assert http is not None
        why = self._site.upgrade_refusal(headers.get(b"host"), headers.get(b"origin"))
        if why is not None:
            self._error(403, why, close=True)
            return None
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            handshake.initiate_upgrade_connection(list(request.headers), request.target)
            events = list(handshake.events())
        except WsRemoteProtocolError as exc:
            self._error(400, f"bad WebSocket upgrade: {exc}", close=True)
            return None
        if not events or not isinstance(events[0], WsRequest):
            self._error(400, "bad WebSocket upgrade", close=True)
            return None
        # The request is all h11 had to say (its body is empty); what follows is frames.
        while True:
            event = http.next_event()
            if event is h11.PAUSED or event is h11.NEED_DATA:
                break
        trailing, _ = http.trailing_data
        self._out.append(handshake.send(AcceptConnection()))
        self._ws = handshake.connection
        self._http = None
        return self._receive_ws(bytes(trailing)) if trailing else b""

    # ------------------------------------------------------------------ WebSocket

    def _receive_ws(self, wire: bytes) -> bytes:
        ws = self._ws
        assert ws is not None
        if _closed(ws):
            self._finished = True
            return b""
        ws.receive_data(wire if wire else None)
        lines: list[bytes] = []
        ping: Ping | None = None
        control = 0
        for event in ws.events():
            if isinstance(event, TextMessage):
                self._text(event, lines)
            elif isinstance(event, Ping | Pong):
                control += 1
                if isinstance(event, Ping):
                    ping = event
                if control > MAX_CONTROL_PER_READ:
                    self._close_ws(CloseReason.POLICY_VIOLATION, "too many control frames")
                    break
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._out.append(ws.send(event.response()))  # the closing handshake
                elif ws.state is ConnectionState.OPEN:  # wsproto's parser failed
                    self._close_ws(event.code, event.reason or "bad frame")
                self._finished = True
                break
            elif isinstance(event, BytesMessage):
                self._close_ws(CloseReason.UNSUPPORTED_DATA, "text messages only")
                break
            elif isinstance(event, RejectConnection):  # pragma: no cover - client side only
                raise StreamError("unexpected handshake event")
        if ping is not None and ws.state is ConnectionState.OPEN:
            self._out.append(ws.send(ping.response()))
        if not wire or _closed(ws):
            self._finished = True
        return b"".join(lines)

    def _text(self, event: TextMessage, lines: list[bytes]) -> None:
        if not self._too_long:
            self._partial.append(event.data)
            self._partial_len += len(event.data)  # characters: a byte count needs encoding
            if self._partial_len > self._site.max_line_bytes:
                self._too_long = True
                self._partial.clear()
        if not event.message_finished:
            return
        if self._too_long:
            # The framer turns this into line_too_long, as a long line on any port.
            line = b"x" * (self._site.max_line_bytes + 1)
        else:
            text = self._partial[0] if len(self._partial) == 1 else "".join(self._partial)
            line = text.encode("utf-8", "surrogatepass")
            if b"\n" in line or b"\r" in line:
                line = line.replace(b"\r", b" ").replace(b"\n", b" ")
        self._partial.clear()
        self._partial_len = 0
        self._too_long = False
        lines.append(line + b"\n")

    def _close_ws(self, code: int, reason: str) -> None:
        ws = self._ws
        assert ws is not None
        if ws.state is ConnectionState.OPEN:
            self._out.append(ws.send(CloseConnection(code=code, reason=reason[:100])))
        self._finished = True


def _closed(ws: WsConnection) -> bool:
    return ws.state is ConnectionState.CLOSED
