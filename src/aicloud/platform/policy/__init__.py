"""Policy: quotas per scope and resource key, checked at admission by products; idle
policies per scope and instance type, whose verdicts products act on."""

from aicloud.platform.policy.idle import (
    ALL_CLASSES,
    IdlePolicy,
    IdlePolicySpec,
    IdleRun,
    all_idle_policies,
    applicable,
    delete_idle_policy,
    idle_run,
    list_idle_policies,
    set_idle_policy,
)
from aicloud.platform.policy.permissions import EXEMPT_PERMISSION, PERMISSIONS
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
    "ALL_CLASSES",
    "EXEMPT_PERMISSION",
    "PERMISSIONS",
    "IdlePolicy",
    "IdlePolicySpec",
    "IdleRun",
    "Quota",
    "QuotaExceeded",
    "QuotaViolation",
    "all_idle_policies",
    "applicable",
    "check_quotas",
    "clear_quota",
    "delete_idle_policy",
    "enforce_quotas",
    "idle_run",
    "list_idle_policies",
    "list_quotas",
    "set_idle_policy",
    "set_quota",
]
