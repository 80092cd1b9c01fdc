"""IAM API models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


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
