"""The permissions audit checks, declared into IAM's catalog by the composition root."""

PERMISSIONS: list[tuple[str, str]] = [
    ("audit.events.read", "read audit events"),
    ("audit.events.export", "export audit events"),
    ("audit.checkpoints.create", "create signed audit checkpoints"),
    ("audit.checkpoints.read", "read audit checkpoints and verify the chain"),
]
