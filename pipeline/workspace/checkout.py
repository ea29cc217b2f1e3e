"""Checkouts of the exact commit an event names, from a local mirror of each repository.

**Mirrors.** One bare repository per GitHub repository at ``<root>/mirrors/<owner>/<repo>.git`` (lower
case), created with an empty template (no hooks) and filled by ``git fetch`` over HTTPS from
``<github_url>/<owner>/<repo>.git`` - always from the *base* repository: GitHub exposes
``refs/pull/<n>/head`` there for fork PRs too. Fetches keep packs (``fetch.unpackLimit=1``), so an
interrupted fetch never leaves a commit without its trees. Fetches of one mirror are serialized
(an ``asyncio.Lock`` per repository, including the ``git gc --auto`` a fetch may run, which runs in the
foreground); different repositories fetch in parallel. One ``Checkouts`` object per ``root``: the locks
are per process.

**The token** goes to git only through the environment of the fetch (``GIT_CONFIG_COUNT``/
``http.extraHeader = Authorization: Basic base64(x-access-token:TOKEN)``), never into argv, a config
file, the remote URL or a log line; git's output is masked before it reaches an exception. Git runs
with a clean environment (no inherited ``GIT_*``, no system/global config, ``HOME`` an empty directory
of ours), ``credential.helper`` cleared, no terminal prompt, ``core.hooksPath=/dev/null``, protocol v2,
only http(s) transports, and ``safe.directory`` only for the paths this module created.

**What is fetched, and the "moved PR" rule.** If the commit ``sha`` is already in the mirror, nothing is
fetched (``fetched=False``): the sha is what the caller validates, and a commit's content cannot change.
A moved PR is then not detected here - the caller learns about it from the next ``synchronize`` event
and supersedes the job. Otherwise, with ``pr_number`` the fetch is ``+refs/pull/<n>/head:refs/pull/<n>/head``
and that ref must then equal ``sha``, else ``PullRequestMoved`` (a ``CheckoutError``) - validating the
event's head needs a new event. With ``ref`` (e.g. ``refs/heads/main`` for a push) the ref is fetched as
a hint, and if ``sha`` is still missing it is fetched by sha (protocol v2 allows that; GitHub serves
reachable commits by sha). With neither, the sha is fetched directly. Tags pointing into the fetched
history follow automatically (so ``git describe``/setuptools-scm see them).

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

**Cache bound.** At most ``max_mirrors`` mirrors: after creating one, the least recently used (mtime of
``<mirror>/codegenapp-last-used``, touched on every checkout) are removed, never one in use by a
checkout of this object. Removal renames the mirror into ``<root>/trash`` first, so a half-deleted
mirror is never visible.

**remove()** deletes a workspace the sandbox has used: files owned by the sandbox uid, directories PR
code made mode 000, deep trees. It walks with directory file descriptors and ``O_NOFOLLOW`` (a symlink
is unlinked, never followed), chmods a directory it cannot read or modify and retries, and falls back to
``rm -rf`` for trees deeper than the file-descriptor limit.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 600.0
LOCAL_TIMEOUT_SECONDS = 120.0
LAST_USED_MARKER = "codegenapp-last-used"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_REPO = re.compile(r"[A-Za-z0-9._-]+")
_PACK_SUFFIXES = (".pack", ".idx")
_MIRROR_CONFIG = """\
[core]
\tlogAllRefUpdates = false
[fetch]
\tunpackLimit = 1
\twriteCommitGraph = false
[transfer]
\tunpackLimit = 1
[gc]
\tautoDetach = false
[remote "origin"]
\turl = {url}
"""
_AUTH_MARKERS = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "returned error: 401",
    "invalid username or",
    "returned error: 403",
    "permission to",
)
_NOT_FOUND_MARKERS = ("repository not found", "returned error: 404")
# Fetch failures worth another try (GitHub's git endpoints have the odd 5xx or dropped connection).
_TRANSIENT = re.compile(
    r"returned error: 5\d\d|rpc failed|early eof|unexpected disconnect|connection (reset|refused|timed out)"
    r"|could not resolve host|operation timed out|remote end hung up|transfer closed",
    re.IGNORECASE,
)
RETRY_DELAYS_SECONDS = (1.0, 4.0)


@dataclass(frozen=True)
class CheckoutResult:
    sha: str
    workspace: Path
    tracked_files: frozenset[str]
    duration_seconds: float
    fetched: bool  # whether the mirror fetched from GitHub for this checkout


class CheckoutError(Exception):
    """The checkout failed; the message says why (git's output included, tokens masked).

    ``reason``: "invalid" (bad arguments), "auth", "not_found" (repository), "missing_ref",
    "missing_commit", "moved" (see PullRequestMoved), "timeout", "workspace" or "git"."""

    def __init__(self, message: str, *, reason: str = "git", git_output: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.git_output = git_output  # git's stderr (tokens masked), when git failed


class PullRequestMoved(CheckoutError):
    """refs/pull/<n>/head is no longer the event's head sha."""

    def __init__(self, *, ref: str, ref_sha: str, sha: str) -> None:
        super().__init__(
            f"{ref} is {ref_sha[:7]} but the event's head is {sha[:7]} (the PR moved); "
            "validating the event's head needs a new event",
            reason="moved",
        )
        self.ref, self.ref_sha, self.sha = ref, ref_sha, sha


@dataclass
class _Mirror:
    path: Path
    lock: asyncio.Lock
    users: int = 0


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
        self.max_mirrors = max_mirrors
        self.git = git
        self.fetch_timeout = fetch_timeout
        self.local_timeout = local_timeout
        self.hardlink = os.geteuid() == 0 if hardlink is None else hardlink
        self.retry_delays = tuple(retry_delays)
        self._mirrors: dict[str, _Mirror] = {}
        self._last_stamp = 0
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
        self._prepare_root()
        if ref is not None:
            await self._check_ref(ref)
        dest = Path(dest)
        dest_existed = _check_dest(dest)
        key = f"{owner}/{name}".lower()
        mirror = self._mirror(key)
        mirror.users += 1  # no await between lookup and this: eviction cannot take it away
        try:
            try:
                await self._run(["init", "--quiet", "--template=", str(dest)], safe=dest, what="git init")
                async with mirror.lock:
                    created = await self._ensure_mirror(mirror, owner, name)
                    fetched = False
                    if not await self._has_commit(mirror.path, sha):
                        await self._fetch(mirror.path, owner, name, sha=sha, token=token, pr_number=pr_number, ref=ref)
                        fetched = True
                    tracked = await self._tracked_files(mirror.path, sha)
                    self._touch(mirror.path)
                    await self._prepare_workspace(mirror.path, dest, sha)
                await self._checkout_workspace(dest, sha)
            except BaseException:
                await asyncio.shield(asyncio.to_thread(_clear_dest, dest, dest_existed))
                raise
            if created:
                await self._evict()
        finally:
            mirror.users -= 1
        duration = time.monotonic() - started
        log.info(
            "checked out %s@%s into %s (%d files, fetched=%s) in %.3fs",
            full_name, sha[:12], dest, len(tracked), fetched, duration,
        )
        return CheckoutResult(sha, dest, tracked, duration, fetched)

    async def remove(self, workspace: Path) -> None:
        """Delete a workspace, whatever PR code did to it (see the module docstring)."""
        workspace = Path(workspace)
        resolved = Path(os.path.abspath(workspace))
        mirrors = Path(os.path.abspath(self.root / "mirrors"))
        if resolved == Path(resolved.anchor) or resolved in (mirrors, *mirrors.parents) or mirrors in resolved.parents:
            raise ValueError(f"refusing to remove {workspace}: not a workspace")
        await asyncio.to_thread(remove_tree, workspace)

    def mirror_path(self, full_name: str) -> Path:
        owner, name = _split_full_name(full_name)
        return self.root / "mirrors" / owner.lower() / f"{name.lower()}.git"

    # ------------------------------------------------------------------ mirrors

    def _prepare_root(self) -> None:
        if self._prepared:
            return
        for sub in ("mirrors", "home", "trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for stale in (self.root / "trash").iterdir():  # left over by a crash during an eviction
            remove_tree(stale)
        for stale in (self.root / "mirrors").glob(".tmp-*"):  # a mirror whose creation was interrupted
            remove_tree(stale)
        self._prepared = True

    def _mirror(self, key: str) -> _Mirror:
        if key not in self._mirrors:
            owner, name = key.split("/")
            self._mirrors[key] = _Mirror(self.root / "mirrors" / owner / f"{name}.git", asyncio.Lock())
        return self._mirrors[key]

    async def _ensure_mirror(self, mirror: _Mirror, owner: str, name: str) -> bool:
        if (mirror.path / "HEAD").is_file():
            return False
        tmp = self.root / "mirrors" / f".tmp-{secrets.token_hex(8)}"
        try:
            await self._run(["init", "--quiet", "--bare", "--template=", str(tmp)], safe=tmp, what="git init")
            url = self._url(owner, name).replace("\\", "\\\\").replace('"', '\\"')
            with open(tmp / "config", "a", encoding="utf-8") as config:
                config.write(_MIRROR_CONFIG.format(url=f'"{url}"'))
            mirror.path.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(mirror.path):  # not a repository (no HEAD): throw it away
                broken = self.root / "trash" / f"{secrets.token_hex(8)}.git"
                os.rename(mirror.path, broken)
                await asyncio.to_thread(remove_tree, broken)
            os.rename(tmp, mirror.path)
        except BaseException:
            await asyncio.to_thread(remove_tree, tmp)
            raise
        log.info("created mirror %s for %s/%s", mirror.path, owner, name)
        return True

    def _touch(self, path: Path) -> None:
        stamp = max(time.time_ns(), self._last_stamp + 1)  # strictly increasing, finer than the fs clock
        self._last_stamp = stamp
        marker = path / LAST_USED_MARKER
        marker.touch()
        os.utime(marker, ns=(stamp, stamp))

    async def _evict(self) -> None:
        mirrors = [p for p in (self.root / "mirrors").glob("*/*.git") if p.is_dir()]
        excess = len(mirrors) - self.max_mirrors
        if excess <= 0:
            return

        def last_used(path: Path) -> int:
            try:
                return (path / LAST_USED_MARKER).stat().st_mtime_ns
            except OSError:
                return 0

        # No await from listing to the last rename: no checkout can start using a mirror in between,
        # and two evictions cannot both count the same excess.
        doomed = []
        for path in sorted(mirrors, key=last_used):
            if excess <= 0:
                break
            key = f"{path.parent.name}/{path.name.removesuffix('.git')}"
            state = self._mirrors.get(key)
            if state is not None and (state.users or state.lock.locked()):
                continue
            trash = self.root / "trash" / f"{secrets.token_hex(8)}.git"
            try:
                os.rename(path, trash)
            except OSError as exc:
                log.warning("could not evict mirror %s: %s", path, exc)
                continue
            self._mirrors.pop(key, None)
            excess -= 1
            doomed.append(trash)
            log.info("evicted mirror %s (least recently used; more than %d mirrors)", key, self.max_mirrors)
        for trash in doomed:
            await asyncio.to_thread(remove_tree, trash)

    # ------------------------------------------------------------------ fetching

    def _url(self, owner: str, name: str) -> str:
        return f"{self.github_url}/{owner}/{name}.git"

    async def _fetch(
        self,
        mirror: Path,
        owner: str,
        name: str,
        *,
        sha: str,
        token: str | None,
        pr_number: int | None,
        ref: str | None,
    ) -> None:
        url = self._url(owner, name)
        env: dict[str, str] = {}
        masks: list[str] = []
        if token:
            header = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                   "GIT_CONFIG_VALUE_0": f"Authorization: Basic {header}"}
            masks = [token, header]
        pull_ref = f"refs/pull/{pr_number}/head" if pr_number is not None else None
        refs = [r for r in (pull_ref, ref) if r is not None]
        what = " and ".join(refs) or sha
        await self._fetch_refspecs(mirror, url, [f"+{r}:{r}" for r in refs] or [sha], env, masks, what)
        if pull_ref is not None:
            ref_sha = await self._resolve(mirror, pull_ref)
            if ref_sha != sha:
                raise PullRequestMoved(ref=pull_ref, ref_sha=ref_sha or "0" * 40, sha=sha)
            return
        if refs and not await self._has_commit(mirror, sha):
            await self._fetch_refspecs(mirror, url, [sha], env, masks, sha)
        if not await self._has_commit(mirror, sha):
            raise CheckoutError(f"{sha} is not a commit of {owner}/{name}", reason="missing_commit")

    async def _fetch_refspecs(
        self, mirror: Path, url: str, refspecs: Sequence[str], env: Mapping[str, str], masks: Sequence[str], what: str
    ) -> None:
        args = ["fetch", "--quiet", "--no-write-fetch-head", "--no-show-forced-updates", "--no-recurse-submodules",
                url, *refspecs]
        for attempt in range(len(self.retry_delays) + 1):
            try:
                await self._run(args, git_dir=mirror, env=env, masks=masks, timeout=self.fetch_timeout,
                                what=f"fetching {what} from {url}")
                return
            except CheckoutError as error:
                if error.reason != "git":
                    raise
                if attempt < len(self.retry_delays) and _TRANSIENT.search(error.git_output):
                    log.warning("fetching %s from %s failed, retrying: %s", what, url, error.git_output)
                    await asyncio.sleep(self.retry_delays[attempt])
                    continue
                raise _classify_fetch_error(error, url, what) from None

    # ------------------------------------------------------------------ reading the mirror

    async def _has_commit(self, git_dir: Path, sha: str) -> bool:
        code, _ = await self._run(["cat-file", "-e", f"{sha}^{{commit}}"], git_dir=git_dir, check=False)
        return code == 0

    async def _resolve(self, git_dir: Path, ref: str) -> str | None:
        code, out = await self._run(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], git_dir=git_dir, check=False
        )
        return out.decode().strip() if code == 0 else None

    async def _check_ref(self, ref: str) -> None:
        if not ref.startswith("refs/") or any(c.isspace() or ord(c) < 32 for c in ref):
            raise CheckoutError(f"ref must be a full ref name (refs/...), not {ref!r}", reason="invalid")
        code, _ = await self._run(["check-ref-format", ref], check=False)
        if code != 0:
            raise CheckoutError(f"{ref!r} is not a valid ref name", reason="invalid")

    async def _tracked_files(self, git_dir: Path, sha: str) -> frozenset[str]:
        _, out = await self._run(["ls-tree", "-r", "-z", "--full-tree", sha], git_dir=git_dir, what="git ls-tree")
        files = []
        for entry in out.split(b"\0"):
            meta, tab, path = entry.partition(b"\t")
            if tab and meta.split(b" ")[1] in (b"blob", b"commit"):  # files, symlinks, gitlinks
                files.append(os.fsdecode(path))
        return frozenset(files)

    async def _tags(self, git_dir: Path) -> list[tuple[str, str]]:
        args = ["for-each-ref", "--format=%(objectname) %(refname)", "refs/tags/"]
        _, out = await self._run(args, git_dir=git_dir, what="git for-each-ref")
        return [tuple(line.split(" ", 1)) for line in out.decode().splitlines() if " " in line]  # type: ignore[misc]

    # ------------------------------------------------------------------ the workspace

    async def _prepare_workspace(self, mirror: Path, dest: Path, sha: str) -> None:
        """Under the mirror's lock: give the new repository at dest the mirror's objects, tags and HEAD = sha."""
        tags = await self._tags(mirror)
        await asyncio.to_thread(_share_objects, mirror / "objects", dest / ".git" / "objects", self.hardlink)
        git_dir = dest / ".git"
        (git_dir / "HEAD").write_text(f"{sha}\n", encoding="ascii")
        if tags:
            (git_dir / "packed-refs").write_text("".join(f"{obj} {name}\n" for obj, name in tags), encoding="utf-8")

    async def _checkout_workspace(self, dest: Path, sha: str) -> None:
        await self._run(
            ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", "--detach", sha],
            git_dir=dest / ".git",
            work_tree=dest,
            what=f"git checkout {sha}",
        )

    # ------------------------------------------------------------------ running git

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH") or DEFAULT_PATH,
            "HOME": str(self.root / "home"),
            "LANG": "C",
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_ALLOW_PROTOCOL": "http:https",
        }
        env.update(extra or {})
        return env

    async def _run(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        safe: Path | None = None,
        env: Mapping[str, str] | None = None,
        masks: Iterable[str] = (),
        timeout: float | None = None,
        check: bool = True,
        what: str | None = None,
    ) -> tuple[int, bytes]:
        """Run git; (exit code, stdout). With check, a failure raises CheckoutError("git ...")."""
        options = ["-c", "credential.helper=", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
                   "-c", "protocol.version=2"]
        for path in (git_dir, work_tree, safe):
            if path is not None:
                options += ["-c", f"safe.directory={os.path.abspath(path)}"]
        if git_dir is not None:
            options.append(f"--git-dir={git_dir}")
        if work_tree is not None:
            options.append(f"--work-tree={work_tree}")
        process = await asyncio.create_subprocess_exec(
            self.git,
            *options,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env(env),
            cwd=str(work_tree or git_dir or self.root),
            start_new_session=True,  # its own process group: a timeout kills git's helpers too
        )
        limit = timeout if timeout is not None else self.local_timeout
        try:
            out, err = await asyncio.wait_for(process.communicate(), limit)
        except TimeoutError:
            await _kill(process)
            raise CheckoutError(f"{what or 'git ' + args[0]} timed out after {limit:g}s", reason="timeout") from None
        except BaseException:
            await _kill(process)
            raise
        code = process.returncode if process.returncode is not None else -1
        if check and code != 0:
            text = _mask(err.decode(errors="replace").strip(), masks)
            raise CheckoutError(f"{what or 'git ' + args[0]} failed (exit {code}): {text}", git_output=text)
        return code, out


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


