"""Runtime access: how users reach what they launched, through the platform
(product-neutral; a workload is known only by the provider's opaque handle or the resolver
the composition root registers).

Surfaces:
- terminals, node side (no database): ``TerminalKeeper`` keeps sessions alive across
  detaches, with a ring buffer of output addressed by absolute offset for reattaching, idle
  timeout, reattach window, and an asciicast v2 recording of each session; driven by calls
  (``open``/``open_attached``, ``attach``, ``Attachment.write/resize/keepalive/detach``,
  ``close``) and ``TerminalSink`` callbacks, so any transport plugs onto it; ``exec`` runs one
  command and returns its exit code. Recordings: ``read_recording`` (checked against its
  digest), ``replay``, ``purge_recordings`` (retention);
- the browser-app proxy (``/apps/{resource_id}/...``, or one host per app in subdomain mode)
  and API endpoints (``/endpoints/{name}/...`` with endpoint keys, rate limits and the
  ``endpoint_requests`` meter). Bytes reach a resource only through a ``NodeStreams``
  (``DirectStreams`` today, the node link later).

This module is the public surface other layers may call.
"""

from aicloud.platform.access.apps import APP_COOKIE, APP_COOKIE_SECONDS, TICKET_SECONDS
from aicloud.platform.access.endpoints import (
    ENDPOINT_KEY_PREFIX,
    EndpointRoute,
    KeyGrant,
    create_key,
    endpoint_view,
    endpoints_under,
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
from aicloud.platform.access.terminal_keeper import (
    AsyncQueueSink,
    Attachment,
    DetachReason,
    EndReason,
    ExecResult,
    OutputBuffer,
    QueueSink,
    Replay,
    SessionEnd,
    SessionGone,
    SessionInfo,
    SessionNotFound,
    SessionState,
    SinkEvent,
    TerminalKeeper,
    TerminalPolicy,
    TerminalSink,
    TooManySessions,
)
from aicloud.platform.access.terminal_recording import (
    Event,
    Recording,
    RecordingDigest,
    RecordingInvalid,
    RecordingWriter,
    file_digest,
    purge_recordings,
    read_recording,
    replay,
    sidecar_digest,
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
    "AsyncQueueSink",
    "Attachment",
    "ByteStream",
    "DetachReason",
    "DirectStreams",
    "EndReason",
    "Endpoint",
    "EndpointAccess",
    "EndpointCreate",
    "EndpointKey",
    "EndpointKeyCreate",
    "EndpointKeyCreated",
    "EndpointMeter",
    "EndpointRoute",
    "Event",
    "ExecResult",
    "HeadersTooLarge",
    "KeyGrant",
    "NodeStreams",
    "NotRunning",
    "OutputBuffer",
    "QueueSink",
    "RateLimited",
    "RateLimiter",
    "Recording",
    "RecordingDigest",
    "RecordingInvalid",
    "RecordingWriter",
    "RedirectRefused",
    "Replay",
    "SessionEnd",
    "SessionGone",
    "SessionInfo",
    "SessionNotFound",
    "SessionState",
    "SinkEvent",
    "StreamTarget",
    "StreamTimeout",
    "StreamUnavailable",
    "TerminalKeeper",
    "TerminalPolicy",
    "TerminalSink",
    "TooManySessions",
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
    "endpoints_under",
    "file_digest",
    "get_endpoint_model",
    "get_key_model",
    "key_view",
    "list_endpoints",
    "list_keys",
    "publish",
    "purge_recordings",
    "read_recording",
    "register_resource",
    "replay",
    "resolve_resource",
    "resource_kind",
    "revoke_key",
    "sidecar_digest",
    "status_class",
    "take_tokens",
    "unpublish",
    "upstream_request_headers",
]
