"""The policy version row: bumped in the transaction of any change that alters decisions."""

from __future__ import annotations

import secrets

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, SessionTransaction

from aicloud.platform.iam.models import PolicyVersionModel

DIRTY = "aicloud.iam.policy_dirty"


def bump_policy_version(session: Session) -> None:
    # A random value rather than a counter: a version can then never come back (a restored
    # backup, a truncated table) and be mistaken for a snapshot cached before. The UPDATE also
    # row-locks on PostgreSQL, so policy writers serialize.
    new = secrets.randbits(62)
    done = session.execute(update(PolicyVersionModel).where(PolicyVersionModel.id == 1)
                           .values(version=new))
    if not done.rowcount:  # type: ignore[attr-defined]
        session.add(PolicyVersionModel(id=1, version=new))
        session.flush()
    session.info[DIRTY] = True


def current_policy_version(session: Session) -> int:
    return session.scalar(select(PolicyVersionModel.version)
                          .where(PolicyVersionModel.id == 1)) or 0


def has_uncommitted_policy_changes(session: Session) -> bool:
    return bool(session.info.get(DIRTY))


@event.listens_for(Session, "after_transaction_end")
def _forget_dirty(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(DIRTY, None)
