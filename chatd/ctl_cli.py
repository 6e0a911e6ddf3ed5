"""``chatd ctl``: the operator console's command line (the client of chatd.ctl).

    chatd ctl who | rooms | stats | reload
    chatd ctl kick ROOM NICK [REASON]
    chatd ctl ban [--room ROOM] [--duration 1d] MASK [REASON]   (no room: a server ban)
    chatd ctl unban [--room ROOM] MASK
    chatd ctl kill NICK [REASON]
    chatd ctl announce TEXT
    chatd ctl modlog [--room ROOM] [--limit N]

It finds the socket as the server does (``--socket``, else next to ``--db``, else next to
the default history file). Exit status 0: done; 1: the server refused; 2: no server.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from chatd.ctl import default_path
from chatd.history import default_path as default_db
from chatd.moderation import parse_duration

__all__ = ["ctl_main", "request"]


def request(path: str, obj: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one command to the console socket at ``path``; its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(obj).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data.decode())
    assert isinstance(answer, dict)
    return answer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatd ctl", description="act on a running chatd")
    parser.add_argument("--socket", help="the console socket (default: next to the database)")
    parser.add_argument("--db", default="", help="the server's --db, to find its socket")
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("who", "rooms", "stats", "reload"):
        sub.add_parser(name)
    kick = sub.add_parser("kick")
    kick.add_argument("room")
    kick.add_argument("nick")
    kick.add_argument("reason", nargs="*")
    for name in ("ban", "unban"):
        ban = sub.add_parser(name)
        ban.add_argument("--room", help="a room's ban (default: a server ban)")
        if name == "ban":
            ban.add_argument("--duration", help="30m, 2h, 1d … (default: until lifted)")
        ban.add_argument("mask", help="a nick, nick!user@host mask, address or $a:ACCOUNT")
        if name == "ban":
            ban.add_argument("reason", nargs="*")
    kill = sub.add_parser("kill")
    kill.add_argument("nick")
    kill.add_argument("reason", nargs="*")
    announce = sub.add_parser("announce")
    announce.add_argument("text", nargs="+")
    modlog = sub.add_parser("modlog")
    modlog.add_argument("--room")
    modlog.add_argument("--limit", type=int)
    return parser


def ctl_main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    obj: dict[str, Any] = {"cmd": args.cmd}
    for key in ("room", "nick", "mask", "limit"):
        if getattr(args, key, None) is not None:
            obj[key] = getattr(args, key)
    for key in ("reason", "text"):
        if getattr(args, key, None):
            obj[key] = " ".join(getattr(args, key))
    if getattr(args, "duration", None):
        duration = parse_duration(args.duration)
        if duration is None:
            parser.error(f"--duration: {args.duration!r} is not 90, 30s, 10m, 2h, 1d or 1w")
        obj["duration"] = duration
    path = args.socket or default_path("", args.db or str(default_db()), 0)
    assert path is not None
    try:
        answer = request(path, obj)
    except OSError as exc:
        print(
            f"chatd ctl: cannot reach the server at {path}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        _show(answer)
    return 0 if answer.get("ok") else 1


def _show(answer: dict[str, Any]) -> None:
    if not answer.get("ok"):
        print(f"chatd ctl: {answer.get('error')}: {answer.get('message')}", file=sys.stderr)
        return
    if "users" in answer:
        for u in answer["users"]:
            oper = " (operator)" if u["oper"] else ""
            print(
                f"{u['nick']}\t{u['account'] or '-'}\t{u['address']}\t{','.join(u['rooms'])}{oper}"
            )
    elif "rooms" in answer:
        for r in answer["rooms"]:
            print(f"{r['room']}\t{r['members']}\t{r['modes']}\tfounder: {r['founder'] or '-'}")
    elif "entries" in answer:
        for e in answer["entries"]:
            where = f" in {e['room']}" if e["room"] else ""
            why = f" ({e['reason']})" if e["reason"] else ""
            print(f"{e['ts']:.0f}\t{e['by']}: {e['action']} {e['target']}{where}{why}")
    elif "changed" in answer:
        print("reloaded; changed: " + (", ".join(answer["changed"]) or "nothing"))
    elif "message" in answer:
        print(answer["message"])
    else:
        for key, value in answer.items():
            if key != "ok":
                print(f"{key}: {value}")
