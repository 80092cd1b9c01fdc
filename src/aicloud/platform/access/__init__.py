"""Runtime access: reaching what users launched, through the platform (product-neutral).

Surfaces owned here: the browser-app proxy (``/apps/{resource_id}/...``, or one host per
app in subdomain mode) and API endpoints (``/endpoints/{name}/...`` with endpoint keys, rate
limits and the ``endpoint_requests`` meter). Resources are known only through the resolvers
the composition root registers (``register_resource``); bytes reach them only through a
``NodeStreams`` (``DirectStreams`` today, the node link later).

This module is the public surface other layers may call.
"""

from aicloud.platform.access.apps import APP_COOKIE, APP_COOKIE_SECONDS, TICKET_SECONDS
from aicloud.platform.access.endpoints import (
    ENDPOINT_KEY_PREFIX,
    EndpointRoute,
    KeyGrant,
    create_key,
    endpoint_view,
    get_endpoint_model,
    get_key_model,
    key_view,
    list_endpoints,
    list_keys,
    publish,
    revoke_key,
    unpublish,
)
from aicloud.platform.access.http1 import (
    StreamTarget,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamWebSocket,
)
from aicloud.platform.access.metering import DEFAULT_PRICES, METER, EndpointMeter, status_class
from aicloud.platform.access.permissions import PERMISSIONS
from aicloud.platform.access.proxy import (
    AccessConfig,
    AccessRuntime,
    AppAccess,
    EndpointAccess,
    NotRunning,
    RateLimited,
    UpstreamFailed,
    UpstreamTimedOut,
)
from aicloud.platform.access.ratelimit import RateLimiter, take_tokens
from aicloud.platform.access.resources import (
    AccessTarget,
    register_resource,
    resolve_resource,
    resource_kind,
)
from aicloud.platform.access.rewrite import (
    HeadersTooLarge,
    RedirectRefused,
    check_header_size,
    downstream_response_headers,
    endpoint_request_headers,
    endpoint_response_headers,
    upstream_request_headers,
)
from aicloud.platform.access.schemas import (
    Endpoint,
    EndpointCreate,
    EndpointKey,
    EndpointKeyCreate,
    EndpointKeyCreated,
)
from aicloud.platform.access.upstream import (
    SERVING_PORT,
    ByteStream,
    DirectStreams,
    NodeStreams,
    StreamTimeout,
    StreamUnavailable,
)

__all__ = [
    "APP_COOKIE",
    "APP_COOKIE_SECONDS",
    "DEFAULT_PRICES",
    "ENDPOINT_KEY_PREFIX",
    "METER",
    "PERMISSIONS",
    "SERVING_PORT",
    "TICKET_SECONDS",
    "AccessConfig",
    "AccessRuntime",
    "AccessTarget",
    "AppAccess",
    "ByteStream",
    "DirectStreams",
    "Endpoint",
    "EndpointAccess",
    "EndpointCreate",
    "EndpointKey",
    "EndpointKeyCreate",
    "EndpointKeyCreated",
    "EndpointMeter",
    "EndpointRoute",
    "HeadersTooLarge",
    "KeyGrant",
    "NodeStreams",
    "NotRunning",
    "RateLimited",
    "RateLimiter",
    "RedirectRefused",
    "StreamTarget",
    "StreamTimeout",
    "StreamUnavailable",
    "UpstreamError",
    "UpstreamFailed",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamTimedOut",
    "UpstreamTimeout",
    "UpstreamWebSocket",
    "check_header_size",
    "create_key",
    "downstream_response_headers",
    "endpoint_request_headers",
    "endpoint_response_headers",
    "endpoint_view",
    "get_endpoint_model",
    "get_key_model",
    "key_view",
    "list_endpoints",
    "list_keys",
    "publish",
    "register_resource",
    "resolve_resource",
    "resource_kind",
    "revoke_key",
    "status_class",
    "take_tokens",
    "unpublish",
    "upstream_request_headers",
]
