"""The output policy and the deadline heap, in memory."""

from __future__ import annotations

from chatd.config import Config
from chatd.outpolicy import Flow, OutputPolicy, Verdict
from chatd.timers import Timers

POLICY = OutputPolicy(
    Config(
        out_low_water_bytes=100,
        out_high_water_bytes=400,
        out_soft_limit_bytes=1000,
        out_hard_limit_bytes=5000,
        out_soft_limit_seconds=30,
    )
)


def test_high_water_pauses_and_only_low_water_resumes() -> None:
    flow = Flow()
    assert POLICY.judge(flow, 300, 0.0) is Verdict.FINE and not flow.paused
    assert POLICY.judge(flow, 401, 0.0) is Verdict.FINE and flow.paused
    assert POLICY.judge(flow, 200, 0.0) is Verdict.FINE and flow.paused  # hysteresis
    assert POLICY.judge(flow, 100, 0.0) is Verdict.FINE and not flow.paused


def test_soft_limit_starts_skipping_and_expires_after_its_time() -> None:
    flow = Flow()
    assert POLICY.judge(flow, 1001, 10.0) is Verdict.OVER_SOFT
    assert flow.over_soft_since == 10.0 and POLICY.soft_deadline(flow) == 40.0
    assert POLICY.judge(flow, 2000, 20.0) is Verdict.FINE  # still the same episode
    assert not flow.admits(3) and flow.skipped == 3
    assert not POLICY.expired(flow, 10.0, 39.9) and POLICY.expired(flow, 10.0, 40.0)
    # Draining to low water ends the episode; the skipped count is reported once.
    assert POLICY.judge(flow, 50, 25.0) is Verdict.CAUGHT_UP
    assert flow.take_skipped() == 3 and flow.skipped == 0
    assert POLICY.judge(flow, 0, 26.0) is Verdict.FINE
    assert not POLICY.expired(flow, 10.0, 100.0)  # an old episode's timer does nothing
    assert flow.admits(1)


def test_hard_limit_is_at_once() -> None:
    flow = Flow()
    assert POLICY.judge(flow, 5001, 0.0) is Verdict.OVER_HARD


def test_timers_run_in_deadline_order_and_cancelled_ones_never() -> None:
    timers = Timers()
    ran: list[str] = []
    timers.call_at(5.0, lambda: ran.append("b"))
    timers.call_at(1.0, lambda: ran.append("a"))
    late = timers.call_at(9.0, lambda: ran.append("never"))
    timers.call_at(5.0, lambda: ran.append("c"))  # same deadline: in order scheduled
    assert timers.next_deadline() == 1.0
    assert timers.run_due(0.5) == 0 and ran == []
    late.cancel()
    assert timers.run_due(6.0) == 3 and ran == ["a", "b", "c"]
    assert timers.next_deadline() is None  # the cancelled one is dropped, not waited for
    # A callback may schedule one that is already due: it runs in the same call.
    timers.call_at(7.0, lambda: timers.call_at(7.0, lambda: ran.append("d")))
    timers.run_due(7.0)
    assert ran[-1] == "d"


def test_a_timer_with_an_argument_releases_it_when_cancelled() -> None:
    timers = Timers()
    got: list[object] = []
    payload = object()
    kept = timers.call_at(1.0, got.append, payload)
    dropped = timers.call_at(1.0, got.append, "no")
    dropped.cancel()
    assert dropped.arg is not "no"  # noqa: F632 - the handle no longer holds it
    timers.run_due(1.0)
    assert got == [payload] and kept.cancelled
