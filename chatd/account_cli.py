"""``chatd account add|list|delete|passwd``: the operator's hand on the accounts table.

Works whether the server runs or not: it opens the same SQLite file as the server
(``--db``, default the history file) with its own connection, and each change is one
short transaction (chatd.accounts_store). A running server sees a change at the next
login or nick check. Passwords are read from the terminal without echo (getpass), or
from standard input when it is not a terminal (``--password-stdin``-style scripting:
``printf 'secret\\n' | chatd account add ada``); never from the command line, where
``ps`` would show them.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from datetime import datetime

from chatd.accounts_store import AccountStore, AccountStoreError
from chatd.backup import (
    ToolError,
    _db_path,  # one rule for "which file" (the history tools')
)
from chatd.history import default_path
from chatd.names import valid_nick
from chatd.passwords import MAX_PASSWORD, MIN_PASSWORD, SALT_BYTES, hash_password

__all__ = ["account_main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatd account",
        description="Manage chatd accounts (the server may be running or stopped).",
    )
    parser.add_argument(
        "--db", metavar="FILE", default="", help="the server's SQLite file (default: as chatd)"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="take the file from this TOML file's 'db' (as chatd)"
    )
    parser.add_argument(
        "--cluster",
        metavar="URL",
        default="",
        help="a cluster's accounts: its Redis, redis://HOST:PORT/DB (instead of --db)",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("add", "create an account (asks for its password)"),
        ("passwd", "set an account's password (asks for it)"),
        ("delete", "delete an account"),
    ):
        one = sub.add_parser(name, help=text)
        one.add_argument("name", help="the account (and nick) name")
    sub.add_parser("list", help="list accounts")
    return parser


def _read_password(name: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != first:
            raise SystemExit("chatd account: the passwords differ; nothing changed")
        password = first
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise SystemExit(
            f"chatd account: a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )
    return password


def account_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.cluster:
        return _cluster_main(args)
    try:
        path = _db_path(args)  # --db, else the config file's db, else the default
    except ToolError as exc:
        return _fail(exc)
    if path == str(default_path()):
        default_path().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        store = AccountStore(path)
    except AccountStoreError as exc:
        return _fail(exc)
    return _run_and_close(store, args)


def _cluster_main(args: argparse.Namespace) -> int:
    """The same commands on a cluster's accounts in Redis (chatd.cluster_account_admin)."""
    try:
        from chatd.cluster_account_admin import RedisAccounts
    except ImportError:
        return _fail("--cluster needs hiredis: pip install 'chatd[cluster]'")
    try:
        store = RedisAccounts(args.cluster)
    except AccountStoreError as exc:
        return _fail(exc)
    return _run_and_close(store, args)


def _fail(why: object) -> int:
    print(f"chatd account: {why}", file=sys.stderr)
    return 2


def _run_and_close(store: AccountStore, args: argparse.Namespace) -> int:
    """The command on ``store`` (SQLite or a cluster's Redis), which is closed after."""
    try:
        return _run(store, args)
    except AccountStoreError as exc:
        return _fail(exc)
    finally:
        store.close()


def _run(store: AccountStore, args: argparse.Namespace) -> int:
    if args.action == "list":
        for name, created in store.names():
            print(f"{name}\t{datetime.fromtimestamp(created):%Y-%m-%d %H:%M}")
        return 0
    name = args.name
    if args.action == "add":
        if not valid_nick(name):
            print(f"chatd account: {name!r} is not a valid nick", file=sys.stderr)
            return 1
        if store.get(name) is not None:
            print(f"chatd account: {name} exists already", file=sys.stderr)
            return 1
        secret = hash_password(_read_password(name), secrets.token_bytes(SALT_BYTES))
        if not store.add(name, secret):
            print(f"chatd account: {name} exists already", file=sys.stderr)
            return 1
        print(f"account {name} created")
        return 0
    if store.get(name) is None:
        print(f"chatd account: no account {name}", file=sys.stderr)
        return 1
    if args.action == "passwd":
        store.set_secret(name, hash_password(_read_password(name), secrets.token_bytes(SALT_BYTES)))
        print(f"account {name}: password changed")
    else:
        store.delete(name)
        print(f"account {name} deleted")
    return 0
