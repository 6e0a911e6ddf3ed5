"""Rooms remembered per server, so the next start rejoins them (``rooms.json``).

One small JSON object ``{"host:port": ["#room", …]}`` next to the input history. Whatever
the file holds, loading never fails: a missing, unreadable or garbled file is no rooms,
and only valid room names are taken. Writes replace the file atomically (0600).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from client.text import normalize_room

__all__ = ["load_rooms", "save_rooms"]

logger = logging.getLogger(__name__)

MAX_ROOMS = 50  # per server
MAX_SERVERS = 50
MAX_FILE_BYTES = 1 << 20


def _read(path: Path) -> dict[str, list[str]]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, list[str]] = {}
    for server, rooms in list(data.items())[-MAX_SERVERS:]:
        if isinstance(server, str) and isinstance(rooms, list):
            names = [normalize_room(r) for r in rooms if isinstance(r, str)]
            out[server] = list(dict.fromkeys(n for n in names if n))[:MAX_ROOMS]
    return out


def load_rooms(path: Path, server: str) -> list[str]:
    """The rooms remembered for ``server`` (``host:port``), in join order."""
    return _read(path).get(server, [])


def save_rooms(path: Path, server: str, rooms: list[str]) -> None:
    """Remember ``rooms`` for ``server``; failures are logged, never raised."""
    data = _read(path)
    data.pop(server, None)
    data[server] = rooms[:MAX_ROOMS]  # most recently used server last
    data = dict(list(data.items())[-MAX_SERVERS:])
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("rooms not remembered: cannot write %s: %s", path, exc)
