"""The composition root: builds the database, picks adapters from the profile, and lists the
controllers a process runs. ``serve``, ``api``, ``worker`` and ``agent`` all start here."""

import aicloud.runtime.permissions  # noqa: F401  (declares the platform's permissions)
from aicloud.runtime.context import AppContext, build_context

__all__ = ["AppContext", "build_context"]
