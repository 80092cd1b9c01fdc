"""Audit: a hash-chained, append-only record of every state change.

Public surface:
- ``record()`` in the transaction of the change, ``Actor`` for who did it, ``diff()`` to build
  the old → new changes of a change;
- ``seal_pending()``: the single sealer that chains committed events (the ``audit-sealer``
  controller runs it; checkpoints seal first; tests that read the chain call it);
- ``list_events()`` / ``iter_jsonl()`` to read the log, confined to ``allowed_scopes``;
- ``create_checkpoint()`` with ``signing_key(settings)`` (other services' state joins it
  through a ``Contributor``); ``verify_chain()`` with ``trusted_public_keys(settings)``;
- ``open_sink()``, ``publish()`` / ``publish_pending()`` and ``read_published()``: signed
  checkpoints published outside the database, to compare it with (``verify_chain(published=)``).
"""

from aicloud.platform.audit.anchors import (
    AnchorConflict,
    AnchorSink,
    DirectorySink,
    Published,
    latest_published,
    open_sink,
    publish,
    publish_pending,
    read_published,
)
from aicloud.platform.audit.checkpoints import (
    Checkpoint,
    Contributor,
    create_checkpoint,
    latest_checkpoint,
)
from aicloud.platform.audit.permissions import PERMISSIONS
from aicloud.platform.audit.query import (
    EventFilter,
    iter_events,
    iter_jsonl,
    list_events,
    to_json_line,
)
from aicloud.platform.audit.schemas import AuditEvent
from aicloud.platform.audit.sealer import has_unsealed, seal_pending
from aicloud.platform.audit.service import Actor, AuditChainBroken, diff, record
from aicloud.platform.audit.signing import (
    SigningKey,
    generate_key_b64,
    signing_key,
    trusted_public_keys,
)
from aicloud.platform.audit.verify import (
    BREAK_KINDS,
    DEFAULT_UNSEALED_BOUND,
    Break,
    VerifyResult,
    verify_chain,
)

__all__ = [
    "BREAK_KINDS",
    "DEFAULT_UNSEALED_BOUND",
    "PERMISSIONS",
    "Actor",
    "AnchorConflict",
    "AnchorSink",
    "AuditChainBroken",
    "AuditEvent",
    "Break",
    "Checkpoint",
    "Contributor",
    "DirectorySink",
    "EventFilter",
    "Published",
    "SigningKey",
    "VerifyResult",
    "create_checkpoint",
    "diff",
    "generate_key_b64",
    "has_unsealed",
    "iter_events",
    "iter_jsonl",
    "latest_checkpoint",
    "latest_published",
    "list_events",
    "open_sink",
    "publish",
    "publish_pending",
    "read_published",
    "record",
    "seal_pending",
    "signing_key",
    "to_json_line",
    "trusted_public_keys",
    "verify_chain",
]
