"""The values the client's core hands to its shells: lines to show, requests to send."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Kind", "Line", "Output", "Request"]

# One request to the server, as a JSON object (client.text.encode writes it).
Request = dict[str, str | int | None]


class Kind(enum.Enum):
    """How a line looks; the UI maps each kind to a style."""

    MSG = "msg"  # someone's room message
    OWN = "own"  # my own room message
    ACTION = "action"  # /me, anyone's
    PRIVATE = "private"  # private message, either direction
    SYSTEM = "system"  # joins, parts, nicks, topics: dimmed
    INFO = "info"  # replies to my commands, help, connection news
    ERROR = "error"  # errors from the server or about my input


@dataclass(frozen=True, slots=True)
class Line:
    """One thing to show. Every string in it is already sanitised."""

    kind: Kind
    text: str
    ts: float | None = None
    room: str | None = None
    nick: str | None = None  # the sender, for MSG/OWN/ACTION/PRIVATE
    target: str | None = None  # the recipient of a private message
    mention: bool = False  # mentions my nick: highlight and ring the bell
    earlier: bool = False  # history, not live
    own: bool = False  # I sent it (actions and private messages)


@dataclass(slots=True)
class Output:
    """What one input asks the shells to do."""

    frames: list[Request] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    quit: bool = False
    fatal: str | None = None  # registration failed for good: say this and stop
    reconnect: bool = False  # drop the connection and connect again now

    def info(self, text: str) -> None:
        self.lines.append(Line(Kind.INFO, text))

    def error(self, text: str) -> None:
        self.lines.append(Line(Kind.ERROR, text))

    def extend(self, other: Output) -> None:
        self.frames.extend(other.frames)
        self.lines.extend(other.lines)
        self.quit = self.quit or other.quit
        self.fatal = self.fatal or other.fatal
        self.reconnect = self.reconnect or other.reconnect
