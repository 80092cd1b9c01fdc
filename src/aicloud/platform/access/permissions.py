"""The permissions access checks, declared into IAM's catalog by the composition root.

Opening a resource's browser app is checked with the permission the resource's product
names (GPUaaS: ``gpuaas.instances.open_app``); these are access's own.
"""

PERMISSIONS: list[tuple[str, str]] = [
    ("access.endpoints.read", "see a project's API endpoints and their keys (never secrets)"),
    ("access.endpoints.write", "publish and unpublish a project's API endpoints"),
    ("access.endpoint_keys.write", "create and revoke keys of a project's API endpoints"),
]
