"""A cluster node's mirror of the accounts kept in Redis (docs/cluster.md): what the
account gate (:mod:`chatd.accounts`) reads, in place of the SQLite table.

Loaded whole when the node's link to Redis comes up (``HGETALL chatd:acct``) and kept
current by the ``acct`` events on the channel (:mod:`chatd.cluster_accounts`). Writes
(a new password, an account dropped) go to Redis through ``writer``; a registration is
made in Redis first, and :meth:`ClusterAccountStore.add` only confirms it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from chatd.accounts_store import Account, AccountStore
from chatd.cluster_sync import _pairs
from chatd.names import fold, nick_skeleton

__all__ = ["ClusterAccountStore"]

logger = logging.getLogger(__name__)


class ClusterAccountStore(AccountStore):
    """This node's mirror of the cluster's accounts: what the account gate reads.
    Writes go to Redis (``writer``); the mirror follows the channel."""

    def __init__(self) -> None:  # no SQLite here
        self.path = "redis"
        self._records: dict[str, Account] = {}  # folded name -> account
        self._skeletons: dict[str, str] = {}  # skeleton -> folded name
        self.writer: Callable[[str, str, bytes | None], None] | None = None

    def load(self, flat: object) -> None:
        self._records.clear()
        self._skeletons.clear()
        pairs = list(flat.items()) if isinstance(flat, dict) else _pairs(flat)  # RESP3: a map
        for _key, record in pairs:
            try:
                self.put(record)
            except (ValueError, KeyError, TypeError, AttributeError):
                logger.error("cluster: a malformed account record in Redis: %.200r", record)

    def put(self, record: bytes | str) -> None:
        data = json.loads(record)
        name = data["n"]
        self._records[fold(name)] = Account(name, data["s"].encode(), float(data["c"]))
        self._skeletons[nick_skeleton(name)] = fold(name)

    def remove(self, name: str) -> None:
        if self._records.pop(fold(name), None) is not None:
            if self._skeletons.get(nick_skeleton(name)) == fold(name):
                del self._skeletons[nick_skeleton(name)]

    def get(self, name: str) -> Account | None:
        return self._records.get(fold(name))

    def owner(self, nick: str) -> str | None:
        found = self._records.get(fold(nick))
        if found is None:
            key = self._skeletons.get(nick_skeleton(nick))
            found = self._records.get(key) if key is not None else None
        return found.name if found is not None else None

    def add(self, name: str, secret: bytes, now: float | None = None) -> bool:
        """Registration happened in Redis before the hub saw it: true if it did."""
        found = self.get(name)
        return found is not None and found.secret == secret

    def set_secret(self, name: str, secret: bytes) -> bool:
        found = self.get(name)
        if found is None or self.writer is None:
            return False
        self._records[fold(name)] = Account(found.name, secret, found.created)
        self.writer("set", found.name, secret)
        return True

    def delete(self, name: str) -> bool:
        found = self.get(name)
        if found is None or self.writer is None:
            return False
        self.remove(name)
        self.writer("del", found.name, None)
        return True

    def __len__(self) -> int:
        return len(self._records)

    def names(self) -> list[tuple[str, float]]:
        return sorted((a.name, a.created) for a in self._records.values())

    def close(self) -> None:
        pass
