"""chatd.throttle: per-address failure budgets, with a fake clock."""

from __future__ import annotations

import pytest

from chatd.throttle import Episode, Throttle, address_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_per_key() -> None:
    clock = Clock()
    throttle = Throttle(rate=1.0, burst=3, clock=clock)
    assert throttle.delay("a") == 0.0
    starts = [throttle.failed("a") for _ in range(3)]
    assert starts == [False, False, True]  # the third empties the budget: log once
    assert throttle.throttled("a")
    assert throttle.delay("a") == pytest.approx(1.0)
    assert throttle.delay("b") == 0.0  # another address is not slowed
    clock.now += 0.5
    assert throttle.delay("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert throttle.delay("a") == 0.0
    assert throttle.failed("a") is False  # still the same episode: no second log line


def test_sustained_rate_over_many_failures() -> None:
    clock = Clock()
    throttle = Throttle(rate=2.0, burst=5, clock=clock)
    failures = 0
    while clock.now < 110.0:  # a guesser that tries the moment it may
        wait = throttle.delay("a")
        if wait:
            clock.now += wait
            continue
        throttle.failed("a")
        failures += 1
    assert failures <= 5 + 2 * 10 + 1


def test_sweep_forgets_full_buckets_and_reports_episodes() -> None:
    clock = Clock()
    throttle = Throttle(rate=1.0, burst=2, clock=clock)
    throttle.failed("a")
    throttle.failed("a")
    throttle.failed("b")
    assert throttle.sweep() == []
    clock.now += 2.0
    episodes = sorted(throttle.sweep(), key=lambda e: e.key)
    assert episodes == [Episode("a", 2, 2.0, True), Episode("b", 1, 2.0, False)]
    assert len(throttle) == 0
    assert not throttle.throttled("a")


def test_memory_is_bounded() -> None:
    clock = Clock()
    throttle = Throttle(rate=1.0, burst=5, clock=clock, max_keys=10)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) <= 10


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Throttle(rate=0, burst=1, clock=Clock())
    with pytest.raises(ValueError):
        Throttle(rate=1, burst=0, clock=Clock())


@pytest.mark.parametrize(
    "host, key",
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),  # same /64: one host
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
    ],
)
def test_address_key(host: str, key: str) -> None:
    assert address_key(host) == key
