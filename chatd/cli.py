"""Command line: flags and TOML → Config, logging, the stores, ``chatd ctl reload``.

Every :class:`~chatd.config.Config` field is a flag (``max_line_bytes`` is
``--max-line-bytes``), and ``--config FILE`` may set any of them by name. The password is
read from ``--password-file`` or ``CHATD_PASSWORD``, never from the command line, where
``ps`` would show it. :func:`main` opens the stores (history, accounts, moderation) or
the cluster link, builds the :class:`~chatd.server.Server`, and hands it to
:func:`chatd.startup.serve` (ports, TLS, console, signals, exit status).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from dataclasses import MISSING, fields, replace
from pathlib import Path

from chatd import __version__
from chatd.accounts_store import AccountStore, AccountStoreError
from chatd.certs import TlsUnavailable
from chatd.config import DEFAULT_PORT, Config, ConfigError, field_types, parse_duration
from chatd.fdlimit import raise_fd_limit
from chatd.history import MEMORY, HistoryError, open_store
from chatd.history import default_path as data_path
from chatd.moderation_store import ModerationStore
from chatd.server import Server
from chatd.startup import serve as _serve
from chatd.startup import start_tls as _start_tls

__all__ = ["main", "build_parser", "config_from_args"]

logger = logging.getLogger("chatd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatd",
        description="A LAN chat server. People join with the 'chat' client, or with "
        f"'nc HOST {DEFAULT_PORT}' and type. See docs/protocol.md.",
        epilog="Every option may also be set in a TOML file given with --config, by its "
        "name with underscores (max_line_bytes = 8192). Flags win over the file. "
        "Set a server password with --password-file or CHATD_PASSWORD. "
        "Tools for the history file, safe while the server runs: 'chatd backup PATH', "
        "'chatd export --room ROOM' (chatd backup --help). Accounts, also while it runs: "
        "'chatd account add|list|passwd|delete NAME' (docs/accounts.md).",
    )
    parser.add_argument("--version", action="version", version=f"chatd {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings")
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help="file whose first line is the server password (no password: anyone may join)",
    )
    kinds = field_types()
    for f in fields(Config):
        if not f.metadata.get("cli", True):
            continue
        kind = kinds[f.name][0]
        default = f.default if f.default is not MISSING else None
        if kind is bool:  # --announce / --no-announce
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f.metadata.get("help", "")
                + ("" if default is None else f" (default: {'on' if default else 'off'})"),
            )
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            default=None,
            metavar={int: "N", float: "SECONDS" if "seconds" in f.name else "N"}.get(
                kind, f.name.split("_")[-1].upper()
            ),
            help=f.metadata.get("help", "") + ("" if default == "" else f" (default: {default})"),
        )
    return parser


def config_from_args(args: argparse.Namespace, environ: dict[str, str]) -> Config:
    """Defaults, then the TOML file, then flags, then the password.

    Raises:
        ConfigError: an unreadable file or a bad value (the message names it).
    """
    config = Config()
    if args.config:
        path = Path(args.config)
        try:
            with path.open("rb") as fh:
                values = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        password_file = values.pop("password_file", None)
        if "password" in values:
            raise ConfigError(f"{path}: put the password in a file and set password_file")
        config = Config.from_mapping(values, config)
        if password_file and not args.password_file:
            args.password_file = password_file
    flags = {
        f.name: getattr(args, f.name)
        for f in fields(Config)
        if f.metadata.get("cli", True) and getattr(args, f.name, None) is not None
    }
    config = Config.from_mapping(flags, config)
    password = environ.get("CHATD_PASSWORD") or None
    if args.password_file:
        try:
            text = Path(args.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read password file {args.password_file}: {exc.strerror}"
            ) from None
        password = text.splitlines()[0] if text.strip() else None
        if password is None:
            raise ConfigError(f"password file {args.password_file} is empty")
    return Config.from_mapping({"password": password}, config)


def _raise_fd_limit(wanted: int) -> None:
    """Lift the open-file limit towards ``wanted``; warn if it stays below."""
    soft = raise_fd_limit(wanted)
    if soft < wanted:
        logger.warning(
            "open-file limit is %d, below max_clients; beyond it new connections "
            "wait until others leave",
            soft,
        )


# `chatd NAME ...` runs a tool instead of the server. Flags all start with "--", so a
# first word that is one of these can never be a server flag (or its value).
SUBCOMMANDS = ("backup", "export")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["account"]:  # chatd account add|list|delete|passwd (chatd/account_cli.py)
        from chatd.account_cli import account_main

        return account_main(argv[1:])
    if argv[:1] == ["ctl"]:  # the operator console (chatd/ctl_cli.py)
        from chatd.ctl_cli import ctl_main

        return ctl_main(argv[1:])
    if argv and argv[0] in SUBCOMMANDS:
        from chatd.backup import main as tool_main

        return tool_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, dict(os.environ))
        oper_credentials = read_oper_credentials(config.oper_password_file)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    _raise_fd_limit(config.max_clients + 64)

    if config.cluster:
        return _main_cluster(config, args, oper_credentials)
    try:
        history = open_store(
            config.db,
            max_age=parse_duration(config.history_max_age),
            max_per_room=config.history_max_per_room,
        )
    except HistoryError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 2
    next_mid = history.last_mid() + 1
    print(
        f"chatd: room history in {history.path} (message ids continue after {next_mid - 1})",
        flush=True,
    )

    cert_dir = data_path().parent if history.path == MEMORY else Path(history.path).parent
    try:
        tls = _start_tls(config, cert_dir)
    except TlsUnavailable as exc:
        print(f"chatd: cannot turn TLS on: {exc}", file=sys.stderr)
        history.close()
        return 2
    try:
        accounts = AccountStore(history.path) if config.accounts != "off" else None
    except AccountStoreError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        history.close()
        return 2
    moderation = ModerationStore(history.path)
    server = Server(
        config,
        history=history,
        next_mid=next_mid,
        accounts=accounts,
        moderation=moderation,
        oper_credentials=oper_credentials,
    )
    try:
        return _serve(config, server, history, tls, lambda: _reload(server, args))
    finally:
        moderation.close()
        if accounts is not None:
            accounts.close()


def _main_cluster(
    config: Config, args: argparse.Namespace, oper_credentials: dict[str, str]
) -> int:
    """``--cluster``: history and shared state in Redis (chatd/cluster.py, hiredis)."""
    try:
        from chatd.cluster import Cluster
        from chatd.redis_link import parse_url

        parse_url(config.cluster)
    except ImportError:
        print("chatd: --cluster needs hiredis: pip install 'chatd[cluster]'", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"chatd: --cluster: {exc}", file=sys.stderr)
        return 2
    # The nick hold (docs/accounts.md) is single-node: a cluster mirrors other nodes'
    # users in each hub, and their departures must show at once.
    config = replace(config, nick_hold_seconds=0)
    try:  # (no history database: the certificate is kept in the default data directory)
        tls = _start_tls(config, data_path().parent)
    except TlsUnavailable as exc:
        print(f"chatd: cannot turn TLS on: {exc}", file=sys.stderr)
        return 2
    server = Server(config, oper_credentials=oper_credentials)
    cluster = Cluster(server)
    cluster.start()
    print(f"chatd: cluster node {cluster.node} via {config.cluster}", flush=True)
    try:
        return _serve(config, server, None, tls, lambda: _reload(server, args))
    finally:
        cluster.close()


def read_oper_credentials(path: str | None) -> dict[str, str]:
    """``--oper-password-file``: one ``NAME PASSWORD`` per line (``#`` comments)."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
        loose = Path(path).stat().st_mode & 0o077
    except OSError as exc:
        raise ConfigError(f"cannot read operator password file {path}: {exc.strerror}") from None
    if loose:
        logger.warning("%s can be read by other users: chmod 600 it", path)
    credentials: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, password = line.strip().partition(" ")
        if not password.strip():
            raise ConfigError(f"{path}:{number}: expected NAME PASSWORD")
        credentials[name] = password.strip()
    return credentials


#: What ``chatd ctl reload`` changes in a running server; the rest needs a restart.
LIVE_SETTINGS = (
    "motd",
    "operators",
    "oper_password_file",
    "max_text_chars",
    "max_message_lines",
    "max_rooms_per_client",
    "history_replay",
    "history_max_limit",
    "rate_limit",
    "rate_burst",
    "nick_hold_seconds",
)


def _reload(server: Server, args: argparse.Namespace) -> list[str]:
    """Re-read the config file (and the operator credentials); apply what can change live."""
    new = config_from_args(args, dict(os.environ))
    credentials = read_oper_credentials(new.oper_password_file)
    old = server.config
    changed = [name for name in LIVE_SETTINGS if getattr(new, name) != getattr(old, name)]
    config = replace(old, **{name: getattr(new, name) for name in LIVE_SETTINGS})
    server.config = config
    server.hub.reconfigure(config, credentials)
    later = [
        f.name
        for f in fields(Config)
        if f.name not in LIVE_SETTINGS and getattr(new, f.name) != getattr(old, f.name)
    ]
    if later:
        logger.warning("reload: %s change only after a restart", ", ".join(later))
    logger.info("reloaded the configuration; changed: %s", ", ".join(changed) or "nothing")
    return changed


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
