"""The permissions policy checks, declared into IAM's catalog by the composition root."""

PERMISSIONS: list[tuple[str, str]] = [
    ("policy.quotas.read", "read the quotas that apply to a scope"),
    ("policy.quotas.write", "set or clear quotas of the scopes below one you administer"),
    ("policy.idle_policies.read", "read the idle policies that apply to a scope"),
    ("policy.idle_policies.write", "set or delete a scope's idle policies"),
    # Held by the principal that launched a resource, on that resource (a binding at its
    # project, or on the resource itself): idle policies leave the resource alone. Its own
    # resource name, so no "<service>.<resource>.*" pattern of an ordinary role grants it.
    ("policy.idle.exempt", "resources launched by the holder are exempt from idle policies"),
]
EXEMPT_PERMISSION = "policy.idle.exempt"
