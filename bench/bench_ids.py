"""Id generation: prefixed ULIDs against uuid4 (the usual alternative)."""

from __future__ import annotations

import uuid

from aicloud.shared.ids import new_id
from bench.harness import Measurement, rate


def run() -> list[Measurement]:
    n = 50_000
    ours = rate(lambda: new_id("inst"), n=n)
    base = rate(uuid.uuid4, n=n)
    return [Measurement("new_id('inst')", ours, "ids/s", "uuid.uuid4()", base)]
