"""Wire modes. Each codec turns one connection's lines into commands and events into bytes.

Codecs are pure: they see ``bytes`` lines (already framed) and model values, never a
socket. The server keeps one codec object per connection (so a codec may remember
per-connection state, such as text mode's registration step), but the bytes of an event
must depend only on the event, the request id and :attr:`Codec.cache_key`: the server
encodes a fan-out once per distinct key and shares the bytes among recipients.
"""

from chatd.codecs.base import Codec, decode_utf8
from chatd.codecs.json import JsonCodec
from chatd.codecs.text import TextCodec

__all__ = ["Codec", "JsonCodec", "TextCodec", "decode_utf8", "pick_codec"]


def pick_codec(first_line: bytes, password_required: bool) -> Codec:
    """The native port's mode switch: a first line starting with ``{`` selects JSON."""
    if first_line.lstrip().startswith(b"{"):
        return JsonCodec()
    return TextCodec(password_required=password_required)
