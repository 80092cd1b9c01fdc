"""A small runner for background controllers: reconcile loops and periodic sweeps.

Each controller runs in its own thread at its own interval. A failing pass is logged and
retried after a backoff (:class:`Backoff`: exponential from the interval, with jitter, capped
at ``max_backoff_seconds``), so a controller whose database or provider is down neither spins
nor floods the log, and many processes that failed together do not retry in lockstep; the
first success restores the interval. One controller's failure never stops another.
``stop()`` lets the pass in progress finish, so a clean shutdown never cuts a transaction in
half, then runs each controller's ``on_stop`` (e.g. handing back its leases).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_RANDOM = random.Random()


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter, capped, as kopf retries a temporary error.

    The n-th consecutive failure waits a random time in [d/2, d] where
    d = min(cap, base * 2**(n-1)): the delays double until the cap (each at least the one
    before it while below the cap), and the random half spreads the retries of many workers.
    """

    base: float
    cap: float

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError(f"backoff needs 0 < base <= cap, got {self.base}, {self.cap}")

    def ceiling(self, attempt: int) -> float:
        """The longest delay of the ``attempt``-th consecutive failure (1-based)."""
        return min(self.cap, self.base * 2.0 ** min(max(attempt, 1) - 1, 60))

    def delay(self, attempt: int, rng: random.Random = _RANDOM) -> float:
        d = self.ceiling(attempt)
        return d / 2 + rng.random() * d / 2


@dataclass
class Controller:
    name: str
    interval_seconds: float
    run_once: Callable[[], object]
    # Consecutive failures back off up to this (never below the interval itself). A heartbeat
    # sets it to its interval: it must not fall silent for longer than that.
    max_backoff_seconds: float = 30.0
    # Run once by ControllerRunner.stop() after the loop has ended.
    on_stop: Callable[[], object] | None = None
    passes: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)
    consecutive_failures: int = field(default=0, init=False)
    last_error: str | None = field(default=None, init=False)

    @property
    def backoff(self) -> Backoff:
        return Backoff(base=self.interval_seconds,
                       cap=max(self.interval_seconds, self.max_backoff_seconds))

    def next_delay(self) -> float:
        """How long to wait before the next pass, given how the last ones went."""
        if self.consecutive_failures == 0:
            return self.interval_seconds
        return self.backoff.delay(self.consecutive_failures)


class ControllerRunner:
    def __init__(self, controllers: list[Controller]):
        self.controllers = controllers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        for controller in self.controllers:
            t = threading.Thread(
                target=self._loop, args=(controller,), name=f"controller-{controller.name}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)
        log.info("started %d controller(s): %s", len(self.controllers),
                 ", ".join(c.name for c in self.controllers) or "-")

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = any(t.is_alive() for t in self._threads)
        self._threads.clear()
        if stuck:  # a pass still runs: its controller's on_stop would race it
            log.warning("controllers did not stop within %.0fs; skipping their on_stop", timeout)
            return
        for controller in self.controllers:
            if controller.on_stop is None:
                continue
            try:
                controller.on_stop()
            except Exception:
                log.exception("controller %s: on_stop failed", controller.name)

    def wait(self) -> None:
        """Block until stop() is called (used by ``aicloud worker``)."""
        while not self._stop.wait(0.5):
            pass

    def _loop(self, controller: Controller) -> None:
        while not self._stop.is_set():
            try:
                controller.run_once()
                controller.last_error = None
                controller.consecutive_failures = 0
            except Exception as exc:  # a controller bug must not kill the loop
                controller.failures += 1
                controller.consecutive_failures += 1
                controller.last_error = repr(exc)
                delay = controller.next_delay()
                log.exception("controller %s failed (%d in a row); retrying in %.1fs",
                              controller.name, controller.consecutive_failures, delay)
                controller.passes += 1
                self._stop.wait(delay)
                continue
            controller.passes += 1
            self._stop.wait(controller.interval_seconds)
