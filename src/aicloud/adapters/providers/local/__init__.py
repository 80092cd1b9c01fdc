"""The local provider: workloads as process groups on this host (see provider.py)."""

from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.adapters.providers.local.terminal import PtySession

__all__ = ["LocalProvider", "PtySession"]
