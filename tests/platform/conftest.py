"""Fixtures shared by the platform services' tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicloud.runtime import AppContext
from aicloud.shared.db import Database
from tests.platform.audit.helpers import anchored_context


@pytest.fixture
def sink_dir(tmp_path: Path) -> Path:
    """The anchor sink (a directory) a test publishes checkpoints to."""
    return tmp_path / "anchors"


@pytest.fixture
def actx(db: Database, sink_dir: Path) -> AppContext:
    """A context whose checkpoints cover the ledger and are published to ``sink_dir``."""
    return anchored_context(db, sink_dir)
