"""GPU placement as pure logic: which node and which GPU indices a request gets, and when.

Rules:

- A request asks for ``count`` whole GPUs of one ``model``, all on ONE node (never split).
- Only nodes in state ``ready`` and GPUs marked healthy are eligible. Cordoned, draining and
  down nodes keep the placements they already have but get no new ones; an unhealthy GPU that
  is freed does not return to the pool until it is healthy again.
- Best fit: among eligible nodes with enough free GPUs of the model, take the one that leaves
  the fewest free GPUs of that model after placement; ties go to the smallest node id. Within
  the node the lowest free healthy indices are used. Best fit keeps whole nodes free for large
  requests instead of fragmenting every node with small ones.
- A request that can never fit is rejected at submission, with a reason: an unknown model (no
  node has it installed) or more GPUs than the largest node has of that model. "Has" counts
  every installed GPU, whatever the node's state or the GPU's health today, because a cordoned
  node or a repaired GPU may come back; such requests wait instead.
- The queue is ordered by priority (higher first), then FIFO by submission. ``position`` is the
  1-based place in that order.
- Head-of-line blocking per model (the default): when the first queued request of a model does
  not fit, later requests of the SAME model wait behind it even if they would fit. Otherwise a
  stream of small requests could starve a large one forever. Requests of other models do not
  compete for the same GPUs, so they are not blocked. ``backfill=True`` switches this off
  (every request that fits is placed, in order), trading fairness for utilization.

Data structures (for speed with thousands of nodes and requests): for each model, nodes are
bucketed by their number of free eligible GPUs of that model; a bucket is a set (membership)
plus a heap of node ids (smallest id first, stale entries dropped lazily). Finding the best
node for ``count`` GPUs looks at buckets ``count..max``: O(max GPUs per node * log nodes).

The service does not hold this engine: the database keeps the free counts per node and model
(capacity.py), admission calls :func:`never_fits` with the largest node of the model, and a
scheduler pass applies the same best-fit rule through :class:`BestFit`, which reads those
buckets lazily from an index. The engine stays the reference they are tested against.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class NodeState(StrEnum):
    READY = "ready"
    CORDONED = "cordoned"
    DRAINING = "draining"
    DOWN = "down"


@dataclass(frozen=True)
class GpuSlot:
    index: int
    model: str
    healthy: bool = True


@dataclass(frozen=True)
class NodeCapacity:
    """A node as placement sees it: its state and its installed GPUs."""

    node_id: str
    state: NodeState
    gpus: tuple[GpuSlot, ...]

    def __post_init__(self) -> None:
        indices = [g.index for g in self.gpus]
        if len(set(indices)) != len(indices):
            raise ValueError(f"node {self.node_id}: duplicate GPU indices {sorted(indices)}")


@dataclass(frozen=True)
class PlacementRequest:
    request_id: str
    model: str
    count: int
    priority: int = 0


@dataclass(frozen=True)
class Placement:
    request_id: str
    node_id: str
    model: str
    gpu_indices: tuple[int, ...]


@dataclass(frozen=True)
class Queued:
    request_id: str
    position: int


class RejectionCode(StrEnum):
    INVALID_COUNT = "invalid-count"
    UNKNOWN_MODEL = "unknown-model"
    EXCEEDS_NODE_SIZE = "exceeds-node-size"


@dataclass(frozen=True)
class Rejected:
    request_id: str
    code: RejectionCode
    reason: str


def never_fits(request: PlacementRequest, largest: int,
               known_models: Callable[[], Iterable[str]]) -> Rejected | None:
    """Why ``request`` can never be placed, given ``largest``, the most GPUs of its model
    installed on one node (whatever the node's state or the GPUs' health), or None.
    ``known_models`` is asked only to explain an unknown model."""
    rid = request.request_id
    if request.count < 1:
        return Rejected(rid, RejectionCode.INVALID_COUNT,
                        f"a request needs at least 1 GPU, not {request.count}")
    if largest == 0:
        known = list(known_models())
        return Rejected(rid, RejectionCode.UNKNOWN_MODEL,
                        f"no node has GPU model {request.model!r}; known models: "
                        f"{', '.join(known) or 'none'}")
    if request.count > largest:
        return Rejected(rid, RejectionCode.EXCEEDS_NODE_SIZE,
                        f"{request.count} {request.model} GPUs requested but the largest "
                        f"node has {largest}; a request is never split across nodes")
    return None


@dataclass
class _Node:
    node_id: str
    state: NodeState
    slots: dict[int, GpuSlot]
    allocated: dict[int, str] = field(default_factory=dict)  # gpu index -> request id
    # model -> free eligible indices, ascending; derived by refresh() after every change.
    free: dict[str, list[int]] = field(default_factory=dict)

    def refresh(self) -> None:
        free: dict[str, list[int]] = {}
        if self.state is NodeState.READY:
            for index in sorted(self.slots):
                slot = self.slots[index]
                if slot.healthy and index not in self.allocated:
                    free.setdefault(slot.model, []).append(index)
        self.free = free

    def free_eligible(self, model: str) -> list[int]:
        return list(self.free.get(model, ()))


class _Buckets:
    """Nodes of one model grouped by free eligible GPU count, smallest node id first."""

    def __init__(self) -> None:
        self.members: dict[int, set[str]] = {}
        self.heaps: dict[int, list[str]] = {}

    def add(self, free: int, node_id: str) -> None:
        members = self.members.setdefault(free, set())
        members.add(node_id)
        heap = self.heaps.setdefault(free, [])
        heapq.heappush(heap, node_id)
        if len(heap) > 2 * len(members) + 64:  # too many stale entries: rebuild
            heap[:] = sorted(members)

    def remove(self, free: int, node_id: str) -> None:
        self.members[free].discard(node_id)  # its heap entry goes stale, dropped on pop

    def best(self, count: int) -> str | None:
        for free in sorted(k for k in self.members if k >= count):
            members, heap = self.members[free], self.heaps[free]
            while heap and heap[0] not in members:
                heapq.heappop(heap)
            if heap:
                return heap[0]
        return None


class PlacementEngine:
    """Nodes, placements and the queue of waiting requests, all in memory.

    ``submit`` queues or rejects, ``schedule`` places what it can in queue order,
    ``release`` frees a placement's GPUs. The caller persists the outcomes.
    """

    def __init__(self, nodes: Iterable[NodeCapacity] = (), *, backfill: bool = False):
        self.backfill = backfill
        self._nodes: dict[str, _Node] = {}
        self._buckets: dict[str, _Buckets] = {}
        self._placements: dict[str, Placement] = {}
        self._requests: dict[str, tuple[tuple[int, int, str], PlacementRequest]] = {}
        self._order: list[tuple[int, int, str]] = []  # (-priority, seq, request_id), sorted
        self._seq = itertools.count()
        self._installed: dict[str, int] | None = None  # model -> most GPUs on one node
        for node in nodes:
            self.upsert_node(node)

    # --- nodes ----------------------------------------------------------------------------

    def upsert_node(self, node: NodeCapacity) -> list[Rejected]:
        """Add a node or replace its state and GPUs; existing placements on it are kept.
        Queued requests that its new GPU list makes impossible are rejected and returned."""
        self._installed = None
        current = self._nodes.get(node.node_id)
        slots = {g.index: g for g in node.gpus}
        if current is not None:
            for index, request_id in current.allocated.items():
                if index not in slots:
                    raise ValueError(
                        f"node {node.node_id}: GPU {index} is held by {request_id} and "
                        "cannot be removed")
            current.state, current.slots = node.state, slots
            self._reindex(current)
            return self._reject_impossible()
        current = _Node(node.node_id, node.state, slots)
        self._nodes[node.node_id] = current
        self._reindex(current)
        return []

    def set_node_state(self, node_id: str, state: NodeState) -> None:
        node = self._node(node_id)
        node.state = state
        self._reindex(node)

    def set_gpu_health(self, node_id: str, index: int, healthy: bool) -> None:
        node = self._node(node_id)
        slot = node.slots[index]
        node.slots[index] = GpuSlot(slot.index, slot.model, healthy)
        self._reindex(node)

    def remove_node(self, node_id: str) -> list[Rejected]:
        """Forget a node without placements; queued requests that can now never fit are
        rejected and returned."""
        node = self._node(node_id)
        if node.allocated:
            raise ValueError(f"node {node_id} still has placements; release them first")
        for model, indices in node.free.items():
            self._buckets[model].remove(len(indices), node_id)
        del self._nodes[node_id]
        self._installed = None
        return self._reject_impossible()

    def _reject_impossible(self) -> list[Rejected]:
        rejected: list[Rejected] = []
        for key in list(self._order):
            request = self._requests[key[2]][1]
            if (why := self.never_fits(request)) is not None:
                self._dequeue(request.request_id)
                rejected.append(why)
        return rejected

    def _node(self, node_id: str) -> _Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"unknown node {node_id!r}") from None

    def _reindex(self, node: _Node) -> None:
        """Keep the node in bucket (model, free eligible count) for each model it has free."""
        old = {model: len(indices) for model, indices in node.free.items()}
        node.refresh()
        new = {model: len(indices) for model, indices in node.free.items()}
        for model, count in old.items():
            if new.get(model) != count:
                self._buckets[model].remove(count, node.node_id)
        for model, count in new.items():
            if old.get(model) != count:
                self._buckets.setdefault(model, _Buckets()).add(count, node.node_id)

    # --- requests -------------------------------------------------------------------------

    def submit(self, request: PlacementRequest) -> Queued | Rejected:
        if request.request_id in self._requests or request.request_id in self._placements:
            raise ValueError(f"request {request.request_id} was already submitted")
        if (why := self.never_fits(request)) is not None:
            return why
        key = (-request.priority, next(self._seq), request.request_id)
        self._requests[request.request_id] = (key, request)
        bisect.insort(self._order, key)
        return Queued(request.request_id, self.position(request.request_id))

    def never_fits(self, request: PlacementRequest) -> Rejected | None:
        """Why the request can never be placed on the current nodes, or None if it can.
        Lets a caller reject before admission without queuing anything."""
        installed = self._installed_per_model()
        return never_fits(request, installed.get(request.model, 0), lambda: sorted(installed))

    def _installed_per_model(self) -> dict[str, int]:
        if self._installed is None:
            installed: dict[str, int] = {}
            for node in self._nodes.values():
                counts: dict[str, int] = {}
                for slot in node.slots.values():
                    counts[slot.model] = counts.get(slot.model, 0) + 1
                for model, n in counts.items():
                    installed[model] = max(installed.get(model, 0), n)
            self._installed = installed
        return self._installed

    def cancel(self, request_id: str) -> bool:
        """Remove a queued request; False if it is not queued."""
        if request_id not in self._requests:
            return False
        self._dequeue(request_id)
        return True

    def _dequeue(self, request_id: str) -> None:
        key, _ = self._requests.pop(request_id)
        del self._order[bisect.bisect_left(self._order, key)]

    def position(self, request_id: str) -> int:
        key, _ = self._requests[request_id]
        return bisect.bisect_left(self._order, key) + 1

    def queue_length(self) -> int:
        return len(self._order)

    def queue(self) -> list[Queued]:
        return [Queued(key[2], i) for i, key in enumerate(self._order, start=1)]

    # --- placing --------------------------------------------------------------------------

    def schedule(self) -> list[Placement]:
        """Place queued requests in queue order; returns the new placements."""
        placed: list[Placement] = []
        blocked: set[str] = set()
        remaining: list[tuple[int, int, str]] = []
        waiting_models = {request.model for _, request in self._requests.values()}
        for i, key in enumerate(self._order):
            request = self._requests[key[2]][1]
            if request.model in blocked:
                remaining.append(key)
                continue
            placement = self._place(request)
            if placement is None:
                remaining.append(key)
                if not self.backfill:
                    blocked.add(request.model)
                    if blocked >= waiting_models:  # every model waits on its head: done
                        remaining.extend(self._order[i + 1 :])
                        break
            else:
                del self._requests[key[2]]
                placed.append(placement)
        self._order = remaining
        return placed

    def _place(self, request: PlacementRequest) -> Placement | None:
        buckets = self._buckets.get(request.model)
        node_id = buckets.best(request.count) if buckets else None
        if node_id is None:
            return None
        node = self._nodes[node_id]
        indices = tuple(node.free[request.model][: request.count])
        for index in indices:
            node.allocated[index] = request.request_id
        self._reindex(node)
        placement = Placement(request.request_id, node_id, request.model, indices)
        self._placements[request.request_id] = placement
        return placement

    def restore(self, placement: Placement) -> None:
        """Re-enter a placement made earlier (rebuilding the engine from stored state). Its
        GPUs are taken whatever the node's state or health today: they are in use."""
        if placement.request_id in self._placements or placement.request_id in self._requests:
            raise ValueError(f"request {placement.request_id} is already known")
        node = self._node(placement.node_id)
        for index in placement.gpu_indices:
            if index not in node.slots:
                raise ValueError(f"node {node.node_id} has no GPU {index}")
            holder = node.allocated.get(index)
            if holder is not None:
                raise ValueError(f"GPU {index} of node {node.node_id} is already held by "
                                 f"{holder}")
        for index in placement.gpu_indices:
            node.allocated[index] = placement.request_id
        self._reindex(node)
        self._placements[placement.request_id] = placement

    def release(self, request_id: str) -> Placement:
        """Free a placement's GPUs (the instance stopped, failed or was lost)."""
        placement = self._placements.pop(request_id)
        node = self._nodes[placement.node_id]
        for index in placement.gpu_indices:
            del node.allocated[index]
        self._reindex(node)
        return placement

    # --- views ----------------------------------------------------------------------------

    def placements(self) -> list[Placement]:
        return list(self._placements.values())

    def free_gpu_total(self, model: str) -> int:
        """Free eligible GPUs of a model over all nodes (what placement could hand out now)."""
        buckets = self._buckets.get(model)
        if buckets is None:
            return 0
        return sum(free * len(members) for free, members in buckets.members.items())

    def free_gpus(self, node_id: str, model: str) -> list[int]:
        """Free eligible GPU indices of a model on a node (empty if the node is not ready)."""
        return self._node(node_id).free_eligible(model)


