"""Where IAM's own objects live in the scope tree, for ``path_param`` on their id routes."""

from __future__ import annotations

from aicloud.api.authz import Caller, register_scope_resolver
from aicloud.platform import iam


def _group(caller: Caller, group_id: str) -> iam.Target:
    return iam.get_group_model(caller.session, group_id).org_id


def _service_account(caller: Caller, sa_id: str) -> iam.Target:
    return iam.service_account_scope(iam.get_service_account_model(caller.session, sa_id))


def _role(caller: Caller, role_id: str) -> iam.Target:
    return iam.role_org(caller.session, role_id) or iam.PLATFORM


def _binding(caller: Caller, binding_id: str) -> iam.Target:
    return iam.binding_scope(iam.get_binding_model(caller.session, binding_id))


def _deny(caller: Caller, deny_id: str) -> iam.Target:
    return iam.binding_scope(iam.get_deny_binding_model(caller.session, deny_id))


def _invitation(caller: Caller, invitation_id: str) -> iam.Target:
    return iam.get_invitation_model(caller.session, invitation_id).scope_id


def _api_key(caller: Caller, key_id: str) -> iam.Target:
    m = iam.get_api_key_model(caller.session, key_id)
    return iam.api_key_owner_scope(caller.session, m) or iam.PLATFORM


def _user(caller: Caller, user_id: str) -> iam.Target:
    # Accounts are platform objects; changing one is a platform administrator's act.
    return iam.PLATFORM


for _prefix, _resolver in (("user", _user), ("grp", _group), ("sa", _service_account),
                           ("role", _role), ("rb", _binding), ("deny", _deny),
                           ("inv", _invitation), ("key", _api_key)):
    register_scope_resolver(_prefix, _resolver)
