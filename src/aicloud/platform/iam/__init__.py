"""IAM: principals, sessions and (later) the hierarchy, roles, bindings and authorize().

This module is the public surface other layers may call.
"""

from aicloud.platform.iam.schemas import BootstrapResult, LoginRequest, LoginResponse, User
from aicloud.platform.iam.service import (
    Principal,
    bootstrap_admin,
    count_users,
    create_user,
    get_user,
    login,
    logout,
    resolve_token,
)

__all__ = [
    "BootstrapResult",
    "LoginRequest",
    "LoginResponse",
    "Principal",
    "User",
    "bootstrap_admin",
    "count_users",
    "create_user",
    "get_user",
    "login",
    "logout",
    "resolve_token",
]
