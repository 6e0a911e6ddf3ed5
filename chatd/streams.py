"""PLACEHOLDER until branch ``core`` lands the real seam (helpers/SEAM.md): the contract only.

The tls branch takes core's version of this file on merge.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Stream", "StreamError"]


class StreamError(Exception):
    """The peer broke the stream's protocol; ``reason`` is a short sentence for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Stream(Protocol):
    """Between one socket and the line framer: wire bytes <-> application bytes."""

    def receive(self, wire: bytes) -> bytes: ...
    def send(self, app: bytes) -> None: ...
    def data_to_send(self) -> bytes: ...
    def close(self) -> None: ...
    @property
    def buffered_bytes(self) -> int: ...
    @property
    def ready(self) -> bool: ...
    @property
    def finished(self) -> bool: ...
