"""Command line: flags and TOML → Config, logging, signals, exit codes.

Every :class:`~chatd.config.Config` field is a flag (``max_line_bytes`` is
``--max-line-bytes``), and ``--config FILE`` may set any of them by name. The password is
read from ``--password-file`` or ``CHATD_PASSWORD``, never from the command line, where
``ps`` would show it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import tomllib
import types
from collections.abc import Callable
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any

from chatd import __version__, discovery
from chatd.accounts_store import AccountStore, AccountStoreError
from chatd.certs import TlsSetup, TlsUnavailable, setup_tls
from chatd.codecs.base import Codec
from chatd.codecs.irc import IrcCodec
from chatd.config import DEFAULT_PORT, Config, ConfigError, field_types, parse_duration
from chatd.ctl import CtlServer, default_path
from chatd.fdlimit import raise_fd_limit
from chatd.history import MEMORY, HistoryError, SqliteHistory, open_store
from chatd.history import default_path as data_path
from chatd.moderation_store import ModerationStore
from chatd.server import Server
from chatd.streams import StreamFactory
from chatd.tls import TlsStream, sniffer

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


def chat_command() -> str:
    """How to start the client from here: ``chat`` if it is on PATH, else the ``chat``
    installed beside this Python or in this checkout's .venv (so the banner's line works)."""
    if shutil.which("chat"):
        return "chat"
    for candidate in (
        Path(sys.executable).parent / "chat",
        Path(__file__).resolve().parent.parent / ".venv" / "bin" / "chat",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return "chat"


def listen_irc(
    server: Server,
    host: str,
    port: int,
    *,
    name: str = "irc",
    make_stream: StreamFactory | None = None,
    turn_away: bytes | None = None,
    handshake_seconds: float | None = None,
) -> tuple[str, int]:
    """Open the IRC listener on ``server``'s loop; returns the bound address.

    ``make_stream``: the byte stream of every connection (TLS on ``--irc-tls-port``);
    ``turn_away``: what every newcomer is told before it is closed (``--require-tls``).
    """
    config = server.config

    def make_codec() -> Codec:
        return IrcCodec(
            config.server_name,
            password_required=config.password is not None,
            max_rooms=config.max_rooms_per_client,
        )

    return server.listen(
        host,
        port,
        name=name,
        make_codec=make_codec,
        banner=b"",
        make_stream=make_stream,
        turn_away=turn_away,
        handshake_seconds=handshake_seconds,
    )


def _how_to_join(host: str, port: int) -> str:
    shown = host
    if host in ("0.0.0.0", "::", ""):
        shown = socket.gethostname() or "localhost"
    here = chat_command()
    if shown in ("127.0.0.1", "localhost", "::1"):
        return f"join with:  {here} {shown}:{port}   or:  nc {shown} {port}"
    # Elsewhere people run their own `chat` (pipx install .); here, the one that works.
    return (
        f"join with:  chat {shown}:{port}   or:  nc {shown} {port}"
        f"   (on this machine: {here} localhost:{port})"
    )


# `chatd NAME ...` runs a tool instead of the server. Flags all start with "--", so a
# first word that is one of these can never be a server flag (or its value).
SUBCOMMANDS = ("backup", "export")


def _listen_web(server: Server, host: str, port: int, tls: TlsSetup | None = None) -> str:
    """Start the web port (its libraries load only now); the URL to open (https:// with
    TLS: the same port also takes https and wss on the server's certificate)."""
    from chatd.web import WebUnavailable, lan_address, listen_web

    context = tls.context if tls is not None else None
    seconds = server.config.tls_handshake_seconds
    try:
        bound_host, bound_port = listen_web(server, host, port, context, seconds)
    except WebUnavailable as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    shown = bound_host
    if bound_host in ("0.0.0.0", "::", ""):
        shown = lan_address() or socket.gethostname() or "localhost"
    if ":" in shown:
        shown = f"[{shown}]"
    scheme = "https" if tls is not None else "http"
    return f"{scheme}://{shown}:{bound_port}/"


def _plain_refusal(config: Config) -> bytes:
    """What a plain-text client of the native port is told when TLS is required."""
    host = config.server_name
    port = config.port
    return (
        f"*** {host} requires an encrypted connection; plain text is refused.\n"
        f"*** Connect with:  chat {host}:{port}   or:  openssl s_client -quiet "
        f"-connect {host}:{port}   or:  ncat --ssl {host} {port}\n"
    ).encode()


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


def _start_tls(config: Config, cert_dir: Path) -> TlsSetup | None:
    """The TLS set-up (None: off, said why).

    Raises:
        TlsUnavailable: TLS was asked for (--tls on, a certificate, --require-tls) and
            cannot be on.
    """
    try:
        return setup_tls(config, cert_dir)
    except TlsUnavailable as exc:
        if config.tls == "on" or config.tls_cert or config.require_tls:
            raise
        print(f"chatd: TLS is off: {exc}", flush=True)
        return None


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
    try:  # (no history database: the certificate is kept in the default data directory)
        tls = _start_tls(config, data_path().parent)
    except TlsUnavailable as exc:
        print(f"chatd: cannot turn TLS on: {exc}", file=sys.stderr)
        return 2
    from chatd.cluster_account_store import ClusterAccountStore

    accounts = ClusterAccountStore() if config.accounts != "off" else None  # mirror of Redis
    server = Server(config, accounts=accounts, oper_credentials=oper_credentials)
    cluster = Cluster(server, accounts)
    cluster.start()
    print(f"chatd: cluster node {cluster.node} via {config.cluster}", flush=True)
    try:
        return _serve(config, server, None, tls, lambda: _reload(server, args))
    finally:
        cluster.close()


def _listen_irc_ports(server: Server, config: Config, tls: TlsSetup | None) -> None:
    """The IRC port (turning everyone away with --require-tls) and the IRC TLS port.

    Raises:
        OSError: a port cannot be opened (``err.filename`` names it).
    """
    if config.irc_port is not None:
        try:
            if config.require_tls:
                line = b"ERROR :This server requires TLS: use its TLS port"
                port_hint = f" {config.irc_tls_port}" if config.irc_tls_port else ""
                refused = line + port_hint.encode() + b"\r\n"
                listen_irc(server, config.host, config.irc_port, turn_away=refused)
            else:
                listen_irc(server, config.host, config.irc_port)
        except OSError as exc:
            exc.filename = f"{config.host}:{config.irc_port} (irc)"
            raise
    if config.irc_tls_port is not None and tls is not None:
        context = tls.context
        try:
            listen_irc(
                server,
                config.host,
                config.irc_tls_port,
                name="irc-tls",
                make_stream=lambda: TlsStream(context),
                handshake_seconds=config.tls_handshake_seconds,
            )
        except OSError as exc:
            exc.filename = f"{config.host}:{config.irc_tls_port} (irc-tls)"
            raise


def _say_tls(config: Config, tls: TlsSetup | None) -> None:
    if tls is not None:
        made = " (made just now)" if tls.generated else ""
        print(f"chatd: TLS on; certificate {tls.cert_file}{made}", flush=True)
        print(f"chatd: fingerprint {tls.fingerprint}", flush=True)
        if config.require_tls:
            print("chatd: plain-text logins are refused (--require-tls)", flush=True)
    elif config.irc_tls_port is not None:
        print("chatd: no IRC TLS port: TLS is off", flush=True)


def _serve(
    config: Config,
    server: Server,
    history: SqliteHistory | None,
    tls: TlsSetup | None,
    reload: Callable[[], list[str]],
) -> int:
    web_url = ""
    failed = f"{config.host}:{config.port} (native)"
    try:
        if tls is None:
            host, port = server.listen(config.host, config.port)
        else:
            refusal = _plain_refusal(config) if config.require_tls else None
            host, port = server.listen(
                config.host,
                config.port,
                sniff_stream=sniffer(tls.context, refusal),
                handshake_seconds=config.tls_handshake_seconds,
            )
        failed = ""
        _listen_irc_ports(server, config, tls)
        if config.web_port is not None:
            failed = f"{config.host}:{config.web_port} (web)"
            web_url = _listen_web(server, config.host, config.web_port, tls)
    except OSError as exc:
        where = failed or exc.filename
        print(f"chatd: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 2
    for name, bound_host, bound_port in server.addresses:
        print(f"chatd: listening on {bound_host}:{bound_port} ({name})", flush=True)
    _open_console(server, history.path if history is not None else "", port, reload)
    print(f"chatd: {_how_to_join(host, port)}", flush=True)
    _say_tls(config, tls)
    announcer, why = discovery.start(
        config,
        server.addresses,
        lambda: server.hub.stats()["registered"],
        server.loop,
        fingerprint=tls.fingerprint if tls is not None else None,
    )
    print(f"chatd: {why}", flush=True)
    if web_url:
        if announcer is not None:  # the name people can type, announced by mDNS
            scheme = web_url.split(":", 1)[0]
            web_url = f"{scheme}://{discovery.local_name()}:{web_url.rsplit(':', 1)[1]}"
        print(f"chatd: in a browser, open:  {web_url}", flush=True)
    print("chatd: press Ctrl-C to stop", flush=True)

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        if server_stopping[0]:
            logger.warning("second %s: exiting at once", signal.Signals(signum).name)
            raise SystemExit(1)
        server_stopping[0] = True
        server.request_stop("server shutting down")

    server_stopping = [False]
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    status = 0
    try:
        server.serve_forever()
    except HistoryError as exc:  # not expected: the server handles storage failures
        logger.critical("%s; stopping (nothing unstored was sent)", exc)
        status = 3
    finally:
        if announcer is not None:
            announcer.close()  # the goodbye packets: browsers forget us now
        if history is not None:
            history.close()  # never raises
    if server.storage_failure is not None:
        status = 3  # --on-storage-failure stop, and storage failed
    logger.info("stopped; %s", _summary(server.stats))
    return status


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


def _open_console(server: Server, db_path: str, port: int, reload: Callable[[], list[str]]) -> None:
    path = default_path(server.config.ctl_socket, db_path, port)
    if path is None:
        logger.info("no operator console (ctl_socket off, or no $XDG_RUNTIME_DIR)")
        return
    try:
        server.ctl = CtlServer(server, path, reload)
    except OSError as exc:
        print(f"chatd: no operator console at {path}: {exc}", file=sys.stderr)
        return
    print(f"chatd: operator console on {path} (chatd ctl --socket {path} …)", flush=True)


def _summary(stats: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in stats.items())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
