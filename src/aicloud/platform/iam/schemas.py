"""IAM API models."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, Field


class User(BaseModel):
    id: str
    email: str
    display_name: str
    disabled: bool
    created_at: datetime


class LoginRequest(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    token: str = Field(description="Bearer token; also set as the session cookie")
    token_type: str = "bearer"
    expires_at: datetime
    user: User


class BootstrapResult(BaseModel):
    user: User
    password: str | None = Field(
        default=None, description="Shown once when it was generated; stored only as a hash"
    )
    created: bool


class UserCreate(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    display_name: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, min_length=1, max_length=1024)


class UserUpdate(BaseModel):
    display_name: str | None = Field(default=None, max_length=200)
    disabled: bool | None = None


class Organization(BaseModel):
    id: str
    name: str
    created_at: datetime


class OrganizationCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class NameUpdate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class Department(BaseModel):
    id: str
    org_id: str
    name: str
    created_at: datetime


class DepartmentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class Project(BaseModel):
    id: str
    org_id: str
    department_id: str | None
    name: str
    scope_path: str
    created_at: datetime


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class ProjectMove(BaseModel):
    department_id: str | None = Field(
        description="Destination department of the same organization; null puts the project "
                    "directly under its organization")


class Group(BaseModel):
    id: str
    org_id: str
    name: str
    created_at: datetime


class GroupCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class GroupMembers(BaseModel):
    group_id: str
    user_ids: list[str]


class ServiceAccount(BaseModel):
    id: str
    org_id: str | None = Field(description="None for a platform service account")
    project_id: str | None
    name: str
    disabled: bool
    created_at: datetime


class ServiceAccountCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class ServiceAccountUpdate(BaseModel):
    disabled: bool


class ApiKey(BaseModel):
    id: str
    principal_id: str
    principal_kind: str
    name: str
    scope_id: str | None
    permissions: list[str] | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    # Aware only: a naive time has no meaning across hosts (422, never a 500 on compare).
    expires_at: AwareDatetime | None = None
    scope_id: str | None = Field(default=None, description="Narrow the key to this scope")
    permissions: list[str] | None = Field(
        default=None, description="Narrow the key to these permissions (patterns allowed)")


class ApiKeyCreated(ApiKey):
    secret: str = Field(description="The key; shown once, stored only as a hash")


class Role(BaseModel):
    id: str
    name: str
    org_id: str | None
    description: str
    permissions: list[str]
    builtin: bool
    created_at: datetime | None


class RoleCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9-]*$")
    description: str = Field(default="", max_length=500)
    permissions: list[str] = Field(description="Permissions or patterns such as gpuaas.*")


class ResourceScope(BaseModel):
    type: str = Field(min_length=1, max_length=64)
    id: str = Field(min_length=1, max_length=64)


class RoleBinding(BaseModel):
    id: str
    principal_id: str
    role_id: str
    scope_id: str
    resource_type: str | None
    created_at: datetime


class RoleBindingCreate(BaseModel):
    principal_id: str = Field(description="A user, service account or group id")
    role_id: str
    resource: ResourceScope | None = Field(
        default=None, description="Bind on one resource of the project instead of the scope")


class DenyBinding(BaseModel):
    id: str
    principal_id: str
    permission: str
    scope_id: str
    resource_type: str | None
    created_at: datetime


class DenyBindingCreate(BaseModel):
    principal_id: str
    permission: str = Field(description="A permission or pattern, e.g. gpuaas.instances.*")
    resource: ResourceScope | None = None


class Invitation(BaseModel):
    id: str
    org_id: str
    scope_id: str
    email: str
    role_id: str
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class InvitationCreate(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    role_id: str


class InvitationCreated(Invitation):
    token: str = Field(description="Give this to the invitee; shown once")


class InvitationAccept(BaseModel):
    token: str
    password: str = Field(min_length=1, max_length=1024)
    display_name: str | None = Field(default=None, max_length=200)


class DecisionOut(BaseModel):
    allowed: bool
    reason: str
    binding_id: str | None = None
    role_id: str | None = None
    deny_binding_id: str | None = None
    scope_id: str | None = None
    path: list[str] = []


class PermissionOut(BaseModel):
    name: str
    description: str
