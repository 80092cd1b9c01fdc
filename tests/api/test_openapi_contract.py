"""contracts/openapi.json is the checked-in API contract; `make contracts` regenerates it."""

from __future__ import annotations

import json
from pathlib import Path

from aicloud.api.contract import openapi_document

CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "openapi.json"


def test_openapi_matches_the_checked_in_contract() -> None:
    assert CONTRACT.is_file(), "contracts/openapi.json is missing; run `make contracts`"
    current = openapi_document()
    stored = json.loads(CONTRACT.read_text())
    assert current == stored, (
        "the API differs from contracts/openapi.json; review the change and run `make contracts`"
    )
