"""Every pair of states: the legal edges are allowed, every other one is refused."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from aicloud.products.gpuaas import (
    GPU_HOLDING_STATES,
    TERMINAL_STATES,
    IllegalTransition,
    InstanceState,
    Lifecycle,
    transition,
)

S = InstanceState
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

# Written out independently of TRANSITIONS, so a change to the table must change this too.
LEGAL = {
    (S.REQUESTED, S.ADMITTED), (S.REQUESTED, S.REJECTED), (S.REQUESTED, S.STOPPED),
    (S.REQUESTED, S.FAILED),
    (S.ADMITTED, S.SCHEDULED), (S.ADMITTED, S.REJECTED), (S.ADMITTED, S.STOPPED),
    (S.ADMITTED, S.FAILED),
    (S.SCHEDULED, S.PROVISIONING), (S.SCHEDULED, S.ADMITTED), (S.SCHEDULED, S.STOPPED),
    (S.SCHEDULED, S.FAILED),
    (S.PROVISIONING, S.RUNNING), (S.PROVISIONING, S.STOPPING), (S.PROVISIONING, S.FAILED),
    (S.PROVISIONING, S.LOST),
    (S.RUNNING, S.STOPPING), (S.RUNNING, S.STOPPED), (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.LOST),
    (S.STOPPING, S.STOPPED), (S.STOPPING, S.FAILED), (S.STOPPING, S.LOST),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_pair(current: InstanceState, target: InstanceState) -> None:
    if (current, target) in LEGAL:
        step = transition(current, target, reason="test", at=T0)
        assert (step.from_state, step.to_state, step.reason, step.at) == (
            current, target, "test", T0)
    else:
        with pytest.raises(IllegalTransition) as err:
            transition(current, target, reason="test", at=T0)
        assert err.value.status == 409
        assert f"{current.value!r} cannot become {target.value!r}" in err.value.detail
        assert err.value.extra == {"current": current.value, "target": target.value}


def test_terminal_states_have_no_way_out() -> None:
    assert {S.REJECTED, S.STOPPED, S.SUCCEEDED, S.FAILED, S.LOST} == TERMINAL_STATES
    assert "none: it is terminal" in IllegalTransition(S.LOST, S.RUNNING).detail
    assert not (GPU_HOLDING_STATES & TERMINAL_STATES)


def test_lifecycle_keeps_a_reasoned_history() -> None:
    life = Lifecycle()
    path = [(S.ADMITTED, "within quota"), (S.SCHEDULED, "node n1 gpus 0,1"),
            (S.PROVISIONING, "provider create"), (S.RUNNING, "process started"),
            (S.STOPPING, "user asked"), (S.STOPPED, "exited after SIGTERM")]
    for i, (state, reason) in enumerate(path):
        life.apply(state, reason=reason, at=T0 + timedelta(seconds=i))
    assert life.state == S.STOPPED
    assert [(t.from_state, t.to_state, t.reason) for t in life.history] == [
        (prev, state, reason)
        for prev, (state, reason) in zip([S.REQUESTED] + [s for s, _ in path], path, strict=False)
    ]
    with pytest.raises(IllegalTransition):
        life.apply(S.RUNNING, reason="again", at=T0 + timedelta(seconds=10))
    assert life.state == S.STOPPED and len(life.history) == len(path)


def test_bad_reason_time_or_order_is_refused() -> None:
    with pytest.raises(ValueError, match="reason"):
        transition(S.REQUESTED, S.ADMITTED, reason=" ", at=T0)
    with pytest.raises(ValueError, match="timezone"):
        transition(S.REQUESTED, S.ADMITTED, reason="ok", at=datetime(2026, 1, 1))
    life = Lifecycle()
    life.apply(S.ADMITTED, reason="ok", at=T0)
    with pytest.raises(ValueError, match="back in time"):
        life.apply(S.SCHEDULED, reason="ok", at=T0 - timedelta(seconds=1))
