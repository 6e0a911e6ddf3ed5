"""Slash commands: one function each, in a table (:data:`COMMANDS`).

A command gets the state, the :class:`~client.values.Output` to fill and the text after
its name. Adding one (``/login``, ``/kick`` …) is a function and a row in the table; the
help text, the completion and the dispatch all come from the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from chatd import names
from client import moderation, sync
from client.text import irc_fold, normalize_room, sanitize, valid_nick

if TYPE_CHECKING:
    from client.core import ChatState
    from client.values import Output, Request

__all__ = ["ALIASES", "COMMANDS", "DEFAULT_HISTORY", "Command", "find"]

DEFAULT_HISTORY = 20


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    usage: str
    help: str
    run: Callable[[ChatState, Output, str], None]


def usage(out: Output, name: str) -> None:
    command = find(name)
    out.error(f"usage: {command.usage if command else '/' + name}")


def _join(state: ChatState, out: Output, rest: str) -> None:
    room = normalize_room(rest.split()[0]) if rest else None
    if room is None:
        usage(out, "join")
        return
    key = irc_fold(room)
    if key in state.rooms and state.rooms[key].joined:
        state.current = key
        out.info(f"now talking in {state.rooms[key].name}")
        return
    state.explicit_join = key
    if state.registered:
        state.asked.add(key)
    state.send(out, {"op": "join", "room": room})


def _part(state: ChatState, out: Output, rest: str) -> None:
    first, _, reason = rest.partition(" ")
    if first.startswith("#"):
        room = state.rooms.get(irc_fold(first))
        if room is None:
            out.error(f"you are not in {sanitize(first, newlines=False)}")
            return
    else:
        room, reason = state.need_room(out), rest
        if room is None:
            return
    frame: Request = {"op": "part", "room": room.name}
    if reason.strip():
        frame["reason"] = reason.strip()
    state.send(out, frame)


def _switch(state: ChatState, out: Output, rest: str) -> None:
    room = normalize_room(rest.split()[0]) if rest else None
    if room is None:
        usage(out, "switch")
    elif irc_fold(room) not in state.rooms:
        out.error(f"you are not in {room}; /join it first")
    else:
        state.current = irc_fold(room)
        out.info(f"now talking in {state.rooms[state.current].name}")


def _msg(state: ChatState, out: Output, rest: str) -> None:
    to, _, text = rest.partition(" ")
    text = text.strip()
    if not to or not text:
        usage(out, "msg")
    elif not valid_nick(to):
        out.error(f"not a valid nick: {sanitize(to, newlines=False)}")
    elif state.text_ok(out, text):
        state.send(out, {"op": "msg", "to": to, "text": text})


def _me(state: ChatState, out: Output, rest: str) -> None:
    if not rest:
        usage(out, "me")
    else:
        state.say(out, rest, action=True)


def _nick(state: ChatState, out: Output, rest: str) -> None:
    if not rest or " " in rest:
        usage(out, "nick")
    elif not valid_nick(rest):
        out.error(f"not a valid nick: {sanitize(rest, newlines=False)} ({names.NICK_RULE})")
    else:
        state.send(out, {"op": "nick", "nick": rest})


def _who(state: ChatState, out: Output, rest: str) -> None:
    if rest:
        room = normalize_room(rest.split()[0])
        if room is None:
            usage(out, "who")
            return
        state.send(out, {"op": "who", "room": room})
    elif (current := state.need_room(out)) is not None:
        state.send(out, {"op": "who", "room": current.name})


def _rooms(state: ChatState, out: Output, rest: str) -> None:
    state.send(out, {"op": "rooms"})


def _topic(state: ChatState, out: Output, rest: str) -> None:
    room = state.need_room(out)
    if room is None:
        return
    frame: Request = {"op": "topic", "room": room.name}
    if rest:
        frame["topic"] = rest
    state.send(out, frame)


def _history(state: ChatState, out: Output, rest: str) -> None:
    most = state.limits.history_max_limit
    if rest and (not rest.isdigit() or not 0 < int(rest) <= most):
        out.error(f"usage: /history [N], N from 1 to {most}")
        return
    room = state.need_room(out)
    if room is None:
        return
    limit = int(rest) if rest else min(DEFAULT_HISTORY, most)
    request = sync.history_request(state, room, "older", before=room.oldest_mid, limit=limit)
    state.send(out, request)


def _away(state: ChatState, out: Output, rest: str) -> None:
    state.send(out, {"op": "away", "message": rest} if rest else {"op": "away"})


def _whois(state: ChatState, out: Output, rest: str) -> None:
    if not rest or not valid_nick(rest):
        usage(out, "whois")
    else:
        state.send(out, {"op": "whois", "nick": rest})


def _register(state: ChatState, out: Output, rest: str) -> None:
    if not rest or " " in rest:
        usage(out, "register")
    else:
        state.send(out, {"op": "register", "password": rest})


def _identify(state: ChatState, out: Output, rest: str) -> None:
    words = rest.split()
    if len(words) not in (1, 2):
        usage(out, "identify")
        return
    frame: Request = {"op": "identify", "password": words[-1]}
    if len(words) == 2:
        frame["account"] = words[0]
    state.send(out, frame)


def _passwd(state: ChatState, out: Output, rest: str) -> None:
    words = rest.split()
    if len(words) != 2:
        usage(out, "passwd")
    else:
        state.send(out, {"op": "passwd", "password": words[0], "new_password": words[1]})


def _unregister(state: ChatState, out: Output, rest: str) -> None:
    if not rest or " " in rest:
        usage(out, "unregister")
    else:
        state.send(out, {"op": "unregister", "password": rest})


def _reconnect(state: ChatState, out: Output, rest: str) -> None:
    out.reconnect = True
    out.info("reconnecting now")


def _moderate(name: str) -> Callable[[ChatState, Output, str], None]:
    """/kick, /ban, /op … (client/moderation.py builds the request)."""

    def run(state: ChatState, out: Output, rest: str) -> None:
        room = state.current_room
        request = moderation.frame(name, rest, room.name if room else None)
        if isinstance(request, str):
            out.error(request)
        else:
            state.send(out, cast("Request", request))  # ("args" of mode is a list)

    return run


def _quit(state: ChatState, out: Output, rest: str) -> None:
    out.quit = True
    if state.registered:
        out.frames.append({"op": "quit", "reason": rest} if rest else {"op": "quit"})


def _help(state: ChatState, out: Output, rest: str) -> None:
    out.info("commands:")
    for command in COMMANDS:
        out.info(f"  {command.usage:<24} {command.help}")
    out.info("  //text                   say /text literally")
    out.info("Tab completes commands, nicks and rooms; Up/Down recall earlier input.")


COMMANDS: tuple[Command, ...] = (
    Command("join", "/join #room", "join a room and make it current", _join),
    Command("part", "/part [#room] [reason]", "leave a room (default: the current one)", _part),
    Command(
        "switch", "/switch #room", "make a joined room current (also Ctrl-N / Ctrl-P)", _switch
    ),
    Command("msg", "/msg NICK text", "send a private message", _msg),
    Command("me", "/me text", "an action in the current room", _me),
    Command("nick", "/nick NAME", "change your nick", _nick),
    Command("who", "/who [#room]", "list the members of a room", _who),
    Command("rooms", "/rooms", "list the rooms on the server", _rooms),
    Command("topic", "/topic [text]", "show or set the current room's topic", _topic),
    Command(
        "history", "/history [N]", f"show N earlier messages (default {DEFAULT_HISTORY})", _history
    ),
    Command("away", "/away [text]", "set or clear an away message", _away),
    Command("whois", "/whois NICK", "where a nick is, and whether it is away", _whois),
    # accounts (docs/accounts.md); client/ui.py keeps these lines out of the history file
    Command("register", "/register PASSWORD", "register your nick as an account", _register),
    Command("identify", "/identify [ACCOUNT] PASSWORD", "log in to your account", _identify),
    Command("passwd", "/passwd OLD NEW", "change your account's password", _passwd),
    Command("unregister", "/unregister PASSWORD", "delete your account", _unregister),
    Command("reconnect", "/reconnect", "drop the connection and connect again now", _reconnect),
    # moderation (docs/moderation.md)
    *(Command(name, *moderation.USAGE[name], _moderate(name)) for name in moderation.USAGE),
    Command("quit", "/quit [reason]", "leave (Ctrl-D too)", _quit),
    Command("help", "/help", "this list", _help),
)
ALIASES = {
    "go": "switch",
    "j": "join",
    "leave": "part",
    "close": "part",
    "query": "msg",
    "exit": "quit",
}
_BY_NAME = {c.name: c for c in COMMANDS}


def find(name: str) -> Command | None:
    """The command called ``name`` (any case, aliases too), or None."""
    name = name.lower()
    return _BY_NAME.get(ALIASES.get(name, name))
