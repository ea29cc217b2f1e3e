"""The local mirrors checkouts are made from: one bare repository per GitHub repository, fetched into.

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
file, the remote URL or a log line; git's output is masked before it reaches an exception (how git runs: git.py).

**What is fetched, and the "moved PR" rule.** If the commit ``sha`` is already in the mirror, nothing is
fetched (``fetched=False``): the sha is what the caller validates, and a commit's content cannot change.
A moved PR is then not detected here - the caller learns about it from the next ``synchronize`` event
and supersedes the job. Otherwise, with ``pr_number`` the fetch is ``+refs/pull/<n>/head:refs/pull/<n>/head``
and that ref must then equal ``sha``, else ``PullRequestMoved`` (a ``CheckoutError``) - validating the
event's head needs a new event. With ``ref`` (e.g. ``refs/heads/main`` for a push) the ref is fetched as
a hint, and if ``sha`` is still missing it is fetched by sha (protocol v2 allows that; GitHub serves
reachable commits by sha). With neither, the sha is fetched directly. Tags pointing into the fetched
history follow automatically (so ``git describe``/setuptools-scm see them).

**Cache bound.** At most ``max_mirrors`` mirrors: after creating one, the least recently used (mtime of
``<mirror>/codegenapp-last-used``, touched on every checkout) are removed, never one in use by a
checkout of this object. Removal renames the mirror into ``<root>/trash`` first, so a half-deleted
mirror is never visible.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.workspace.errors import CheckoutError, PullRequestMoved
from pipeline.workspace.git import Git
from pipeline.workspace.trees import remove_tree

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 600.0
LAST_USED_MARKER = "codegenapp-last-used"
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


@dataclass
class Mirror:
    path: Path
    lock: asyncio.Lock
    users: int = 0


class Mirrors:
    """The mirrors under `<root>/mirrors` and their locks, per process (see the module docstring)."""

    def __init__(self, root: Path, git: Git, *, github_url: str, max_mirrors: int, fetch_timeout: float,
                 retry_delays: Sequence[float]) -> None:
        self.root = root
        self.git = git
        self.github_url = github_url
        self.max_mirrors = max_mirrors
        self.fetch_timeout = fetch_timeout
        self.retry_delays = tuple(retry_delays)
        self._mirrors: dict[str, Mirror] = {}
        self._last_stamp = 0

    def get(self, key: str) -> Mirror:
        """The mirror of `owner/name` (lower case), with its lock."""
        if key not in self._mirrors:
            owner, name = key.split("/")
            self._mirrors[key] = Mirror(self.root / "mirrors" / owner / f"{name}.git", asyncio.Lock())
        return self._mirrors[key]

    async def ensure(self, mirror: Mirror, owner: str, name: str) -> bool:
        """Create the mirror if it does not exist yet (under its lock); True when it was created."""
        if (mirror.path / "HEAD").is_file():
            return False
        tmp = self.root / "mirrors" / f".tmp-{secrets.token_hex(8)}"
        try:
            await self.git.run(["init", "--quiet", "--bare", "--template=", str(tmp)], safe=tmp, what="git init")
            url = self.url(owner, name).replace("\\", "\\\\").replace('"', '\\"')
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

    def touch(self, path: Path) -> None:
        stamp = max(time.time_ns(), self._last_stamp + 1)  # strictly increasing, finer than the fs clock
        self._last_stamp = stamp
        marker = path / LAST_USED_MARKER
        marker.touch()
        os.utime(marker, ns=(stamp, stamp))

    async def evict(self) -> None:
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

    def url(self, owner: str, name: str) -> str:
        return f"{self.github_url}/{owner}/{name}.git"

    async def fetch(
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
        url = self.url(owner, name)
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
        if refs and not await self.has_commit(mirror, sha):
            await self._fetch_refspecs(mirror, url, [sha], env, masks, sha)
        if not await self.has_commit(mirror, sha):
            raise CheckoutError(f"{sha} is not a commit of {owner}/{name}", reason="missing_commit")

    async def _fetch_refspecs(
        self, mirror: Path, url: str, refspecs: Sequence[str], env: Mapping[str, str], masks: Sequence[str], what: str
    ) -> None:
        args = ["fetch", "--quiet", "--no-write-fetch-head", "--no-show-forced-updates", "--no-recurse-submodules",
                url, *refspecs]
        for attempt in range(len(self.retry_delays) + 1):
            try:
                await self.git.run(args, git_dir=mirror, env=env, masks=masks, timeout=self.fetch_timeout,
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

    async def has_commit(self, git_dir: Path, sha: str) -> bool:
        code, _ = await self.git.run(["cat-file", "-e", f"{sha}^{{commit}}"], git_dir=git_dir, check=False)
        return code == 0

    async def _resolve(self, git_dir: Path, ref: str) -> str | None:
        code, out = await self.git.run(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], git_dir=git_dir, check=False
        )
        return out.decode().strip() if code == 0 else None

    async def tracked_files(self, git_dir: Path, sha: str) -> frozenset[str]:
        _, out = await self.git.run(["ls-tree", "-r", "-z", "--full-tree", sha], git_dir=git_dir, what="git ls-tree")
        files = []
        for entry in out.split(b"\0"):
            meta, tab, path = entry.partition(b"\t")
            if tab and meta.split(b" ")[1] in (b"blob", b"commit"):  # files, symlinks, gitlinks
                files.append(os.fsdecode(path))
        return frozenset(files)

    async def tags(self, git_dir: Path) -> list[tuple[str, str]]:
        args = ["for-each-ref", "--format=%(objectname) %(refname)", "refs/tags/"]
        _, out = await self.git.run(args, git_dir=git_dir, what="git for-each-ref")
        return [tuple(line.split(" ", 1)) for line in out.decode().splitlines() if " " in line]  # type: ignore[misc]


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
