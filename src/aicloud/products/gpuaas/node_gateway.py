"""The server side of a node's link: the node operations, executed for ONE node.

Built per link from the identity its credential proved; every op runs through a
:class:`DbNodeStore` bound to that node, so ids or lease tokens of another node's instances
in a message read as absent. Times the agent sends (its clock) are never taken beyond the
control plane's own now: a node whose clock runs ahead cannot meter the future.

The heartbeat carries the node's metrics samples (``samples``); they are recorded for the
node of the credential, never one a message names, and only about instances placed on it.

Ops (JSON args, see ``node_wire.py``): ``node.heartbeat``, ``node.work``, ``node.claim``,
``node.release``, ``node.step``, ``node.leftovers``, ``node.record_kills``,
``node.reconciled``. A malformed message is a ``bad-request`` error (nothing written);
errors of the control plane are answered with their problem code.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.products.gpuaas import node_wire as wire
from aicloud.products.gpuaas.models import InstanceModel
from aicloud.products.gpuaas.node_identity import NodeIdentity
from aicloud.products.gpuaas.node_store import (
    WORK_STATES,
    DbNodeStore,
    End,
    Meter,
    Running,
    Step,
)
from aicloud.shared.clock import Clock
from aicloud.shared.db import Database
from aicloud.shared.errors import AppError

log = logging.getLogger(__name__)
MAX_TTL = timedelta(minutes=10)


class BadRequest(ValueError):
    """A message the gateway will not act on."""


class NodeGateway:
    def __init__(self, db: Database, identity: NodeIdentity, clock: Clock):
        self.identity, self.clock = identity, clock
        self.store = DbNodeStore(db, clock=clock, node_id=identity.node_id,
                                 actor=identity.actor)
        self._ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "node.heartbeat": self._heartbeat, "node.work": self._work,
            "node.claim": self._claim, "node.release": self._release,
            "node.step": self._step, "node.leftovers": self._leftovers,
            "node.record_kills": self._record_kills, "node.reconciled": self._reconciled,
        }

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Run one op (blocking: call it from a worker thread). Raises BadRequest for a
        malformed message, AppError for a refusal of the control plane."""
        fn = self._ops.get(op)
        if fn is None:
            raise BadRequest(f"unknown op {op!r}")
        try:
            return fn(args)
        except AppError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise BadRequest(f"{op}: {e}") from None

    def _not_after_now(self, value: datetime) -> datetime:
        return min(value, self.clock.now())

    def _ttl(self, args: dict[str, Any]) -> timedelta:
        seconds = args["ttl_seconds"]
        if not isinstance(seconds, int | float) or not seconds > 0:
            raise ValueError("ttl_seconds must be positive")
        return min(timedelta(seconds=seconds), MAX_TTL)

    def _heartbeat(self, args: dict[str, Any]) -> Any:
        now = self._not_after_now(wire.parse_dt(args["now"]))
        before = self._not_after_now(wire.parse_dt(args["meter_before"]))
        samples = args.get("samples", [])  # absent: an agent that predates metrics
        if not isinstance(samples, list):
            # Refused alone: a bad metrics report never costs the node its heartbeat.
            log.warning("node %s: 'samples' is not a list; metrics dropped",
                        self.identity.node_id)
            samples = []
        beat = self.store.heartbeat(wire.report_in(args["report"]), wire.leases_in(args["held"]),
                                    ttl=self._ttl(args), now=now, meter_before=before,
                                    samples=samples)
        return wire.beat_out(beat)

    def _work(self, args: dict[str, Any]) -> Any:
        return [wire.item_out(w) for w in self.store.work()]

    def _claim(self, args: dict[str, Any]) -> Any:
        ids = wire.strings(args["ids"])
        owner = wire.string(args["owner"], limit=128)
        return [wire.lease_out(x) for x in self.store.claim(ids, owner=owner,
                                                            ttl=self._ttl(args))]

    def _release(self, args: dict[str, Any]) -> Any:
        return self.store.release(wire.leases_in(args["held"]))

    def _step(self, args: dict[str, Any]) -> Any:
        step: Step = wire.step_in(args["step"])
        if isinstance(step, Running):
            step = Running(provider=step.provider, ref=step.ref, endpoint=step.endpoint,
                           started_at=self._not_after_now(step.started_at))
        elif isinstance(step, Meter):
            step = Meter(until=self._not_after_now(step.until))
        elif isinstance(step, End):
            step = End(state=step.state, reason=step.reason, at=self._not_after_now(step.at),
                       exit_code=step.exit_code)
        return wire.step_result_out(self.store.step(wire.lease_in(args["lease"]), step))

    def _leftovers(self, args: dict[str, Any]) -> Any:
        return wire.leftovers_out(self.store.leftovers(wire.strings(args["refs"])))

    def _record_kills(self, args: dict[str, Any]) -> Any:
        self.store.record_kills(wire.strings(args["refs"]))

    def _reconciled(self, args: dict[str, Any]) -> Any:
        self.store.node_reconciled(wire.strings(args["killed"]))


def work_versions(session: Session, node_ids: list[str]) -> dict[str, str]:
    """A digest of what each node's agent reads (``node.work``) for every node at once: when
    a node's digest changes, its agent is told to read again instead of polling."""
    if not node_ids:
        return {}
    digests = {node_id: hashlib.sha256() for node_id in node_ids}
    for i in range(0, len(node_ids), 500):
        for row in session.execute(select(
                InstanceModel.node_id, InstanceModel.id, InstanceModel.state,
                InstanceModel.stop_requested_at, InstanceModel.lock_token).where(
                InstanceModel.node_id.in_(node_ids[i:i + 500]),
                InstanceModel.state.in_(WORK_STATES)).order_by(InstanceModel.id)):
            digests[row[0]].update(f"{row[1]}|{row[2]}|{row[3]}|{row[4]};".encode())
    return {node_id: d.hexdigest()[:16] for node_id, d in digests.items()}
