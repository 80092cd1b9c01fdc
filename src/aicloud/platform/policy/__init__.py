"""Policy: quotas per scope and resource key, checked at admission by products."""

from aicloud.platform.policy.permissions import PERMISSIONS
from aicloud.platform.policy.quotas import (
    Quota,
    QuotaExceeded,
    QuotaViolation,
    check_quotas,
    clear_quota,
    enforce_quotas,
    list_quotas,
    set_quota,
)

__all__ = [
    "PERMISSIONS",
    "Quota",
    "QuotaExceeded",
    "QuotaViolation",
    "check_quotas",
    "clear_quota",
    "enforce_quotas",
    "list_quotas",
    "set_quota",
]
