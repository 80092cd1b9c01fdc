"""The compute provider contract: how the control plane runs a workload somewhere.

A provider runs workloads on the machines it fronts: the local host (local), a Slurm cluster,
a Kubernetes cluster. Products call only this interface; the composition root picks the
concrete provider from the profile.

Honesty rules for the types below, so that Slurm and Kubernetes fit without changes:

- A workload is known to the control plane only by an opaque :class:`WorkloadHandle`
  (``ref`` is a local directory name, a Slurm job id or a pod name; nobody outside the
  provider parses it). No PIDs, paths or host details cross this boundary.
- Logs are a byte stream addressed by offsets the provider defines; ``tail_lines`` asks for
  the end.
- An interactive process is an :class:`ExecSession`: a byte stream with resize, whatever
  carries it (a local PTY, ``kubectl exec``'s websocket, ``srun --pty``).
- Capabilities beyond the base are separate protocols (:class:`SupportsExec`,
  :class:`SupportsEndpoints`); :func:`capabilities` derives what a provider can do from them,
  like dstack's ``ComputeWith*Support`` mixins.

Every method is idempotent where the control plane may retry it (create, start, stop,
remove): controllers re-run after crashes, so a repeated call returns the current state
instead of failing or doing the work twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


class WorkloadKind(StrEnum):
    """The built-in templates. ``web-app`` and ``api-app`` serve HTTP on ``$PORT``."""

    SHELL = "shell"  # an idle interactive environment; users exec into it
    WEB_APP = "web-app"  # a browser app (Jupyter-like), reached through the app proxy
    API_APP = "api-app"  # an HTTP JSON API, reached through an API endpoint
    BATCH = "batch"  # runs a given command to completion


SERVING_KINDS = frozenset({WorkloadKind.WEB_APP, WorkloadKind.API_APP})


@dataclass(frozen=True)
class GpuAssignment:
    """The GPUs a workload gets.

    ``indices`` are the node-local GPU indices chosen by the control plane's placement, for
    providers that run on nodes we place on (local). Providers with their own scheduler
    (Slurm gres, Kubernetes device plugins) receive ``indices=None`` and pick ``count`` GPUs
    of ``model`` themselves; a provider refuses the form it cannot honour.
    """

    count: int = 0
    model: str | None = None
    indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("GPU count cannot be negative")
        if self.indices is not None and len(self.indices) != self.count:
            raise ValueError(f"{len(self.indices)} GPU indices given for a count of {self.count}")


@dataclass(frozen=True)
class WorkloadSpec:
    workload_id: str  # the control plane's id (e.g. the instance id); unique per provider
    kind: WorkloadKind
    gpus: GpuAssignment = field(default_factory=GpuAssignment)
    # batch: required; other kinds: replaces the template's command (a web-app must then
    # serve HTTP on $PORT itself).
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # A container image, for providers that run images; None means the provider's built-in
    # template for ``kind``. A provider that cannot run images refuses one.
    image: str | None = None


@dataclass(frozen=True)
class WorkloadHandle:
    """Opaque reference to a workload; store both fields, interpret neither."""

    provider: str
    ref: str


class WorkloadPhase(StrEnum):
    CREATED = "created"  # prepared, not started
    PENDING = "pending"  # started but waiting (Slurm queue, image pull)
    RUNNING = "running"
    EXITED = "exited"  # ended; see exit_code
    UNKNOWN = "unknown"  # the provider cannot tell (state unreadable, node unreachable)


@dataclass(frozen=True)
class WorkloadStatus:
    phase: WorkloadPhase
    # Set when EXITED and the provider knows it: 0 success, >0 failure, 128+N killed by
    # signal N (shell convention). None when it ended without a recorded code.
    exit_code: int | None = None
    detail: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.phase in (WorkloadPhase.PENDING, WorkloadPhase.RUNNING)


@dataclass(frozen=True)
class LogChunk:
    """A slice of a workload's combined output. Ask again from ``next_offset`` to follow."""

    data: bytes
    offset: int
    next_offset: int
    # True when the workload has ended and nothing exists beyond next_offset.
    complete: bool


