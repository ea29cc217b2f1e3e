"""What the sandbox can do on this host, measured once at start (`Sandbox.probe`): `SandboxCapabilities`
(reported in /health and the logs), and the probe run that measures the layers from inside.

The probe runs `PROBE_SCRIPT` in the sandbox under `PROBE_LIMITS` and reads back the namespaces, uid,
capabilities, NoNewPrivs, seccomp mode and process limit the command actually got (`read_probe`); then,
with slirp4netns installed, a `network=True` run checks that the user-mode network is there
(network.py `PROBE_SCRIPT`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pipeline.sandbox.limits import Limits, nproc_limit

_NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts")
PROBE_LIMITS = Limits(timeout_seconds=15, cpu_seconds=10, memory_bytes=512 * 1024**2, max_processes=64,
                      max_file_bytes=1024**2, max_output_bytes=64 * 1024)
PROBE_SCRIPT = (
    "for ns in user mnt pid net ipc uts; do echo \"ns_$ns=$(readlink /proc/self/ns/$ns)\"; done; "
    "sed -n 's/^\\(Uid\\|CapEff\\|NoNewPrivs\\|Seccomp\\):[[:space:]]*\\([^[:space:]]*\\).*/\\1=\\2/p' "
    "/proc/self/status; "
    "sed -n 's/^Max processes[[:space:]]*\\([^[:space:]]*\\).*/nproc=\\1/p' /proc/self/limits; "
    "echo probe=ok"
)


@dataclass(frozen=True)
class SandboxCapabilities:
    """What the start-up probe measured. `sandboxed` is False when commands would be refused (or run
    unsandboxed, if allowed); the other layers are reported for /health and the logs."""

    bwrap: str | None = None
    bwrap_version: str | None = None
    bwrap_works: bool = False
    user_namespace: bool = False
    mount_namespace: bool = False
    pid_namespace: bool = False
    net_namespace: bool = False
    ipc_namespace: bool = False
    uts_namespace: bool = False
    dedicated_uid: bool = False  # a uid switch from root to `uid`
    uid: int | None = None  # the uid commands run as (inside == outside)
    capabilities_dropped: bool = False
    no_new_privs: bool = False
    seccomp: bool = False
    nested_userns_disabled: bool = False
    rlimits: bool = False
    cgroup_memory: bool = False
    cgroup_pids: bool = False
    user_network: bool = False  # network=True runs get slirp4netns (host loopback disabled); else they are refused
    slirp4netns: str | None = None
    slirp4netns_version: str | None = None
    allow_unsandboxed: bool = False
    probe_seconds: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def sandboxed(self) -> bool:
        return self.bwrap_works

    @property
    def mode(self) -> str:
        if self.bwrap_works:
            return "bwrap"
        return "unsandboxed" if self.allow_unsandboxed else "unavailable"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for /health."""
        return {
            "mode": self.mode,
            "sandboxed": self.sandboxed,
            "bwrap": self.bwrap,
            "bwrap_version": self.bwrap_version,
            "slirp4netns": self.slirp4netns,
            "slirp4netns_version": self.slirp4netns_version,
            "uid": self.uid,
            "layers": {
                "user_namespace": self.user_namespace,
                "mount_namespace": self.mount_namespace,
                "pid_namespace": self.pid_namespace,
                "net_namespace": self.net_namespace,
                "ipc_namespace": self.ipc_namespace,
                "uts_namespace": self.uts_namespace,
                "dedicated_uid": self.dedicated_uid,
                "capabilities_dropped": self.capabilities_dropped,
                "no_new_privs": self.no_new_privs,
                "seccomp": self.seccomp,
                "nested_userns_disabled": self.nested_userns_disabled,
                "rlimits": self.rlimits,
                "cgroup_memory": self.cgroup_memory,
                "cgroup_pids": self.cgroup_pids,
                "user_network": self.user_network,
            },
            "probe_seconds": round(self.probe_seconds, 4),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        layers = [name for name, on in self.describe()["layers"].items() if on]
        return f"sandbox mode={self.mode} uid={self.uid} layers={','.join(layers) or '-'}"


def read_probe(exit_code: int | None, output: str, *, seccomp: bool, disable_userns: bool, pids_cgroup: bool,
               root: bool, uid: int) -> tuple[dict[str, Any], str | None]:
    """The layers a probe run measured (SandboxCapabilities fields), or why its isolation is not in effect.
    `seccomp`, `disable_userns`, `pids_cgroup`: what the probed configuration asked for; `root`: whether
    the sandbox switched to the dedicated `uid`."""
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    if exit_code != 0 or values.get("probe") != "ok":
        return {}, f"exit {exit_code}: {output.strip()[-500:]}"
    measured: dict[str, Any] = {}
    for ns in _NAMESPACES:
        try:
            host = os.readlink(f"/proc/self/ns/{ns}")
        except OSError:
            host = None
        inside = values.get(f"ns_{ns}")
        key = {"mnt": "mount", "user": "user"}.get(ns, ns) + "_namespace"
        measured[key] = bool(inside) and inside != host
    measured["dedicated_uid"] = root and values.get("Uid") == str(uid)
    measured["capabilities_dropped"] = values.get("CapEff", "").strip("0") == "" and "CapEff" in values
    measured["no_new_privs"] = values.get("NoNewPrivs") == "1"
    measured["seccomp"] = seccomp and values.get("Seccomp") == "2"
    measured["nested_userns_disabled"] = disable_userns or measured["seccomp"]
    nproc_expected = nproc_limit(PROBE_LIMITS, pids_cgroup=pids_cgroup)
    measured["rlimits"] = values.get("nproc") == str(nproc_expected)
    missing = [k for k in ("user_namespace", "mount_namespace", "pid_namespace", "net_namespace",
                           "capabilities_dropped", "no_new_privs") if not measured[k]]
    if values.get("Uid") in (None, "0"):
        missing.append("non-root uid")
    if missing:
        return {}, f"isolation not in effect: {', '.join(missing)} ({values})"
    return measured, None
