"""Password hashes: ``hashlib.scrypt`` with a per-account salt, compared in constant time.

Pure: the salt is given by the caller (the account gate draws it from ``secrets``), so
tests can pin it. A hash record is self-describing bytes, ``scrypt$n$r$p$salt$hash``
(salt and hash in hex), so the cost can be raised later without breaking old accounts.

Cost: n=2**14, r=8, p=1 needs 16 MiB and about 35 ms of one core here (measured); it
runs on the server's single thread, which is why the login throttle stands in front of
every verification (docs/accounts.md).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["hash_password", "check_password", "SALT_BYTES", "MIN_PASSWORD", "MAX_PASSWORD"]

SALT_BYTES = 16
MIN_PASSWORD = 8  # characters
MAX_PASSWORD = 200  # characters: longer costs scrypt nothing, but nobody types more
_N, _R, _P = 2**14, 8, 1
_DKLEN = 32
_MAXMEM = 64 * 1024 * 1024


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_DKLEN)


def hash_password(password: str, salt: bytes) -> bytes:
    """The record to store for ``password`` (``salt``: :data:`SALT_BYTES` random bytes)."""
    digest = _scrypt(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}".encode()


def check_password(record: bytes, password: str) -> bool:
    """Whether ``password`` matches ``record``; a malformed record matches nothing."""
    try:
        kind, n, r, p, salt, digest = record.decode().split("$")
        if kind != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        got = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(got, expected)