@dataclass(frozen=True)
class Endpoint:
    """Where a serving workload listens, as reachable from the control plane's proxy."""

    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class WorkloadUsage:
    """What a running workload's processes use, as its host sees them (not its limits)."""

    # CPU time its processes have consumed so far (user + system, reaped children included):
    # the difference between two readings over the time between them is the cores it used.
    cpu_seconds: float
    # Resident memory of its processes, summed (shared pages count once per process).
    memory_bytes: int
    processes: int
    # CPU time its live processes spent running or runnable waiting for a CPU, when the
    # host can tell: how busy it wants to be, whatever else competes for the cores (a busy
    # loop on a loaded host gets a fraction of a core but wants all of one).
    cpu_demand_seconds: float | None = None


# --- errors -------------------------------------------------------------------------------


class ProviderError(Exception):
    """A provider call failed. ``temporary`` says whether retrying later may succeed."""

    temporary: bool = False


class TemporaryProviderError(ProviderError):
    temporary = True


class WorkloadNotFound(ProviderError):
    pass


class UnsupportedWorkload(ProviderError):
    """The provider cannot run this spec (kind, image, GPU form...)."""


class WorkloadConflict(ProviderError):
    """A workload with this id exists with a different spec, or is in the wrong phase."""


# --- the contract -------------------------------------------------------------------------


@runtime_checkable
class ComputeProvider(Protocol):
    name: str

    @property
    def supported_kinds(self) -> frozenset[WorkloadKind]: ...

    def create(self, spec: WorkloadSpec) -> WorkloadHandle:
        """Prepare a workload without starting it. Same id and spec again: same handle."""
        ...

    def start(self, handle: WorkloadHandle) -> WorkloadStatus:
        """Start a created workload; a started one is left as it is."""
        ...

    def stop(self, handle: WorkloadHandle, *, grace_seconds: float) -> WorkloadStatus:
        """Ask the workload to end (SIGTERM or equivalent), force it after the grace period,
        and return once it has ended."""
        ...

    def status(self, handle: WorkloadHandle) -> WorkloadStatus: ...

    def logs(
        self,
        handle: WorkloadHandle,
        *,
        offset: int = 0,
        limit: int = 65536,
        tail_lines: int | None = None,
    ) -> LogChunk:
        """Up to ``limit`` bytes from ``offset``, or the last ``tail_lines`` lines."""
        ...

    def remove(self, handle: WorkloadHandle) -> None:
        """Forget an ended workload and free what it kept (files, reservations)."""
        ...

    def list_workloads(self) -> list[WorkloadHandle]:
        """Every workload this provider knows, to find leftovers after a crash."""
        ...


@runtime_checkable
class ExecSession(Protocol):
    """An interactive process attached to a terminal: the web terminal relays its bytes.

    One thread reads; others may write, resize and close it meanwhile (a close ends a write
    in progress, which then raises OSError)."""

    def read(self, size: int = 65536, timeout: float | None = None) -> bytes | None:
        """Output bytes; b"" once the process closed its terminal; None if nothing arrived
        within ``timeout`` seconds."""
        ...

    def write(self, data: bytes) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the process ended, None if still running after ``timeout``."""
        ...

    def close(self) -> None:
        """Hang up: end the process and release the terminal."""
        ...


@runtime_checkable
class SupportsExec(Protocol):
    def exec(
        self,
        handle: WorkloadHandle,
        command: Sequence[str] | None = None,
        *,
        cols: int = 80,
        rows: int = 24,
    ) -> ExecSession:
        """Start an interactive process (default: a login shell) in a running workload's
        environment, on a terminal."""
        ...


@runtime_checkable
class SupportsEndpoints(Protocol):
    def endpoint(self, handle: WorkloadHandle) -> Endpoint:
        """Where a web-app or api-app workload serves HTTP."""
        ...


@runtime_checkable
class SupportsUsage(Protocol):
    def usage(self, handles: Sequence[WorkloadHandle]) -> Mapping[str, WorkloadUsage]:
        """CPU and memory of these workloads now, by ``handle.ref``; a workload that is not
        running (or unknown) is left out. One call for many: a host reads its process table
        once."""
        ...


class Capability(StrEnum):
    EXEC = "exec"
    ENDPOINTS = "endpoints"
    USAGE = "usage"


_CAPABILITY_PROTOCOLS: dict[Capability, type] = {
    Capability.EXEC: SupportsExec,
    Capability.ENDPOINTS: SupportsEndpoints,
    Capability.USAGE: SupportsUsage,
}


def capabilities(provider: ComputeProvider) -> frozenset[Capability]:
    """What a provider can do beyond the base contract, read from the protocols it meets."""
    return frozenset(c for c, proto in _CAPABILITY_PROTOCOLS.items() if isinstance(provider, proto))
