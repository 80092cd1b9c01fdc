"""Deletion guards and the org tree lock: a scope is never deleted under live resources.

IAM knows no product. A product registers (through the composition root) a guard: a function
that lists its live resources at or below a scope path. ``delete_org``, ``delete_department``
and ``delete_project`` take the org tree lock, then ask every guard; a single live resource
refuses the delete with 409 ``scope-not-empty`` naming them. Nothing is deleted while it runs,
so nothing can keep running (and billing) after its scope is gone.

Race-freedom: the check and the delete are one transaction, but a launch in another transaction
could commit a resource the check did not see. So every writer that creates something inside an
org (a project, a department, a product's launch) takes the same lock, :func:`lock_org_tree`,
first, and reads the scope again after it. Whoever gets the lock second sees what the first
committed: the delete sees the new resource and refuses, or the launch finds its project gone
(404). On PostgreSQL the lock is a transaction-scoped advisory lock on the org id; on SQLite
every transaction already begins with ``BEGIN IMMEDIATE`` (one writer at a time), so no extra
lock is needed there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from aicloud.shared.errors import Conflict
from aicloud.shared.ids import int64_key

# Keeps org tree keys apart from the other advisory locks built on int64_key.
_NAMESPACE = "iam.org-tree:"
# How many live resources a refusal names in its message (the extension lists up to LISTED).
_NAMED, LISTED = 10, 100


@dataclass(frozen=True)
class LiveResource:
    """Something a product still runs (or may still run) at or below a scope."""

    kind: str  # e.g. "gpuaas.instance"
    id: str
    state: str
    scope_path: str


# (session, scope path) -> the live resources at or below it.
DeletionGuard = Callable[[Session, str], Sequence[LiveResource]]

_GUARDS: dict[str, DeletionGuard] = {}


class ScopeNotEmpty(Conflict):
    code = "scope-not-empty"
    title = "The scope still holds live resources"


def register_deletion_guard(name: str, guard: DeletionGuard) -> None:
    """Register (or replace, so composing twice is harmless) the guard called ``name``."""
    _GUARDS[name] = guard


def deletion_guards() -> dict[str, DeletionGuard]:
    return dict(_GUARDS)


def live_resources(session: Session, scope_path: str) -> list[LiveResource]:
    found: list[LiveResource] = []
    for name in sorted(_GUARDS):
        found.extend(_GUARDS[name](session, scope_path))
    return found


def refuse_if_live(session: Session, scope_path: str, what: str, *,
                   retry: str = "delete") -> None:
    """Raise ScopeNotEmpty when any guard reports a live resource at or below ``scope_path``.
    Call it with the org tree lock held. ``retry`` names what to try again (delete, move)."""
    live = live_resources(session, scope_path)
    if not live:
        return
    named = ", ".join(f"{r.kind} {r.id} ({r.state})" for r in live[:_NAMED])
    more = f" and {len(live) - _NAMED} more" if len(live) > _NAMED else ""
    raise ScopeNotEmpty(
        f"{what} still has {len(live)} live resource(s): {named}{more}; stop (or unpublish) "
        f"them and {retry} again once they have ended",
        live_resources=[{"kind": r.kind, "id": r.id, "state": r.state,
                         "scope_path": r.scope_path} for r in live[:LISTED]])


def lock_org_tree(session: Session, org_id: str) -> None:
    """Serialize, until the transaction ends, every change to the org's tree and to what runs
    in it (deletes, project and department creation, product launches).

    Reads after the lock must see what committed before it: the session's cached objects are
    expired (after a flush, so nothing pending is lost) and PostgreSQL (READ COMMITTED) takes a
    new snapshot for each statement."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                        {"k": int64_key(_NAMESPACE + org_id)})
    session.flush()
    session.expire_all()
