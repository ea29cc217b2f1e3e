"""What the tests of run workspaces on volumes of their own (pipeline/workspace/volumes.py) share."""

from __future__ import annotations

import os
from pathlib import Path


def mounted_under(path: Path) -> list[str]:
    """The mount points below `path` (not `path` itself), as /proc/self/mountinfo lists them."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as mounts:
        return [line.split()[4] for line in mounts if line.split()[4].startswith(real + "/")]
