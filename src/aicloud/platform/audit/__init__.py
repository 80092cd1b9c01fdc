"""Audit: a hash-chained, append-only record of every state change.

Public surface: ``record()`` in the transaction of the change, ``Actor`` for who did it,
``diff()`` to build the old → new changes of a change.
"""

from aicloud.platform.audit.service import Actor, diff, record

__all__ = ["Actor", "diff", "record"]