def _mask(text: str, masks: Iterable[str]) -> str:
    for secret in masks:
        if secret:
            text = text.replace(secret, "***")
    return text


def _classify_fetch_error(error: CheckoutError, url: str, what: str) -> CheckoutError:
    output = error.git_output
    low = output.lower()
    if any(marker in low for marker in _AUTH_MARKERS):
        message = (f"authentication failed fetching {what} from {url} (the installation token is missing, "
                   f"invalid, expired or has no access to the repository): {output}")
        return CheckoutError(message, reason="auth", git_output=output)
    if any(marker in low for marker in _NOT_FOUND_MARKERS) or re.search(r"repository '.*' not found", low):
        message = f"repository {url} not found, or the installation token cannot see it: {output}"
        return CheckoutError(message, reason="not_found", git_output=output)
    if "couldn't find remote ref" in low:
        return CheckoutError(f"{what} does not exist on {url}: {output}", reason="missing_ref", git_output=output)
    if "not our ref" in low or "unadvertised object" in low or "no such remote ref" in low:
        message = f"{what} is not a commit {url} has: {output}"
        return CheckoutError(message, reason="missing_commit", git_output=output)
    return error


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    await process.wait()


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


# ------------------------------------------------------------------------------------ tree removal

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        _chmod_dir(parent_fd, name)
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


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
    import subprocess

    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "u+rwx", "--", str(path)], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, check=True)
