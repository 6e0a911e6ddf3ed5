"""The pieces of accounts outside the hub: hashes, the login throttle, the store, the gate.

The clock is a number we move; the salt is injected where it matters.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chatd.accounts import AccountGate
from chatd.accounts_store import AccountStore
from chatd.config import Config
from chatd.login_throttle import LoginThrottle
from chatd.model import Hello, Identify, Nick, Register, SetPassword, Verified
from chatd.passwords import check_password, hash_password

SALT = bytes(range(16))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- hashes


def test_hash_is_salted_scrypt_and_checks() -> None:
    record = hash_password("correct horse", SALT)
    assert record.startswith(b"scrypt$16384$8$1$" + SALT.hex().encode())
    assert b"correct horse" not in record
    assert check_password(record, "correct horse")
    assert not check_password(record, "correct hors")
    assert hash_password("correct horse", bytes(16)) != record  # the salt matters


def test_malformed_records_match_nothing() -> None:
    for record in (b"", b"plain", b"md5$1$2$3$00$00", b"scrypt$x$8$1$00$00", b"\xff"):
        assert not check_password(record, "anything")


# --------------------------------------------------------------------------- throttle


def test_one_address_gets_a_burst_then_one_guess_a_second() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, rate=1.0, burst=5, free=1000)
    allowed = 0
    for _ in range(100):  # 10 seconds of trying every 0.1 s
        if throttle.wait("10.0.0.9", None) == 0:
            allowed += 1
            throttle.failed("10.0.0.9", None)
        clock.now += 0.1
    assert 5 + 9 <= allowed <= 5 + 11  # burst, then ~1/s
    assert throttle.wait("10.0.0.10", None) == 0  # another address is not slowed


def test_hashing_per_address_is_bounded_even_for_right_passwords() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, check_rate=4.0, check_burst=20)
    allowed = 0
    for _ in range(100):  # 10 seconds of logging in every 0.1 s, always successfully
        if throttle.wait("10.0.0.9", "alice") == 0:
            allowed += 1
            throttle.checked("10.0.0.9")
            throttle.succeeded("alice")
        clock.now += 0.1
    assert 20 + 35 <= allowed <= 20 + 41  # burst, then ~4/s


def test_account_delay_only_slows_and_is_capped() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, burst=10**6, rate=10**6, free=3, base=0.25, cap=2.0)
    for _ in range(3):
        throttle.failed("10.0.0.9", "alice")
    assert 0.24 < throttle.wait("10.0.0.50", "alice") <= 0.25  # anyone: after 0.25 s
    for _ in range(50):  # an attacker from many addresses keeps failing
        clock.now += throttle.wait("10.0.0.9", "alice")
        throttle.failed("10.0.0.9", "alice")
    assert throttle.wait("10.0.0.50", "alice") <= 2.0  # the owner waits at most the cap
    clock.now += 2.0
    assert throttle.wait("10.0.0.50", "alice") == 0
    throttle.succeeded("alice")
    assert throttle.wait("10.0.0.51", "alice") == 0


def test_throttle_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_entries=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 250}.{i % 250}", f"acct{i}")
        throttle.checked(f"10.0.{i // 250}.{i % 250}")
    assert len(throttle.guesses) <= 100 and len(throttle._accounts) == 100
    assert len(throttle.checks) <= 100


def test_account_logins_share_the_servers_guess_budget_per_address() -> None:
    from chatd.throttle import Throttle

    clock = Clock()
    shared = Throttle(1.0, 3, clock)
    throttle = LoginThrottle(clock, shared)
    for _ in range(3):
        shared.failed("10.0.0.9")  # three wrong server passwords
    assert throttle.wait("10.0.0.9", None) > 0  # no account guess either
    assert throttle.wait("10.0.0.10", None) == 0


# --------------------------------------------------------------------------- store


def test_store_add_get_change_delete_and_case(tmp_path: Path) -> None:
    store = AccountStore(str(tmp_path / "h.db"))
    assert store.add("Alice", b"r1")
    assert not store.add("ALICE", b"r2")  # one account per folded name
    assert not store.add("AIice", b"r2")  # nor a look-alike (capital i for l)
    assert store.owner("aIice") == "Alice"  # whose nick it would pass for
    assert store.owner("alice") == "Alice"
    assert store.get("aLiCe").secret == b"r1"  # type: ignore[union-attr]
    assert store.set_secret("alice", b"r3") and store.get("Alice").secret == b"r3"  # type: ignore[union-attr]
    assert [name for name, _ in store.names()] == ["Alice"]
    assert store.delete("alice") and store.owner("alice") is None
    assert not store.delete("alice")
    store.close()


def test_store_holds_hashes_only_and_shares_the_history_file(tmp_path: Path) -> None:
    from chatd.history import open_store

    path = tmp_path / "h.db"
    history = open_store(str(path))  # the running server's history
    store = AccountStore(str(path))  # the server's accounts, same file
    other = AccountStore(str(path))  # `chatd account` while the server runs
    assert other.add("ada", hash_password("s3cret-pass", SALT))
    assert store.owner("ada") == "ada"  # seen at once by the server
    history.close()
    store.close()
    other.close()
    raw = sqlite3.connect(path).execute("SELECT name, secret FROM chatd_accounts").fetchall()
    assert raw[0][0] == "ada" and b"s3cret-pass" not in raw[0][1]
    # and history still opens the file that has an accounts table in it
    open_store(str(path)).close()


def test_accounts_table_made_first_does_not_stop_history(tmp_path: Path) -> None:
    from chatd.history import open_store

    path = tmp_path / "h.db"
    AccountStore(str(path)).close()  # `chatd account add` before the first server start
    open_store(str(path)).close()


# --------------------------------------------------------------------------- the gate


def make_gate(tmp_path: Path, clock: Clock, **config: object) -> tuple[AccountGate, AccountStore]:
    store = AccountStore(str(tmp_path / "h.db"))
    store.add("alice", hash_password("alice-password", SALT))
    nicks = {1: "alice", 2: "bob"}
    accounts = {1: "alice"}
    gate = AccountGate(
        Config(**config),  # type: ignore[arg-type]
        store,
        LoginThrottle(clock),
        accounts.get,
        nicks.get,
        salt=lambda n: SALT[:n],
    )
    return gate, store


def test_gate_strips_passwords_and_says_what_they_proved(tmp_path: Path) -> None:
    clock = Clock()
    gate, _ = make_gate(tmp_path, clock)
    good = gate.prepare(9, "10.0.0.1", Hello("alice", account_password="alice-password"))
    assert isinstance(good, Hello) and good.account_password is None
    assert good.verified == Verified(owner="alice", account="alice")
    bad = gate.prepare(9, "10.0.0.1", Hello("alice", account_password="guess"))
    assert isinstance(bad, Hello) and bad.verified is not None
    assert bad.verified.error == "bad_login" and bad.verified.account is None
    nobody = gate.prepare(9, "10.0.0.1", Identify("nobody", "guess"))
    assert isinstance(nobody, Identify) and nobody.password is None
    assert nobody.verified is not None and nobody.verified.error == "bad_login"
    assert gate.prepare(9, "10.0.0.1", Nick("ALICE")) == Nick("ALICE", verified=Verified("alice"))
    assert gate.prepare(9, "10.0.0.1", Hello("zed")) == Hello("zed", verified=Verified())


def test_gate_does_not_hash_while_throttled(tmp_path: Path) -> None:
    clock = Clock()
    gate, _ = make_gate(tmp_path, clock)
    for _ in range(20):
        gate.prepare(9, "10.0.0.66", Identify("alice", "guess"))
    assert gate.checks == 3  # alice's free failures; then her delay, without scrypt
    for i in range(20):  # many accounts from one address: the address's burst
        gate.prepare(9, "10.0.0.66", Identify(f"user{i}", "guess"))
    assert gate.checks == 5
    assert gate.refused_throttled == 35
    # the owner, from elsewhere, waits out at most the account's short delay
    clock.now += 2.0
    ok = gate.prepare(1, "10.0.0.7", Identify(None, "alice-password"))
    assert isinstance(ok, Identify) and ok.verified == Verified(account="alice")


def test_gate_hashes_new_passwords_with_the_injected_salt(tmp_path: Path) -> None:
    clock = Clock()
    gate, _ = make_gate(tmp_path, clock)
    reg = gate.prepare(2, "10.0.0.1", Register("bob-password"))
    assert isinstance(reg, Register) and reg.password is None and reg.verified is not None
    assert reg.verified.secret == hash_password("bob-password", SALT)
    short = gate.prepare(2, "10.0.0.1", Register("short"))
    assert isinstance(short, Register) and short.verified is not None
    assert short.verified.error == "bad_request" and short.verified.secret is None
    taken = gate.prepare(1, "10.0.0.1", Register("alice-password"))  # alice is registered
    assert isinstance(taken, Register) and taken.verified == Verified(owner="alice")
    change = gate.prepare(1, "10.0.0.1", SetPassword("alice-password", "alice-new-pass"))
    assert isinstance(change, SetPassword) and change.new_password is None
    assert change.verified is not None and change.verified.account == "alice"
    assert change.verified.secret == hash_password("alice-new-pass", SALT)


def test_gate_with_accounts_off_hashes_nothing(tmp_path: Path) -> None:
    clock = Clock()
    gate, _ = make_gate(tmp_path, clock, accounts="off")
    out = gate.prepare(9, "10.0.0.1", Hello("alice", account_password="alice-password"))
    assert isinstance(out, Hello) and out.account_password is None
    assert out.verified == Verified()  # ignored: no login, no error (IRC's habitual PASS)
    out = gate.prepare(9, "10.0.0.1", Identify("alice", "alice-password"))
    assert isinstance(out, Identify) and out.verified is not None
    assert out.verified.error == "accounts_off"
    assert gate.checks == 0


def test_gate_fails_closed_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    clock = Clock()
    gate, store = make_gate(tmp_path, clock)
    store.close()  # any sqlite3 error will do: a closed connection raises one
    for command in (Hello("alice", account_password="alice-password"), Nick("alice")):
        out = gate.prepare(9, "10.0.0.1", command)
        assert out.verified is not None and out.verified.error == "accounts_busy"  # type: ignore[attr-defined]
        assert getattr(out, "account_password", None) is None
