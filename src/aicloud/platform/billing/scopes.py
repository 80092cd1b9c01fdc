"""Scope paths ("/org_x/dep_y/prj_z") as billing receives them from callers."""

from __future__ import annotations

from aicloud.shared.errors import ValidationFailed


def split_scope(scope_path: str, field: str = "scope_path") -> list[str]:
    parts = scope_path.split("/")
    if not scope_path.startswith("/") or len(parts) < 2 or not all(parts[1:]):
        raise ValidationFailed(f"{field} must look like /org/dep/prj, got {scope_path!r}",
                               field=field)
    return parts[1:]


def org_of(scope_path: str) -> str:
    return split_scope(scope_path)[0]


def like_prefix(scope_path: str) -> str:
    """A LIKE pattern for everything at or below a scope (ids hold no LIKE wildcards)."""
    split_scope(scope_path)
    return scope_path.rstrip("/") + "%"
