"""Placement: best fit, eligibility, rejection reasons, queue order, blocking vs backfill,
and properties checked by hypothesis over random operation sequences."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aicloud.products.gpuaas import (
    GpuSlot,
    NodeCapacity,
    NodeState,
    Placement,
    PlacementEngine,
    PlacementRequest,
    Queued,
    Rejected,
    RejectionCode,
)


def node(node_id: str, n: int = 8, model: str = "H100", state: NodeState = NodeState.READY,
         unhealthy: tuple[int, ...] = ()) -> NodeCapacity:
    return NodeCapacity(node_id, state,
                        tuple(GpuSlot(i, model, i not in unhealthy) for i in range(n)))


def req(rid: str, count: int, model: str = "H100", priority: int = 0) -> PlacementRequest:
    return PlacementRequest(rid, model, count, priority)


def test_best_fit_leaves_the_fewest_free_gpus_and_breaks_ties_by_node_id() -> None:
    engine = PlacementEngine([node("n3", 8), node("n1", 4), node("n2", 4), node("n4", 2)])
    for rid, count in [("a", 3), ("b", 2), ("c", 1), ("d", 8)]:
        engine.submit(req(rid, count))
    placed = {p.request_id: p for p in engine.schedule()}
    # a(3): n1/n2 leave 1, n3 leaves 5 -> n1 (tie with n2 broken by id).
    assert placed["a"] == Placement("a", "n1", "H100", (0, 1, 2))
    # b(2): n4 leaves 0 -> n4 rather than n2 (leaves 2) or n3.
    assert placed["b"] == Placement("b", "n4", "H100", (0, 1))
    # c(1): n1 has exactly 1 left.
    assert placed["c"].node_id == "n1" and placed["c"].gpu_indices == (3,)
    # d(8): only n3 can take it, untouched thanks to best fit.
    assert placed["d"].node_id == "n3"


def test_ineligible_nodes_and_unhealthy_gpus_are_never_used() -> None:
    engine = PlacementEngine([
        node("cordoned", state=NodeState.CORDONED), node("draining", state=NodeState.DRAINING),
        node("down", state=NodeState.DOWN), node("sick", 4, unhealthy=(0, 2)),
    ])
    assert engine.submit(req("a", 2)) == Queued("a", 1)
    assert engine.schedule() == [Placement("a", "sick", "H100", (1, 3))]
    assert engine.submit(req("b", 1)) == Queued("b", 1)
    assert engine.schedule() == []  # everything else is ineligible
    engine.set_gpu_health("sick", 0, True)
    assert engine.schedule() == [Placement("b", "sick", "H100", (0,))]
    engine.set_node_state("cordoned", NodeState.READY)
    engine.submit(req("c", 8))
    assert [p.node_id for p in engine.schedule()] == ["cordoned"]


def test_a_freed_unhealthy_gpu_does_not_return_to_the_pool() -> None:
    engine = PlacementEngine([node("n1", 2)])
    engine.submit(req("a", 2))
    engine.schedule()
    engine.set_gpu_health("n1", 1, False)
    engine.release("a")
    assert engine.free_gpus("n1", "H100") == [0]
    engine.submit(req("b", 2))
    assert engine.schedule() == []


def test_requests_that_can_never_fit_are_rejected_at_once_with_a_reason() -> None:
    engine = PlacementEngine([node("n1", 8), node("n2", 4, model="A100",
                                                   state=NodeState.DOWN)])
    too_big = engine.submit(req("a", 9))
    assert isinstance(too_big, Rejected) and too_big.code is RejectionCode.EXCEEDS_NODE_SIZE
    assert too_big.reason == ("9 H100 GPUs requested but the largest node has 8; a request "
                              "is never split across nodes")
    unknown = engine.submit(req("b", 1, model="B200"))
    assert isinstance(unknown, Rejected) and unknown.code is RejectionCode.UNKNOWN_MODEL
    assert "'B200'" in unknown.reason and "A100, H100" in unknown.reason
    # The same check without queuing, for a caller that rejects before admission.
    assert engine.never_fits(req("a2", 9)) == Rejected("a2", too_big.code, too_big.reason)
    assert engine.never_fits(req("ok", 8)) is None and engine.queue() == []
    zero = engine.submit(req("c", 0))
    assert isinstance(zero, Rejected) and zero.code is RejectionCode.INVALID_COUNT
    # Installed on a down node: waits for it rather than being rejected.
    assert engine.submit(req("d", 4, model="A100")) == Queued("d", 1)
    assert engine.queue() == [Queued("d", 1)]
    # Removing the only A100 node makes the queued request impossible: rejected then.
    engine.set_node_state("n2", NodeState.DOWN)
    (gone,) = engine.remove_node("n2")
    assert (gone.request_id, gone.code) == ("d", RejectionCode.UNKNOWN_MODEL)
    assert engine.queue() == []
    # Shrinking a node likewise rejects what can no longer fit.
    assert engine.submit(req("e", 8)) == Queued("e", 1)
    engine.set_node_state("n1", NodeState.CORDONED)
    (shrunk,) = engine.upsert_node(node("n1", 6, state=NodeState.CORDONED))
    assert (shrunk.request_id, shrunk.code) == ("e", RejectionCode.EXCEEDS_NODE_SIZE)


def test_queue_is_fifo_within_priority_with_positions() -> None:
    engine = PlacementEngine([node("n1", 1)])
    engine.submit(req("hold", 1))
    engine.schedule()
    assert engine.submit(req("low1", 1)) == Queued("low1", 1)
    assert engine.submit(req("low2", 1)) == Queued("low2", 2)
    assert engine.submit(req("high1", 1, priority=5)) == Queued("high1", 1)
    assert engine.submit(req("high2", 1, priority=5)) == Queued("high2", 2)
    assert [q.request_id for q in engine.queue()] == ["high1", "high2", "low1", "low2"]
    assert engine.position("low1") == 3
    assert engine.cancel("high2") and not engine.cancel("high2")
    assert engine.position("low1") == 2
    order = []
    for holder in ["hold", "high1", "low1", "low2"]:
        engine.release(holder)
        order += [p.request_id for p in engine.schedule()]
    assert order == ["high1", "low1", "low2"]


def test_head_of_line_blocks_smaller_requests_of_the_same_model_only() -> None:
    engine = PlacementEngine([node("h", 8), node("a", 8, model="A100")])
    engine.submit(req("first", 6))
    engine.schedule()  # 2 H100 left
    engine.submit(req("big", 4))  # waits for 4
    engine.submit(req("small", 1))  # would fit, but is behind big
    engine.submit(req("other-model", 2, model="A100"))
    assert [p.request_id for p in engine.schedule()] == ["other-model"]
    assert [q.request_id for q in engine.queue()] == ["big", "small"]
    engine.release("first")
    assert [p.request_id for p in engine.schedule()] == ["big", "small"]


def test_backfill_places_smaller_requests_around_a_blocked_head() -> None:
    engine = PlacementEngine([node("h", 8)], backfill=True)
    engine.submit(req("first", 6))
    engine.schedule()
    engine.submit(req("big", 4))
    engine.submit(req("small", 1))
    assert [p.request_id for p in engine.schedule()] == ["small"]
    assert engine.queue() == [Queued("big", 1)]


def test_duplicate_submission_and_removing_a_busy_node_are_refused() -> None:
    engine = PlacementEngine([node("n1", 2)])
    engine.submit(req("a", 1))
    engine.schedule()
    for bad in (lambda: engine.submit(req("a", 1)), lambda: engine.remove_node("n1"),
                lambda: engine.upsert_node(node("n1", 0))):
        try:
            bad()
        except ValueError:
            continue
        raise AssertionError("expected ValueError")


# --- properties -------------------------------------------------------------------------

MODELS = ("H100", "A100")
node_strategy = st.builds(
    lambda i, n, model, state, bad: node(f"n{i:02d}", n, model, state, tuple(bad)),
    st.integers(0, 99), st.integers(1, 8), st.sampled_from(MODELS),
    st.sampled_from(list(NodeState)), st.sets(st.integers(0, 7), max_size=3),
)
op_strategy = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from((*MODELS, "B200")), st.integers(0, 9),
              st.integers(0, 2)),
    st.tuples(st.just("schedule")),
    st.tuples(st.just("release"), st.integers(0, 1000)),
    st.tuples(st.just("state"), st.integers(0, 1000), st.sampled_from(list(NodeState))),
    st.tuples(st.just("health"), st.integers(0, 1000), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 1000)),
)


def _check(engine: PlacementEngine, nodes: dict[str, NodeCapacity],
           new: list[Placement], requests: dict[str, PlacementRequest]) -> None:
    holders: dict[tuple[str, int], str] = {}
    for p in engine.placements():
        assert len(set(p.gpu_indices)) == len(p.gpu_indices) == requests[p.request_id].count
        assert p.model == requests[p.request_id].model
        for index in p.gpu_indices:
            key = (p.node_id, index)
            assert key not in holders, f"GPU {key} given to {holders.get(key)} and {p}"
            holders[key] = p.request_id
            slots = {g.index: g for g in nodes[p.node_id].gpus}
            assert slots[index].model == p.model
    for p in new:  # eligibility at the moment of placement
        current = nodes[p.node_id]
        assert current.state is NodeState.READY
        slots = {g.index: g for g in current.gpus}
        assert all(slots[i].healthy for i in p.gpu_indices)


@settings(max_examples=150, deadline=None)
@given(st.lists(node_strategy, min_size=1, max_size=6, unique_by=lambda n: n.node_id),
       st.lists(op_strategy, max_size=60), st.booleans())
def test_placement_invariants_hold_for_any_operation_sequence(
    node_list: list[NodeCapacity], ops: list[tuple], backfill: bool
) -> None:
    nodes = {n.node_id: n for n in node_list}
    ids = sorted(nodes)
    engine = PlacementEngine(node_list, backfill=backfill)
    requests: dict[str, PlacementRequest] = {}
    for n, op in enumerate(ops):
        new: list[Placement] = []
        if op[0] == "submit":
            r = req(f"r{n}", op[2], op[1], op[3])
            requests[r.request_id] = r
            outcome = engine.submit(r)
            installed = max((sum(g.model == r.model for g in x.gpus) for x in node_list),
                            default=0)
            assert isinstance(outcome, Rejected) == (r.count < 1 or r.count > installed)
        elif op[0] == "schedule":
            before = [q.request_id for q in engine.queue()]
            new = engine.schedule()
            # Placed in queue order.
            assert [p.request_id for p in new] == [r for r in before
                                                   if r in {p.request_id for p in new}]
        elif op[0] == "release":
            held = sorted(p.request_id for p in engine.placements())
            if held:
                engine.release(held[op[1] % len(held)])
        elif op[0] == "state":
            nid = ids[op[1] % len(ids)]
            engine.set_node_state(nid, op[2])
            nodes[nid] = NodeCapacity(nid, op[2], nodes[nid].gpus)
        elif op[0] == "health":
            nid = ids[op[1] % len(ids)]
            gpus = nodes[nid].gpus
            g = gpus[op[2] % len(gpus)]
            engine.set_gpu_health(nid, g.index, op[3])
            nodes[nid] = NodeCapacity(nid, nodes[nid].state, tuple(
                GpuSlot(x.index, x.model, op[3] if x.index == g.index else x.healthy)
                for x in gpus))
        elif op[0] == "cancel":
            queued = [q.request_id for q in engine.queue()]
            if queued:
                assert engine.cancel(queued[op[1] % len(queued)])
        _check(engine, nodes, new, requests)
        positions = [q.position for q in engine.queue()]
        assert positions == list(range(1, len(positions) + 1))


@settings(max_examples=100, deadline=None)
@given(st.lists(node_strategy, min_size=1, max_size=8, unique_by=lambda n: n.node_id),
       st.sampled_from(MODELS), st.integers(1, 8))
def test_the_chosen_node_is_the_best_fit(node_list: list[NodeCapacity], model: str,
                                         count: int) -> None:
    """Compared with a brute-force search over all eligible nodes."""
    engine = PlacementEngine(node_list)
    free = {n.node_id: sum(1 for g in n.gpus if g.model == model and g.healthy)
            for n in node_list if n.state is NodeState.READY}
    fitting = sorted((f - count, nid) for nid, f in free.items() if f >= count)
    outcome = engine.submit(req("x", count, model))
    placed = engine.schedule()
    if isinstance(outcome, Rejected):
        assert placed == []
    elif fitting:
        assert [p.node_id for p in placed] == [fitting[0][1]]
    else:
        assert placed == []


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(0, 8), st.sampled_from(["H100", "A100"])),
                      min_size=1, max_size=25),
       requests=st.lists(st.tuples(st.integers(1, 8), st.sampled_from(["H100", "A100"])),
                         max_size=40),
       page=st.integers(1, 4))
def test_best_fit_over_paged_counts_chooses_like_the_engine(
        sizes: list[tuple[int, str]], requests: list[tuple[int, str]], page: int) -> None:
    """BestFit reads free counts a page at a time (the scheduler reads them from an index);
    whatever the page size, it picks the node the in-memory engine picks."""
    from aicloud.products.gpuaas.placement import BestFit

    nodes = [node(f"n{i:02d}", n, model) for i, (n, model) in enumerate(sizes) if n]
    engine = PlacementEngine(nodes, backfill=True)
    counts = {(nd.node_id, nd.gpus[0].model): len(nd.gpus) for nd in nodes}
    reads: list[int] = []

    def read(model: str, free: int, after: str | None, limit: int) -> list[str]:
        reads.append(limit)
        return sorted(n for (n, m), c in counts.items()
                      if m == model and c == free and (after is None or n > after))[:limit]

    fit = BestFit(read, lambda m: max((c for (_, mm), c in counts.items() if mm == m),
                                      default=0), page=page)
    for i, (count, model) in enumerate(requests):
        assert isinstance(engine.submit(req(f"r{i:02d}", count, model)), (Queued, Rejected))
    expected = {p.request_id: p.node_id for p in engine.schedule()}
    got = {}
    for i, (count, model) in enumerate(requests):
        node_id = fit.take(model, count)
        if node_id is not None:
            got[f"r{i:02d}"] = node_id
    assert got == expected
    assert all(limit <= page for limit in reads)
