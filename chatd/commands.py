"""The commands of the vocabulary (:mod:`chatd.model`): what a client asked for.

Import these from :mod:`chatd.model`, which re-exports them; this module is a second
file for the same vocabulary, so that ``model.py`` stays readable. A command is already
parsed by its codec and names no socket and no wire format; ``Disconnected`` is how "the
peer went away" enters the hub through the same door as everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatd.events import Event

__all__ = [
    "Command",
    "Hello",
    "Join",
    "Part",
    "Say",
    "PrivMsg",
    "Nick",
    "Who",
    "Rooms",
    "Users",
    "Stats",
    "Topic",
    "Ping",
    "Quit",
    "History",
    "Away",
    "Whois",
    "Disconnected",
    "Echo",
    "Verified",
    "Register",
    "Identify",
    "SetPassword",
    "DropAccount",
]


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every command. ``rid`` is the client's request id, echoed on replies."""

    rid: object = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class Hello(Command):
    nick: str
    password: str | None = None
    # Rooms to join right after a successful registration (text mode lands in #lobby).
    autojoin: tuple[str, ...] = ()
    # What IRC's USER says (username, real name); empty: the nick is shown instead.
    user: str = ""
    realname: str = ""
    resume: str | None = None  # the token of a dropped session: take it back
    account: str | None = None  # log in to this account (default: the nick's)
    account_password: str | None = None  # never reaches the hub: see Verified
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class Join(Command):
    room: str
    key: str | None = None  # a +k room's key


@dataclass(frozen=True, slots=True)
class Part(Command):
    room: str | None  # None: the current room (text mode's bare /part)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Say(Command):
    room: str | None  # None: the current room (text mode's plain lines)
    text: str
    action: bool = False
    notice: bool = False  # IRC's NOTICE to a channel: never to be answered automatically


@dataclass(frozen=True, slots=True)
class PrivMsg(Command):
    to: str
    text: str
    notice: bool = False
    action: bool = False  # a private /me


@dataclass(frozen=True, slots=True)
class Nick(Command):
    nick: str
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class Who(Command):
    room: str | None


@dataclass(frozen=True, slots=True)
class Rooms(Command):
    pass


@dataclass(frozen=True, slots=True)
class Users(Command):
    """Who can I see? Everybody sharing a room with me, and me (IRC's ``WHO *``)."""


@dataclass(frozen=True, slots=True)
class Stats(Command):
    """How many users, connections and rooms are there (IRC's ``LUSERS``)?"""


@dataclass(frozen=True, slots=True)
class Topic(Command):
    room: str | None
    topic: str | None  # None: ask for the topic instead of setting it


@dataclass(frozen=True, slots=True)
class Ping(Command):
    token: str = ""


@dataclass(frozen=True, slots=True)
class Quit(Command):
    reason: str = ""


@dataclass(frozen=True, slots=True)
class History(Command):
    room: str | None
    before: int | None = None
    after: int | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Away(Command):
    message: str | None  # None or "": back


@dataclass(frozen=True, slots=True)
class Whois(Command):
    nick: str


@dataclass(frozen=True, slots=True)
class Disconnected(Command):
    """The transport lost the peer (EOF, reset, timeout, limit). Never sent by a client."""

    reason: str = "connection closed"


@dataclass(frozen=True, slots=True)
class Echo(Command):
    """Not for the hub: a codec's own answer (``/help``) sent straight back to its client."""

    event: Event


# --------------------------------------------------------------------------- accounts
# (docs/accounts.md) Passwords stop at the server's account gate (chatd.accounts): it
# checks or hashes them, and hands the hub the same command with the password fields
# emptied and ``verified`` filled in. The hub trusts ``verified`` only: codecs never set it.


@dataclass(frozen=True, slots=True)
class Verified:
    """What the account gate found out for one command (set by the server only)."""

    owner: str | None = None  # the account registered under the nick concerned
    account: str | None = None  # credentials were given and are right: this account
    error: str | None = None  # credentials were given and refused (or throttled)
    message: str = ""
    secret: bytes | None = None  # a new password's hash record, opaque to the hub


@dataclass(frozen=True, slots=True)
class Register(Command):
    """Register the nick one holds as an account, with this password."""

    password: str | None
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class Identify(Command):
    """Log in (also before registration: IRC SASL). ``account`` None: the nick's."""

    account: str | None
    password: str | None
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class SetPassword(Command):
    password: str | None  # the current one
    new_password: str | None
    verified: Verified | None = None


@dataclass(frozen=True, slots=True)
class DropAccount(Command):
    password: str | None
    verified: Verified | None = None
