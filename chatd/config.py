"""Every knob of the server in one frozen dataclass, with the reason for each default.

Each field carries its help text in ``metadata``; :mod:`chatd.cli` builds the command
line from these fields, and ``--config FILE.toml`` may set any of them by the same name
(``max_line_bytes = 8192``). Precedence: defaults < TOML file < flags.

The numbers follow the precedents in ``shared/style.md`` (h11, asyncio, Redis), scaled to
a chat room; ``docs/limits.md`` says what happens when each one is hit.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from typing import Any, get_args, get_type_hints

__all__ = ["Config", "ConfigError", "DEFAULT_PORT", "field_types", "parse_duration"]

DEFAULT_PORT = 7777
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ConfigError(ValueError):
    """A configuration value is out of range or of the wrong type."""


def _opt(default: Any, help: str, *, cli: bool = True) -> Any:  # noqa: A002 - mirrors argparse
    return field(default=default, metadata={"help": help, "cli": cli})


#: Settings that take one of a few words (accounts and nick hold: docs/accounts.md).
_CHOICES = {"accounts": ("off", "optional", "required"), "registration": ("open", "closed")}


def _check_choices(config: Config) -> None:
    for name, allowed in _CHOICES.items():
        if getattr(config, name) not in allowed:
            words = ", ".join(allowed[:-1]) + " or " + allowed[-1]
            raise ConfigError(f"{name} must be {words}, not {getattr(config, name)!r}")


@dataclass(frozen=True, slots=True)
class Config:
    # --- where to listen -------------------------------------------------------------
    host: str = _opt(
        "0.0.0.0",
        "address to listen on (0.0.0.0: every IPv4 interface of this "
        "machine, as a LAN chat room wants; '::' for IPv6 too)",
    )
    port: int = _opt(
        DEFAULT_PORT, "port for the native protocol (text and JSON); 0 picks a free one"
    )
    irc_port: int | None = _opt(None, "also listen for IRC clients on this port (off unless set)")
    web_port: int | None = _opt(
        None,
        "also serve the web client (HTTP and WebSocket) on this port (off unless set; "
        "needs the 'web' extra: h11 and wsproto)",
    )
    web_max_header_bytes: int = _opt(
        16384, "longest HTTP request head on the web port (h11's default); longer gets 431"
    )
    server_name: str = _opt(
        socket.gethostname() or "chatd",
        "the server's name, shown to clients (default: the host name)",
    )
    motd: str = _opt("", "message of the day shown after registration (\\n separates lines)")
    # --- LAN discovery (docs/discovery.md) ----------------------------------------------
    announce: bool | None = _opt(
        None,
        "announce the server on the LAN by multicast DNS (DNS-SD: _chatd._tcp, _irc._tcp), "
        "so 'chat' finds it without an address; needs the 'discovery' extra (zeroconf). "
        "Default: on, except on a loopback-only listener; --announce forces it, "
        "--no-announce turns it off",
    )

    # --- TLS (docs/tls.md) -------------------------------------------------------------
    tls: str = _opt(
        "auto",
        "on, off or auto: auto turns TLS on when a certificate is given or one can be "
        "made (the 'cryptography' library is installed), and says why not otherwise",
    )
    tls_cert: str = _opt(
        "",
        "PEM certificate (chain) to use instead of the self-signed one made on first "
        "start (kept next to the history database)",
    )
    tls_key: str = _opt("", "PEM private key of --tls-cert (default: in the same file)")
    irc_tls_port: int | None = _opt(
        None, "also listen for IRC clients over TLS on this port (6697 by convention)"
    )
    require_tls: bool = _opt(
        False, "refuse plain-text logins (the native and IRC plain ports explain how to connect)"
    )
    # A handshake is two round trips: on a LAN, milliseconds. Far less than the
    # registration timeout, since a half-open handshake holds OpenSSL state (kilobytes).
    tls_handshake_seconds: float = _opt(
        10.0, "close a connection whose TLS handshake has not finished after this long"
    )

    # --- input limits ----------------------------------------------------------------
    # h11 caps an incomplete event at 16 KiB; Redis an inline request at 64 KiB. A chat
    # line is short; 4 KiB leaves room for a JSON envelope around 2000 characters.
    max_line_bytes: int = _opt(
        4096,
        "longest line a client may send, in bytes, without the "
        "newline; longer lines get line_too_long and are discarded",
    )
    max_text_chars: int = _opt(2000, "longest message text, in characters")
    # Every line of a message is a PRIVMSG of its own for each IRC member, and a screen of
    # its own height for everybody: ergo's multiline batches stop at 100 lines / 4 KiB.
    # 40 lines is a terminal screen: enough for a stack trace or a config snippet; a
    # longer paste scrolls the conversation away for everyone and belongs in a file.
    max_message_lines: int = _opt(
        40,
        "most lines in one message (ergo's multiline limit is 100; every line is an IRC "
        "line for each IRC member); more gets too_many_lines",
    )
    recv_chunk_bytes: int = _opt(
        65536,
        "bytes read per recv() (asyncio reads 256 KiB, Redis "
        "16 KiB; bigger costs more than it saves)",
    )
    # One recv() of 64 KiB of "xy\n" is 21,845 lines: ~1.2 MiB of parsed objects per
    # client if they wait for the rate limit. Input waiting for it stays raw, and at most
    # this much is read; the rest waits in the kernel, where TCP pushes back.
    max_input_backlog_bytes: int = _opt(
        16384,
        "most bytes of a client's input read but not yet run (waiting for the rate "
        "limit); the client is not read while it has any (4 lines of max_line_bytes)",
    )

    # --- output limits (Redis's pub/sub client class, scaled to chat) -------------------
    out_high_water_bytes: int = _opt(
        65536,
        "stop reading a client whose own unsent output "
        "is above this (asyncio's default high-water mark)",
    )
    out_low_water_bytes: int = _opt(
        16384, "resume reading it, and report skipped messages, once its output is below this"
    )
    out_soft_limit_bytes: int = _opt(
        262144,
        "above this much unsent output, room messages are skipped (and counted) for that client",
    )
    out_soft_limit_seconds: float = _opt(
        30.0, "a client over the soft limit this long is disconnected as a slow consumer"
    )
    out_hard_limit_bytes: int = _opt(
        1048576, "a client with this much unsent output is disconnected at once as a slow consumer"
    )
    # Linux autotunes a socket's send buffer up to tcp_wmem's maximum (4 MiB): a client
    # that stopped reading pins that much kernel memory, unseen by the limits above,
    # before its own output buffer even starts to grow. 128 KiB (Linux doubles it for
    # bookkeeping) cost nothing measurable in `make bench` saturation (2.44 M vs 2.55 M
    # deliveries/s, within noise). 0 keeps the kernel's autotuning.
    send_buffer_bytes: int = _opt(
        131072,
        "SO_SNDBUF for client sockets, bounding the kernel "
        "memory a stalled client can pin (0: kernel autotuning)",
    )
    max_write_bytes_per_tick: int = _opt(
        262144,
        "most bytes written to one client per loop turn, so one fast reader cannot hog the loop",
    )

    # --- connections ------------------------------------------------------------------
    max_clients: int = _opt(10000, "connections beyond this get server_full and are closed")
    # ngIRCd allows 5 connections per address, which a school's NAT would hit at once:
    # a class of 30 behind one address, each with the terminal client and an IRC client
    # or a phone, is ~60-90. 64 keeps one host from taking more than 64 of max_clients.
    max_clients_per_ip: int = _opt(
        64,
        "connections one address (an IPv4 address, an IPv6 /64) may hold; more get "
        "server_full. 64 admits a classroom of ~30 behind one NAT with two devices each "
        "and keeps one host from taking every slot; raise it for a bigger NAT, 0 turns "
        "it off",
    )
    max_accepts_per_tick: int = _opt(64, "most connections accepted per loop turn")
    listen_backlog: int = _opt(socket.SOMAXCONN, "listen() backlog")
    register_timeout_seconds: float = _opt(
        30.0, "close connections that have not registered (picked a nick) after this long"
    )
    # miniircd pings after 90 s of silence and drops at 180 s; chat clients idle longer.
    idle_ping_seconds: float = _opt(120.0, "send PING to an IRC client silent this long")
    idle_drop_seconds: float = _opt(
        240.0, "close an IRC client silent this long (it did not answer the PING)"
    )
    keepalive_idle_seconds: int = _opt(
        60,
        "TCP keepalive: idle time before probing a silent "
        "peer, to find dead ones (0 turns keepalive off)",
    )
    shutdown_grace_seconds: float = _opt(2.0, "on shutdown, how long to keep flushing goodbyes")
    close_linger_seconds: float = _opt(
        2.0, "how long a closing connection may take to flush its last lines before it is cut"
    )
    accept_retry_seconds: float = _opt(
        1.0, "pause before accepting again after running out of file descriptors (asyncio uses 1 s)"
    )

    # --- flood control -----------------------------------------------------------------
    rate_limit: float = _opt(
        10.0,
        "commands per second each client may send on average; 0 "
        "turns the limit off (benchmarks do)",
    )
    rate_burst: int = _opt(30, "commands a client may send at once before the rate limit slows it")

    # --- rooms and users -----------------------------------------------------------------
    max_rooms_per_client: int = _opt(50, "rooms one client may be in at once")
    max_password_failures: int = _opt(3, "wrong passwords before the connection is closed")
    # Wrong passwords are throttled per address, not per connection: one client that
    # reconnected after every 3 guesses made 8,163 guesses a second.
    password_guess_burst: int = _opt(
        10, "wrong passwords one address may send at once before its guesses are slowed"
    )
    password_guess_rate: float = _opt(
        1.0,
        "after the burst, wrong passwords per second one address may send, over all its "
        "connections (its logins wait; other addresses are not slowed)",
    )
    password: str | None = _opt(
        None, "(set with --password-file or CHATD_PASSWORD only)", cli=False
    )

    # --- accounts and nick hold (docs/accounts.md) ------------------------------------
    accounts: str = _opt(
        "optional",
        "off: no accounts; optional: anyone may chat, registered nicks are kept for "
        "their owners; required: only logged-in users get in",
    )
    registration: str = _opt(
        "open",
        "open: users register their own nick; closed: only 'chatd account add' creates accounts",
    )
    nick_hold_seconds: float = _opt(
        60.0,
        "a connection that drops without quit keeps its nick and rooms this long, for a "
        "hello with its resume token (or its account) to take back (0: no hold)",
    )

    # --- moderation (docs/moderation.md) ---------------------------------------------------
    operators: str = _opt(
        "",
        "accounts that are server operators while logged in, comma-separated (in the TOML "
        'file also a list: operators = ["ada"])',
    )
    oper_password_file: str | None = _opt(
        None,
        "file of operator credentials, one 'NAME PASSWORD' per line, for IRC's OPER and "
        "/oper (never on the command line)",
    )
    ctl_socket: str = _opt(
        "",
        "Unix socket of the operator console 'chatd ctl' (mode 0600; default: next to the "
        "database, or under $XDG_RUNTIME_DIR with --db :memory:; 'off': none)",
    )

    # --- history ---------------------------------------------------------------------------
    db: str = _opt(
        "",
        "SQLite file for room history (default: $XDG_DATA_HOME/chatd/history.db, "
        "that is ~/.local/share/chatd/history.db; ':memory:' keeps history for "
        "this run only)",
    )
    history_replay: int = _opt(
        50, "earlier messages replayed to a client when it joins a room (0: none)"
    )
    history_max_limit: int = _opt(500, "most messages one history request may return")
    history_max_age: str = _opt(
        "",
        "retention: remove room messages older than this (e.g. 30d, 12h, 90m; "
        "empty or 0: keep them forever)",
    )
    history_max_per_room: int = _opt(
        0, "retention: keep at most this many messages per room, the newest (0: no limit)"
    )
    on_storage_failure: str = _opt(
        "readonly",
        "when history cannot be written (disk full, I/O error, file deleted): 'readonly' "
        "refuses room messages until it can again, 'stop' shuts the server down (exit 3)",
    )
    # 500 messages of 2,000 control characters (each stored as 6 KB of U+FFFD) made one
    # 3 MB reply, and cut off the client that asked as a slow consumer.
    max_reply_bytes: int = _opt(
        65536,
        "most bytes of one reply the server sizes itself: a history page (the rest is "
        "marked more), a join replay (the newest that fit), the rooms list (shortened)",
    )

    # --- cluster (docs/cluster.md) ------------------------------------------------------------
    cluster: str = _opt(
        "",
        "share rooms, nicks and history with other chatd nodes through Redis at this URL "
        "(redis://HOST:PORT/DB; needs the 'cluster' extra: hiredis). Off when empty: "
        "single-node mode with SQLite history",
    )
    cluster_ttl_seconds: float = _opt(
        10.0,
        "a node that has not refreshed its liveness key in Redis for this long is dead: "
        "its nicks are freed and the other nodes announce its users' quits",
    )
    cluster_timeout_seconds: float = _opt(
        3.0,
        "a Redis reply slower than this means Redis is away: shared commands are refused "
        "with cluster_unavailable until the link is back",
    )
    # ~150 bytes a message in Redis: 10,000 messages x 1,000 rooms is about 1.5 GB.
    cluster_stream_maxlen: int = _opt(
        10000, "messages kept per room in its Redis stream (XADD MAXLEN ~)"
    )

    # --- logging -----------------------------------------------------------------------------
    log_level: str = _opt("info", "debug, info, warning or error")

    def __post_init__(self) -> None:
        positive = [
            "max_line_bytes",
            "max_text_chars",
            "max_message_lines",
            "recv_chunk_bytes",
            "max_input_backlog_bytes",
            "out_high_water_bytes",
            "out_soft_limit_bytes",
            "out_hard_limit_bytes",
            "max_write_bytes_per_tick",
            "max_clients",
            "max_accepts_per_tick",
            "listen_backlog",
            "rate_burst",
            "max_rooms_per_client",
            "max_password_failures",
            "password_guess_burst",
            "history_max_limit",
            "cluster_stream_maxlen",
            "max_reply_bytes",
            "web_max_header_bytes",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        non_negative = [
            "rate_limit",
            "history_replay",
            "register_timeout_seconds",
            "out_soft_limit_seconds",
            "shutdown_grace_seconds",
            "close_linger_seconds",
            "accept_retry_seconds",
            "keepalive_idle_seconds",
            "idle_ping_seconds",
            "idle_drop_seconds",
            "tls_handshake_seconds",
            "out_low_water_bytes",
            "send_buffer_bytes",
            "history_max_per_room",
            "max_clients_per_ip",
            "nick_hold_seconds",
        ]
        for name in ("cluster_ttl_seconds", "cluster_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, not {getattr(self, name)}")
        if not self.password_guess_rate > 0:
            raise ConfigError(
                f"password_guess_rate must be positive, not {self.password_guess_rate}"
            )
        for name in ("port", "irc_port", "irc_tls_port", "web_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ConfigError(f"{name} must be 0..65535, not {value}")
        if not self.out_low_water_bytes <= self.out_high_water_bytes:
            raise ConfigError("out_low_water_bytes must not exceed out_high_water_bytes")
        if not self.out_soft_limit_bytes <= self.out_hard_limit_bytes:
            raise ConfigError("out_soft_limit_bytes must not exceed out_hard_limit_bytes")
        self._check_tls()
        if self.on_storage_failure not in ("readonly", "stop"):
            raise ConfigError(
                f"on_storage_failure must be readonly or stop, not {self.on_storage_failure!r}"
            )
        parse_duration(self.history_max_age, "history_max_age")
        _check_choices(self)
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"log_level must be debug, info, warning or error, not {self.log_level!r}"
            )

    def _check_tls(self) -> None:
        if self.tls not in ("on", "off", "auto"):
            raise ConfigError(f"tls must be on, off or auto, not {self.tls!r}")
        if self.tls_key and not self.tls_cert:
            raise ConfigError("tls_key needs tls_cert")

    @classmethod
    def from_mapping(cls, values: dict[str, Any], base: Config | None = None) -> Config:
        """A config from ``base`` (or the defaults) with ``values`` applied.

        Raises:
            ConfigError: an unknown key, or a value of the wrong type or range.
        """
        kinds = field_types()
        unknown = sorted(set(values) - set(kinds))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        checked: dict[str, Any] = {}
        for name, value in values.items():
            kind, optional = kinds[name]
            if kind is str and isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = ",".join(value)  # operators = ["ada", "bob"]
            if value is None and optional:
                checked[name] = value
            elif kind is float and isinstance(value, int | float) and not isinstance(value, bool):
                checked[name] = float(value)
            elif isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
                checked[name] = value
            else:
                raise ConfigError(
                    f"{name} must be a {kind.__name__}"
                    f"{' or nothing' if optional else ''}, not {value!r}"
                )
        return replace(base or cls(), **checked)


def parse_duration(text: str, name: str = "duration") -> float:
    """Seconds in ``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` or a plain number
    of seconds; ``""`` or ``"0"`` is 0 (off).

    Raises:
        ConfigError: anything else, naming the setting.
    """
    value = text.strip().lower()
    if value in ("", "0"):
        return 0.0
    unit = _DURATION_UNITS.get(value[-1])
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e12 or not number.replace(".", "", 1).isdigit():
        raise ConfigError(
            f"{name} must be a duration like 30d, 12h, 90m or 45s (or 0 for off), not {text!r}"
        )
    return seconds


def field_types() -> dict[str, tuple[type, bool]]:
    """Each setting's value type, and whether it may be None (read from the annotations)."""
    kinds: dict[str, tuple[type, bool]] = {}
    for name, hint in get_type_hints(Config).items():
        args = [arg for arg in get_args(hint) if arg is not type(None)]
        kinds[name] = (args[0] if args else hint, len(args) < len(get_args(hint)))
    return kinds
