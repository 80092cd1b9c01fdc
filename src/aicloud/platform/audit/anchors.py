"""Publishing signed checkpoints outside the database, and reading them back.

The database owner can roll the chain back, drop checkpoints and rewrite everything
consistently; what they cannot do is reach a copy they do not control. Like Certificate
Transparency's signed tree heads and CloudTrail's digest files, every checkpoint is
published to an append-only sink, and ``verify --against`` compares the database with it.

A sink only has to add a named document once and list what it holds. ``DirectorySink`` is the
default (``dir:PATH``); an object store with object lock, or a syslog forwarder, fits the same
interface. Each document is self-contained: the checkpoint's fields and signature, so anyone
with the public key can check it without the database.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from aicloud.platform.audit.chain import canonical_json
from aicloud.platform.audit.checkpoints import Checkpoint, checkpoint_problem
from aicloud.platform.audit.models import AuditCheckpointModel
from aicloud.shared.db import Database

FORMAT = "aicloud.audit.anchor.v1"
CATCH_UP = 100
_NAME = re.compile(r"^(\d{12})-(ackp_[0-9A-Z]{26})\.json$")


class AnchorConflict(RuntimeError):
    """A document of that name already exists with other content: never overwritten."""


class AnchorSink(Protocol):
    """An append-only place outside the database."""

    description: str

    def publish(self, name: str, data: bytes) -> bool:
        """Add ``name`` once: True when written, False when the same bytes are already there;
        AnchorConflict when other bytes are."""
        ...

    def names(self) -> list[str]:
        """Every document's name, sorted."""
        ...

    def read(self, name: str) -> bytes:
        ...


class DirectorySink:
    """Files in a directory: written to a temporary file, fsynced, then linked into place
    (link, unlike rename, never replaces an existing file), the directory fsynced, and the
    file made read-only."""

    def __init__(self, root: Path):
        self.root = root
        self.description = f"dir:{root}"

    def publish(self, name: str, data: bytes) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / name
        # mkstemp opens with O_CREAT | O_EXCL: two publishers never share a temporary file.
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, target)
            except FileExistsError:
                if target.read_bytes() == data:
                    return False
                raise AnchorConflict(f"{target} already exists with other content; "
                                     "published anchors are never overwritten") from None
            _fsync_dir(self.root)
            return True
        finally:
            os.unlink(tmp)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(n for n in os.listdir(self.root)
                      if n.endswith(".json") and not n.startswith("."))

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_sink(spec: str, *, base: Path | None = None) -> AnchorSink:
    """A sink from its spec: ``dir:PATH`` (a relative PATH is taken from ``base`` or the
    working directory) or a bare directory path."""
    if spec in ("", "dir:"):
        raise ValueError("anchor sink: no directory given (expected dir:PATH)")
    if spec.startswith("dir:"):
        path = Path(spec[4:])
    elif re.match(r"^[a-z][a-z0-9+]*:", spec):
        raise ValueError(f"unknown anchor sink {spec!r}: expected dir:PATH")
    else:
        path = Path(spec)
    path = path.expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return DirectorySink(path.resolve())


def anchor_name(cp: Checkpoint) -> str:
    """Sorts in signing order; includes the id, so two databases' checkpoints never collide."""
    return f"{cp.ordinal or 0:012d}-{cp.id}.json"


def anchor_document(cp: Checkpoint) -> bytes:
    return (canonical_json({"format": FORMAT, "checkpoint": cp.to_dict()}) + "\n").encode()


def publish(sink: AnchorSink, cp: Checkpoint) -> bool:
    return sink.publish(anchor_name(cp), anchor_document(cp))


def publish_pending(db: Database, sink: AnchorSink,
                    trusted: dict[str, Ed25519PublicKey]) -> list[Checkpoint]:
    """Publish the recent checkpoints the sink lacks: those a process that died between
    signing and publishing left behind, and those a concurrent checkpointer had not published
    yet when a later one was (the window reaches back CATCH_UP numbers from the newest
    published). Only checkpoints that verify with a trusted key are published: a row someone
    inserted by hand is never vouched for."""
    names = set(sink.names())
    last = max((int(m.group(1)) for name in names if (m := _NAME.match(name))), default=0)
    with db.transaction() as s:
        rows = s.scalars(select(AuditCheckpointModel).where(
            AuditCheckpointModel.ordinal > last - CATCH_UP)
            .order_by(AuditCheckpointModel.ordinal)).all()
        pending = [c for c in map(Checkpoint.of, rows) if anchor_name(c) not in names]
    done = []
    for cp in pending:
        if checkpoint_problem(cp, trusted) is None and publish(sink, cp):
            done.append(cp)
    return done


@dataclass
class Published:
    """What a sink holds: the checkpoints that verify, and why the others do not."""

    sink: str
    checkpoints: list[Checkpoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_published(sink: AnchorSink, trusted: dict[str, Ed25519PublicKey]) -> Published:
    """Every published checkpoint, each checked on its own with the trusted keys."""
    out = Published(sink=sink.description)
    for name in sink.names():
        try:
            doc = json.loads(sink.read(name))
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            cp = Checkpoint.from_dict(doc["checkpoint"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            out.problems.append(f"{name}: not a published checkpoint ({exc})")
            continue
        if name != anchor_name(cp):
            out.problems.append(f"{name}: holds checkpoint {cp.id}, expected in "
                                f"{anchor_name(cp)}")
        elif problem := checkpoint_problem(cp, trusted):
            out.problems.append(f"{name}: {problem}")
        elif cp.contributions is None:
            out.problems.append(f"{name}: a v1 checkpoint; published ones are v2")
        else:
            out.checkpoints.append(cp)
    out.checkpoints.sort(key=lambda c: (c.ordinal or 0, c.seq))
    out.problems.extend(_continuity_problems(out.checkpoints))
    return out


def _continuity_problems(checkpoints: list[Checkpoint]) -> list[str]:
    """Numbers run 1, 2, 3, ... once each, and the signed seq and ledger point never go down:
    a gap is a file removed from the sink, a repeat or a step back a signer that was shown a
    rolled-back database."""
    problems: list[str] = []
    expected, prev = 1, None
    for c in checkpoints:
        n = c.ordinal or 0
        if prev is not None and n == prev.ordinal:
            problems.append(f"checkpoints {prev.id} and {c.id} were both published as number "
                            f"{n}: the database was rolled back between them")
        elif n != expected:
            problems.append(f"published checkpoint(s) {expected}..{n - 1} are missing from "
                            f"the sink before {anchor_name(c)}: removed")
        elif prev is not None and (c.seq < prev.seq or _ledger_point(c) < _ledger_point(prev)):
            problems.append(f"checkpoint {c.id} (number {n}) signed less than number "
                            f"{n - 1} did: the database was rolled back between them")
        expected, prev = n + 1, c
    return problems


def _ledger_point(cp: Checkpoint) -> int:
    ledger = (cp.contributions or {}).get("ledger") or {}
    return int(ledger.get("transfers", 0))


def latest_published(sink: AnchorSink,
                     trusted: dict[str, Ed25519PublicKey]) -> Checkpoint | None:
    """The newest published checkpoint that verifies (reads only from the newest file back)."""
    for name in reversed(sink.names()):
        try:
            cp = Checkpoint.from_dict(json.loads(sink.read(name))["checkpoint"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if name == anchor_name(cp) and cp.contributions is not None and (
                checkpoint_problem(cp, trusted) is None):
            return cp
    return None
