"""The server announces itself on the LAN: DNS-SD over multicast DNS (docs/discovery.md).

Services announced, each under the instance name ``server_name``:

- ``_chatd._tcp`` for the native port, with a TXT record saying what a client wants to
  know before it connects (:func:`chatd_txt`): name, version, TLS and its fingerprint,
  whether a password is needed, how many people are online;
- ``_irc._tcp`` for the IRC port, ``_http._tcp`` for the web page, when they exist.

The ``zeroconf`` library (the ``discovery`` extra) does the multicast DNS. It runs its own
thread and asyncio loop, and its blocking calls (probing a name takes about a second)
must never run on the chat loop. So everything it does happens on one thread of ours,
``chatd-announce``; the chat loop only drops the latest census into a one-slot mailbox
(:meth:`Announcer.offer_online`: an attribute store and an ``Event.set()``, never a
blocking call) at most every :data:`CENSUS_SECONDS`. Any failure on that thread (no
multicast route, a library error) is logged once and the chat server runs on without it.
The library is imported only on that thread, only when announcing is on.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatd import __version__
from chatd.config import Config

__all__ = [
    "CENSUS_SECONDS",
    "CHATD_TYPE",
    "HTTP_TYPE",
    "IRC_TYPE",
    "Announcer",
    "Service",
    "announce_plan",
    "schedule_census",
    "chatd_txt",
    "local_name",
    "start",
]

logger = logging.getLogger(__name__)

CHATD_TYPE = "_chatd._tcp.local."
IRC_TYPE = "_irc._tcp.local."
HTTP_TYPE = "_http._tcp.local."
#: How often the loop looks at the number of people online, and so the most often the
#: TXT record is re-announced (only when the number changed): a browser shows a rough
#: figure, and a re-announcement is a multicast packet to every host on the LAN.
CENSUS_SECONDS = 30.0
#: RFC 6763 §6.1: a TXT string is at most 255 bytes; §4.1.1: an instance name 63.
_TXT_VALUE_BYTES = 200
_INSTANCE_BYTES = 63
#: How long close() waits for the goodbye packets before leaving the thread behind.
_CLOSE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Service:
    """One DNS-SD service to announce: its type, port and TXT key/values."""

    type_: str
    port: int
    txt: dict[str, str] = field(default_factory=dict)


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def local_name(hostname: str | None = None) -> str:
    """The ``<host>.local`` name people can type, from this machine's host name."""
    label = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in label)
    return (cleaned.strip("-")[:63] or "chatd") + ".local"


def _lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (ifaddr comes with zeroconf)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.IPv4Address(ip.ip).is_loopback:
                if ip.ip not in found:
                    found.append(ip.ip)
    return found


def announce_plan(config: Config, bound_host: str) -> tuple[bool, str]:
    """Whether to announce a native listener bound to ``bound_host``, and why (a sentence).

    ``config.announce``: None is automatic (on, except on a loopback-only listener),
    True forces it, False turns it off.
    """
    if config.announce is False:
        return False, "announcing is off (--no-announce)"
    try:
        address = ipaddress.ip_address(bound_host or "0.0.0.0")
    except ValueError:
        return False, f"announcing is off: {bound_host!r} is not an IP address"
    if address.is_loopback and config.announce is None:
        return False, (
            f"announcing is off: {bound_host} is reachable from this machine only "
            "(--announce forces it)"
        )
    try:
        import zeroconf  # noqa: F401 - only to say early whether it is there
    except ImportError:
        return False, (
            "announcing is off: the 'zeroconf' library is not installed "
            "(pip install 'chatd[discovery]'; --no-announce silences this line)"
        )
    return True, "announcing on the LAN by multicast DNS (--no-announce turns it off)"


def chatd_txt(config: Config, online: int, fingerprint: str | None = None) -> dict[str, str]:
    """The ``_chatd._tcp`` TXT record: what a client shows before connecting."""
    txt = {
        "txtvers": "1",
        "name": _clip(config.server_name, _TXT_VALUE_BYTES),
        "version": __version__,
        "tls": "on" if fingerprint else "off",
        "password": "yes" if config.password is not None else "no",
        "online": str(online),
    }
    if fingerprint:
        txt["fp"] = fingerprint
    return txt


