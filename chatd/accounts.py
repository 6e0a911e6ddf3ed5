"""The account gate: where passwords stop, before the hub (part of the server's shell).

The server hands every command that names a nick or carries an account password to
:meth:`AccountGate.prepare` before the hub sees it. The gate

- looks up who owns the nick concerned (``Verified.owner``), so the hub can keep
  registered nicks for their accounts;
- checks a login password against the stored hash, **after** asking the login throttle
  (chatd.login_throttle) whether this address and account may try now: a throttled
  attempt is refused without hashing, so guessing costs the server no scrypt time;
- hashes a new password (register, passwd) with a fresh random salt;
- returns the same command with every password field emptied and ``verified`` filled in.

So the hub decides everything (may this client register? take this nick?) and never sees
a password; nothing here logs one. The scrypt work runs on the server's thread (about
35 ms a check, docs/accounts.md): the throttle bounds how much of it one address can ask
for.

:meth:`carry_out` writes what the hub decided (SaveAccount, DeleteAccount).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable
from typing import Any, cast

from chatd.accounts_store import AccountStore, AccountStoreError
from chatd.config import Config
from chatd.login_throttle import LoginThrottle
from chatd.model import (
    Command,
    DeleteAccount,
    DropAccount,
    Error,
    ErrorCode,
    Hello,
    Identify,
    Nick,
    Register,
    SaveAccount,
    SetPassword,
    Verified,
)
from chatd.passwords import MAX_PASSWORD, MIN_PASSWORD, SALT_BYTES, check_password, hash_password

__all__ = ["AccountGate", "new_token"]

logger = logging.getLogger(__name__)

_GATED = (Hello, Nick, Register, Identify, SetPassword, DropAccount)
# Checked against when an account does not exist, so a wrong name costs as much time as a
# wrong password and the answer's timing does not tell which accounts exist. Made on first
# use: scrypt takes 16 MiB for a moment, which a server without logins need not pay.
_dummy: list[bytes] = []


def _dummy_record() -> bytes:
    if not _dummy:
        _dummy.append(hash_password("not a password", bytes(SALT_BYTES)))
    return _dummy[0]


def _no_passwords(command: Command) -> dict[str, None]:
    fields = ("password", "account_password", "new_password")
    emptied = {name: None for name in fields if hasattr(command, name)}
    if isinstance(command, Hello):
        emptied.pop("password")  # the server password is the hub's to check
    return emptied


def new_token() -> str:
    """A resume token: 128 random bits, URL-safe text."""
    return secrets.token_urlsafe(16)


class AccountGate:
    """Args:
    config: the policy (``accounts``, ``registration``).
    store: the accounts table (None: no store, as with ``accounts = "off"``).
    throttle: per-address and per-account login throttling.
    account_of / nick_of: what the hub knows about a connection.
    salt: random bytes for new hashes (injectable for tests).
    """

    def __init__(
        self,
        config: Config,
        store: AccountStore | None,
        throttle: LoginThrottle,
        account_of: Callable[[int], str | None],
        nick_of: Callable[[int], str | None],
        salt: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._config = config
        self._store = store if config.accounts != "off" else None
        self._throttle = throttle
        self._account_of = account_of
        self._nick_of = nick_of
        self._salt = salt
        self.checks = 0  # passwords hashed or checked (observability; tests read it)
        self.refused_throttled = 0

    def prepare(self, cid: int, address: str, command: Command) -> Command:
        """``command`` with its passwords replaced by what they proved (see module doc)."""
        if not isinstance(command, _GATED):
            return command
        try:
            return self._prepare(cid, address, command)
        except AccountStoreError as exc:
            # Fail closed: without the store nobody can prove a nick is not registered.
            logger.error("%s", exc)
            busy = Verified(error=ErrorCode.ACCOUNTS_BUSY, message="accounts are busy; try again")
            fields: dict[str, Any] = {"verified": busy, **_no_passwords(command)}
            return dataclasses.replace(cast(Any, command), **fields)  # type: ignore[no-any-return]

    def _prepare(self, cid: int, address: str, command: Command) -> Command:
        match command:
            case Hello(nick=nick):
                verified = Verified(owner=self._owner(nick))
                # With accounts off, credentials in a hello are ignored, not refused: an
                # IRC client's habitual PASS must not keep it out of a server without any.
                if command.account_password is not None and self._store is not None:
                    account = command.account or nick
                    verified = self._login(address, account, command.account_password, verified)
                return dataclasses.replace(
                    command, account_password=None, password=command.password, verified=verified
                )
            case Nick(nick=nick):
                return dataclasses.replace(command, verified=Verified(owner=self._owner(nick)))
            case Identify(account=account, password=password):
                name = account or self._nick_of(cid) or ""
                verified = self._login(address, name, password or "", Verified())
                return dataclasses.replace(command, password=None, verified=verified)
            case Register(password=password):
                return dataclasses.replace(
                    command, password=None, verified=self._new_secret(cid, address, password)
                )
            case SetPassword(password=old, new_password=new):
                verified = self._login(address, self._account_of(cid), old or "", Verified())
                if verified.account is not None:
                    fresh = self._new_secret(cid, address, new, check_owner=False)
                    verified = dataclasses.replace(
                        fresh, account=verified.account if not fresh.error else None
                    )
                return dataclasses.replace(
                    command, password=None, new_password=None, verified=verified
                )
            case DropAccount(password=password):
                verified = self._login(address, self._account_of(cid), password or "", Verified())
                return dataclasses.replace(command, password=None, verified=verified)
        return command  # pragma: no cover - _GATED lists exactly the cases above

    def _owner(self, nick: str) -> str | None:
        return self._store.owner(nick) if self._store is not None else None

    def _login(
        self, address: str, account: str | None, password: str, verified: Verified
    ) -> Verified:
        if self._store is None:
            return dataclasses.replace(
                verified, error=ErrorCode.ACCOUNTS_OFF, message="accounts are off on this server"
            )
        if not account:
            return dataclasses.replace(
                verified, error=ErrorCode.NOT_LOGGED_IN, message="you are not logged in"
            )
        wait = self._throttle.wait(address, account)
        if wait > 0:
            self.refused_throttled += 1
            return dataclasses.replace(
                verified,
                error=ErrorCode.THROTTLED,
                message=f"too many wrong passwords; try again in {wait:.1f}s",
            )
        record = self._store.get(account)
        self.checks += 1
        self._throttle.checked(address)
        ok = check_password(
            record.secret if record else _dummy_record(), password[: MAX_PASSWORD * 4]
        )
        if record is None or not ok:
            logger.debug("failed login to account %r from %s", account[:40], address)
            if self._throttle.failed(address, account):  # one line per address, not per try
                logger.warning("%s: wrong account passwords; slowing its guesses", address)
            return dataclasses.replace(
                verified, error=ErrorCode.BAD_LOGIN, message="wrong account or password"
            )
        self._throttle.succeeded(account)
        return dataclasses.replace(verified, account=record.name)

    def _new_secret(
        self, cid: int, address: str, password: str | None, *, check_owner: bool = True
    ) -> Verified:
        if self._store is None:  # accounts off, or no store (a --cluster node)
            return Verified(error=ErrorCode.ACCOUNTS_OFF, message="accounts are off here")
        nick = self._nick_of(cid)
        owner = self._owner(nick) if nick and check_owner else None
        closed = self._config.registration != "open"
        if check_owner and (owner is not None or closed):
            return Verified(owner=owner)  # the hub refuses with the reason; no hashing
        if password is None or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            return Verified(
                owner=owner,
                error=ErrorCode.BAD_REQUEST,
                message=f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters",
            )
        wait = self._throttle.wait(address, None)
        if wait > 0:
            self.refused_throttled += 1
            return Verified(
                owner=owner, error=ErrorCode.THROTTLED, message=f"try again in {wait:.1f}s"
            )
        self._throttle.checked(address)
        self.checks += 1
        return Verified(owner=owner, secret=hash_password(password, self._salt(SALT_BYTES)))

    def carry_out(self, action: SaveAccount | DeleteAccount) -> Error | None:
        """Write what the hub decided; an error for the requester if the store refused."""
        if self._store is None:
            return Error(ErrorCode.ACCOUNTS_OFF, "accounts are off on this server")
        try:
            match action:
                case SaveAccount(name=name, secret=secret, create=True):
                    if not self._store.add(name, secret):
                        return Error(ErrorCode.ACCOUNT_EXISTS, f"{name} is registered already")
                    logger.info("account %s registered", name)
                case SaveAccount(name=name, secret=secret):
                    self._store.set_secret(name, secret)
                    logger.info("account %s: password changed", name)
                case DeleteAccount(name=name):
                    self._store.delete(name)
                    logger.info("account %s dropped", name)
        except AccountStoreError as exc:
            logger.error("%s", exc)
            return Error(ErrorCode.BAD_REQUEST, "the account store is busy; try again")
        return None
