"""chatd nodes pointed at a Redis (a real redis-server: bench/redis_server.py). Shared
by the cluster tests (through tests/cluster_helpers.py) and bench/cluster.py.
"""

from __future__ import annotations

from typing import Protocol

from bench.chatd_process import ChatdProcess, wait_until


class RedisAddress(Protocol):
    """Where a node finds Redis: a ``RedisServer`` or a relay in front of one."""

    @property
    def url(self) -> str: ...


def node(redis: RedisAddress, *extra: str, irc: bool = False) -> ChatdProcess:
    """A chatd node, once it is in sync with the cluster (before, it refuses registration)."""
    proc = ChatdProcess(
        "--cluster", redis.url, "--cluster-ttl-seconds", "2", "--cluster-timeout-seconds", "1",
        *extra, irc=irc,
    )  # fmt: skip
    wait_until(lambda: "in sync" in proc.log(), 10, "the node to join the cluster")
    if "--accounts" not in extra:  # (and to know the cluster's accounts)
        wait_until(lambda: "accounts loaded" in proc.log(), 10, "the node's accounts")
    return proc
