"""What a sandboxed command may use: `Limits`, the rlimits the child sets before exec (CPU seconds, file
size, processes, open files, core=0, and address space when no memory cgroup is available), and the
notes added to the output when a limit ended the run.

CPU seconds (RLIMIT_CPU, per process) follow the wall-clock budget unless given: `timeout_seconds` on
every CPU the app may use (`cpu_seconds_for`). A process cannot use more than that before the wall-clock
timeout kills it anyway, so the CPU limit never ends a step that `timeout_minutes` would have let finish
(a multi-threaded build uses several CPU-seconds a second); it stops a spinning process the tree kill
missed (the unsandboxed fallback's `setsid()`), and an explicit `cpu_seconds` still applies as given.

RLIMIT_NPROC is per *real uid*, which is why the dedicated uid matters; it is shared by all concurrent
sandboxes (they all run as the same uid), so when the pids cgroup gives an exact per-run limit,
RLIMIT_NPROC becomes a looser backstop (`NPROC_SHARED_FACTOR` x max_processes).
"""

from __future__ import annotations

import math
import os
import resource
import signal
from collections.abc import Mapping
from dataclasses import dataclass

NPROC_SHARED_FACTOR = 4


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 600
    cpu_seconds: int | None = None  # None: derived from timeout_seconds (`cpu_limit`)
    memory_bytes: int = 2 * 1024**3
    max_processes: int = 256
    max_file_bytes: int = 1 * 1024**3
    max_output_bytes: int = 1 * 1024**2
    max_open_files: int = 4096  # extension of the API (RLIMIT_NOFILE); capped at the host's hard limit

    def __post_init__(self) -> None:
        for name in ("timeout_seconds", "cpu_seconds", "memory_bytes", "max_processes", "max_file_bytes",
                     "max_output_bytes", "max_open_files"):
            value = getattr(self, name)
            if not (value is None and name == "cpu_seconds") and not value > 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")

    @property
    def cpu_limit(self) -> int:
        """RLIMIT_CPU in seconds: `cpu_seconds`, or what `timeout_seconds` gives on every usable CPU."""
        return self.cpu_seconds if self.cpu_seconds is not None else cpu_seconds_for(self.timeout_seconds)


def cpu_seconds_for(wall_seconds: float) -> int:
    """The CPU-seconds one process can use in `wall_seconds` on all the CPUs it may run on."""
    return max(1, math.ceil(wall_seconds * usable_cpus()))


def usable_cpus() -> int:
    """The CPUs this process (and so the sandbox it starts) may run on."""
    return len(os.sched_getaffinity(0))


def nproc_limit(limits: Limits, *, pids_cgroup: bool) -> int:
    """RLIMIT_NPROC for a run: max_processes, or NPROC_SHARED_FACTOR times it when a pids cgroup holds the run."""
    return limits.max_processes * (NPROC_SHARED_FACTOR if pids_cgroup else 1)


def rlimits(limits: Limits, *, pids_cgroup: bool, memory_cgroup: bool) -> list[tuple[int, tuple[int, int]]]:
    """(resource, (soft, hard)) for the child to set before exec. Open files are capped at the host's hard
    limit; the address space is limited only without a memory cgroup."""
    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = limits.max_open_files if nofile_hard == resource.RLIM_INFINITY else min(limits.max_open_files, nofile_hard)
    nproc = nproc_limit(limits, pids_cgroup=pids_cgroup)
    result = [
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_CPU, (limits.cpu_limit, limits.cpu_limit + 1)),
        (resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes)),
        (resource.RLIMIT_NOFILE, (nofile, nofile)),
        (resource.RLIMIT_NPROC, (nproc, nproc)),
    ]
    if not memory_cgroup:
        result.append((resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes)))
    return result


def limit_notes(limits: Limits, *, timed_out: bool, events: Mapping[str, int], signal_number: int | None) -> list[str]:
    """Lines for the output saying which limit ended (part of) the run; `events` are the run's cgroup
    counters (`Cgroup.events`), empty without a cgroup; `signal_number`: the signal that ended the command.
    SIGXCPU is what the kernel sends at RLIMIT_CPU (the shell then says "CPU time limit exceeded")."""
    notes = []
    if timed_out:
        notes.append(f"\n[sandbox] wall-clock timeout of {limits.timeout_seconds:g} s exceeded: "
                     "the process tree was killed\n")
    elif signal_number == signal.SIGXCPU:
        basis = "" if limits.cpu_seconds is not None else \
            f", the {limits.timeout_seconds:.0f} s time budget on {usable_cpus()} CPU(s),"
        seconds = f"{limits.cpu_limit} CPU-second{'s' if limits.cpu_limit != 1 else ''}"
        notes.append(f"\n[sandbox] CPU time limit of {seconds} per process{basis} exceeded: "
                     "the kernel stopped the process (SIGXCPU)\n")
    if events.get("memory.oom_kill"):
        notes.append(f"\n[sandbox] memory limit of {limits.memory_bytes // 1024**2} MiB exceeded: the "
                     f"kernel killed {events['memory.oom_kill']} process(es)\n")
    if events.get("pids.max"):
        notes.append(f"\n[sandbox] process limit of {limits.max_processes} reached: "
                     f"{events['pids.max']} fork(s) failed\n")
    return notes
