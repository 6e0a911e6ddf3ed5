"""The codec interface (see :mod:`chatd.codecs`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable

from chatd.model import Command, ErrorCode, Event, ProtocolError

__all__ = ["Codec", "decode_utf8"]


def decode_utf8(line: bytes, rid: object = None) -> str:
    """Decode one frame strictly; bad bytes are the peer's fault, not ours.

    Raises:
        ProtocolError: ``bad_encoding``.
    """
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_ENCODING,
            f"line is not valid UTF-8 (byte {exc.start}); it was ignored",
        ) from None


class Codec(ABC):
    """One wire mode for one connection."""

    #: Short name for logs ("json", "text", "irc").
    name: str = "?"

    #: Connections whose codecs share a key get the same bytes for the same event. A plain
    #: attribute, not a property: the fan-out reads it once per recipient. A codec whose
    #: output depends on per-connection state (IRC: own nick, capabilities) reassigns it
    #: when that state changes.
    cache_key: Hashable = "?"

    #: True for protocols whose clients answer server pings (IRC). The server sends such
    #: idle peers a ``Probe`` and drops them if they stay silent; text and JSON peers are
    #: never dropped for being quiet (a person in ``nc`` may listen for hours), and
    #: TCP keepalive finds their dead connections instead.
    pings_peer: bool = False

    @abstractmethod
    def decode(self, line: bytes) -> list[Command]:
        """Parse one frame into zero or more commands.

        Raises:
            ProtocolError: the frame is not acceptable; nothing was executed.
        """

    @abstractmethod
    def encode(self, event: Event, rid: object = None) -> bytes:
        """The bytes (whole lines, ``\\n``-terminated) that tell the peer ``event``.

        May return ``b""`` for events this mode does not show.
        """

    def observe(self, event: Event) -> None:  # noqa: B027 - optional hook, no-op default
        """Called with every non-message event delivered to this connection.

        Codecs that track per-connection state (registration, own nick) look here; the
        default does nothing. Room messages are not passed, to keep fan-out cheap.
        """
