"""Trust on first use, as ssh does: remember each server's certificate fingerprint.

A LAN chat server has no certificate authority; it makes its own certificate and prints
its fingerprint at start-up. The first time the client meets a server it shows that
fingerprint and asks (``--trust`` accepts, ``--fingerprint SHA256:...`` accepts exactly
that one); the answer is kept in ``known_servers`` in the client's state directory. Later
connections compare silently, and a different fingerprint is refused with a warning that
says what to do. A server listed there once offered TLS, so the client never falls back
to plain text with it (the password would cross the network readable).

``known_servers`` has one line per server: ``HOST:PORT SHA256:...`` (``#`` comments).

Policy (:func:`open_link`):

- default: TLS; a server that does not speak TLS and is not listed is used in plain text
  (the status bar says ``plain``); a listed one is refused (a downgrade).
- ``--plain``: plain text only; refused (with a password) for a listed server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from chatd.tls import client_context, fingerprint
from client import net

__all__ = ["KnownServers", "TrustError", "Policy", "open_link", "known_servers_path"]

logger = logging.getLogger(__name__)

FILE_NAME = "known_servers"

#: Asked on first contact: (server, fingerprint) -> accept?
Ask = Callable[[str, str], Awaitable[bool]]


class TrustError(net.ConnectError):
    """The server's identity is not trusted; ``str()`` says why and what to do."""


@dataclass(frozen=True, slots=True)
class Policy:
    plain: bool = False  # --plain: never try TLS
    trust: bool = False  # --trust: accept a new server's fingerprint without asking
    fingerprint: str | None = None  # --fingerprint: the one fingerprint to accept
    has_password: bool = False  # a password will be sent after connecting


def known_servers_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


class KnownServers:
    """The ``known_servers`` file: server -> fingerprint (``path`` None: nothing is kept)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:  # refusing is safer than forgetting who offered TLS
            raise TrustError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        entries: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and not parts[0].startswith("#"):
                entries[parts[0]] = parts[1]
        return entries

    def get(self, server: str) -> str | None:
        return self._read().get(server)

    def remember(self, server: str, fp: str) -> None:
        if self.path is None:
            return
        entries = self._read()
        entries[server] = fp
        body = "".join(f"{name} {value}\n" for name, value in entries.items())
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(
                    "# chatd servers this client trusts: HOST:PORT FINGERPRINT (docs/tls.md)\n"
                )
                fh.write(body)
            os.replace(tmp, self.path)
        except OSError as exc:  # trusted for this run only; asked again next time
            logger.warning("cannot remember %s in %s: %s", server, self.path, exc)


def server_key(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def changed_warning(server: str, old: str, new: str, path: Path | None) -> str:
    return (
        f"WARNING: THE IDENTITY OF {server} HAS CHANGED. Expected {old}, the server "
        f"presented {new}. Someone may be intercepting the connection, or the server got "
        f"a new key. Not connecting. Ask the server's owner for the fingerprint chatd "
        f"printed at start-up; if it is {new}, remove the line for {server} from {path} "
        f"(or run: chat --fingerprint {new} ...)."
    )


async def open_link(
    host: str,
    port: int,
    timeout: float,
    policy: Policy,
    known: KnownServers,
    ask: Ask | None,
) -> net.Link:
    """Connect as the policy says; the returned link's ``transport`` is ``tls`` or ``plain``.

    Raises:
        net.ConnectError: cannot connect.
        TrustError: the server's identity is not trusted, or plain text is refused.
    """
    server = server_key(host, port)
    remembered = known.get(server)
    if policy.plain:
        if remembered is not None and policy.has_password:
            raise TrustError(
                f"{server} offered TLS before ({known.path}); not sending the password "
                f"in plain text. Drop --plain."
            )
        return await net.connect(host, port, timeout)
    try:
        link = await net.connect(host, port, timeout, tls=client_context())
    except net.NotTls as exc:
        if remembered is not None:
            raise TrustError(
                f"{server} offered TLS before but does not now ({exc}); refusing plain "
                f"text, which anyone on the network could read (a downgrade attack looks "
                f"exactly like this). If the server really turned TLS off, remove its "
                f"line from {known.path}."
            ) from None
        logger.info("%s does not speak TLS (%s); using plain text", server, exc)
        return await net.connect(host, port, timeout)
    der = link.peer_certificate
    fp = fingerprint(der) if der else "(no certificate)"
    expected = policy.fingerprint or remembered
    if expected is not None:
        if fp != expected:
            await link.close()
            if policy.fingerprint is not None and policy.fingerprint != remembered:
                raise TrustError(
                    f"{server} presented {fp}, not the {policy.fingerprint} given with "
                    f"--fingerprint; not connecting."
                )
            raise TrustError(changed_warning(server, expected, fp, known.path))
        if remembered != fp:
            known.remember(server, fp)
        return link
    accepted = policy.trust or (ask is not None and await ask(server, fp))
    if not accepted:
        await link.close()
        raise TrustError(
            f"not connecting to {server}: its fingerprint {fp} was not accepted "
            f"(--trust accepts it, --fingerprint {fp} accepts exactly this one)."
        )
    known.remember(server, fp)
    logger.info("trusting %s with fingerprint %s from now on", server, fp)
    return link
