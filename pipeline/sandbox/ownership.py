"""Workspace files the sandbox uid must be able to write: the whole tree chowned to it before each run
(`claim_tree`, as root), and fresh directories for the pipeline's own outputs (`fresh_dir`).

**Workspace ownership** (root): before each run the workspace tree is chowned (race-safe `os.fwalk`, never
following symlinks) to the sandbox uid, so the command can modify the checkout; it stays owned by the
sandbox uid afterwards. The app, being root, can still read and delete everything (shutil.rmtree works,
even on mode-000 directories). Regular files with more than one hard link are NOT chowned (they may
share an inode with app data, e.g. `git clone --local` hardlinks the mirror's objects): they stay
read-only for the sandbox. Git run by the app in such a workspace reports "detected dubious
ownership". That is git protecting root from a `.git/config` (core.fsmonitor, hooks, ...) that the
sandboxed code may have planted: after a sandbox run, treat the workspace as untrusted; do not run git
in it with `-c safe.directory=*`; prefer the mirror (`git --git-dir=<mirror> ...`) or throw it away.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
from pathlib import Path


def fresh_dir(path: Path) -> None:
    """An empty real directory at `path` in a workspace, whatever PR code left there (a link is removed,
    not followed), writable by the sandbox."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)


def claim_tree(root: Path, uid: int, gid: int) -> int:
    """chown the workspace tree to the sandbox uid, never following symlinks (fd-relative, race-safe)
    and leaving multiply-linked regular files alone. Returns how many entries were changed."""
    changed = 0
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(top)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(top, uid, gid)
            changed += 1
        for _dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in itertools.chain(dirnames, filenames):
                try:
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    if (st.st_uid, st.st_gid) == (uid, gid):
                        continue
                    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                        continue  # may share its inode with app data (hard links): keep it read-only
                    os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
                    changed += 1
                except FileNotFoundError:
                    continue
    finally:
        os.close(top)
    return changed
