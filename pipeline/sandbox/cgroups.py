"""cgroup v1 memory and pids limits (optional; root, `/sys/fs/cgroup/{memory,pids}` writable): one child
cgroup per run under `codegenapp-sandbox/`, which the child joins before exec (pipeline/sandbox/preexec.py);
the cgroup is emptied (SIGKILL) and removed afterwards. This machine has no cgroup v2 and no systemd-run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.sandbox.limits import Limits

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "codegenapp-sandbox"


def probe_cgroup(controller: str, notes: list[str]) -> bool:
    """Whether per-run cgroups can be made in `controller`'s v1 hierarchy (a test child is created, limited and
    removed); why not goes into `notes`."""
    base = CGROUP_ROOT / controller
    if not base.is_dir() or not os.access(base, os.W_OK):
        notes.append(f"cgroup {controller}: {base} is not a writable cgroup v1 hierarchy")
        return False
    try:
        (base / CGROUP_PARENT).mkdir(exist_ok=True)
        test = base / CGROUP_PARENT / f"probe-{os.getpid()}"
        test.mkdir(exist_ok=True)
        try:
            knob = "memory.limit_in_bytes" if controller == "memory" else "pids.max"
            (test / knob).write_text("67108864" if controller == "memory" else "64")
        finally:
            test.rmdir()
        return True
    except OSError as exc:
        notes.append(f"cgroup {controller}: not usable ({exc})")
        return False


class Cgroup:
    """A per-run cgroup v1 child in the memory and/or pids hierarchy."""

    _counter = itertools.count(1)

    def __init__(self, controllers: Sequence[str]) -> None:
        name = f"run-{os.getpid()}-{next(self._counter)}"
        self.dirs = [CGROUP_ROOT / c / CGROUP_PARENT / name for c in controllers]

    def create(self, limits: Limits) -> None:
        for d in self.dirs:
            d.mkdir()
            controller = d.parent.parent.name
            if controller == "memory":
                (d / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
                memsw = d / "memory.memsw.limit_in_bytes"
                if memsw.exists():
                    try:
                        memsw.write_text(str(limits.memory_bytes))
                    except OSError:
                        pass
            elif controller == "pids":
                (d / "pids.max").write_text(str(limits.max_processes))

    @property
    def procs_files(self) -> list[bytes]:
        return [os.fsencode(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def events(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.dirs:
            for fname in ("memory.oom_control", "pids.events"):
                try:
                    for line in (d / fname).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if value.strip().isdigit():
                            out[f"{fname.split('.')[0]}.{key}"] = int(value)
                except OSError:
                    pass
        return out

    async def kill_all(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def remove(self) -> None:
        for d in self.dirs:
            for attempt in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if attempt == 49:
                        log.warning("sandbox: could not remove cgroup %s", d)
                    await asyncio.sleep(0.01)


def cleanup_stale_cgroups(controllers: Sequence[str]) -> None:
    for c in controllers:
        parent = CGROUP_ROOT / c / CGROUP_PARENT
        for child in parent.glob("run-*"):
            try:
                owner = int(child.name.split("-")[1])
                os.kill(owner, 0)
                continue  # its app process is alive
            except (ValueError, IndexError):
                pass
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            try:  # its app died (e.g. SIGKILL); bwrap --die-with-parent normally took the sandbox along
                for pid in (child / "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
                child.rmdir()
            except (OSError, ValueError):
                pass
