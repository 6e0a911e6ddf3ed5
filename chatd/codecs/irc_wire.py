"""The IRC line grammar, and nothing else: parse a line, format a line, split a text.

Pure functions over ``bytes`` and ``str`` (RFC 1459/2812 as the IRCv3 "Modern IRC"
document describes them, with message tags). :mod:`chatd.codecs.irc` maps these lines
to and from the hub's commands and events.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["IrcMessage", "parse_line", "format_line", "split_text", "MAX_LINE_BYTES", "MAX_PARAMS"]

MAX_LINE_BYTES = 510  # RFC 1459: 512 including CRLF; tags are extra (IRCv3 message-tags)
MAX_PARAMS = 15

_TAG_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPE = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})
_UNSAFE = str.maketrans({"\r": " ", "\n": " ", "\0": " "})


class IrcMessage(NamedTuple):
    """One parsed line. ``command`` is upper-case; ``params`` include the trailing one."""

    command: str
    params: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    source: str | None = None


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8: almost always a client still set to Latin-1/CP1252. Read it as that
        # rather than refusing the line; undefined bytes become U+FFFD.
        return line.decode("cp1252", "replace")


def _unescape_tag(value: str) -> str:
    out = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")  # a lone trailing backslash is dropped (IRCv3)
            out.append(_TAG_UNESCAPE.get(nxt, nxt))
        else:
            out.append(char)
    return "".join(out)


def parse_line(line: bytes) -> IrcMessage | None:
    """Parse one frame (without CRLF). Returns None for a line with no command.

    Tolerant in the ways real clients need: runs of spaces between parameters, a missing
    trailing parameter, tags without values. The command is returned even if it is not
    one chatd knows; the caller answers 421.
    """
    text = _decode(line).lstrip(" ")
    tags: list[tuple[str, str]] = []
    if text.startswith("@"):
        raw_tags, _, text = text[1:].partition(" ")
        for item in raw_tags.split(";"):
            key, _, value = item.partition("=")
            if key:
                tags.append((key, _unescape_tag(value)))
        text = text.lstrip(" ")
    source = None
    if text.startswith(":"):
        source, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
    command, _, rest = text.partition(" ")
    if not command:
        return None
    params: list[str] = []
    while True:
        rest = rest.lstrip(" ")
        if not rest:
            break
        if rest.startswith(":") or len(params) == MAX_PARAMS - 1:
            params.append(rest[1:] if rest.startswith(":") else rest)
            break
        param, _, rest = rest.partition(" ")
        params.append(param)
    return IrcMessage(command.upper(), tuple(params), tuple(tags), source)


def _fit(head: str, trailing: str) -> str:
    """``head :trailing``, the trailing part shortened (at a character) to fit 510 bytes."""
    room = MAX_LINE_BYTES - len(head.encode()) - 2
    data = trailing.encode()
    if len(data) > room:
        trailing = data[: max(room, 0)].decode("utf-8", "ignore")
    return f"{head} :{trailing}"


def format_line(
    command: str,
    *params: str,
    trailing: str | None = None,
    source: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """One IRC line without CRLF. ``params`` must be single words; ``trailing`` may be
    anything (CR, LF and NUL become spaces) and is shortened to keep the line legal."""
    head = " ".join(
        ((f":{source}",) if source else ())
        + (command,)
        + tuple(param.translate(_UNSAFE) for param in params)
    )
    line = head if trailing is None else _fit(head, trailing.translate(_UNSAFE))
    if tags:
        line = (
            "@"
            + ";".join(k + ("=" + v.translate(_TAG_ESCAPE) if v else "") for k, v in tags.items())
            + " "
            + line
        )
    return line


def split_text(text: str, budget: int) -> list[str]:
    """Pieces of ``text`` of at most ``budget`` UTF-8 bytes each, one or more per line.

    Cuts at the last space in the second half of the budget when there is one, else at a
    character boundary; empty lines are left out (IRC cannot carry them).
    """
    budget = max(budget, 4)  # a UTF-8 character is at most 4 bytes
    pieces: list[str] = []
    for line in text.split("\n"):
        data = line.encode()
        while len(data) > budget:
            cut = budget
            while data[cut] & 0xC0 == 0x80:  # not in the middle of a character
                cut -= 1
            space = data.rfind(b" ", budget // 2, cut + 1)
            if space > 0:
                pieces.append(data[:space].decode())
                data = data[space + 1 :]
            else:
                pieces.append(data[:cut].decode())
                data = data[cut:]
        if data.strip():
            pieces.append(data.decode())
    return pieces
