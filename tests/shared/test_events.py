from __future__ import annotations

from aicloud.shared import events
from aicloud.shared.db import Database


def test_publish_commits_with_the_transaction_and_cursors_are_durable(db: Database) -> None:
    with db.transaction() as s:
        events.publish(s, "billing.budget.exceeded", {"n": 1})
    try:
        with db.transaction() as s:
            events.publish(s, "billing.budget.exceeded", {"n": "rolled back"})
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    with db.transaction() as s:
        events.publish(s, "other.topic", {"n": 2})
        events.publish(s, "billing.budget.exceeded", {"n": 3})

    with db.transaction() as s:
        got = events.read(s, "gpuaas", topics=["billing.budget.exceeded"])
        assert [e.payload["n"] for e in got] == [1, 3]
        events.ack(s, "gpuaas", got[0].seq)
    with db.transaction() as s:  # a new session: the cursor was stored
        assert [e.payload["n"] for e in events.read(s, "gpuaas")] == [2, 3]
        events.ack(s, "gpuaas", got[1].seq)
        events.ack(s, "gpuaas", got[0].seq)  # never moves backwards
        assert events.read(s, "gpuaas") == []
        assert [e.payload["n"] for e in events.read(s, "audit-export")] == [1, 2, 3]
