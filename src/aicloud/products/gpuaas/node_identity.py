"""Node identity: how a host joins the pool and what its agent authenticates with.

An operator makes a join token (a random secret shown once; stored as its SHA-256 digest;
valid for N uses until it expires; audited). ``aicloud agent --url --token`` spends one use:
the API registers (or re-admits) the node and answers with a node credential, also shown
once and stored as a digest. From then on the agent authenticates its link with the
credential; every node operation is confined to the node bound to it.

A credential can be rotated by its agent (the old one stops working in the same transaction)
and revoked by an operator: a revoked node is cordoned (no placements) and stays so until a
new join; its link is closed by the replica holding it within a second and reconnects are
refused with a clear reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.products.gpuaas import capacity
from aicloud.products.gpuaas.models import (
    NodeCredentialModel,
    NodeJoinTokenModel,
    NodeLinkModel,
    NodeModel,
)
from aicloud.products.gpuaas.nodes import NodeReport, register_node, set_node_state
from aicloud.products.gpuaas.placement import NodeState
from aicloud.products.gpuaas.scheduler import lock_placements
from aicloud.products.gpuaas.schemas import JoinToken, JoinTokenCreated
from aicloud.shared import security
from aicloud.shared.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from aicloud.shared.ids import new_id

JOIN_TOKEN_PREFIX = "aicnj"
CREDENTIAL_PREFIX = "aicnc"
MAX_JOIN_TOKEN_TTL = timedelta(days=30)
MAX_JOIN_TOKEN_USES = 1000
REVOKED_REASON = "node credential revoked"


@dataclass(frozen=True)
class NodeIdentity:
    """Who is on the other end of a link: the node, and the credential it proved."""

    node_id: str
    credential_id: str

    @property
    def actor(self) -> audit.Actor:
        return audit.Actor(id=f"node:{self.node_id}", kind="system")


@dataclass(frozen=True)
class Joined:
    node_id: str
    node_name: str
    credential: str  # the secret, shown once
    credential_id: str


def _token_view(m: NodeJoinTokenModel) -> JoinToken:
    return JoinToken(id=m.id, description=m.description, max_uses=m.max_uses, uses=m.uses,
                     expires_at=m.expires_at, revoked_at=m.revoked_at,
                     created_by=m.created_by, created_at=m.created_at)


def create_join_token(session: Session, *, expires_in: timedelta, max_uses: int,
                      description: str, actor: audit.Actor, now: datetime) -> JoinTokenCreated:
    if not timedelta(seconds=60) <= expires_in <= MAX_JOIN_TOKEN_TTL:
        raise ValidationFailed("a join token lives between 1 minute and 30 days",
                               field="expires_in_seconds")
    if not 1 <= max_uses <= MAX_JOIN_TOKEN_USES:
        raise ValidationFailed(f"uses must be between 1 and {MAX_JOIN_TOKEN_USES}",
                               field="uses")
    secret = security.new_token(JOIN_TOKEN_PREFIX)
    m = NodeJoinTokenModel(id=new_id("njt"), digest=security.token_digest(secret),
                           description=description, max_uses=max_uses, uses=0,
                           expires_at=now + expires_in, created_by=actor.id or "?",
                           created_at=now)
    session.add(m)
    session.flush()
    audit.record(session, actor=actor, action="gpuaas.node_join_token.create",
                 target_type="node_join_token", target_id=m.id, scope_path="/",
                 details={"expires_at": m.expires_at.isoformat(), "max_uses": max_uses,
                          "description": description})
    return JoinTokenCreated(**_token_view(m).model_dump(), token=secret)


def list_join_tokens(session: Session) -> list[JoinToken]:
    return [_token_view(m) for m in session.scalars(
        select(NodeJoinTokenModel).order_by(NodeJoinTokenModel.created_at.desc()))]


def get_join_token(session: Session, token_id: str) -> JoinToken:
    m = session.get(NodeJoinTokenModel, token_id)
    if m is None:
        raise NotFound(f"join token {token_id} not found")
    return _token_view(m)


def revoke_join_token(session: Session, token_id: str, *, actor: audit.Actor,
                      now: datetime) -> JoinToken:
    m = session.scalar(select(NodeJoinTokenModel).where(NodeJoinTokenModel.id == token_id)
                       .with_for_update())
    if m is None:
        raise NotFound(f"join token {token_id} not found")
    if m.revoked_at is None:
        m.revoked_at = now
        audit.record(session, actor=actor, action="gpuaas.node_join_token.revoke",
                     target_type="node_join_token", target_id=m.id, scope_path="/")
    return _token_view(m)


def _issue(session: Session, node_id: str, *, join_token_id: str | None,
           now: datetime) -> tuple[str, NodeCredentialModel]:
    secret = security.new_token(CREDENTIAL_PREFIX)
    cred = NodeCredentialModel(id=new_id("ncred"), node_id=node_id,
                               digest=security.token_digest(secret),
                               join_token_id=join_token_id, created_at=now, revoked_reason="")
    session.add(cred)
    session.flush()
    return secret, cred


def join_node(session: Session, *, token: str, report: NodeReport, now: datetime,
              ip: str | None = None) -> Joined:
    """Spend one use of ``token``: register the node named in ``report`` (or re-admit it
    when it has no valid credential: a host that was revoked or registered before joins
    existed) and issue its credential. A name whose node holds a valid credential is
    refused: a token lets a host join, not take over a member of the pool."""
    tok = session.scalar(select(NodeJoinTokenModel).where(
        NodeJoinTokenModel.digest == security.token_digest(token)).with_for_update())
    # One message for every way a token is unusable: the caller learns nothing about
    # which tokens exist.
    if (tok is None or tok.revoked_at is not None or tok.expires_at <= now
            or tok.uses >= tok.max_uses):
        raise Unauthenticated("the join token is invalid, expired, revoked or used up; "
                              "ask an operator for a new one (aicloud nodes join-token)")
    existing = session.scalar(select(NodeModel).where(NodeModel.name == report.name)
                              .with_for_update())
    if existing is not None and _active(session, existing.id) is not None:
        raise Conflict(f"a node named {report.name!r} has already joined; revoke its "
                       "credential first (aicloud nodes revoke) or join under another name")
    tok.uses += 1
    actor = audit.Actor(id=f"node-join:{tok.id}", kind="system", ip=ip)
    node = register_node(session, report, actor=actor, now=now,
                         node_id=existing.id if existing else None)
    secret, cred = _issue(session, node.id, join_token_id=tok.id, now=now)
    if node.state == NodeState.CORDONED.value and node.state_reason == REVOKED_REASON:
        set_node_state(session, node, NodeState.READY, "re-joined with a new credential",
                       actor=actor)
    audit.record(session, actor=actor, action="gpuaas.node.join", target_type="node",
                 target_id=node.id, scope_path="/",
                 details={"name": node.name, "join_token_id": tok.id, "credential_id": cred.id,
                          "rejoin": existing is not None, "gpus": len(report.gpus)})
    return Joined(node_id=node.id, node_name=node.name, credential=secret,
                  credential_id=cred.id)


def _active(session: Session, node_id: str) -> NodeCredentialModel | None:
    return session.scalar(select(NodeCredentialModel).where(
        NodeCredentialModel.node_id == node_id, NodeCredentialModel.revoked_at.is_(None))
        .limit(1))


def authenticate_node(session: Session, credential: str) -> NodeIdentity:
    """The node a credential belongs to; 401 with the reason when it cannot be used."""
    if not credential.startswith(CREDENTIAL_PREFIX + "_"):
        raise Unauthenticated("not a node credential")
    cred = session.scalar(select(NodeCredentialModel).where(
        NodeCredentialModel.digest == security.token_digest(credential)))
    if cred is None:
        raise Unauthenticated("unknown node credential")
    if cred.revoked_at is not None:
        why = cred.revoked_reason or "by an operator"
        raise Unauthenticated(f"this node credential was revoked ({why}); join again with a "
                              "new token")
    return NodeIdentity(node_id=cred.node_id, credential_id=cred.id)


def rotate_credential(session: Session, who: NodeIdentity, *, now: datetime) -> Joined:
    """A new credential for the node; the one presented stops working now."""
    cred = session.scalar(select(NodeCredentialModel).where(
        NodeCredentialModel.id == who.credential_id).with_for_update())
    if cred is None or cred.revoked_at is not None or cred.node_id != who.node_id:
        raise Unauthenticated("this node credential is no longer valid")
    cred.revoked_at, cred.revoked_reason = now, "rotated"
    secret, new = _issue(session, who.node_id, join_token_id=cred.join_token_id, now=now)
    node = session.get(NodeModel, who.node_id)
    audit.record(session, actor=who.actor, action="gpuaas.node.credential_rotate",
                 target_type="node", target_id=who.node_id, scope_path="/",
                 details={"old": cred.id, "new": new.id})
    return Joined(node_id=who.node_id, node_name=node.name if node else "", credential=secret,
                  credential_id=new.id)


def revoke_node(session: Session, node_id: str, *, actor: audit.Actor, now: datetime,
                reason: str = "") -> NodeModel:
    """Revoke every credential of the node and cordon it (no new placements; what runs
    there is left to the operator: drain it, or it goes down when its agent falls
    silent)."""
    lock_placements(session)  # a scheduler pass placing there commits first
    node = session.scalar(select(NodeModel).where(NodeModel.id == node_id).with_for_update()
                          .execution_options(populate_existing=True))
    if node is None:
        raise NotFound(f"node {node_id} not found")
    why = reason or "by an operator"
    revoked = session.execute(
        update(NodeCredentialModel).where(NodeCredentialModel.node_id == node_id,
                                          NodeCredentialModel.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=why[:256])).rowcount  # type: ignore[attr-defined]
    if node.state in (NodeState.READY.value, NodeState.CORDONED.value):
        set_node_state(session, node, NodeState.CORDONED, REVOKED_REASON, actor=actor)
    else:  # draining keeps its deadline; down stays down
        capacity.touch(session, node.id)
    audit.record(session, actor=actor, action="gpuaas.node.credential_revoke",
                 target_type="node", target_id=node_id, scope_path="/",
                 details={"credentials": revoked, "reason": why})
    return node


def revoked_among(session: Session, credential_ids: list[str]) -> set[str]:
    """Which of these credentials are revoked (or gone): one query for every link a replica
    holds."""
    if not credential_ids:
        return set()
    valid = set(session.scalars(select(NodeCredentialModel.id).where(
        NodeCredentialModel.id.in_(credential_ids),
        NodeCredentialModel.revoked_at.is_(None))))
    return set(credential_ids) - valid


# --- which API process holds a node's link ----------------------------------------------

@dataclass(frozen=True)
class LinkHolder:
    replica_id: str
    internal_url: str
    epoch: int


def hold_link(session: Session, node_id: str, *, replica_id: str, internal_url: str,
              now: datetime) -> int:
    """This process now holds the node's link: its epoch (one more than any before)."""
    row = session.scalar(select(NodeLinkModel).where(NodeLinkModel.node_id == node_id)
                         .with_for_update())
    if row is None:
        row = NodeLinkModel(node_id=node_id, replica_id=replica_id, internal_url=internal_url,
                            epoch=1, connected_at=now)
        session.add(row)
    else:
        row.replica_id, row.internal_url = replica_id, internal_url
        row.epoch, row.connected_at = row.epoch + 1, now
    session.flush()
    return row.epoch


def drop_link(session: Session, node_id: str, *, replica_id: str, epoch: int) -> None:
    """The link of that epoch ended (a newer one, elsewhere, keeps its row)."""
    session.execute(delete(NodeLinkModel).where(
        NodeLinkModel.node_id == node_id, NodeLinkModel.replica_id == replica_id,
        NodeLinkModel.epoch == epoch))


def link_holders(session: Session, node_ids: list[str]) -> dict[str, LinkHolder]:
    out: dict[str, LinkHolder] = {}
    for i in range(0, len(node_ids), 500):
        for row in session.scalars(select(NodeLinkModel).where(
                NodeLinkModel.node_id.in_(node_ids[i:i + 500]))):
            out[row.node_id] = LinkHolder(row.replica_id, row.internal_url, row.epoch)
    return out
