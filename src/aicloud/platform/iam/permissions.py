"""The permission catalog: every permission a role may grant or a route may check.

Permissions are ``service.resource.verb`` strings. Services and products declare theirs at
composition time (``aicloud.runtime``); an undeclared permission can be neither bound nor
checked, so a typo fails loudly instead of silently denying.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from aicloud.shared.errors import ValidationFailed

_PERMISSION = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_PATTERN = re.compile(r"^[a-z0-9_*]+(\.[a-z0-9_*]+){0,2}$|^\*$")


@dataclass(frozen=True)
class Permission:
    name: str
    description: str = ""


class PermissionCatalog:
    """Declared permissions; ``revision`` changes with every new declaration so compiled
    policy snapshots know when wildcard expansions must be redone."""

    def __init__(self) -> None:
        self._perms: dict[str, Permission] = {}
        self.declared = self._perms  # read-only view for hot paths (``name in declared``)
        self.revision = 0
        # Permissions that mean something only at the platform scope (create organizations,
        # top up wallets, set prices...): outside the grantable set, so no custom role of an
        # organization may hold them.
        self._platform_only: set[str] = set()

    def declare(self, name: str, description: str = "") -> None:
        if not _PERMISSION.match(name):
            raise ValueError(f"permission {name!r} is not of the form service.resource.verb")
        if name not in self._perms:
            self._perms[name] = Permission(name, description)
            self.revision += 1

    def declare_many(self, names: Iterable[str | tuple[str, str]]) -> None:
        for item in names:
            if isinstance(item, tuple):
                self.declare(*item)
            else:
                self.declare(item)

    def declare_platform_only(self, names: Iterable[str]) -> None:
        """Mark declared permissions as platform-only (outside every organization's
        grantable set)."""
        for name in names:
            if name not in self._perms:
                raise ValueError(f"permission {name!r} is not declared")
            if name not in self._platform_only:
                self._platform_only.add(name)
                self.revision += 1

    def is_platform_only(self, name: str) -> bool:
        return name in self._platform_only

    def grantable(self) -> frozenset[str]:
        """What a custom role of an organization may contain: every declared permission but
        the platform-only ones."""
        return frozenset(n for n in self._perms if n not in self._platform_only)

    def __contains__(self, name: object) -> bool:
        return name in self._perms

    def names(self) -> list[str]:
        return sorted(self._perms)

    def all(self) -> list[Permission]:
        return [self._perms[n] for n in sorted(self._perms)]

    def expand(self, pattern: str) -> frozenset[str]:
        """The declared permissions a pattern (``*``, ``iam.*``, ``*.read``...) stands for."""
        if "*" not in pattern:
            return frozenset([pattern]) if pattern in self._perms else frozenset()
        return frozenset(n for n in self._perms if fnmatchcase(n, pattern))

    def require(self, name: str) -> None:
        if name not in self._perms:
            raise ValidationFailed(f"permission {name!r} is not declared", field="permission")

    def validate_pattern(self, pattern: str) -> None:
        if not _PATTERN.match(pattern):
            raise ValidationFailed(f"{pattern!r} is not a permission or pattern",
                                   field="permission")
        if not self.expand(pattern):
            raise ValidationFailed(f"{pattern!r} matches no declared permission",
                                   field="permission")


CATALOG = PermissionCatalog()

_CRUD = ("create", "read", "update", "delete")
IAM_PERMISSIONS: list[tuple[str, str]] = [
    *((f"iam.orgs.{v}", f"{v} organizations") for v in _CRUD),
    *((f"iam.departments.{v}", f"{v} departments") for v in _CRUD),
    *((f"iam.projects.{v}", f"{v} projects") for v in _CRUD),
    ("iam.projects.move", "move a project to another department"),
    *((f"iam.users.{v}", f"{v} users") for v in ("create", "read", "update")),
    *((f"iam.groups.{v}", f"{v} groups and their members") for v in _CRUD),
    *((f"iam.service_accounts.{v}", f"{v} service accounts") for v in ("create", "read",
                                                                        "update", "delete")),
    *((f"iam.api_keys.{v}", f"{v} API keys of service accounts") for v in ("create", "read",
                                                                            "delete")),
    *((f"iam.roles.{v}", f"{v} custom roles") for v in ("create", "read", "delete")),
    ("iam.bindings.read", "see role and deny bindings"),
    ("iam.bindings.write", "create and delete role bindings"),
    ("iam.deny_bindings.write", "create and delete deny bindings"),
    *((f"iam.invitations.{v}", f"{v} membership invitations") for v in ("create", "read",
                                                                         "delete")),
    ("iam.policy.explain", "explain why a principal can or cannot do something"),
]
CATALOG.declare_many(IAM_PERMISSIONS)
# Accounts and organizations are platform objects: tenants invite, they do not create users.
IAM_PLATFORM_ONLY = ("iam.orgs.create", "iam.users.create", "iam.users.update")
CATALOG.declare_platform_only(IAM_PLATFORM_ONLY)
