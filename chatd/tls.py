"""TLS as a sans-I/O byte stream: ``ssl.SSLObject`` over two ``ssl.MemoryBIO``s.

The loop owns the socket; a :class:`TlsStream` only turns wire bytes into application
bytes and back, the way asyncio's ``sslproto`` does: received bytes are written into the
incoming BIO, OpenSSL is asked to make progress (handshake, then reads), and whatever it
wants to transmit is collected from the outgoing BIO by :meth:`TlsStream.data_to_send`.
Nothing here blocks, reads a clock or touches a socket; the server's registration and
handshake deadlines cut a peer that stalls.

Rules this module keeps:

- Application bytes sent before the handshake completes are held (the banner, a timeout
  notice) and counted in :attr:`TlsStream.buffered_bytes`, so the connection's output
  limits see them; they are encrypted once the handshake is done.
- No renegotiation (``OP_NO_RENEGOTIATION``; TLS 1.3 has none). A peer that asks gets an
  alert and the stream fails.
- Every protocol failure (a record that is not TLS, a bad MAC, an unexpected message)
  is a :class:`~chatd.streams.StreamError` with a one-sentence reason; an alert OpenSSL
  queued for the peer is still in :meth:`~TlsStream.data_to_send`.
- :meth:`TlsStream.close` sends ``close_notify``; a peer's ``close_notify`` (or its plain
  end of stream) makes the stream :attr:`~TlsStream.finished`.

:func:`server_context` is the server's ``SSLContext``: TLS 1.2 and 1.3 only, forward-secret
AEAD suites only, no compression, no renegotiation, no TLS 1.3 session tickets.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from typing import NoReturn

from chatd.streams import TLS_RECORD_HANDSHAKE, Stream, StreamError, StreamSniffer

__all__ = [
    "PlainRefused",
    "TlsStream",
    "sniffer",
    "fingerprint",
    "server_context",
    "client_context",
]

# OpenSSL hands back at most one record (16 KiB of plaintext) per read.
_READ_CHUNK = 16384
# TLS 1.2 suites: ECDHE (forward secrecy) with AEAD ciphers only. TLS 1.3 suites are
# OpenSSL's defaults, which are all AEAD and forward-secret.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The server's context for ``cert_file``/``key_file`` (PEM).

    Raises:
        ssl.SSLError, OSError: the files cannot be read or do not match.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    # The server's choice of suite wins. No TLS 1.3 tickets: clients of a LAN chat reconnect
    # rarely. TLS 1.2 tickets stay on: without them OpenSSL keeps every session in the
    # context's cache instead (about 1 KB each, up to 20,000 of them; measured).
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.num_tickets = 0
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def client_context() -> ssl.SSLContext:
    """A client context that checks nothing itself: the caller pins the fingerprint.

    A LAN server has no certificate authority; trust on first use (``client.trust``)
    compares :func:`fingerprint` of the peer's certificate with the one remembered.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(_TLS12_CIPHERS)


