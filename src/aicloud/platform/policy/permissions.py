"""The permissions policy checks, declared into IAM's catalog by the composition root."""

PERMISSIONS: list[tuple[str, str]] = [
    ("policy.quotas.read", "read the quotas that apply to a scope"),
    ("policy.quotas.write", "set or clear quotas of the scopes below one you administer"),
]
