from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import ChatdProcess  # noqa: E402

if TYPE_CHECKING:  # (imported when used: it needs hiredis, which only the cluster needs)
    from cluster_helpers import RedisServer


@pytest.fixture
def chatd_server() -> Iterator[ChatdProcess]:
    """A fresh chatd process on 127.0.0.1 (port 0), stopped after the test."""
    server = ChatdProcess("--rate-limit", "0")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_server() -> Iterator[type[ChatdProcess]]:
    """Start servers with custom flags; all are stopped after the test."""
    started: list[ChatdProcess] = []

    def make(*args: str, **kwargs: object) -> ChatdProcess:
        server = ChatdProcess(*args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in started:
        server.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server (AOF, fsync always) in the test's directory, stopped after
    (the cluster tests mark themselves ``needs_redis``)."""
    from cluster_helpers import RedisServer

    server = RedisServer(tmp_path, aof="always")
    try:
        yield server
    finally:
        server.stop()
