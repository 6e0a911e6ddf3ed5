"""Find chatd servers on the LAN: browse DNS-SD ``_chatd._tcp`` over multicast DNS.

``chat`` with no address browses for :data:`BROWSE_SECONDS`; one server found: it is
the one; several: a numbered list to pick from; none: localhost, with a line saying so.
``chat --list`` prints what it found and exits. See docs/discovery.md.

Everything here comes from whoever answers on the LAN, so it is treated as hostile
input: at most :data:`MAX_FOUND` servers, every shown value stripped of control and
bidi characters and clipped (a name must not repaint the terminal), the online count a
number or nothing. An announcement proves nothing about who runs the server: with TLS
the fingerprint announced is shown, and the trust-on-first-use question compares it.
The ``zeroconf`` library (the ``discovery`` extra) is imported only when browsing.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BROWSE_SECONDS",
    "MAX_FOUND",
    "DiscoveryUnavailable",
    "Found",
    "browse",
    "describe",
    "find_server",
    "from_txt",
    "list_servers",
    "pick",
]

CHATD_TYPE = "_chatd._tcp.local."  # as chatd.discovery announces it
#: Long enough for every responder's answer (RFC 6762 §6: 20-120 ms, then the
#: second query of the browser at 1 s), short enough not to feel like a hang.
BROWSE_SECONDS = 2.0
#: The most servers kept from one browse: a LAN flooded with announcements costs no more.
MAX_FOUND = 50
_SHOWN_CHARS = 60
_RESOLVE_MS = 1000


class DiscoveryUnavailable(RuntimeError):
    """The zeroconf library is missing, or multicast DNS cannot be used here."""


@dataclass(frozen=True, slots=True)
class Found:
    """One server seen on the LAN (every field as announced, made safe to show)."""

    name: str
    host: str
    port: int
    online: int | None
    tls: bool
    fingerprint: str | None
    password: bool
    version: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _safe(value: bytes | str | None, limit: int = _SHOWN_CHARS) -> str:
    """An announced value as text a terminal shows as it is: no control, format (bidi,
    zero-width) or unassigned characters, at most ``limit`` characters."""
    if value is None:
        return ""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    return kept.strip()[:limit]


def from_txt(
    instance: str, host: str, port: int, properties: dict[bytes, bytes | None]
) -> Found | None:
    """A :class:`Found` from an announcement, or None if it is not usable."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not 0 < port < 65536 or address.is_multicast or address.is_unspecified:
        return None
    txt = {_safe(k, 40).lower(): _safe(v, 120) for k, v in properties.items()}
    online_text = txt.get("online", "")
    online = int(online_text) if online_text.isascii() and online_text.isdigit() else None
    if online is not None and online > 10**9:
        online = None
    fingerprint = txt.get("fp") or None
    if fingerprint is not None and not fingerprint.startswith("SHA256:"):
        fingerprint = None
    return Found(
        name=_safe(txt.get("name") or instance.split("._chatd")[0]) or "?",
        host=str(address),
        port=port,
        online=online,
        tls=txt.get("tls") == "on",
        fingerprint=fingerprint,
        password=txt.get("password") == "yes",
        version=_safe(txt.get("version"), 20),
    )