def fingerprint(der_cert: bytes) -> str:
    """``SHA256:`` and the unpadded base64 of the certificate's SHA-256, as ssh shows keys."""
    digest = hashlib.sha256(der_cert).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class TlsStream:
    """One TLS connection's state, fed with wire bytes. See the module docstring.

    Args:
        context: a server or client context.
        server_side: True on the server.
        server_hostname: for a client: the name sent as SNI (None: none).
    """

    __slots__ = ("_in", "_out", "_ssl", "_held", "_held_size", "_ready", "_finished", "_closed")

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool = True,
        server_hostname: str | None = None,
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self._held: list[bytes] | None = None  # application bytes waiting for the handshake
        self._held_size = 0
        self._ready = False
        self._finished = False
        self._closed = False
        if not server_side:
            self._handshake()  # the client speaks first: its ClientHello is ready to send

    # ------------------------------------------------------------------ the contract

    def receive(self, wire: bytes) -> bytes:
        """Feed wire bytes (``b""``: the peer closed); returns the plaintext now available.

        Raises:
            StreamError: the peer broke TLS (the stream is then finished).
        """
        if self._finished:
            return b""
        if wire:
            self._in.write(wire)
        else:
            self._in.write_eof()
        if not self._ready:
            self._handshake()
            if not self._ready:
                return b""
        return self._read()

    def send(self, app: bytes) -> None:
        """Encrypt ``app`` now, or hold it until the handshake is done."""
        if self._ready and not self._closed and not self._finished:
            try:  # the fan-out's path, once per recipient: no further call
                self._ssl.write(app)
            except ssl.SSLError as exc:  # writing after the peer broke the session
                self._fail(exc, "TLS write failed")
            return
        if not app or self._closed or self._finished:
            return
        if not self._ready:
            if self._held is None:
                self._held = []
            self._held.append(app)
            self._held_size += len(app)
            return
        self._write(app)

    def data_to_send(self) -> bytes:
        """The wire bytes OpenSSL produced since the last call (``b""`` if none)."""
        return self._out.read()  # (b"" when empty)

    def close(self) -> None:
        """Send ``close_notify`` (once). Held plaintext of an unfinished handshake is dropped."""
        if self._closed:
            return
        self._closed = True
        self._held = None
        self._held_size = 0
        if not self._ready or self._finished:
            return  # nothing was ever encrypted: there is no session to close
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # our close_notify is out; we do not wait for the peer's
        except ssl.SSLError:
            pass  # the peer already broke or closed the session

    @property
    def buffered_bytes(self) -> int:
        return self._held_size

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def finished(self) -> bool:
        return self._finished

    # ------------------------------------------------------------------ extras

    @property
    def version(self) -> str | None:
        """The negotiated protocol (``"TLSv1.3"``), once ready."""
        return self._ssl.version() if self._ready else None

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER), once ready; None if it sent none."""
        return self._ssl.getpeercert(binary_form=True) if self._ready else None

    # ------------------------------------------------------------------ inside

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLEOFError:  # the peer left in the middle: not a protocol error
            self._finished = True
            return
        except ssl.SSLError as exc:
            self._fail(exc, "TLS handshake failed")
        self._ready = True
        held, self._held = self._held, None
        self._held_size = 0
        if held and not self._closed:
            self._write(b"".join(held))

    def _read(self) -> bytes:
        chunks: list[bytes] = []
        sslobj, incoming = self._ssl, self._in
        while True:
            try:
                chunk = sslobj.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                self._finished = True
                break
            except ssl.SSLEOFError:  # end of stream without close_notify: a plain close
                self._finished = True
                break
            except ssl.SSLError as exc:
                self._fail(exc, "bad TLS record")
            if not chunk:
                self._finished = True
                break
            chunks.append(chunk)
            if not incoming.pending and not sslobj.pending():
                break  # all read: spare the SSLWantReadError that would say so
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def _write(self, app: bytes) -> None:
        try:
            self._ssl.write(app)
        except ssl.SSLError as exc:  # writing after the peer broke the session
            self._fail(exc, "TLS write failed")

    def _fail(self, exc: ssl.SSLError, what: str) -> NoReturn:
        self._finished = True
        self._held = None
        self._held_size = 0
        reason = exc.reason or exc.strerror or str(exc)
        raise StreamError(f"{what}: {str(reason).lower().replace('_', ' ')}") from None


class PlainRefused:
    """The stream of a plain-text connection when TLS is required: one line, then the end.

    It says how to connect instead (``message``); whatever the peer sends is ignored, and
    the connection closes once the line is flushed.
    """

    __slots__ = ("_message",)

    def __init__(self, message: bytes) -> None:
        self._message = message

    def receive(self, wire: bytes) -> bytes:
        return b""

    def send(self, app: bytes) -> None:
        pass  # the banner and everything after it: this connection only gets the refusal

    def data_to_send(self) -> bytes:
        message, self._message = self._message, b""
        return message

    def close(self) -> None:
        pass

    @property
    def buffered_bytes(self) -> int:
        return 0

    @property
    def ready(self) -> bool:
        return True

    @property
    def finished(self) -> bool:
        return True


def sniffer(context: ssl.SSLContext, refuse_plain: bytes | None = None) -> StreamSniffer:
    """The native port's choice: TLS when the first byte opens a TLS handshake.

    Plain text otherwise, or, with ``refuse_plain``, a :class:`PlainRefused` with that line
    (``first`` is ``b""`` when the peer said nothing within the sniffing window).
    """

    def choose(first: bytes) -> Stream | None:
        if first[:1] == bytes((TLS_RECORD_HANDSHAKE,)):
            return TlsStream(context)
        if refuse_plain is not None:
            return PlainRefused(refuse_plain)
        return None

    return choose
