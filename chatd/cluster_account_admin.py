"""``chatd account --cluster redis://...``: the operator's command against a cluster's
accounts in Redis (docs/cluster.md), through the same scripts the nodes run - so a
change is atomic and every node's mirror learns it from the channel at once.

A short-lived command-line tool: one blocking socket, replies parsed by
``hiredis.Reader`` (the nodes' parser); nothing here runs in a server.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import hiredis

from chatd.accounts_store import Account, AccountStore, AccountStoreError
from chatd.cluster_account_scripts import ACCOUNT_SCRIPTS, ACCOUNTS
from chatd.cluster_accounts import MAX_ACCOUNTS
from chatd.cluster_scripts import CHANNEL
from chatd.names import fold, nick_skeleton
from chatd.redis_link import encode_command, parse_url

__all__ = ["RedisAccounts"]

_NODE = "admin"  # the events' node field: every node applies them


class RedisAccounts(AccountStore):
    """The :class:`AccountStore` interface (what ``chatd account`` uses) on Redis."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        try:
            address = parse_url(url)
            self.path = url
            self._sock = socket.create_connection((address.host, address.port), timeout)
            self._reader = hiredis.Reader()
            if address.db:
                self._call("SELECT", address.db)
        except (OSError, ValueError) as exc:
            raise AccountStoreError(f"accounts in {url}: {exc}") from None

    def _call(self, *args: Any) -> Any:
        try:
            self._sock.sendall(encode_command(*args))
            while (reply := self._reader.gets()) is False:
                data = self._sock.recv(1 << 16)
                if not data:
                    raise OSError("Redis closed the connection")
                self._reader.feed(data)
        except OSError as exc:
            raise AccountStoreError(f"accounts in {self.path}: {exc}") from None
        if isinstance(reply, hiredis.ReplyError):
            raise AccountStoreError(f"accounts in {self.path}: {reply}")
        return reply

    def _record(self, name: str) -> dict[str, Any] | None:
        raw = self._call("HGET", ACCOUNTS, fold(name))
        return json.loads(raw) if raw else None

    def get(self, name: str) -> Account | None:
        record = self._record(name)
        if record is None:
            return None
        return Account(record["n"], record["s"].encode(), float(record["c"]))

    def owner(self, nick: str) -> str | None:
        found = self.get(nick)
        return found.name if found is not None else None

    def add(self, name: str, secret: bytes, now: float | None = None) -> bool:
        created = time.time() if now is None else now
        record = json.dumps({"n": name, "s": secret.decode(), "c": round(created, 3)})
        event = f"acct {_NODE} - " + json.dumps({"op": "add", "rec": record})
        args = [fold(name), nick_skeleton(name), record, MAX_ACCOUNTS, CHANNEL, event]
        return bool(self._call("EVAL", ACCOUNT_SCRIPTS["acct_add"], 0, *args) == 1)

    def _set(self, name: str, record: str, op: str) -> bool:
        event = f"acct {_NODE} - " + json.dumps({"op": op, "n": name, "rec": record})
        args = [fold(name), nick_skeleton(name), record, CHANNEL, event]
        return bool(self._call("EVAL", ACCOUNT_SCRIPTS["acct_set"], 0, *args) == 1)

    def set_secret(self, name: str, secret: bytes) -> bool:
        found = self.get(name)
        if found is None:
            return False
        record = json.dumps({"n": found.name, "s": secret.decode(), "c": found.created})
        return self._set(found.name, record, "set")

    def delete(self, name: str) -> bool:
        found = self.get(name)
        return found is not None and self._set(found.name, "", "del")

    def names(self) -> list[tuple[str, float]]:
        flat = self._call("HGETALL", ACCOUNTS) or []
        records = [json.loads(raw) for raw in flat[1::2]]
        return sorted((r["n"], float(r["c"])) for r in records if "n" in r)

    def close(self) -> None:
        self._sock.close()
