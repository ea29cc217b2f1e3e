"""File trees PR code has touched, handled by directory file descriptors and never through a symlink:
`DirChain` walks down a path one component at a time with O_NOFOLLOW (used to read and write setup
snapshots), `remove_tree` deletes a whole workspace whatever the sandbox did to it.

`remove_tree` deletes files owned by the sandbox uid, directories PR code made mode 000, deep trees. It
walks with directory file descriptors and ``O_NOFOLLOW`` (a symlink is unlinked, never followed), chmods
a directory it cannot read or modify and retries, and falls back to ``rm -rf`` for trees deeper than the
file-descriptor limit.
"""

from __future__ import annotations

import errno
import os
import subprocess
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a fifo swapped in cannot block a read


class DirChain:
    """File descriptors of the directories on one path below `root_fd`, each opened from its parent with
    O_NOFOLLOW (a symlink anywhere on the way raises ELOOP, a file ENOTDIR). Consecutive lookups share
    their common prefix, so walking a tree in order costs one open per directory and depth-many fds."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.parts: list[str] = []
        self.fds: list[int] = []

    def get(self, parts: Sequence[str]) -> int:
        common = 0
        limit = min(len(parts), len(self.parts))
        while common < limit and self.parts[common] == parts[common]:
            common += 1
        self._truncate(common)
        for name in parts[common:]:
            fd = os.open(name, DIR_FLAGS, dir_fd=self.fds[-1] if self.fds else self.root_fd)
            self.fds.append(fd)
            self.parts.append(name)
        return self.fds[-1] if self.fds else self.root_fd

    def _truncate(self, n: int) -> None:
        while len(self.fds) > n:
            os.close(self.fds.pop())
            self.parts.pop()

    def close(self) -> None:
        self._truncate(0)


# -------------------------------------------------------------------------------------- removal

class _Frame:
    __slots__ = ("fd", "name", "entries", "index")

    def __init__(self, fd: int, name: str) -> None:
        self.fd, self.name = fd, name
        self.entries: list[tuple[str, bool]] | None = None
        self.index = 0


def remove_tree(path: Path) -> None:
    """Delete ``path`` and everything below it without following any symlink (a symlink at ``path``
    itself is unlinked). Directories that cannot be read or modified are chmodded (works for files of
    another uid when running as root). Missing ``path`` is fine."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    try:
        _remove_dir(path)
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENAMETOOLONG):
            raise
        _remove_with_rm(path)  # deeper than we can hold directory descriptors for


def _remove_dir(path: Path) -> None:
    parent_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: list[_Frame] = []
    try:
        stack.append(_Frame(_open_dir(parent_fd, path.name), path.name))
        while stack:
            frame = stack[-1]
            if frame.entries is None:
                with os.scandir(frame.fd) as scan:
                    frame.entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan]
            if frame.index < len(frame.entries):
                name, is_dir = frame.entries[frame.index]
                frame.index += 1
                if is_dir:
                    stack.append(_Frame(_open_dir(frame.fd, name), name))
                else:
                    _retry_with_chmod(frame.fd, lambda fd=frame.fd, n=name: os.unlink(n, dir_fd=fd))
                continue
            stack.pop()
            os.close(frame.fd)
            holder = stack[-1].fd if stack else parent_fd
            _retry_with_chmod(holder, lambda fd=holder, n=frame.name: os.rmdir(n, dir_fd=fd))
    finally:
        for frame in stack:
            os.close(frame.fd)
        os.close(parent_fd)


def _open_dir(parent_fd: int, name: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        _chmod_dir(parent_fd, name)
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)


def _chmod_dir(parent_fd: int, name: str) -> None:
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(errno.EACCES, "not a directory", name)
    try:
        os.chmod(name, 0o700, dir_fd=parent_fd, follow_symlinks=False)
    except (NotImplementedError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        os.chmod(name, 0o700, dir_fd=parent_fd)  # checked above to be a directory, not a symlink


def _retry_with_chmod(dir_fd: int, action: Callable[[], None]) -> None:
    try:
        action()
    except PermissionError:
        os.fchmod(dir_fd, 0o700)  # the directory holding the entry was made read-only
        action()


def _remove_with_rm(path: Path) -> None:
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "u+rwx", "--", str(path)], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, check=True)
