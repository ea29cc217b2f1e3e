"""Checkouts of the exact commit an event names, from a local mirror of each repository.

``Checkouts.checkout`` fetches the commit into a local mirror of the repository if needed
(pipeline/workspace/mirrors.py: the mirrors, the token, the "moved PR" rule, the cache bound), then
builds a standalone workspace from the mirror. Git runs as pipeline/workspace/git.py says.

**The workspace** at ``dest`` is a standalone repository that knows nothing of the mirror (no
``alternates``, no remote, no hooks, no worktree link): ``git init --template=``, the mirror's pack files
*hard-linked* into ``.git/objects/pack`` (copied instead when not running as root, or across
filesystems), a detached ``HEAD`` at ``sha``, the mirror's tags in ``packed-refs``, then
``git checkout --force --detach <sha>``. The linking happens under the mirror's lock (so a concurrent
``gc`` cannot delete a pack mid-way); the checkout itself runs outside it. Why hard links are safe as
root: the sandbox chowns the workspace to its uid but skips files with more than one link, so the
shared packs stay root-owned and mode 0444 - PR code can read them (it is the same repository) and
unlink its own names for them, but never write to the mirror's inodes. Without root the sandbox runs
as the app's own uid and could chmod a shared inode, so the packs are copied.

Measured here (2000 files, 40 commits, 9 MB of packs): building the workspace from a warm mirror
~70 ms (the checkout of 2000 files is most of it; ``git clone --local`` + removing its remote ~110 ms,
``git init`` + ``git fetch <mirror> <sha>`` 0.5-0.7 s because it repacks the history). ``tracked_files``
comes from ``git ls-tree -r`` in the mirror: every path of the commit's tree as ``git ls-files`` prints
it - files, symlinks and submodule gitlinks (the checkout leaves an empty directory for a gitlink;
submodules are not fetched).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.workspace.errors import CheckoutError
from pipeline.workspace.git import Git
from pipeline.workspace.mirrors import FETCH_TIMEOUT_SECONDS, RETRY_DELAYS_SECONDS, Mirrors
from pipeline.workspace.trees import remove_tree

log = logging.getLogger(__name__)

LOCAL_TIMEOUT_SECONDS = 120.0
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_REPO = re.compile(r"[A-Za-z0-9._-]+")
_PACK_SUFFIXES = (".pack", ".idx")


@dataclass(frozen=True)
class CheckoutResult:
    sha: str
    workspace: Path
    tracked_files: frozenset[str]
    duration_seconds: float
    fetched: bool  # whether the mirror fetched from GitHub for this checkout


class Checkouts:
    def __init__(
        self,
        root: Path,
        *,
        github_url: str,
        max_mirrors: int = 50,
        git: str = "git",
        fetch_timeout: float = FETCH_TIMEOUT_SECONDS,
        local_timeout: float = LOCAL_TIMEOUT_SECONDS,
        hardlink: bool | None = None,
        retry_delays: Sequence[float] = RETRY_DELAYS_SECONDS,
    ) -> None:
        """``hardlink``: share pack files between mirror and workspace (default: when running as root).
        ``retry_delays``: pauses before retrying a fetch that failed transiently (5xx, dropped connection)."""
        if not re.match(r"https?://[^/\s@]+(/[^\s@]*)?$", github_url):
            raise ValueError(f"github_url must be an http(s) URL without credentials, not {github_url!r}")
        if max_mirrors < 1:
            raise ValueError("max_mirrors must be at least 1")
        self.root = Path(root)
        self.github_url = github_url.rstrip("/")
        self.hardlink = os.geteuid() == 0 if hardlink is None else hardlink
        self._git = Git(git, self.root, local_timeout)
        self.mirrors = Mirrors(self.root, self._git, github_url=self.github_url, max_mirrors=max_mirrors,
                               fetch_timeout=fetch_timeout, retry_delays=retry_delays)
        self._prepared = False

    # ------------------------------------------------------------------ public API

    async def checkout(
        self,
        full_name: str,
        *,
        sha: str,
        token: str | None,
        dest: Path,
        pr_number: int | None = None,
        ref: str | None = None,
    ) -> CheckoutResult:
        """Put the tree of exactly ``sha`` of ``full_name`` (plus a standalone ``.git``) at ``dest``,
        which must not exist or be an empty directory. See the module docstring."""
        started = time.monotonic()
        owner, name = _split_full_name(full_name)
        sha = _check_sha(sha)
        if pr_number is not None and (isinstance(pr_number, bool) or not isinstance(pr_number, int) or pr_number < 1):
            raise CheckoutError(f"pr_number must be a positive integer, not {pr_number!r}", reason="invalid")
        self.prepare_root()
        if ref is not None:
            await self._check_ref(ref)
        dest = Path(dest)
        dest_existed = _check_dest(dest)
        key = f"{owner}/{name}".lower()
        mirror = self.mirrors.get(key)
        mirror.users += 1  # no await between lookup and this: eviction cannot take it away
        try:
            try:
                await self._git.run(["init", "--quiet", "--template=", str(dest)], safe=dest, what="git init")
                async with mirror.lock:
                    created = await self.mirrors.ensure(mirror, owner, name)
                    fetched = False
                    if not await self.mirrors.has_commit(mirror.path, sha):
                        await self.mirrors.fetch(mirror.path, owner, name, sha=sha, token=token, pr_number=pr_number,
                                                 ref=ref)
                        fetched = True
                    tracked = await self.mirrors.tracked_files(mirror.path, sha)
                    self.mirrors.touch(mirror.path)
                    await self._prepare_workspace(mirror.path, dest, sha)
                await self._checkout_workspace(dest, sha)
            except BaseException:
                await asyncio.shield(asyncio.to_thread(_clear_dest, dest, dest_existed))
                raise
            if created:
                await self.mirrors.evict()
        finally:
            mirror.users -= 1
        duration = time.monotonic() - started
        log.info(
            "checked out %s@%s into %s (%d files, fetched=%s) in %.3fs",
            full_name, sha[:12], dest, len(tracked), fetched, duration,
        )
        return CheckoutResult(sha, dest, tracked, duration, fetched)

    def mirror_path(self, full_name: str) -> Path:
        owner, name = _split_full_name(full_name)
        return self.root / "mirrors" / owner.lower() / f"{name.lower()}.git"

    # ------------------------------------------------------------------ internals

    def prepare_root(self) -> None:
        """The root's folders made, and what a crash left there cleared (once per object): by checkout, and
        by whatever else builds in the mirrors (the merge queue's candidates)."""
        if self._prepared:
            return
        for sub in ("mirrors", "home", "trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for stale in (self.root / "trash").iterdir():  # left over by a crash during an eviction
            remove_tree(stale)
        for stale in (self.root / "mirrors").glob(".tmp-*"):  # a mirror whose creation was interrupted
            remove_tree(stale)
        self._prepared = True

    async def _check_ref(self, ref: str) -> None:
        if not ref.startswith("refs/") or any(c.isspace() or ord(c) < 32 for c in ref):
            raise CheckoutError(f"ref must be a full ref name (refs/...), not {ref!r}", reason="invalid")
        code, _ = await self._git.run(["check-ref-format", ref], check=False)
        if code != 0:
            raise CheckoutError(f"{ref!r} is not a valid ref name", reason="invalid")

    # ------------------------------------------------------------------ the workspace

    async def _prepare_workspace(self, mirror: Path, dest: Path, sha: str) -> None:
        """Under the mirror's lock: give the new repository at dest the mirror's objects, tags and HEAD = sha."""
        tags = await self.mirrors.tags(mirror)
        await asyncio.to_thread(_share_objects, mirror / "objects", dest / ".git" / "objects", self.hardlink)
        git_dir = dest / ".git"
        (git_dir / "HEAD").write_text(f"{sha}\n", encoding="ascii")
        if tags:
            (git_dir / "packed-refs").write_text("".join(f"{obj} {name}\n" for obj, name in tags), encoding="utf-8")

    async def _checkout_workspace(self, dest: Path, sha: str) -> None:
        await self._git.run(
            ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", "--detach", sha],
            git_dir=dest / ".git",
            work_tree=dest,
            what=f"git checkout {sha}",
        )


# ---------------------------------------------------------------------------------------- helpers


def _split_full_name(full_name: str) -> tuple[str, str]:
    owner, slash, name = full_name.partition("/")
    if not slash or not _OWNER.fullmatch(owner) or not _REPO.fullmatch(name) or name in (".", ".."):
        raise CheckoutError(f"not a repository full name (owner/name): {full_name!r}", reason="invalid")
    return owner, name


def _check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA.fullmatch(sha.lower()):
        raise CheckoutError(f"sha must be a full hex commit id, not {sha!r}", reason="invalid")
    return sha.lower()


def _check_dest(dest: Path) -> bool:
    """True when dest exists (then as an empty directory)."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return False
    if not stat.S_ISDIR(st.st_mode) or any(os.scandir(dest)):
        raise CheckoutError(f"workspace {dest} already exists and is not an empty directory", reason="workspace")
    return True


def _clear_dest(dest: Path, keep: bool) -> None:
    """Undo a failed checkout: remove dest (or only its contents when it existed before)."""
    if not keep:
        remove_tree(dest)
        return
    try:
        with os.scandir(dest) as entries:
            names = [entry.name for entry in entries]
    except FileNotFoundError:
        return
    for name in names:
        remove_tree(dest / name)


def _share_objects(source: Path, target: Path, hardlink: bool) -> None:
    """Give the workspace repository the mirror's objects: complete packs (idx present) and any loose
    objects, hard-linked (read-only inodes) or copied."""
    def place(src: Path, dst: Path) -> None:
        if hardlink:
            try:
                os.link(src, dst, follow_symlinks=False)
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
        shutil.copyfile(src, dst, follow_symlinks=False)
        os.chmod(dst, 0o444)

    packs = source / "pack"
    for idx in packs.glob("pack-*.idx"):
        if idx.with_suffix(".pack").is_file():
            for suffix in _PACK_SUFFIXES:
                place(idx.with_suffix(suffix), target / "pack" / idx.with_suffix(suffix).name)
    for directory in source.iterdir():
        if len(directory.name) == 2 and directory.is_dir():
            (target / directory.name).mkdir(exist_ok=True)
            for obj in directory.iterdir():
                place(obj, target / directory.name / obj.name)
