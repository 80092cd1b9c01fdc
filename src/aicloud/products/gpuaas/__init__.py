"""GPUaaS: GPU instances on the nodes of the pool.

Public surface (other layers import only from here): the lifecycle state machine and the
placement engine (pure logic); launch/admission, the status mutator, the scheduler pass,
nodes, the node agent, metering and the budget-stop consumer (built on the platform's public
modules: IAM (the org tree lock, scope paths), billing, policy, audit).
"""

from aicloud.products.gpuaas.admission import (
    MIN_BILLABLE_SECONDS,
    BudgetBlocked,
    CannotPlace,
    InsufficientFunds,
    Requester,
    launch,
    usage_per_second,
)
from aicloud.products.gpuaas.agent import NodeAgent
from aicloud.products.gpuaas.budget_stop import BudgetStopConsumer
from aicloud.products.gpuaas.instances import (
    get_instance,
    get_instance_model,
    instance_view,
    list_instances,
    live_instances,
    queue_position,
    request_stop,
    stop_scope,
    switch_instance_status,
)
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
from aicloud.products.gpuaas.manifest import MANIFEST
from aicloud.products.gpuaas.metering import meter_instance
from aicloud.products.gpuaas.node_store import DbNodeStore, NodeStore
from aicloud.products.gpuaas.nodes import (
    GpuReport,
    NodeReport,
    change_node_state,
    enforce_drains,
    get_node_model,
    list_nodes,
    mark_silent_nodes_down,
    node_view,
    register_node,
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
from aicloud.products.gpuaas.scheduler import build_engine, schedule_pass
from aicloud.products.gpuaas.schemas import (
    Gpu,
    Instance,
    InstanceLaunch,
    InstanceStop,
    InstanceTransition,
    InstanceType,
    LogOutput,
    Node,
    NodeStateChange,
)
from aicloud.products.gpuaas.types import DEFAULT_TYPES, ensure_default_types, list_types

__all__ = [
    "DEFAULT_TYPES",
    "GPU_HOLDING_STATES",
    "MANIFEST",
    "MIN_BILLABLE_SECONDS",
    "ON_NODE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "BudgetBlocked",
    "BudgetStopConsumer",
    "CannotPlace",
    "DbNodeStore",
    "Gpu",
    "GpuReport",
    "GpuSlot",
    "IllegalTransition",
    "Instance",
    "InstanceLaunch",
    "InstanceState",
    "InstanceStop",
    "InstanceTransition",
    "InstanceType",
    "InsufficientFunds",
    "Lifecycle",
    "LogOutput",
    "Node",
    "NodeAgent",
    "NodeCapacity",
    "NodeReport",
    "NodeState",
    "NodeStateChange",
    "NodeStore",
    "Placement",
    "PlacementEngine",
    "PlacementRequest",
    "Queued",
    "Rejected",
    "RejectionCode",
    "Requester",
    "Transition",
    "build_engine",
    "can_transition",
    "change_node_state",
    "enforce_drains",
    "ensure_default_types",
    "get_instance",
    "get_instance_model",
    "get_node_model",
    "instance_view",
    "is_terminal",
    "launch",
    "list_instances",
    "list_nodes",
    "list_types",
    "live_instances",
    "mark_silent_nodes_down",
    "meter_instance",
    "node_view",
    "queue_position",
    "register_node",
    "request_stop",
    "schedule_pass",
    "stop_scope",
    "switch_instance_status",
    "transition",
    "usage_per_second",
]
