"""Where access's objects live in the scope tree, for ``path_param`` on their id routes."""

from __future__ import annotations

from aicloud.api.authz import Caller, register_scope_resolver
from aicloud.platform import access, iam


def _endpoint(caller: Caller, endpoint_id: str) -> iam.Target:
    return access.get_endpoint_model(caller.session, endpoint_id).project_id


def _endpoint_key(caller: Caller, key_id: str) -> iam.Target:
    key = access.get_key_model(caller.session, key_id)
    return access.get_endpoint_model(caller.session, key.endpoint_id).project_id


register_scope_resolver("aep", _endpoint)
register_scope_resolver("aepk", _endpoint_key)
