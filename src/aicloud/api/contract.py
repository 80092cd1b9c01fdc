"""The OpenAPI document of the API, built without a database (for contracts/openapi.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from aicloud.runtime import build_context
from aicloud.shared.config import load_settings
from aicloud.shared.db import Database


def openapi_document() -> dict[str, Any]:
    from aicloud.api.app import create_app

    settings = load_settings("dev", database_url="sqlite:///:memory:")
    app = create_app(build_context(settings, Database("sqlite:///:memory:")))
    return app.openapi()


def write_contract(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "contracts/openapi.json")
    write_contract(target)
    print(f"wrote {target}")
