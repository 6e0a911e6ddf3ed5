"""The client's network shell: one asyncio stream connection, lines in, frames out.

It knows nothing of the chat: :class:`Link` sends already-built frames and yields the
received lines as text. Everything that can go wrong while connecting becomes a
:class:`ConnectError` whose message is one sentence fit for the user; a reset or a close
later on is simply the end of :meth:`Link.lines`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

from client.core import encode

__all__ = ["ConnectError", "Link", "NotTls", "Refused", "connect"]

logger = logging.getLogger(__name__)

# The server's replies can be much longer than its 4 KiB request limit (a history page of
# 200 messages of 2000 characters each), so the reader's line limit is generous.
MAX_RECEIVED_LINE = 4 * 1024 * 1024


class ConnectError(Exception):
    """Connecting failed; ``str()`` is one sentence for the user."""


class NotTls(ConnectError):
    """The server answered the TLS handshake with something that is not TLS."""


class Refused(ConnectError):
    """The host answered, but nothing listens on the port (the server is down)."""


class Link:
    """An open connection to the server (``transport``: ``"tls"`` or ``"plain"``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        tls = writer.get_extra_info("ssl_object")
        self.transport = "tls" if tls is not None else "plain"
        # The server's certificate (DER), for trust on first use (client.trust).
        self.peer_certificate: bytes | None = (
            tls.getpeercert(binary_form=True) if tls is not None else None
        )

    async def send(self, frame: dict[str, Any]) -> None:
        """Write one frame and wait for the socket buffer to drain (backpressure).

        Raises:
            ConnectionError: the connection is gone; the reader will see the end too.
        """
        if self._writer.is_closing():
            raise ConnectionResetError("connection closed")
        self._writer.write(encode(frame))
        await self._writer.drain()

    async def lines(self) -> AsyncIterator[str]:
        """Received lines without their newline, until the connection ends.

        An over-long line is skipped; a last line without a newline is dropped (it was cut
        off); a reset ends the iteration like a clean close does.
        """
        while True:
            try:
                raw = await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                logger.warning("skipping a received line over %d bytes", MAX_RECEIVED_LINE)
                await self._skip_long_line(exc.consumed)
                continue
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    logger.info("connection closed in the middle of a line; dropped it")
                return
            except (ConnectionError, OSError) as exc:
                logger.info("connection lost: %s", exc)
                return
            yield raw.rstrip(b"\r\n").decode("utf-8", errors="replace")

    async def _skip_long_line(self, consumed: int) -> None:
        await self._reader.readexactly(consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self._reader.readexactly(exc.consumed)

    def abort(self) -> None:
        """Drop the connection at once, unsent data and all (a server that stopped
        reading would keep a graceful close waiting); the reader sees the end."""
        self._writer.transport.abort()

    async def close(self) -> None:
        """Close the connection, waiting briefly for queued output (a quit) to go out."""
        if self._writer.is_closing():
            return
        try:
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), timeout=2)
        except (ConnectionError, OSError, TimeoutError) as exc:
            logger.info("error while closing: %s", exc)


async def connect(
    host: str, port: int, timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> Link:
    """Open a connection to ``host:port``, over TLS with the context ``tls`` if given.

    The certificate is not checked here: ``client.trust`` pins its fingerprint.

    Raises:
        NotTls: ``tls`` was given and the server does not speak TLS.
        ConnectError: refused, unreachable, unknown host or timed out.
    """
    where = f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                port,
                limit=MAX_RECEIVED_LINE,
                ssl=tls,
                server_hostname=host if tls is not None else None,
                ssl_handshake_timeout=timeout if tls is not None else None,
            ),
            timeout,
        )
    except ssl.SSLError as exc:
        raise NotTls(f"TLS handshake with {where} failed: {exc.reason or exc}") from None
    except TimeoutError:
        raise ConnectError(
            f"could not connect to {where}: no answer within {timeout:g} s"
        ) from None
    except socket.gaierror as exc:
        raise ConnectError(f"could not connect to {where}: unknown host ({exc.strerror})") from None
    except ConnectionRefusedError:
        raise Refused(
            f"could not connect to {where}: connection refused (is chatd running there?)"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConnectError(f"could not connect to {where}: {reason}") from None
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    logger.info("connected to %s (%s)", where, "tls" if tls is not None else "plain")
    return Link(reader, writer)
