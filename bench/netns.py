"""Two network namespaces joined by a veth pair: a LAN of our own for multicast tests.

Addresses are IPv4 link-local (169.254.0.0/16, RFC 3927) on the veth ends inside the
namespaces this module creates: no route leads out of them, so no packet a test sends
(multicast DNS included) can leave the two namespaces. Loopback cannot serve here:
multicast does not run on ``lo``, and 127.0.0.0/8 does not cross namespaces.

Needs root and ``ip`` (iproute2); tests/netns.py's ``lan_or_skip`` skips with the reason
otherwise. Everything is removed on :meth:`Lan.close`, which the fixtures call even on
failure. Used by tests/test_discovery_netns.py and bench/discovery_latency.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.chatd_process import stop_process

__all__ = ["Lan"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Lan:
    """Namespaces ``ns[0]`` (169.254.77.1) and ``ns[1]`` (169.254.77.2), one link."""

    ADDRESSES = ("169.254.77.1", "169.254.77.2")

    def __init__(self, tag: str) -> None:
        self.ns = (f"chatd-{tag}-a", f"chatd-{tag}-b")
        self.links = (f"cd{tag}a"[:15], f"cd{tag}b"[:15])
        self.processes: list[subprocess.Popen[str]] = []
        self.made: list[str] = []
        try:
            for ns in self.ns:
                _ip("netns", "add", ns)
                self.made.append(ns)
            _ip("link", "add", self.links[0], "type", "veth", "peer", "name", self.links[1])
            for ns, link, addr in zip(self.ns, self.links, self.ADDRESSES, strict=True):
                _ip("link", "set", link, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{addr}/16", "dev", link)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", link, "up", "multicast", "on")
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", link)
        except BaseException:
            self.close()
            raise

    def wrap(self, index: int) -> list[str]:
        """The command prefix that runs a program inside namespace ``index``."""
        return ["ip", "netns", "exec", self.ns[index]]

    def run(
        self, index: int, *cmd: str, timeout: float = 30, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.wrap(index), *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    def spawn(
        self, index: int, *cmd: str, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """A background process in namespace ``index``, ended on :meth:`close`."""
        with log.open("w") as out:
            proc = subprocess.Popen(
                [*self.wrap(index), *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **(env or {})},
            )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            stop_process(proc, 5)
        for ns in self.made:  # deleting a namespace deletes its end of the veth pair, and so both
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.made.clear()
