"""Start-up of a server process, once the command line is read: ports, TLS, console, run.

:func:`serve` is what :func:`chatd.cli.main` hands a built :class:`~chatd.server.Server`
to: it opens the native port (sniffing plain or TLS when TLS is on), the IRC ports and
the web port, says on the terminal where they are and how to join, opens the operator
console (:mod:`chatd.ctl`) and the mDNS announcement (:mod:`chatd.discovery`), installs
the signal handlers (one Ctrl-C: graceful shutdown; a second: exit at once), runs the
loop until it stops, and turns how it ended into the exit status (0; 2: a port cannot be
opened; 3: storage failed). :func:`start_tls` makes the TLS set-up (or says why it is
off). The web port's libraries are imported only when it is on.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatd import discovery
from chatd.certs import TlsSetup, TlsUnavailable, setup_tls
from chatd.codecs.base import Codec
from chatd.codecs.irc import IrcCodec
from chatd.config import Config
from chatd.ctl import CtlServer, default_path
from chatd.history import HistoryError, SqliteHistory
from chatd.server import Server
from chatd.streams import StreamFactory
from chatd.tls import TlsStream, sniffer

__all__ = ["chat_command", "listen_irc", "serve", "start_tls"]

logger = logging.getLogger(__name__)


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


def start_tls(config: Config, cert_dir: Path) -> TlsSetup | None:
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


def serve(
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
