"""Turning a browser away in words: ``503 Service Unavailable`` when chatd is full.

A newcomer refused at accept (the server is full, or its address has too many
connections: :mod:`chatd.admission`) is told why in its own protocol. On the web port
that protocol is HTTP, and HTTP answers only a request: a socket closed at once shows a
browser a blank "connection reset" page. So the web listener hands such a socket to
:class:`Refusals`, which reads the request head (h11), answers one short 503 with
``Retry-After`` and a one-line text body, and closes.

Everything about it is bounded, since it runs exactly when the server is short of room:

- at most :data:`MAX_REFUSING` sockets are held at once (beyond that: closed without a
  word, as before - they are the descriptors a full server lacks);
- each is held at most :data:`REFUSAL_SECONDS` (a timer), and nothing is read past the
  request head (h11's ``max_incomplete_event_size``: ``web_max_header_bytes``);
- the answer is one ``send()`` of a few hundred bytes: it fits an empty socket buffer, and
  whatever does not is dropped with the socket (nothing waits for a reader).

A TLS ClientHello (the https side of a TLS web port) gets the silent close: answering it
would take a handshake, which is the cost refusing saves.
"""

from __future__ import annotations

import logging
import socket

import h11

from chatd.loop import Loop
from chatd.streams import TLS_RECORD_HANDSHAKE

__all__ = ["MAX_REFUSING", "REFUSAL_SECONDS", "RETRY_AFTER_SECONDS", "Refusals"]

logger = logging.getLogger(__name__)

#: Sockets held at once to be answered 503 (each is a descriptor a full server lacks).
MAX_REFUSING = 32
#: The longest a refused socket is held waiting for its request head.
REFUSAL_SECONDS = 2.0
#: What ``Retry-After`` suggests to the browser (and to a person reading the page).
RETRY_AFTER_SECONDS = 30
_READ_BYTES = 4096


class Refusals:
    """The sockets being answered 503, on the server's loop.

    Args:
        loop: the server's loop (the sockets are watched and timed there).
        max_header_bytes: the longest request head read (``web_max_header_bytes``).
    """

    def __init__(self, loop: Loop, max_header_bytes: int) -> None:
        self._loop = loop
        self._max_header_bytes = max_header_bytes
        self._held: set[_Refusal] = set()
        self.answered = 0  # 503s sent
        self.dropped = 0  # closed without a word (too many held, no request in time, TLS)

    def __len__(self) -> int:
        return len(self._held)

    def refuse(self, sock: socket.socket, why: str) -> None:
        """Answer ``sock``'s request with a 503 saying ``why``, then close it."""
        if len(self._held) >= MAX_REFUSING:
            self.dropped += 1
            sock.close()
            return
        sock.setblocking(False)
        refusal = _Refusal(self, sock, why, self._max_header_bytes)
        self._held.add(refusal)
        self._loop.update(refusal)
        self._loop.call_at(self._loop.now + REFUSAL_SECONDS, self._expire, refusal)

    def _expire(self, refusal: _Refusal) -> None:
        if refusal in self._held:
            self.finish(refusal, answered=False)  # no request head in time

    def finish(self, refusal: _Refusal, answered: bool) -> None:
        self._held.discard(refusal)
        self._loop.remove(refusal)
        refusal.sock.close()
        if answered:
            self.answered += 1
        else:
            self.dropped += 1


class _Refusal:
    """One refused socket: a loop handler that reads a request head, then answers."""

    __slots__ = ("_owner", "sock", "mask", "_why", "_http", "_first")

    wants_read = True
    wants_write = False

    def __init__(
        self, owner: Refusals, sock: socket.socket, why: str, max_header_bytes: int
    ) -> None:
        self._owner = owner
        self.sock = sock
        self.mask = 0
        self._why = why
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._first = True

    def on_ready(self, mask: int) -> None:
        try:
            data = self.sock.recv(_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # reset: nobody to answer
        if self._first and data[:1] == bytes((TLS_RECORD_HANDSHAKE,)):
            data = b""  # a TLS ClientHello: answering would take a handshake
        self._first = False
        http = self._http
        http.receive_data(data)  # b"": the end of its stream
        try:
            event = http.next_event()
        except h11.RemoteProtocolError:  # not HTTP, or a head over the limit
            self._owner.finish(self, answered=False)
            return
        if event is h11.NEED_DATA:
            return  # the rest of the head is on its way (the timer bounds the wait)
        if not isinstance(event, h11.Request):
            self._owner.finish(self, answered=False)  # closed before asking
            return
        try:
            data = self._answer(head=event.method == b"HEAD")
        except h11.LocalProtocolError as exc:  # (a bug: it must cost this socket only)
            logger.warning("cannot answer a refused web client: %s", exc)
            self._owner.finish(self, answered=False)
            return
        try:
            self.sock.send(data)  # a few hundred bytes into an empty buffer
            self.sock.shutdown(socket.SHUT_WR)  # FIN after the answer, not a reset
        except OSError as exc:
            logger.debug("a refused web client left before its 503: %s", exc)
        self._owner.finish(self, answered=True)

    def _answer(self, head: bool) -> bytes:
        """The 503 response, as bytes."""
        http = self._http
        body = f"503 Service Unavailable: {self._why}\n".encode()
        headers = [
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"X-Content-Type-Options", b"nosniff"),
            (b"Cache-Control", b"no-store"),
            (b"Retry-After", str(RETRY_AFTER_SECONDS).encode()),
            (b"Content-Length", str(len(body)).encode()),
            (b"Connection", b"close"),
        ]
        response = h11.Response(status_code=503, headers=headers, reason=b"Service Unavailable")
        data = http.send(response) or b""
        if not head:
            data += http.send(h11.Data(data=body)) or b""
        return data + (http.send(h11.EndOfMessage()) or b"")
