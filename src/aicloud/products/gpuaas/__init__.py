"""GPUaaS: GPU instances on the nodes of the pool.

Public surface (other layers import only from here): the instance lifecycle state machine and
the placement engine. Both are pure logic; persistence, admission, metering and the API are
built on top of them.
"""

from aicloud.products.gpuaas.lifecycle import (
    GPU_HOLDING_STATES,
    ON_NODE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    IllegalTransition,
    InstanceState,
    Lifecycle,
    Transition,
    can_transition,
    is_terminal,
    transition,
)
from aicloud.products.gpuaas.placement import (
    GpuSlot,
    NodeCapacity,
    NodeState,
    Placement,
    PlacementEngine,
    PlacementRequest,
    Queued,
    Rejected,
    RejectionCode,
)

__all__ = [
    "GPU_HOLDING_STATES",
    "ON_NODE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "GpuSlot",
    "IllegalTransition",
    "InstanceState",
    "Lifecycle",
    "NodeCapacity",
    "NodeState",
    "Placement",
    "PlacementEngine",
    "PlacementRequest",
    "Queued",
    "Rejected",
    "RejectionCode",
    "Transition",
    "can_transition",
    "is_terminal",
    "transition",
]
