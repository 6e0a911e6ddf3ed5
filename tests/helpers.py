"""Test helpers: a real chatd process on 127.0.0.1 and raw socket clients.

They live in bench/chatd_process.py, where the benchmarks and ``make stress`` use them
too; this module keeps the short name the tests import.
"""

from __future__ import annotations

from bench.chatd_process import (
    ROOT,
    ChatdProcess,
    IrcClient,
    JsonClient,
    RawClient,
    many_sockets,
    wait_until,
)

__all__ = [
    "ROOT",
    "ChatdProcess",
    "IrcClient",
    "JsonClient",
    "RawClient",
    "many_sockets",
    "wait_until",
]
