"""Reading /proc to tell whether a recorded process is still the one we started.

A PID alone is not an identity: after the process ends the kernel may hand the number to
another process. (pid, start time in clock ticks since boot, boot id) is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie), T...
    pgid: int
    sid: int
    start_ticks: int

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state, ppid, pgrp, session, ..., starttime is field 22.
    return ProcStat(pid, fields[0], int(fields[2]), int(fields[3]), int(fields[19]))


@dataclass(frozen=True)
class ProcUsage:
    pid: int
    ppid: int
    # utime + stime of the process and of its children it has reaped (cutime + cstime), in
    # clock ticks: a reaped child's time stays counted, a live child's is counted once (its
    # own).
    cpu_ticks: int
    rss_pages: int


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def scan_usage() -> dict[int, ProcUsage]:
    """Every live process's parent, CPU time and resident memory, in one pass over /proc."""
    found: dict[int, ProcUsage] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            raw = (PROC / entry.name / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        f = raw[raw.rindex(")") + 2 :].split()
        if f[0] in ("Z", "X"):
            continue
        # proc(5) fields 4 (ppid), 14-17 (utime, stime, cutime, cstime), 24 (rss).
        found[int(entry.name)] = ProcUsage(int(entry.name), int(f[1]),
                                           int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]),
                                           int(f[21]))
    return found


def cpu_demand_ns(pid: int) -> int | None:
    """Nanoseconds ``pid`` has spent on a CPU or runnable waiting for one (schedstat): what
    it asked for, which on a loaded host is more than the CPU time it got. None when the
    kernel does not keep it or the process is gone."""
    try:
        fields = (PROC / str(pid) / "schedstat").read_text().split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(fields[0]) + int(fields[1]) if len(fields) >= 2 else None


def descendants(root: int, table: dict[int, ProcUsage]) -> list[int]:
    """The live processes below ``root`` (not ``root`` itself), from a :func:`scan_usage`."""
    kids: dict[int, list[int]] = {}
    for usage in table.values():
        kids.setdefault(usage.ppid, []).append(usage.pid)
    out, todo = [], list(kids.get(root, ()))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def boot_id() -> str:
    return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()


def is_same_process(pid: int, start_ticks: int) -> bool:
    """The process started as (pid, start_ticks) is alive (zombies count as ended)."""
    stat = read_stat(pid)
    return stat is not None and stat.start_ticks == start_ticks and not stat.zombie


def group_members(pgid: int, not_before_ticks: int) -> list[int]:
    """Live processes in process group ``pgid`` that started no earlier than the group's
    leader did: the leader may be gone while its children live on in the group."""
    members = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if (stat is not None and stat.pgid == pgid and not stat.zombie
                and stat.start_ticks >= not_before_ticks):
            members.append(stat.pid)
    return members


def session_members(sid: int, not_before_ticks: int) -> list[int]:
    """Live processes of session ``sid`` (every process group a terminal's shell made for
    its jobs) that started no earlier than the session's leader."""
    members = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if (stat is not None and stat.sid == sid and not stat.zombie
                and stat.start_ticks >= not_before_ticks):
            members.append(stat.pid)
    return members


def pid_levels(pid: int) -> list[int]:
    """The pids ``pid`` has, from the host's PID namespace inward (empty when it is gone)."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return [int(p) for p in line.split()[1:]]
    return []


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in (PROC / str(pid) / "task" / str(pid) / "children").read_text()
                .split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def process_uids() -> set[int]:
    """The uids that own a running process."""
    uids = set()
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            try:
                uids.add(entry.stat().st_uid)
            except OSError:
                pass
    return uids
