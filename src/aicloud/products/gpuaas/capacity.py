"""Free GPU capacity per node and GPU model, kept in the database with every change to it.

``gpuaas_node_capacity`` holds, per (node, GPU model), the GPUs installed and the GPUs free for
placement (node ``ready``, GPU healthy, not assigned). Admission asks "can this ever fit" with
one indexed read of the largest ``installed``; the scheduler reads nodes bucket by bucket of
``free`` (index ``(gpu_model, free, node_id)``) instead of loading every node, GPU and
assignment on each pass.

How it stays true:

- Whatever changes an input (GPU rows, assignments, a node's state) calls :func:`touch` with
  the node. Just before the transaction commits, every touched node's rows are recomputed
  from those inputs (not adjusted by deltas): a missed delta or a double one cannot exist.
- On PostgreSQL the recompute first takes a per-node advisory lock (in key order, so two
  committers never wait on each other crosswise), then reads the inputs in a new statement:
  under READ COMMITTED that sees every transaction that recomputed the node before, plus
  this one's own changes. The last committer of a node therefore always writes its true
  counts. SQLite admits one writer at a time.
- The recompute runs before the audit chain is sealed (both at commit): it must not wait
  for a node lock while holding the audit head that every committer needs.
- :func:`drift` compares the table with a recompute of every node (tests and checks),
  :func:`rebuild` rewrites it (repair).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, case, delete, event, func, select, text
from sqlalchemy.orm import Session

from aicloud.products.gpuaas.models import (
    GpuAssignmentModel,
    GpuModel,
    NodeCapacityModel,
    NodeModel,
)
from aicloud.shared.db import bulk
from aicloud.shared.ids import int64_key

C = NodeCapacityModel
_TOUCHED = "aicloud.gpuaas.capacity.touched"
_BATCH = 500  # node ids per statement


def touch(session: Session, *node_ids: str | None) -> None:
    """The capacity of these nodes changes in this transaction: recompute it at commit."""
    touched: set[str] = session.info.setdefault(_TOUCHED, set())
    touched.update(n for n in node_ids if n)


def _refresh_at_commit(session: Session) -> None:
    touched: set[str] = session.info.pop(_TOUCHED, set())
    if touched:
        session.flush()  # the inputs as this transaction leaves them
        refresh(session, touched)


def _forget(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_TOUCHED, None)


# insert=True: before the audit chain's own before_commit hook (see the module docstring).
event.listen(Session, "before_commit", _refresh_at_commit, insert=True)
event.listen(Session, "after_transaction_end", _forget)


def _lock_nodes(session: Session, node_ids: list[str]) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({int64_key(f"gpuaas-capacity:{n}") for n in node_ids})
    session.execute(text(
        "SELECT count(pg_advisory_xact_lock(k)) FROM "
        "(SELECT k FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS t(k, n) "
        "ORDER BY n) AS ordered"), {"keys": keys})


def _truth(session: Session, node_ids: list[str] | None) -> dict[tuple[str, str], tuple[int, int]]:
    """(node, model) -> (installed, free) recomputed from nodes, GPUs and assignments."""
    g, n, a = GpuModel, NodeModel, GpuAssignmentModel
    placeable = (n.state == "ready") & g.healthy & a.gpu_id.is_(None)
    stmt = (select(g.node_id, g.model, func.count(), func.sum(case((placeable, 1), else_=0)))
            .join(n, n.id == g.node_id).outerjoin(a, a.gpu_id == g.id)
            .group_by(g.node_id, g.model))
    if node_ids is None:
        rows = session.execute(stmt).all()
    else:
        rows = session.execute(stmt.where(bulk.in_values(g.node_id, "ids")),
                               {"ids": node_ids}).all()
    return {(node, model): (int(installed), int(free or 0))
            for node, model, installed, free in rows}


def _stored(session: Session, node_ids: list[str] | None) -> dict[tuple[str, str],
                                                                 tuple[int, int]]:
    stmt = select(C.node_id, C.gpu_model, C.installed, C.free)
    if node_ids is None:
        rows = session.execute(stmt).all()
    else:
        rows = session.execute(stmt.where(bulk.in_values(C.node_id, "ids")),
                               {"ids": node_ids}).all()
    return {(node, model): (installed, free) for node, model, installed, free in rows}


def refresh(session: Session, node_ids: Iterable[str]) -> None:
    """Recompute and store the capacity rows of these nodes (normally run at commit)."""
    ids = sorted(set(node_ids))
    _lock_nodes(session, ids)
    for i in range(0, len(ids), _BATCH):
        _write(session, _truth(session, ids[i:i + _BATCH]),
               _stored(session, ids[i:i + _BATCH]))


def _write(session: Session, truth: dict[tuple[str, str], tuple[int, int]],
           stored: dict[tuple[str, str], tuple[int, int]]) -> None:
    conn = session.connection()
    gone = sorted(stored.keys() - truth.keys())
    for node, model in gone:
        session.execute(delete(C).where(C.node_id == node, C.gpu_model == model))
    new = sorted(truth.keys() - stored.keys())
    if new:
        bulk.insert_rows(conn, C.__table__, [
            {"node_id": node, "gpu_model": model, "installed": truth[node, model][0],
             "free": truth[node, model][1]} for node, model in new])
    changed = sorted(k for k in truth.keys() & stored.keys() if truth[k] != stored[k])
    if changed:
        session.execute(
            C.__table__.update()
            .where(C.node_id == bindparam("k_node"), C.gpu_model == bindparam("k_model"))
            .values(installed=bindparam("v_installed"), free=bindparam("v_free")),
            [{"k_node": node, "k_model": model, "v_installed": truth[node, model][0],
              "v_free": truth[node, model][1]} for node, model in changed])


def drift(session: Session) -> dict[tuple[str, str], tuple[tuple[int, int] | None,
                                                          tuple[int, int] | None]]:
    """(node, model) -> (stored, recomputed) wherever the table disagrees with its inputs;
    empty when it is true."""
    truth, stored = _truth(session, None), _stored(session, None)
    return {k: (stored.get(k), truth.get(k)) for k in sorted(truth.keys() | stored.keys())
            if stored.get(k) != truth.get(k)}


def rebuild(session: Session) -> int:
    """Recompute every node's rows; the number of rows that were wrong."""
    wrong = drift(session)
    if wrong:
        refresh(session, {node for node, _ in wrong})
    return len(wrong)


# --- reads ------------------------------------------------------------------------------------


def largest_installed(session: Session, model: str) -> int:
    """The most GPUs of ``model`` that one node has, whatever its state or their health."""
    return int(session.scalar(select(func.max(C.installed)).where(C.gpu_model == model)) or 0)


def known_models(session: Session) -> list[str]:
    return list(session.scalars(select(C.gpu_model).distinct().order_by(C.gpu_model)))


def most_free(session: Session, model: str) -> int:
    """The most free GPUs of ``model`` on one node now."""
    return int(session.scalar(select(func.max(C.free)).where(C.gpu_model == model)) or 0)


def nodes_with_free(session: Session, model: str, free: int, after: str | None,
                    limit: int) -> list[str]:
    """Nodes with exactly ``free`` free GPUs of ``model``, by id, after ``after``."""
    stmt = select(C.node_id).where(C.gpu_model == model, C.free == free)
    if after is not None:
        stmt = stmt.where(C.node_id > after)
    return list(session.scalars(stmt.order_by(C.node_id).limit(limit)))
