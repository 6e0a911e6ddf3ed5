"""IRC's side of accounts: SASL PLAIN, NickServ, PASS, ``account-tag`` (docs/irc.md).

Kept apart from the codec's other parts; they call in here from a few small hooks (the
handler table and PRIVMSG to NickServ in irc_commands, PASS and the SASL state in
irc_session, rendering and the error table in irc_render).

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

from chatd.codecs.irc_session import Ctx, Session
from chatd.codecs.irc_wire import IrcMessage, format_line
from chatd.model import (
    AccountEvent,
    Command,
    DropAccount,
    Identify,
    Register,
    SetPassword,
)

__all__ = ["authenticate", "nickserv", "nickserv_command", "render_account"]
__all__ += ["account_error_lines", "NICKSERV", "ACCOUNT_COMMANDS"]

NICKSERV = "NickServ"
_NICKSERV_MASK = "NickServ!NickServ@services"
_CHUNK = 400
_MAX_SASL_BYTES = 1200  # authzid + authcid + a 200-character password, base64

#: The request ids (``Ctx.command``) of account commands: their errors are rendered here.
ACCOUNT_COMMANDS = frozenset({"AUTHENTICATE", "NICKSERV"})

_HELP = (
    "NickServ keeps registered nicks for their owners. Commands:",
    "REGISTER <password>          register the nick you are using",
    "IDENTIFY [account] <password> log in",
    "PASSWD <old> <new>           change your password",
    "DROP <password>              delete your account",
    "Or log in before connecting: SASL PLAIN, or PASS account:password.",
)


def authenticate(s: Session, msg: IrcMessage) -> list[Command]:
    num = s.numeric
    if not msg.params:
        return s.lines(num("461", "AUTHENTICATE", trailing="Not enough parameters"))
    arg = msg.params[0]
    if arg == "*":
        s.sasl_mechanism, s.sasl_data = None, ""
        return s.lines(num("906", trailing="SASL authentication aborted"))
    if s.logged_in:
        return s.lines(num("907", trailing="You have already authenticated using SASL"))
    if s.sasl_mechanism is None:
        if arg.upper() != "PLAIN":
            return s.lines(
                num("908", "PLAIN", trailing="are available SASL mechanisms"),
                num("904", trailing="SASL authentication failed"),
            )
        s.sasl_mechanism = "PLAIN"
        return s.lines(format_line("AUTHENTICATE", "+"))
    if arg != "+":
        s.sasl_data += arg
    if len(s.sasl_data) > _MAX_SASL_BYTES:
        s.sasl_mechanism, s.sasl_data = None, ""
        return s.lines(num("905", trailing="SASL message too long"))
    if len(arg) == _CHUNK:
        return []  # more follows
    data, s.sasl_mechanism, s.sasl_data = s.sasl_data, None, ""
    try:
        fields = base64.b64decode(data, validate=True).decode().split("\0")
    except (binascii.Error, UnicodeDecodeError):
        fields = []
    if len(fields) != 3 or not fields[1]:
        return s.lines(num("904", trailing="SASL authentication failed: malformed PLAIN"))
    _authzid, account, password = fields
    return [Identify(account, password, rid=Ctx("AUTHENTICATE"))]


def nickserv(s: Session, text: str) -> list[Command]:
    """``PRIVMSG NickServ :<text>``."""
    words = text.split()
    sub = words[0].upper() if words else "HELP"
    args = words[1:]
    rid = Ctx("NICKSERV", sub)
    if sub == "REGISTER" and args:
        return [Register(args[0], rid=rid)]  # ergo: REGISTER <password> [email]
    if sub in ("IDENTIFY", "LOGIN") and 1 <= len(args) <= 2:
        account, password = (args[0], args[1]) if len(args) == 2 else (None, args[0])
        return [Identify(account, password, rid=rid)]
    if sub == "PASSWD" and len(args) == 2:
        return [SetPassword(args[0], args[1], rid=rid)]
    if sub in ("DROP", "UNREGISTER") and len(args) == 1:
        return [DropAccount(args[0], rid=rid)]
    return s.lines(*(_notice(s, line) for line in _HELP))


def nickserv_command(s: Session, msg: IrcMessage) -> list[Command]:
    """``NICKSERV <text>`` / ``NS <text>`` (what ``/ns`` sends in some clients)."""
    return nickserv(s, " ".join(msg.params))


def _notice(s: Session, text: str) -> str:
    return format_line("NOTICE", s.me, trailing=text, source=_NICKSERV_MASK)


def render_account(s: Session, event: AccountEvent, ctx: Ctx | None) -> list[str]:
    num = s.numeric
    nick = s.nick or s.wanted or "*"
    account = event.account or "*"
    lines: list[str] = []
    if event.what in ("registered", "identified"):
        mask = f"{nick}!{nick}@chatd"
        lines.append(num("900", mask, account, trailing=f"You are now logged in as {account}"))
        if ctx is not None and ctx.command == "AUTHENTICATE":
            return lines + [num("903", trailing="SASL authentication successful")]
    elif event.what == "dropped":
        lines.append(num("901", f"{nick}!{nick}@chatd", trailing="You are now logged out"))
    text = {
        "registered": f"Account {account} registered; you are logged in.",
        "identified": f"You are now identified as {account}.",
        "password_changed": "Password changed.",
        "dropped": "Your account is deleted.",
    }.get(event.what, event.what)
    return lines + [_notice(s, text)]


def account_error_lines(s: Session, message: str, ctx: Ctx) -> list[str]:
    """An error answering SASL (904) or NickServ (a NOTICE from NickServ)."""
    if ctx.command == "AUTHENTICATE":
        return [s.numeric("904", trailing=f"SASL authentication failed: {message}")]
    return [_notice(s, message)]
