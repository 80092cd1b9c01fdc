"""The GPU instance lifecycle as pure logic: states, legal edges, and a reasoned history.

::

    requested    -> admitted | rejected | stopped (cancelled) | failed
    admitted     -> scheduled | rejected (can no longer fit) | stopped (cancelled) | failed
    scheduled    -> provisioning | admitted (requeued) | stopped (cancelled) | failed
    provisioning -> running | stopping | failed | lost
    running      -> stopping | stopped (ended by itself, exit 0) | failed | lost
    stopping     -> stopped | failed | lost
    rejected, stopped, failed, lost: terminal

Decisions (so the controller and the meters can rely on them):

- ``stopped`` straight from ``requested``/``admitted``/``scheduled`` is a cancellation: nothing
  runs on a node yet, so there is nothing to stop (a scheduled instance only holds a GPU
  reservation in the placement engine, released by the caller).
- ``admitted -> rejected``: a queued request that can no longer ever fit (the only nodes with
  enough GPUs of its model were removed or shrunk) is rejected like one that never could.
- ``scheduled -> admitted`` is a requeue: the chosen node was cordoned or went down before
  provisioning started; the instance goes back to the queue instead of failing.
- ``running -> stopped`` is a workload that ended by itself with exit code 0 (batch); a non-zero
  exit is ``running -> failed``.
- ``failed`` is reachable from every non-terminal state (an error of ours or the provider's).
- ``lost`` means the control plane can no longer see a workload it started: only states in which
  something exists on a node (``provisioning``, ``running``, ``stopping``) can be lost.
- ``rejected``, ``stopped``, ``failed`` and ``lost`` are terminal. A node that comes back after
  its instances were marked lost does not revive them; its leftover workloads are cleaned up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from aicloud.shared.errors import Conflict


class InstanceState(StrEnum):
    REQUESTED = "requested"
    ADMITTED = "admitted"
    REJECTED = "rejected"
    SCHEDULED = "scheduled"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    # Ended by itself with exit code 0 (a batch that finished), as opposed to stopped on
    # request (stopped) or ended with another code (failed).
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"


S = InstanceState

TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    S.REQUESTED: frozenset({S.ADMITTED, S.REJECTED, S.STOPPED, S.FAILED}),
    S.ADMITTED: frozenset({S.SCHEDULED, S.REJECTED, S.STOPPED, S.FAILED}),
    S.SCHEDULED: frozenset({S.PROVISIONING, S.ADMITTED, S.STOPPED, S.FAILED}),
    S.PROVISIONING: frozenset({S.RUNNING, S.STOPPING, S.FAILED, S.LOST}),
    S.RUNNING: frozenset({S.STOPPING, S.STOPPED, S.SUCCEEDED, S.FAILED, S.LOST}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED, S.LOST}),
    S.REJECTED: frozenset(),
    S.STOPPED: frozenset(),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.LOST: frozenset(),
}

TERMINAL_STATES = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
# States in which GPUs are reserved for the instance (placement must not hand them out).
GPU_HOLDING_STATES = frozenset({S.SCHEDULED, S.PROVISIONING, S.RUNNING, S.STOPPING})
# States in which a workload may exist on a node (the provider must be asked about it).
ON_NODE_STATES = frozenset({S.PROVISIONING, S.RUNNING, S.STOPPING})


class IllegalTransition(Conflict):
    code = "illegal-transition"
    title = "The instance cannot change to that state from its current one"

    def __init__(self, current: InstanceState, target: InstanceState):
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: it is terminal"
        super().__init__(
            f"an instance in state {current.value!r} cannot become {target.value!r} "
            f"(allowed: {allowed})",
            current=current.value, target=target.value,
        )
        self.current = current
        self.target = target


@dataclass(frozen=True)
class Transition:
    from_state: InstanceState
    to_state: InstanceState
    reason: str
    at: datetime


def is_terminal(state: InstanceState) -> bool:
    return state in TERMINAL_STATES


def can_transition(current: InstanceState, target: InstanceState) -> bool:
    return target in TRANSITIONS[current]


def transition(
    current: InstanceState, target: InstanceState, *, reason: str, at: datetime
) -> Transition:
    """Check one move and describe it; raises IllegalTransition if the edge does not exist."""
    if not reason.strip():
        raise ValueError("a transition needs a reason")
    if at.tzinfo is None:
        raise ValueError("a transition time must be timezone-aware (UTC)")
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return Transition(current, target, reason, at)


@dataclass
class Lifecycle:
    """An instance's current state and every transition that led to it, oldest first."""

    state: InstanceState = S.REQUESTED
    history: list[Transition] = field(default_factory=list)

    def apply(self, target: InstanceState, *, reason: str, at: datetime) -> Transition:
        if self.history and at < self.history[-1].at:
            raise ValueError("transitions must not go back in time")
        step = transition(self.state, target, reason=reason, at=at)
        self.history.append(step)
        self.state = target
        return step
