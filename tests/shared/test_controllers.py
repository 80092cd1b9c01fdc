"""The controller runner: a failing pass backs off exponentially with jitter (capped) instead
of retrying at its interval; a success restores the interval; stop() runs on_stop once the
loop has ended. Real threads and time; only lower bounds on delays are asserted (a loaded
machine can only make them longer)."""

from __future__ import annotations

import random
import threading
import time
from itertools import pairwise

import pytest

from aicloud.shared.controllers import Backoff, Controller, ControllerRunner


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    b = Backoff(base=1.0, cap=30.0)
    assert [b.ceiling(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    rng = random.Random(3)
    for n in range(1, 40):
        delays = [b.delay(n, rng) for _ in range(50)]
        assert all(b.ceiling(n) / 2 <= d <= b.ceiling(n) for d in delays)
        assert len(set(delays)) > 1  # jitter: many workers do not retry in lockstep
    assert b.ceiling(10_000) == 30  # no overflow
    with pytest.raises(ValueError):
        Backoff(base=0, cap=1)
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


def test_a_failing_controller_backs_off_and_a_success_restores_its_interval() -> None:
    calls: list[float] = []
    stopped = threading.Event()

    def run_once() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 4:
            raise RuntimeError("database down")

    c = Controller(name="flaky", interval_seconds=0.05, run_once=run_once,
                   max_backoff_seconds=0.3, on_stop=stopped.set)
    runner = ControllerRunner([c])
    runner.start()
    deadline = time.monotonic() + 20
    while len(calls) < 7 and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.stop()
    assert len(calls) >= 7
    gaps = [b - a for a, b in pairwise(calls)]
    # After failures 1..4 the waits are at least half of 0.05, 0.1, 0.2, 0.3 (capped).
    for gap, ceiling in zip(gaps[:4], (0.05, 0.1, 0.2, 0.3), strict=True):
        assert gap >= ceiling / 2 - 0.005, gaps
    assert gaps[3] > 0.1  # a retry at the plain interval would be 0.05
    assert c.failures == 4 and c.consecutive_failures == 0 and c.last_error is None
    assert stopped.is_set()


def test_the_backoff_of_a_heartbeat_never_exceeds_its_interval() -> None:
    c = Controller(name="beat", interval_seconds=2.0, run_once=lambda: None,
                   max_backoff_seconds=2.0)
    c.consecutive_failures = 12
    assert all(1.0 <= c.next_delay() <= 2.0 for _ in range(100))
    c.consecutive_failures = 0
    assert c.next_delay() == 2.0
