"""A small runner for background controllers: reconcile loops and periodic sweeps.

Each controller runs in its own thread at its own interval. A failing pass is logged and
retried at the next interval; one controller's failure never stops another. ``stop()``
lets the pass in progress finish, so a clean shutdown never cuts a transaction in half.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Controller:
    name: str
    interval_seconds: float
    run_once: Callable[[], object]
    passes: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)
    last_error: str | None = field(default=None, init=False)


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
        self._threads.clear()

    def wait(self) -> None:
        """Block until stop() is called (used by ``aicloud worker``)."""
        while not self._stop.wait(0.5):
            pass

    def _loop(self, controller: Controller) -> None:
        while not self._stop.is_set():
            try:
                controller.run_once()
                controller.last_error = None
            except Exception as exc:  # a controller bug must not kill the loop
                controller.failures += 1
                controller.last_error = repr(exc)
                log.exception("controller %s failed; retrying in %.1fs", controller.name,
                              controller.interval_seconds)
            controller.passes += 1
            self._stop.wait(controller.interval_seconds)
