"""Terminal keystroke -> echo round trip through the node's terminal keeper, against the same
terminal read and written directly (the keeper's own cost: its reading thread, the ring
buffer, the recording and the hand-off to the attached client's sink).

Each keystroke is ``x`` + Enter typed into ``cat`` on a PTY in the workload's sandbox; the
round trip ends when the terminal's echo and cat's copy (6 bytes) have arrived. The transport
(the agent's link, the WebSocket) is not included: it adds its own hops on top.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from aicloud.adapters.providers.base import WorkloadKind, WorkloadSpec
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.platform.access import QueueSink, TerminalKeeper
from bench.harness import MIN_SAMPLES_FOR_P99, Measurement, percentiles

KEYSTROKE, ECHOED = b"x\n", 6  # "x\r\n" echoed by the terminal, then "x\r\n" from cat
N = MIN_SAMPLES_FOR_P99


def _direct(provider: LocalProvider, handle: object) -> list[float]:
    samples = []
    with provider.exec(handle, ["cat"]) as session:  # type: ignore[arg-type]
        for _ in range(N):
            t0 = time.perf_counter()
            session.write(KEYSTROKE)
            got = 0
            while got < ECHOED:
                got += len(session.read(4096, timeout=5) or b"")
            samples.append(time.perf_counter() - t0)
    return samples


def _keeper(keeper: TerminalKeeper, handle: object) -> list[float]:
    samples = []
    sink = QueueSink()
    attachment = keeper.open_attached(handle, sink, command=["cat"])  # type: ignore[arg-type]
    for _ in range(N):
        t0 = time.perf_counter()
        attachment.write(KEYSTROKE)
        got = 0
        while got < ECHOED:
            event = sink.get(5)
            assert event is not None and event.end is None, "cat ended"
            got += len(event.data)
        samples.append(time.perf_counter() - t0)
    keeper.close(attachment.session_id)
    return samples


def run() -> list[Measurement]:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        root.chmod(0o711)  # the sandbox mounts a workload's dir by path, as the workload's uid
        provider = LocalProvider(root / "workloads", sandbox="auto")
        handle = provider.create(WorkloadSpec("bench-term", WorkloadKind.SHELL))
        provider.start(handle)
        try:
            keeper = TerminalKeeper(provider, root / "recordings")
            base = percentiles(_direct(provider, handle))
            ours = percentiles(_keeper(keeper, handle))
            keeper.shutdown()
        finally:
            provider.stop(handle, grace_seconds=1)
    label = f"cat on a PTY, {provider.sandbox} sandbox"
    return [
        Measurement(f"terminal keystroke echo p50 through the keeper ({label})",
                    ours["p50"] * 1e6, "µs", "the PTY read/written directly",
                    base["p50"] * 1e6, higher_is_better=False),
        Measurement(f"terminal keystroke echo p99 through the keeper ({label})",
                    ours["p99"] * 1e6, "µs", "the PTY read/written directly",
                    base["p99"] * 1e6, higher_is_better=False,
                    target="p99 < 20 ms (20,000 µs) end to end; the link adds its hops"),
    ]
