"""What GPUaaS declares to the platform: permissions, meters and resource types."""

from __future__ import annotations

from aicloud.platform.registry import MeterDecl, PermissionDecl, ProductManifest, ResourceTypeDecl

MANIFEST = ProductManifest(
    name="gpuaas",
    description="GPU instances on the nodes of the pool",
    permissions=(
        PermissionDecl("gpuaas.instances.create", "launch GPU instances"),
        PermissionDecl("gpuaas.instances.read", "see GPU instances and their logs"),
        PermissionDecl("gpuaas.instances.stop", "stop GPU instances"),
        PermissionDecl("gpuaas.instances.delete", "delete GPU instances"),
        PermissionDecl("gpuaas.instances.open_app", "open an instance's browser app "
                       "(/apps/{instance_id}/)"),
        PermissionDecl("gpuaas.nodes.read", "see GPU nodes"),
        PermissionDecl("gpuaas.nodes.write", "add, cordon, drain and remove GPU nodes"),
        PermissionDecl("gpuaas.nodes.join", "create node join tokens; revoke node credentials"),
    ),
    meters=(
        MeterDecl("gpu_seconds", "second", "GPU time, by GPU model", dimension="gpu_model"),
        MeterDecl("vcpu_seconds", "second", "vCPU time"),
        MeterDecl("memory_gib_seconds", "GiB-second", "Memory reserved over time"),
    ),
    resource_types=(
        ResourceTypeDecl("instance", "inst", "a GPU instance"),
        ResourceTypeDecl("node", "node", "a GPU node of the pool"),
    ),
)
