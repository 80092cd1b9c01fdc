"""Launch and admission on both databases: types, placement limits, quotas, budgets, funds,
idempotency, and the recorded transitions."""

from __future__ import annotations

import pytest

from aicloud.platform import audit, billing, policy
from aicloud.products import gpuaas
from aicloud.shared.db import Database
from aicloud.shared.errors import Conflict, ValidationFailed
from tests.products.gpuaas.world import ADMIN, make_world


def test_launch_admits_holds_and_records_transitions(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1")
    inst = w.launch("a", "gpu.h100.2x")
    assert inst.state == "admitted"
    assert [(t.from_state, t.to_state) for t in inst.transitions] == [
        (None, "requested"), ("requested", "admitted")]
    assert inst.queue_position == 1
    assert (inst.gpu_count, inst.vcpus, inst.memory_gib) == (2, 32, 256)
    # The minimum billable period (60 s) is reserved on the wallet.
    per_second = 2 * 700 + 32 * 10 + 256 * 1
    bal = w.wallet_balance()
    assert bal.held == 60 * per_second
    with db.transaction() as s:
        actions = [e.action for e in audit.list_events(
            s, allowed_scopes=None, filter=audit.EventFilter(scope=w.scope_path)).items]
    assert "gpuaas.instance.launch" in actions and "gpuaas.instance.admitted" in actions


def test_idempotent_launch_returns_the_same_instance(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1")
    first = w.launch("a", key="k-1")
    again = w.launch("a", key="k-1")
    assert again.id == first.id
    assert w.wallet_balance().held == 60 * (700 + 16 * 10 + 128)  # one hold, not two


def test_unknown_type_is_refused_with_the_known_ones(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1")
    with pytest.raises(ValidationFailed, match=r"unknown instance type 'gpu\.x9'.*gpu\.h100\.1x"):
        w.launch("a", "gpu.x9")


def test_more_gpus_than_any_node_is_refused_at_once(db: Database) -> None:
    w = make_world(db)
    w.add_node("small", gpus=4)
    with pytest.raises(gpuaas.CannotPlace, match="8 H100 GPUs requested but the largest node "
                                                 "has 4"):
        w.launch("big", "gpu.h100.8x")
    with pytest.raises(gpuaas.CannotPlace, match="no node has GPU model 'A100'"):
        w.launch("a100", "gpu.a100.1x")
    with db.transaction() as s:  # nothing of a refused launch is stored
        assert gpuaas.list_instances(s, project_id=w.project_id) == []


def test_quota_refusal_names_scope_limit_and_excess(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1")
    dep_path = w.scope_path.rsplit("/", 1)[0]
    with db.transaction() as s:
        policy.set_quota(s, actor=ADMIN, scope_path=dep_path, resource_key="gpu:H100", limit=3)
    w.launch("a", "gpu.h100.2x")
    with pytest.raises(policy.QuotaExceeded) as e:
        w.launch("b", "gpu.h100.2x")
    assert str(e.value) == (f"quota gpu:H100 at {dep_path}: limit 3, 2 in use, 2 requested, "
                            "exceeds by 1")
    w.launch("c", "gpu.h100.1x")  # exactly at the limit is fine


def test_budget_that_blocks_launches_refuses_with_the_numbers(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1")
    with db.transaction() as s:
        billing.create_budget(s, actor=ADMIN, spec=billing.BudgetCreate(
            scope_path=w.scope_path, amount=1000, currency="USD", action="block_launches"))
        billing.ingest_usage(s, [billing.UsageIn(
            resource_id="inst_x", project_id=w.project_id, scope_path=w.scope_path,
            meter="vcpu_seconds", quantity=150, window_start=w.clock.now(),
            window_end=w.clock.advance(150), idempotency_key="u1")], actor=ADMIN)
    billing.rate_until_idle(db, clock=w.clock)
    with db.transaction() as s:
        billing.evaluate_budgets(s, now=w.clock.now())
    with pytest.raises(gpuaas.BudgetBlocked, match="spent 1500 of 1000 micro-units "
                                                   r"\(over by 500\)"):
        w.launch("a")


def test_wallet_that_cannot_cover_the_minimum_period_refuses(db: Database) -> None:
    w = make_world(db, funds=1000)
    w.add_node("n1")
    with pytest.raises(gpuaas.InsufficientFunds, match="needs 59280 micro-USD, available 1000 "
                                                       r"\(short by 58280\)"):
        w.launch("a")


def test_type_allowances_restrict_a_scope(db: Database) -> None:
    from aicloud.products.gpuaas.models import TypeAllowanceModel

    w = make_world(db)
    w.add_node("n1")
    with db.transaction() as s:
        s.add(TypeAllowanceModel(id="ta_1", scope_id=w.project_id, type_name="gpu.h100.1x"))
    w.launch("ok", "gpu.h100.1x")
    with pytest.raises(Conflict, match=r"not allowed in .*allowed: gpu\.h100\.1x"):
        w.launch("no", "gpu.h100.2x")


def test_zero_or_negative_counts_are_rejected_by_the_engine() -> None:
    engine = gpuaas.PlacementEngine()
    for n in (0, -1):
        rejected = engine.never_fits(gpuaas.PlacementRequest("r", "H100", n))
        assert rejected is not None and rejected.code is gpuaas.RejectionCode.INVALID_COUNT