class Announcer:
    """Announces ``services`` from a thread of its own; the chat loop only offers updates.

    Args:
        instance: the DNS-SD instance name (the server's name).
        addresses: the IPv4 addresses to announce (A records); empty: every LAN address.
        services: what to announce; the first is the one :meth:`offer_online` updates.
        txt_for_online: the first service's TXT record for a given number online.
    """

    def __init__(
        self,
        instance: str,
        addresses: Sequence[str],
        services: Sequence[Service],
        txt_for_online: Callable[[int], dict[str, str]],
    ) -> None:
        self.instance = _clip(instance.replace(".", "-"), _INSTANCE_BYTES) or "chatd"
        self.addresses = list(addresses)
        self.services = list(services)
        self._txt_for_online = txt_for_online
        self._wake = threading.Event()
        self._online: int | None = None  # the mailbox: the latest census offered
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="chatd-announce", daemon=True)
        self.registered: list[str] = []  # instance names as announced (after any rename)

    def start(self) -> None:
        self._thread.start()

    def offer_online(self, online: int) -> None:
        """Called on the chat loop: hand over the latest census. Never blocks."""
        self._online = online
        self._wake.set()

    def close(self) -> None:
        """Withdraw every announcement (goodbye packets) and stop the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(_CLOSE_SECONDS)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        zc: Any = None
        try:
            from zeroconf import IPVersion, ServiceInfo, Zeroconf

            addresses = self.addresses or _lan_addresses()
            if not addresses:
                raise OSError("this machine has no LAN address to announce")
            zc = Zeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
            server = local_name() + "."
            infos: list[Any] = []
            for service in self.services:
                info = ServiceInfo(
                    service.type_,
                    f"{self.instance}.{service.type_}",
                    port=service.port,
                    properties=service.txt,
                    server=server,
                    parsed_addresses=addresses,
                )
                if self._stopping:
                    break
                zc.register_service(info, allow_name_change=True)
                infos.append(info)
                self.registered.append(info.name)
                logger.info(
                    "announcing %s on %s port %d", info.name, ", ".join(addresses), service.port
                )
            online = 0  # as in the TXT record first announced
            while not self._stopping:
                self._wake.wait()
                self._wake.clear()
                latest = self._online
                if self._stopping or latest is None or latest == online or not infos:
                    continue
                online = latest
                first = infos[0]
                infos[0] = ServiceInfo(
                    first.type,
                    first.name,
                    port=first.port,
                    properties=self._txt_for_online(online),
                    server=server,
                    parsed_addresses=addresses,
                )
                zc.update_service(infos[0])
                logger.debug("announced %d online", online)
        except Exception as exc:  # a failure here must never reach the chat server
            logger.warning("announcing failed (%s); the chat server runs on without it", exc)
        finally:
            if zc is not None:
                try:
                    zc.unregister_all_services()
                    zc.close()
                    logger.info("announcement withdrawn")
                except Exception as exc:
                    logger.warning("withdrawing the announcement failed: %s", exc)


class Scheduler(Protocol):
    """What the census needs of the chat loop (:class:`chatd.loop.Loop`)."""

    now: float

    def call_at(self, when: float, callback: Callable[[], object]) -> object: ...


def schedule_census(
    loop: Scheduler, announcer: Announcer, count: Callable[[], int], every: float = CENSUS_SECONDS
) -> None:
    """Every ``every`` seconds, on the chat loop, offer ``count()`` to ``announcer``.

    ``count`` runs on the loop (it reads the hub); only the integer crosses to the
    announcer's thread, through :meth:`Announcer.offer_online`.
    """

    def census() -> None:
        announcer.offer_online(count())
        loop.call_at(loop.now + every, census)

    loop.call_at(loop.now, census)


_TYPES = {"native": CHATD_TYPE, "irc": IRC_TYPE, "web": HTTP_TYPE}


def start(
    config: Config,
    addresses: Sequence[tuple[str, str, int]],
    online: Callable[[], int],
    loop: Scheduler,
    fingerprint: str | None = None,
) -> tuple[Announcer | None, str]:
    """Start announcing the listeners in ``addresses`` ((name, host, port), as
    ``Server.addresses``) if :func:`announce_plan` says so; returns the announcer (None
    when off) and the sentence to print.

    ``online`` counts the people online; ``loop`` (the chat loop) runs that census every
    :data:`CENSUS_SECONDS`.
    """
    native = next(((host, port) for name, host, port in addresses if name == "native"), None)
    if native is None:
        return None, "announcing is off: no native listener"
    on, why = announce_plan(config, native[0])
    if not on:
        return None, why
    services: list[Service] = []
    for name, _host, port in addresses:
        type_ = _TYPES.get(name)
        if type_ == CHATD_TYPE:
            services.insert(0, Service(type_, port, chatd_txt(config, 0, fingerprint)))
        elif type_ == HTTP_TYPE:
            services.append(Service(type_, port, {"path": "/"}))
        elif type_ is not None:
            services.append(
                Service(type_, port, {"name": _clip(config.server_name, _TXT_VALUE_BYTES)})
            )
    wildcard = ipaddress.ip_address(native[0]).is_unspecified
    announcer = Announcer(
        config.server_name,
        [] if wildcard else [native[0]],
        services,
        lambda count: chatd_txt(config, count, fingerprint),
    )
    announcer.start()
    schedule_census(loop, announcer, online)
    return announcer, why
