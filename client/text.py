"""Pure text helpers shared by the client's modules: sanitising, names, addresses, encoding."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

# The name rules are the server's own (pure, stdlib-only): the client cannot drift from them.
from chatd import names
from chatd.config import DEFAULT_PORT

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_ROOM",
    "MAX_NICK",
    "default_nick",
    "encode",
    "irc_fold",
    "normalize_room",
    "parse_address",
    "sanitize",
    "valid_nick",
]

DEFAULT_ROOM = names.LOBBY
MAX_NICK = names.NICK_MAX

_NICK_CHARS = re.compile(r"[^A-Za-z0-9_\-\[\]\\^{}|]")


def irc_fold(name: str) -> str:
    """Case-fold a nick or room exactly as the server compares them (its own rule)."""
    return names.fold(name)


def _is_unsafe(ch: str) -> bool:
    code = ord(ch)
    if code < 0x20:
        return ch not in "\n\t"
    if 0x7F <= code < 0xA0:  # DEL and the C1 controls (CSI 0x9b among them)
        return True
    if names.is_bidi_control(ch):  # reorders what follows it on screen
        return True
    return unicodedata.category(ch) == "Cs"  # lone surrogates cannot be written


def sanitize(text: str, *, newlines: bool = True) -> str:
    """Make untrusted text harmless to show: controls become U+FFFD, tabs spaces.

    Args:
        text: anything received from the server.
        newlines: keep ``\\n`` (message bodies); otherwise it becomes U+FFFD too.
    """
    if text.isprintable():  # the common case: nothing to replace
        return text
    out = []
    for ch in text:
        if ch == "\t":
            out.append("    ")
        elif ch == "\n" and newlines:
            out.append(ch)
        elif ch == "\n" or _is_unsafe(ch):
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def default_nick(login: str) -> str:
    """Turn a login name into a valid nick (invalid characters become ``_``)."""
    nick = _NICK_CHARS.sub("_", login)[:MAX_NICK]
    if not nick or nick[0].isdigit() or nick[0] == "-":
        nick = ("u" + nick)[:MAX_NICK]
    return nick


def valid_nick(nick: str) -> bool:
    return names.valid_nick(nick)


def normalize_room(name: str) -> str | None:
    """``lobby`` or ``#lobby`` -> ``#lobby``; None if it can never be a room name."""
    name = names.nfkc(name)  # as the server does: ＃ｌｏｂｂｙ and NFD accents fold
    room = name if name.startswith("#") else "#" + name
    return room if names.valid_room(room) else None


def parse_address(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (IPv6 as ``[::1]:PORT`` or bare ``::1``) -> (host, port).

    Raises:
        ValueError: with a sentence fit to show the user.
    """
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ValueError(f"bad address {text!r}: no host")
    if not port_text and not text.endswith(":"):
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}: expected a number from 1 to 65535")
    return host, int(port_text)


def encode(frame: dict[str, Any]) -> bytes:
    """One request as one JSON line (UTF-8, compact, newline-terminated)."""
    return (json.dumps(frame, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
