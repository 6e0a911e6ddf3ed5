"""The fields of a server frame, each taken through one check: nothing the server says
is trusted (issue 17), for the server may be buggy or an impostor.

:mod:`client.frames` decodes every frame through a :class:`Fields`, so:

- every field's type is checked; names are checked with the server's own rules
  (:mod:`chatd.names`), so an invisible or invalid nick or room is refused, not adopted;
- ``ts`` must be a finite time the clock can show (else ``None``: shown as "now");
- text is sanitised (:func:`client.text.sanitize`) and cut to the advertised
  ``max_text_chars``; lists of names are capped.

A field that fails its check raises :class:`Garbled`; the caller logs and skips the frame.
"""

from __future__ import annotations

import math
from typing import Any

from chatd import names
from client.text import sanitize

__all__ = ["Fields", "Garbled", "MAX_NAMES", "MAX_TS", "TRUNCATED"]

# Newest time a message may carry: the end of year 9999, which localtime() can show.
MAX_TS = 253402300799.0
# Client-side memory bounds for what one frame may add (not server limits).
MAX_NAMES = 10_000  # members of a room, rooms of a whois, rooms of a /rooms reply
TRUNCATED = " […]"


class Garbled(Exception):
    """A server frame that is not what the protocol promises; it is skipped."""


class Fields:
    """Typed, checked access to one decoded JSON object.

    Args:
        obj: the frame (or one element of a list in it).
        max_text_chars: texts longer than this are cut (the server's advertised limit).
    """

    def __init__(self, obj: dict[str, Any], max_text_chars: int) -> None:
        self.obj = obj
        self.max_text_chars = max_text_chars

    def raw_str(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str) or not value:
            raise Garbled(f"{key} is not a non-empty string")
        return value

    def nick(self, key: str) -> str:
        value = self.raw_str(key)
        if not names.valid_nick(value):
            raise Garbled(f"{key} is not a valid nick")
        return value

    def room(self, key: str = "room") -> str:
        value = self.raw_str(key)
        if not names.valid_room(value):
            raise Garbled(f"{key} is not a valid room name")
        return sanitize(value, newlines=False)

    def nicks(self, key: str) -> tuple[str, ...]:
        return tuple(v for v in self.items(key) if isinstance(v, str) and names.valid_nick(v))

    def rooms(self, key: str) -> tuple[str, ...]:
        return tuple(
            sanitize(v, newlines=False)
            for v in self.items(key)
            if isinstance(v, str) and names.valid_room(v)
        )

    def items(self, key: str) -> list[Any]:
        value = self.obj.get(key)
        if not isinstance(value, list):
            raise Garbled(f"{key} is not a list")
        return value[:MAX_NAMES]

    def opt_str(self, key: str, *, newlines: bool = False) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str):
            return ""
        return self.cut(sanitize(value[: self.max_text_chars + 1], newlines=newlines))

    def text(self, key: str = "text") -> str:
        value = self.obj.get(key)
        if not isinstance(value, str):
            raise Garbled(f"{key} is not a string")
        return self.cut(sanitize(value[: self.max_text_chars + 1]))

    def cut(self, text: str) -> str:
        limit = self.max_text_chars
        return text if len(text) <= limit else text[:limit] + TRUNCATED

    def integer(self, key: str) -> int:
        value = self.obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise Garbled(f"{key} is not an integer")
        return value

    def opt_int(self, key: str) -> int | None:
        value = self.obj.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def flag(self, key: str) -> bool:
        return self.obj.get(key) is True

    def ts(self) -> float | None:
        """A time the clock can show, or None (shown as now): 1e20, NaN, 10**400 are not."""
        value = self.obj.get("ts")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        try:
            ts = float(value)
        except OverflowError:
            return None
        return ts if math.isfinite(ts) and 0.0 <= ts <= MAX_TS else None