# --- best fit over free counts kept elsewhere ---------------------------------------------------

# (model, free, after, limit) -> ids of the nodes with exactly ``free`` free eligible GPUs of
# ``model``, ascending, greater than ``after`` (None: from the first), at most ``limit``.
NodePage = Callable[[str, int, str | None, int], list[str]]


@dataclass
class _LazyBucket:
    buffer: deque[str] = field(default_factory=deque)  # read, not yet looked at
    after: str | None = None
    exhausted: bool = False
    page: int = 16  # the next read's size: small first (most passes place a few), then more
    arrived: list[str] = field(default_factory=list)  # heap: moved here by this plan


class BestFit:
    """The placement rule of :class:`PlacementEngine` (fewest free GPUs left, then the
    smallest node id) over free counts kept elsewhere, read bucket by bucket only as far as
    the requests need.

    ``read`` pages through the nodes that have exactly ``free`` free GPUs of a model (the
    scheduler reads an index of the database); ``most_free`` bounds the buckets. Each
    :meth:`take` lowers the chosen node's count in this plan only: the node leaves the bucket
    read from the source (it is skipped there from now on) and joins a lower one in memory.
    A plan only takes GPUs, so counts only fall and the first read of each bucket stays valid
    apart from what the plan itself moved. Placing ``n`` requests costs O(n * GPUs per node)
    steps plus one read per bucket page, however many nodes there are.
    """

    def __init__(self, read: NodePage, most_free: Callable[[str], int], *, page: int = 512):
        if page < 1:
            raise ValueError("page must be at least 1")
        self._read, self._most_free, self._page = read, most_free, page
        self._top: dict[str, int] = {}
        self._buckets: dict[tuple[str, int], _LazyBucket] = {}
        self._moved: dict[tuple[str, str], int] = {}  # (model, node) -> free now, in this plan

    def take(self, model: str, count: int) -> str | None:
        """The best node for ``count`` GPUs of ``model`` (its count drops by ``count``), or
        None when no node has that many free."""
        if count < 1:
            raise ValueError(f"a request needs at least 1 GPU, not {count}")
        top = self._top.get(model)
        if top is None:
            top = self._top[model] = self._most_free(model)
        for free in range(count, top + 1):
            node = self._head(model, free)
            if node is not None:
                self._moved[model, node] = free - count
                if free > count:
                    heapq.heappush(self._bucket(model, free - count).arrived, node)
                return node
        return None

    def free(self, model: str, node_id: str) -> int | None:
        """A node's free count as this plan left it (None: untouched by the plan)."""
        return self._moved.get((model, node_id))

    def _bucket(self, model: str, free: int) -> _LazyBucket:
        bucket = self._buckets.get((model, free))
        if bucket is None:
            bucket = self._buckets[model, free] = _LazyBucket()
        return bucket

    def _head(self, model: str, free: int) -> str | None:
        b = self._bucket(model, free)
        while True:
            while b.buffer and (model, b.buffer[0]) in self._moved:
                b.buffer.popleft()  # its stored count is stale: it lives in memory now
            if b.buffer or b.exhausted:
                break
            size = min(b.page, self._page)
            page = self._read(model, free, b.after, size)
            b.exhausted, b.page = len(page) < size, size * 2
            if page:
                b.after = page[-1]
            b.buffer.extend(page)
        while b.arrived and self._moved.get((model, b.arrived[0])) != free:
            heapq.heappop(b.arrived)  # moved on again
        stored = b.buffer[0] if b.buffer else None
        moved = b.arrived[0] if b.arrived else None
        if stored is None or moved is None:
            return stored or moved
        return min(stored, moved)
