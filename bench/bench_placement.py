"""Placement: 10,000 queued requests onto 1,000 simulated nodes x 8 GPUs.

Ours (best fit over per-model buckets of nodes by free count) against a naive first fit that
scans the nodes in order for every request, on the same requests in the same run.

1. One pass: both run one backfill pass, so every request gets a decision (placed, or does
   not fit now); the time includes submission (queueing and the never-fits check).
2. Churn: the default head-of-line mode drains the whole queue; after each scheduling pass
   250 placements chosen at random end. Reported: time to place all 10,000, and the GPUs left idle
   while requests waited (averaged over passes), which is what poor packing costs.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TypeVar

from aicloud.products.gpuaas import (
    GpuSlot,
    NodeCapacity,
    NodeState,
    PlacementEngine,
    PlacementRequest,
)
from bench.harness import Measurement

T = TypeVar("T")
N_NODES, GPUS_PER_NODE, N_REQUESTS, REPEAT, CHURN = 1_000, 8, 10_000, 3, 250
SIZES = (1, 1, 1, 2, 2, 4, 8)


def _nodes() -> list[NodeCapacity]:
    gpus = tuple(GpuSlot(i, "H100") for i in range(GPUS_PER_NODE))
    return [NodeCapacity(f"node{i:05d}", NodeState.READY, gpus) for i in range(N_NODES)]


def _requests(seed: int = 7) -> list[PlacementRequest]:
    rnd = random.Random(seed)
    return [PlacementRequest(f"req{i:06d}", "H100", rnd.choice(SIZES)) for i in range(N_REQUESTS)]


@dataclass
class _NaiveNode:
    node_id: str
    free: list[int] = field(default_factory=lambda: list(range(GPUS_PER_NODE)))


def naive_first_fit(nodes: list[NodeCapacity], requests: list[PlacementRequest]) -> int:
    """The textbook baseline: for each request, the first node (in id order) with room."""
    table = [_NaiveNode(n.node_id) for n in sorted(nodes, key=lambda n: n.node_id)]
    queue = list(requests)
    allocated = 0
    for request in queue:
        for node in table:
            if len(node.free) >= request.count:
                del node.free[: request.count]
                allocated += request.count
                break
    return allocated


def ours(nodes: list[NodeCapacity], requests: list[PlacementRequest]) -> int:
    engine = PlacementEngine(nodes, backfill=True)
    for request in requests:
        engine.submit(request)
    return sum(len(p.gpu_indices) for p in engine.schedule())


def _ending(running: list[T], rnd: random.Random) -> list[T]:
    """CHURN running placements chosen at random end (removed from ``running``)."""
    rnd.shuffle(running)
    ending = running[-CHURN:]
    del running[-CHURN:]
    return ending


def naive_churn(nodes: list[NodeCapacity], requests: list[PlacementRequest]) -> float:
    """First fit with the same head-of-line rule and the same churn as ``ours_churn``."""
    table = [_NaiveNode(n.node_id) for n in sorted(nodes, key=lambda n: n.node_id)]
    queue = list(requests)
    running: list[tuple[_NaiveNode, list[int]]] = []
    rnd = random.Random(11)
    head, idle_sum, passes = 0, 0, 0
    while head < len(queue):
        while head < len(queue):
            request = queue[head]
            for node in table:
                if len(node.free) >= request.count:
                    taken = node.free[: request.count]
                    del node.free[: request.count]
                    running.append((node, taken))
                    break
            else:
                break  # the head does not fit: everything behind it waits
            head += 1
        if head < len(queue):
            idle_sum += sum(len(node.free) for node in table)
            passes += 1
        for node, taken in _ending(running, rnd):
            node.free.extend(taken)
            node.free.sort()
    return idle_sum / max(passes, 1)


def ours_churn(nodes: list[NodeCapacity], requests: list[PlacementRequest]) -> float:
    engine = PlacementEngine(nodes)
    for request in requests:
        engine.submit(request)
    running: list[str] = []
    rnd = random.Random(11)
    idle_sum, passes = 0, 0
    while engine.queue_length():
        running += [p.request_id for p in engine.schedule()]
        if engine.queue_length():
            idle_sum += engine.free_gpu_total("H100")
            passes += 1
        for request_id in _ending(running, rnd):
            engine.release(request_id)
    return idle_sum / max(passes, 1)


def _best_time(fn, nodes, requests) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    best, allocated = float("inf"), 0.0
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        allocated = fn(nodes, requests)
        best = min(best, time.perf_counter() - t0)
    return best, allocated


def run() -> list[Measurement]:
    nodes, requests = _nodes(), _requests()
    t_ours, gpus_ours = _best_time(ours, nodes, requests)
    t_naive, gpus_naive = _best_time(naive_first_fit, nodes, requests)
    t_churn, idle = _best_time(ours_churn, nodes, requests)
    t_churn_naive, idle_naive = _best_time(naive_churn, nodes, requests)
    total = N_NODES * GPUS_PER_NODE
    return [
        Measurement(
            f"best-fit placement, {N_REQUESTS:,} requests on {N_NODES:,}x{GPUS_PER_NODE} GPUs",
            N_REQUESTS / t_ours, "decisions/s", "naive first-fit scan", N_REQUESTS / t_naive,
        ),
        Measurement(
            "GPUs allocated by that pass (packing)", gpus_ours, f"of {total} GPUs",
            "naive first-fit scan", gpus_naive,
        ),
        Measurement(
            f"churn: drain {N_REQUESTS:,} requests, {CHURN} random ends per pass (head-of-line)",
            N_REQUESTS / t_churn, "placements/s", "naive first-fit scan",
            N_REQUESTS / t_churn_naive,
        ),
        Measurement(
            "churn: GPUs idle while requests wait (mean per pass)", idle, "GPUs",
            "naive first-fit scan", idle_naive, higher_is_better=False,
        ),
    ]


if __name__ == "__main__":
    for m in run():
        print(f"{m.name}: {m.value:,.1f} {m.unit}; {m.baseline_name}: "
              f"{m.baseline_value:,.1f}; ratio {m.ratio:.2f}x")
