from __future__ import annotations

import time

from ulid import ULID

from aicloud.shared.ids import is_id, new_ids


def test_new_ids_are_unique_valid_ulids_of_now() -> None:
    ids = new_ids("xfer", 5000)
    assert len(set(ids)) == 5000
    assert all(is_id(i, "xfer") for i in ids)
    stamp = ULID.from_str(ids[0].removeprefix("xfer_")).timestamp
    assert abs(stamp - time.time()) < 5
    assert new_ids("xfer", 0) == []
