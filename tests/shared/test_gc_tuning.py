from __future__ import annotations

import gc

from aicloud.shared.gc_tuning import YOUNG_THRESHOLD, tune_for_server


def test_tune_for_server_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        tune_for_server()
        assert gc.get_freeze_count() > 1000  # modules and the like, out of every scan
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        garbage = []
        garbage.append(garbage)  # a cycle made after start-up is still collected
        del garbage
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