def browse(seconds: float = BROWSE_SECONDS, interfaces: list[str] | None = None) -> list[Found]:
    """Browse for ``_chatd._tcp`` for ``seconds``; the servers found, by name.

    Raises:
        DiscoveryUnavailable: zeroconf is not installed, or it cannot open its sockets.
    """
    try:
        from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf
    except ImportError:
        raise DiscoveryUnavailable(
            "finding servers needs the 'zeroconf' library (pip install 'chatd[discovery]')"
        ) from None
    try:
        zc = Zeroconf(interfaces=interfaces or _lan_interfaces(), ip_version=IPVersion.V4Only)
    except Exception as exc:
        raise DiscoveryUnavailable(f"cannot use multicast DNS here: {exc}") from None
    names: dict[str, None] = {}
    lock = threading.Lock()

    def on_change(
        zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        with lock:
            if state_change is ServiceStateChange.Removed:
                names.pop(name, None)
            elif len(names) < MAX_FOUND:
                names[name] = None

    try:
        browser = ServiceBrowser(zc, CHATD_TYPE, handlers=[on_change])
        time.sleep(seconds)
        browser.cancel()
        with lock:
            wanted = list(names)
        found: dict[tuple[str, int], Found] = {}
        deadline = time.monotonic() + _RESOLVE_MS / 1000
        for name in wanted:
            info = ServiceInfo(CHATD_TYPE, name)
            left = max(0, int((deadline - time.monotonic()) * 1000))
            if not info.request(zc, left) or info.port is None:
                continue
            for host in info.parsed_addresses(IPVersion.V4Only)[:4]:
                server = from_txt(name, host, info.port, dict(info.properties))
                if server is not None:
                    found.setdefault((server.host, server.port), server)
        return sorted(found.values(), key=lambda s: (s.name.lower(), s.host, s.port))
    finally:
        zc.close()


def _lan_interfaces() -> list[str]:
    """This machine's IPv4 addresses other than loopback (multicast does not run on lo)."""
    import ifaddr

    found = [
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ipaddress.IPv4Address(ip.ip).is_loopback
    ]
    if not found:
        raise DiscoveryUnavailable("this machine has no LAN address to browse on")
    return found


def describe(server: Found) -> str:
    """One line of the list: name, address, people online, TLS."""
    online = "?" if server.online is None else str(server.online)
    parts = [f"{server.name}", f"{server.address}", f"{online} online"]
    parts.append(f"TLS {server.fingerprint}" if server.tls and server.fingerprint else "no TLS")
    if server.password:
        parts.append("password")
    return "  ".join(parts)


def pick(
    servers: list[Found], ask: Callable[[str], str], say: Callable[[str], None]
) -> Found | None:
    """Show ``servers`` numbered and ask for one (Enter or 'q' picks none)."""
    for number, server in enumerate(servers, 1):
        say(f"  {number}. {describe(server)}")
    while True:
        answer = ask(f"Which server (1-{len(servers)}, Enter for none)? ").strip()
        if answer in ("", "q"):
            return None
        if answer.isdigit() and 1 <= int(answer) <= len(servers):
            return servers[int(answer) - 1]
        say(f"  a number from 1 to {len(servers)}, please")


def list_servers(say: Callable[[str], None], seconds: float = BROWSE_SECONDS) -> int:
    """``chat --list``: print what a browse finds; the exit status (1: found none)."""
    try:
        servers = browse(seconds)
    except DiscoveryUnavailable as exc:
        say(f"chat: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    if not servers:
        say(f"no chatd server answered on the LAN in {seconds:g} s")
        return 1
    for server in servers:
        say(describe(server))
    return 0


def find_server(
    fallback: tuple[str, int],
    say: Callable[[str], None],
    ask: Callable[[str], str],
    seconds: float = BROWSE_SECONDS,
) -> Found | tuple[str, int] | None:
    """``chat`` with no address: the one server found, the one picked from several, or
    ``fallback`` (with a line saying why) when none answered; None if none was picked."""
    host, port = fallback
    try:
        servers = browse(seconds)
    except DiscoveryUnavailable as exc:
        say(f"chat: {exc}; trying {host}:{port}")
        return fallback
    except KeyboardInterrupt:
        return None
    if not servers:
        say(f"chat: no chatd server answered on the LAN in {seconds:g} s; trying {host}:{port}")
        return fallback
    if len(servers) == 1:
        say(f"chat: found {describe(servers[0])}")
        return servers[0]
    say(f"chat: {len(servers)} chatd servers answered on the LAN:")
    try:
        return pick(servers, ask, say)
    except (EOFError, KeyboardInterrupt):
        return None
