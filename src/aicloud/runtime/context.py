"""What one process needs: settings, a database, and its controllers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from aicloud.platform import access, audit, billing, iam
from aicloud.products import gpuaas
from aicloud.runtime import access as access_runtime
from aicloud.runtime import gpuaas as gpuaas_runtime
from aicloud.runtime import metrics as metrics_runtime
from aicloud.runtime import node_agent
from aicloud.runtime.node_links import NodeLinkHub
from aicloud.shared import idempotency
from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.config import Settings
from aicloud.shared.controllers import Controller
from aicloud.shared.db import Database, migrate
from aicloud.shared.link import LinkClient

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    # `serve` sets it from the profile (agent_embedded): this process is also a node agent.
    run_agent: bool = False
    # With agent_url set (by `serve`: its own loopback URL, once it knows its port) the
    # embedded agent joins and talks over the link like any host's; without, it works on
    # the database directly (tests and benchmarks that embed an agent in-process).
    agent_link: bool = False
    agent_url: str | None = None
    # Credential uses noted by this process's requests, written by a background thread.
    credential_usage: iam.CredentialUsage = field(default_factory=iam.CredentialUsage)
    _audit_key: audit.SigningKey | None = field(default=None, init=False, repr=False)
    _agent: gpuaas.NodeAgent | None = field(default=None, init=False, repr=False)
    _access: access.AccessRuntime | None = field(default=None, init=False, repr=False)
    _agent_link: LinkClient | None = field(default=None, init=False, repr=False)
    _node_links: NodeLinkHub | None = field(default=None, init=False, repr=False)

    @property
    def node_links(self) -> NodeLinkHub:
        """The node agents' links this API process holds (built on first use)."""
        if self._node_links is None:
            self._node_links = NodeLinkHub(
                self.db, self.clock, secret=self.settings.secret_key.get_secret_value(),
                internal_url=self.settings.internal_url)
        return self._node_links

    @property
    def audit_signing_key(self) -> audit.SigningKey:
        """Loaded once per process (a derived development key is announced once)."""
        if self._audit_key is None:
            self._audit_key = audit.signing_key(self.settings)
            if self._audit_key.derived:
                log.warning("audit_signing_key is not set: audit checkpoints are signed with a "
                            "development key derived from secret_key (profile %s)",
                            self.settings.profile)
        return self._audit_key

    @property
    def webhook_policy(self) -> billing.WebhookPolicy:
        """Where budget webhooks may go: public addresses, https in strict profiles, plus
        the configured exceptions."""
        return billing.WebhookPolicy(require_https=self.settings.strict,
                                     allow=tuple(self.settings.webhook_allowed_targets))

    def controllers(self) -> list[Controller]:
        """The background controllers of this deployment."""
        return [
            Controller(
                name="idempotency-gc",
                interval_seconds=max(60.0, self.settings.controller_interval_seconds),
                run_once=self._purge_idempotency_keys,
            ),
            Controller(
                name="audit-sealer",
                interval_seconds=self.settings.audit_seal_interval_seconds,
                run_once=self.audit_seal,
            ),
            Controller(
                name="audit-checkpoint",
                interval_seconds=self.settings.audit_checkpoint_interval_seconds,
                run_once=self.audit_checkpoint,
            ),
            *billing.controllers(
                self.db, interval_seconds=self.settings.controller_interval_seconds,
                clock=self.clock, webhook_secret=self.settings.secret_key.get_secret_value(),
                webhook_policy=self.webhook_policy),
            *gpuaas_runtime.controllers(self.settings, self.db, self.clock,
                                        agent=self.embedded_agent),
            *metrics_runtime.controllers(self.settings, self.db, self.clock),
            *self._agent_link_controllers(),
        ]

    def serving_controllers(self) -> list[Controller]:
        """What every API process runs beside its requests, controllers or not: the IAM
        policy watcher that keeps the shared snapshot current off the request path, and the
        writer of the credential uses its requests noted (last_used_at)."""
        return [iam.policy_watcher(self.db.engine), self.last_used_flusher(),
                access_runtime.meter_flusher(self.settings, self.db, self.access)]

    @property
    def access(self) -> access.AccessRuntime:
        """This process's proxy state: upstream connections, rate leases, request counts."""
        if self._access is None:
            self._access = access_runtime.build_runtime(self.settings, self.db,
                                                        self.credential_usage)
        return self._access

    def last_used_flusher(self) -> Controller:
        """Writes the credential uses this process noted (runs in every API process)."""
        return Controller(name="iam-last-used",
                          interval_seconds=self.settings.last_used_flush_interval_seconds,
                          run_once=lambda: self.credential_usage.flush(self.db))

    def prepare_products(self) -> None:
        """Data the products need before serving: meters, default instance types, demo
        prices where the profile asks (idempotent). Skipped while the schema is behind: the
        server still starts and /readyz says what to do."""
        if not migrate.is_up_to_date(self.db):
            log.warning("database schema is not at head: product data not prepared")
            return
        gpuaas_runtime.prepare(self.settings, self.db)
        access_runtime.prepare(self.settings, self.db)
        if self.embedded_agent is not None and not self.agent_link:
            # Registered before the server answers: once /readyz says ready, this host's
            # node is listed (its controllers would otherwise add it a tick later).
            try:
                self.embedded_agent.heartbeat()
            except Exception:  # its heartbeat controller retries; serving goes on
                log.exception("the embedded node agent could not register this host")

    @property
    def embedded_agent(self) -> gpuaas.NodeAgent | None:
        """This host's node agent when the process is one (run_agent), built once."""
        if self.run_agent and self._agent is None:
            if self.agent_link:
                linked = node_agent.embedded_agent(self.settings, self.db, self.clock,
                                                   lambda: self.agent_url)
                self._agent, self._agent_link = linked.agent, linked.link
            else:
                self._agent = gpuaas_runtime.build_agent(self.settings, self.db, self.clock)
        return self._agent

    def _agent_link_controllers(self) -> list[Controller]:
        """Opens the embedded agent's link when the controllers start (it connects once
        the API listens, retrying until then) and closes it when they stop."""
        link = self._agent_link
        if link is None:
            return []
        return [Controller(name="gpuaas-agent-link", interval_seconds=3600.0,
                           run_once=link.start, on_stop=link.stop)]

    @property
    def anchor_sink(self) -> audit.AnchorSink | None:
        """Where signed checkpoints are published outside the database (the profile's
        audit_anchor_sink), or None."""
        spec = self.settings.audit_anchor_sink
        return audit.open_sink(spec) if spec else None

    def checkpoint_contributors(self) -> list[audit.Contributor]:
        """What besides the audit head each checkpoint signs: the ledger's running digest
        (audit cannot import billing; this composition root joins them)."""
        return [audit.Contributor(name="ledger", advance=billing.advance_ledger_digest,
                                  lock=billing.lock_ledger_for_digest)]

    def audit_seal(self) -> int:
        """Chain the audit events committed since the last pass (one sealer at a time across
        every process: the others wait on the chain head, then find nothing left)."""
        n = audit.seal_pending(self.db)
        if n:
            log.debug("sealed %d audit event(s)", n)
        return n

    def audit_checkpoint(self, *, only_if_advanced: bool = True) -> audit.Checkpoint | None:
        """Sign the audit head and the ledger digest (by default only if either moved since
        the last checkpoint), then publish every unpublished checkpoint to the anchor sink.

        The new checkpoint must extend the newest published one: a database rolled back or
        rewritten below it is refused (AuditChainBroken), never signed. Publication follows
        the commit: a checkpoint published but rolled back would look like a rollback. A
        process that dies in between leaves it unpublished until the next run, which
        publishes it (publish_pending)."""
        sink = self.anchor_sink
        trusted = audit.trusted_public_keys(self.settings)
        extends = None
        if sink is not None:
            try:
                extends = audit.latest_published(sink, trusted)
            except OSError:
                log.exception("cannot read the anchor sink %s; checking against the "
                              "database's own checkpoints only", sink.description)
        with self.db.transaction() as session:
            cp = audit.create_checkpoint(session, self.audit_signing_key, now=self.clock.now(),
                                         only_if_advanced=only_if_advanced,
                                         contributors=self.checkpoint_contributors(),
                                         extends=extends)
        if cp:
            log.info("signed audit checkpoint %s at seq %d", cp.id, cp.seq)
        if sink is not None:
            if cp is not None:
                audit.publish(sink, cp)
            for done in audit.publish_pending(self.db, sink, trusted):
                log.info("published audit checkpoint %s to %s", done.id, sink.description)
        return cp

    def _purge_idempotency_keys(self) -> int:
        with self.db.transaction() as session:
            n = idempotency.purge_expired(
                session,
                older_than=timedelta(hours=self.settings.idempotency_ttl_hours),
                now=self.clock.now(),
            )
        if n:
            log.info("purged %d expired idempotency key(s)", n)
        return n


def build_context(settings: Settings, db: Database | None = None) -> AppContext:
    return AppContext(settings=settings, db=db or Database(
        settings.database_url, echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        pool_timeout=settings.database_pool_timeout_seconds))
