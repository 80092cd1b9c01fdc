"""Where GPUaaS objects live in the scope tree, for ``path_param`` on their id routes."""

from __future__ import annotations

from aicloud.api.authz import Caller, register_scope_resolver
from aicloud.platform import iam
from aicloud.products import gpuaas


def _instance(caller: Caller, instance_id: str) -> iam.Target:
    m = gpuaas.get_instance_model(caller.session, instance_id)
    return iam.ResourceRef("instance", m.id, m.project_id)


def _node(caller: Caller, node_id: str) -> iam.Target:
    gpuaas.get_node_model(caller.session, node_id)
    return iam.PLATFORM  # nodes are the platform operators' resources


def _join_token(caller: Caller, token_id: str) -> iam.Target:
    gpuaas.get_join_token(caller.session, token_id)
    return iam.PLATFORM  # join tokens are the platform operators' too


register_scope_resolver("inst", _instance)
register_scope_resolver("node", _node)
register_scope_resolver("njt", _join_token)
