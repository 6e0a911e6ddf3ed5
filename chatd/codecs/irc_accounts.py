"""IRC's side of accounts: SASL PLAIN, NickServ, PASS, ``account-tag`` (docs/irc.md).

Kept out of the IRC codec's main module; the codec calls in here from a few small hooks
(its handler table, PRIVMSG to NickServ, PASS at registration, and rendering).

- **SASL PLAIN** (IRCv3 ``sasl`` capability, as ergo offers it): ``AUTHENTICATE PLAIN``,
  ``AUTHENTICATE +``, then the base64 of ``authzid NUL authcid NUL password`` in chunks of
  400 bytes (a chunk of exactly 400 means more follows, ``+`` alone ends an exact
  multiple). It becomes ``Identify`` before registration; the hub's answer becomes
  900 + 903, or 904. ``AUTHENTICATE *`` aborts (906); other mechanisms get 908 + 904.
- **NickServ**: ``PRIVMSG NickServ :REGISTER pw`` / ``IDENTIFY [account] pw`` /
  ``PASSWD old new`` / ``DROP pw`` / ``HELP`` (also as ``NICKSERV …`` and ``NS …``),
  answered with NOTICEs from ``NickServ``.
- **PASS** on a server without a server password: the account password (``PASS pw``, or
  ``PASS account:pw``), checked with the registration's ``hello``, as ergo does.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, NamedTuple

from chatd.codecs.irc_wire import IrcMessage, format_line
from chatd.model import (
    AccountEvent,
    Command,
    DropAccount,
    Echo,
    ErrorCode,
    Identify,
    Register,
    SetPassword,
)

if TYPE_CHECKING:
    from chatd.codecs.irc import IrcCodec

__all__ = ["SaslExchange", "authenticate", "nickserv", "nickserv_command", "render_account"]
__all__ += ["render_account_error", "NICKSERV", "ACCOUNT_CODES"]

NICKSERV = "NickServ"
_NICKSERV_MASK = "NickServ!NickServ@services"
_CHUNK = 400
_MAX_SASL_BYTES = 1200  # authzid + authcid + a 200-character password, base64

#: Error codes that concern accounts (rendered here when the request came from SASL or
#: NickServ, or is a refused nick).
ACCOUNT_CODES = frozenset(
    {
        ErrorCode.BAD_LOGIN,
        ErrorCode.THROTTLED,
        ErrorCode.ACCOUNTS_OFF,
        ErrorCode.ACCOUNT_REQUIRED,
        ErrorCode.REGISTRATION_CLOSED,
        ErrorCode.ACCOUNT_EXISTS,
        ErrorCode.NOT_LOGGED_IN,
        ErrorCode.NICK_REGISTERED,
        ErrorCode.NICK_HELD,
    }
)

_HELP = (
    "NickServ keeps registered nicks for their owners. Commands:",
    "REGISTER <password>          register the nick you are using",
    "IDENTIFY [account] <password> log in",
    "PASSWD <old> <new>           change your password",
    "DROP <password>              delete your account",
    "Or log in before connecting: SASL PLAIN, or PASS account:password.",
)


class AccountCtx(NamedTuple):
    """Request id of an account command (like the codec's ``_Ctx``)."""

    command: str  # "AUTHENTICATE" or "NICKSERV"
    target: str = ""


class SaslExchange:
    """One connection's SASL state: which mechanism, and the chunks so far."""

    def __init__(self) -> None:
        self.mechanism: str | None = None
        self.data = ""
        self.done = False


def _lines(*lines: str) -> list[Command]:
    from chatd.codecs.irc import IrcLines  # the codec module imports this one

    return [Echo(IrcLines(lines))]


def authenticate(codec: IrcCodec, msg: IrcMessage) -> list[Command]:
    sasl = codec.sasl
    num = codec._numeric
    if not msg.params:
        return _lines(num("461", "AUTHENTICATE", trailing="Not enough parameters"))
    arg = msg.params[0]
    if arg == "*":
        sasl.mechanism, sasl.data = None, ""
        return _lines(num("906", trailing="SASL authentication aborted"))
    if sasl.done:
        return _lines(num("907", trailing="You have already authenticated using SASL"))
    if sasl.mechanism is None:
        if arg.upper() != "PLAIN":
            return _lines(
                num("908", "PLAIN", trailing="are available SASL mechanisms"),
                num("904", trailing="SASL authentication failed"),
            )
        sasl.mechanism = "PLAIN"
        return _lines(format_line("AUTHENTICATE", "+"))
    if arg != "+":
        sasl.data += arg
    if len(sasl.data) > _MAX_SASL_BYTES:
        sasl.mechanism, sasl.data = None, ""
        return _lines(num("905", trailing="SASL message too long"))
    if len(arg) == _CHUNK:
        return []  # more follows
    data, sasl.mechanism, sasl.data = sasl.data, None, ""
    try:
        fields = base64.b64decode(data, validate=True).decode().split("\0")
    except (binascii.Error, UnicodeDecodeError):
        fields = []
    if len(fields) != 3 or not fields[1]:
        return _lines(num("904", trailing="SASL authentication failed: malformed PLAIN"))
    _authzid, account, password = fields
    return [Identify(account, password, rid=AccountCtx("AUTHENTICATE"))]


def nickserv(codec: IrcCodec, text: str) -> list[Command]:
    """``PRIVMSG NickServ :<text>``."""
    words = text.split()
    sub = words[0].upper() if words else "HELP"
    args = words[1:]
    rid = AccountCtx("NICKSERV", sub)
    if sub == "REGISTER" and args:
        return [Register(args[0], rid=rid)]  # ergo: REGISTER <password> [email]
    if sub in ("IDENTIFY", "LOGIN") and 1 <= len(args) <= 2:
        account, password = (args[0], args[1]) if len(args) == 2 else (None, args[0])
        return [Identify(account, password, rid=rid)]
    if sub == "PASSWD" and len(args) == 2:
        return [SetPassword(args[0], args[1], rid=rid)]
    if sub in ("DROP", "UNREGISTER") and len(args) == 1:
        return [DropAccount(args[0], rid=rid)]
    return _lines(*(_notice(codec, line) for line in _HELP))


def nickserv_command(codec: IrcCodec, msg: IrcMessage) -> list[Command]:
    """``NICKSERV <text>`` / ``NS <text>`` (what ``/ns`` sends in some clients)."""
    return nickserv(codec, " ".join(msg.params))


def _notice(codec: IrcCodec, text: str) -> str:
    return format_line("NOTICE", codec._me, trailing=text, source=_NICKSERV_MASK)


def render_account(codec: IrcCodec, event: AccountEvent, ctx: object) -> list[str]:
    num = codec._numeric
    nick = codec.nick or codec.wanted or "*"
    account = event.account or "*"
    lines: list[str] = []
    if event.what in ("registered", "identified"):
        mask = f"{nick}!{nick}@chatd"
        lines.append(num("900", mask, account, trailing=f"You are now logged in as {account}"))
        if isinstance(ctx, AccountCtx) and ctx.command == "AUTHENTICATE":
            return lines + [num("903", trailing="SASL authentication successful")]
    elif event.what == "dropped":
        lines.append(num("901", f"{nick}!{nick}@chatd", trailing="You are now logged out"))
    text = {
        "registered": f"Account {account} registered; you are logged in.",
        "identified": f"You are now identified as {account}.",
        "password_changed": "Password changed.",
        "dropped": "Your account is deleted.",
    }.get(event.what, event.what)
    return lines + [_notice(codec, text)]


def render_account_error(codec: IrcCodec, code: str, message: str, ctx: object) -> list[str] | None:
    """The lines for an account error, or None to let the codec render it as usual."""
    num = codec._numeric
    if isinstance(ctx, AccountCtx):
        if ctx.command == "AUTHENTICATE":
            return [num("904", trailing=f"SASL authentication failed: {message}")]
        return [_notice(codec, message)]
    if code in (ErrorCode.NICK_REGISTERED, ErrorCode.NICK_HELD) and ctx is not None:
        target = getattr(ctx, "target", "") or "*"
        if code == ErrorCode.NICK_HELD and getattr(ctx, "command", "") == "PRIVMSG":
            return [num("401", target, trailing=message)]
        return [num("433", target, trailing=message)]
    if code in (ErrorCode.BAD_LOGIN, ErrorCode.THROTTLED, ErrorCode.ACCOUNT_REQUIRED):
        return [num("464", trailing=message)]
    return None
