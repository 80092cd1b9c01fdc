"""Access API models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

# A DNS label: the name is a URL path segment today and may become a host name.
ENDPOINT_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class EndpointCreate(BaseModel):
    name: str = Field(pattern=ENDPOINT_NAME, description="Unique on the platform: the URL is "
                      "/endpoints/{name}/ (lowercase letters, digits, '-'; up to 63)")
    resource_id: str = Field(min_length=1, max_length=40,
                             description="The resource to publish (an api-app instance)")


class Endpoint(BaseModel):
    id: str
    name: str
    project_id: str
    resource_type: str
    resource_id: str
    path: str = Field(description="Where it is served: /endpoints/{name}/")
    created_by: str
    created_at: datetime


class EndpointKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    rate_limit_requests: int = Field(default=600, ge=1, le=10_000_000, description=(
        "Token bucket: this many requests at once, refilled at this many per window"))
    rate_limit_window_seconds: int = Field(default=60, ge=1, le=86_400)


class EndpointKey(BaseModel):
    id: str
    endpoint_id: str
    name: str
    rate_limit_requests: int
    rate_limit_window_seconds: int
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class EndpointKeyCreated(EndpointKey):
    secret: str = Field(description="The key; shown once, stored only as a hash. Send it as "
                        "`Authorization: Bearer <secret>` to /endpoints/{name}/...")
