"""``chat [HOST[:PORT]] [--nick NAME] [--room #ROOM] [--line] [--log-file PATH]``.

The only module that prints: a start-up failure is one sentence on stderr and exit
status 1 (2 for bad arguments); everything else the user sees goes through the prompt.
Logging goes to ``--log-file`` or nowhere, never to the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from chatd import names
from chatd.config import DEFAULT_PORT
from client import app, core, discovery, trust, ui


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="chat", description="Terminal client for a chatd server.")
    parser.add_argument(
        "address",
        nargs="?",
        help="HOST[:PORT] of the server (default: the one server found on the LAN, a list "
        f"if several answer, else localhost:{DEFAULT_PORT}; see docs/discovery.md); for a "
        "chatd cluster, several separated by commas: the next is tried when one fails",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the chatd servers on the LAN and exit"
    )
    parser.add_argument("--host", help="server host (overrides ADDRESS)")
    parser.add_argument("--port", type=int, help="server port (overrides ADDRESS)")
    parser.add_argument("--nick", help="nick to use (default: from your login name)")
    parser.add_argument(
        "--room",
        help=f"room to join first (default: the rooms you were in on this server last "
        f"time, else {core.DEFAULT_ROOM})",
    )
    parser.add_argument("--log-file", type=Path, help="write a debug log to this file")
    parser.add_argument(
        "--password-file",
        type=Path,
        help="file whose first line is the server's password (or set CHATD_PASSWORD; "
        "never on the command line, where ps would show it)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="connect without TLS (for servers that do not offer it; a password is never "
        "sent in plain text to a server that offered TLS before)",
    )
    parser.add_argument(
        "--trust",
        action="store_true",
        help="trust a server met for the first time without asking (see docs/tls.md)",
    )
    parser.add_argument(
        "--fingerprint",
        metavar="SHA256:...",
        help="trust the server only if its certificate has this fingerprint (the one chatd "
        "printed at start-up)",
    )
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument(
        "--full-screen",
        action="store_true",
        help="full-screen layout (the default on a terminal): a buffer per room and "
        "conversation, a room bar with unread counts, a member list (F2)",
    )
    layout.add_argument(
        "--line",
        action="store_true",
        help="line mode: messages printed above one prompt line, in the terminal's own "
        "scroll-back (the default when stdout is not a terminal)",
    )
    parser.add_argument(
        "--no-history-file",
        action="store_true",
        help="do not keep input history (or the rooms you were in) on disk",
    )
    return parser.parse_args(argv), parser


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER
        return "guest"


def _setup_logging(path: Path | None) -> None:
    root = logging.getLogger()
    # Without a handler, logging's last resort writes warnings to stderr: over the prompt.
    logging.lastResort = None
    if path is None:
        root.addHandler(logging.NullHandler())
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def _discovery_line(fingerprint: str, announced: str | None) -> str:
    """What LAN discovery saw, next to the certificate's fingerprint (docs/discovery.md)."""
    if announced is None:
        return ""
    if announced == fingerprint:
        return "The server announced on the LAN with this same fingerprint.\n"
    return (
        f"WARNING: the server found on the LAN announced {announced},\n"
        "a different fingerprint: this may be an impostor.\n"
    )


def _trust_asker(announced: str | None) -> Callable[[str, str], Awaitable[bool]]:
    async def ask(server: str, fingerprint: str) -> bool:
        return await _ask_trust(server, fingerprint, announced)

    return ask


async def _ask_trust(server: str, fingerprint: str, announced: str | None = None) -> bool:
    """First contact with a server: show its fingerprint and ask, as ssh does."""
    print(
        f"The identity of {server} is not known yet.\n"
        f"Its certificate fingerprint is {fingerprint}\n"
        + _discovery_line(fingerprint, announced)
        + "Compare it with the one chatd printed when it started (ask its owner)."
    )
    try:
        answer = await asyncio.to_thread(input, "Trust this server and connect? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _discover(host: str, port: int) -> tuple[str, int, str | None] | None:
    """No address given: the server found on the LAN (docs/discovery.md), with the TLS
    fingerprint it announced; (host, port) when nothing answered; None if none was picked."""
    found = discovery.find_server((host, port), print, input)
    if found is None:
        print("chat: no server picked", file=sys.stderr)
        return None
    if isinstance(found, tuple):
        return found[0], found[1], None
    return found.host, found.port, found.fingerprint


def main(argv: list[str] | None = None) -> int:
    args, parser = _parse(argv)
    if args.list:
        return discovery.list_servers(print)
    try:
        first, *rest = (args.address or "localhost").split(",")
        host, port = core.parse_address(first)
        others = tuple(core.parse_address(more) for more in rest)
    except ValueError as exc:
        parser.error(str(exc))
    announced: str | None = None  # the TLS fingerprint a LAN announcement carried
    if args.address is None and args.host is None and args.port is None:
        picked = _discover(host, port)
        if picked is None:
            return 1
        host, port, announced = picked
    host = args.host or host
    port = args.port if args.port is not None else port
    if not 0 < port < 65536:
        parser.error(f"bad port {port}: expected a number from 1 to 65535")
    nick = args.nick or core.default_nick(_login())
    if not core.valid_nick(nick):
        parser.error(f"not a valid nick: {nick!r} ({names.NICK_RULE})")
    if args.fingerprint is not None and not args.fingerprint.startswith("SHA256:"):
        parser.error(
            f"a fingerprint looks like SHA256:... (as chatd prints it), not {args.fingerprint!r}"
        )
    if args.plain and (args.trust or args.fingerprint):
        parser.error("--plain cannot be combined with --trust or --fingerprint")
    room = core.normalize_room(args.room or core.DEFAULT_ROOM)
    if room is None:
        parser.error(f"not a valid room name: {args.room!r}")
    try:
        _setup_logging(args.log_file)
    except OSError as exc:
        print(f"chat: cannot write the log file {args.log_file}: {exc.strerror}", file=sys.stderr)
        return 1
    password = os.environ.get("CHATD_PASSWORD") or None
    if args.password_file is not None:
        try:
            lines = args.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            print(f"chat: cannot read {args.password_file}: {exc.strerror}", file=sys.stderr)
            return 1
        password = lines[0] if lines else ""
    opts = app.Options(
        host=host,
        port=port,
        nick=nick,
        room=room,
        room_explicit=args.room is not None,
        full_screen=args.full_screen or (not args.line and sys.stdout.isatty()),
        rooms_file=None if args.no_history_file else ui.history_path().with_name("rooms.json"),
        history_file=None if args.no_history_file else ui.history_path(),
        password=password,
        tls=trust.Policy(
            plain=args.plain,
            trust=args.trust,
            fingerprint=args.fingerprint,
            has_password=password is not None,
        ),
        known_servers=trust.known_servers_path(ui.history_path().parent),
        ask_trust=_trust_asker(announced) if sys.stdin.isatty() else None,
        others=others,
    )
    try:
        return asyncio.run(app.run(opts))
    except app.Fatal as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the prompt is up (e.g. while connecting)
        return 130


if __name__ == "__main__":
    sys.exit(main())
