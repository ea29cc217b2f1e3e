"""Building a merge queue's candidate in the repository's mirror, without a worktree, and pushing a
tested candidate to the base (the fast-forward method).

A candidate is the base tip merged with each PR's head in turn (the PRs ahead, then its own batch):
`git merge-tree --write-tree` gives each merge's tree (exit 1: a conflict, blamed on the PR being merged),
`git commit-tree` records it with a fixed author, committer and date, so the same inputs always make the
same commit (a build run again after a kill finds what it made). A ref `refs/codegenapp/queue/...` keeps the
commit from `git gc`. The validation's checkout then finds the commit in the mirror and fetches nothing; a
worker on another host, whose mirror lacks it, makes it again (`rebuild`, planned by rebuild.py) and uses it
only if it is the same commit.

The token reaches git only through the environment (as in mirrors.py), never argv.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from pipeline.merge_queue.rebuild import Rebuild, rebuilt_mismatch
from pipeline.workspace.checkout import Checkouts
from pipeline.workspace.errors import CheckoutError, PullRequestMoved
from pipeline.workspace.mirrors import Mirror

_IDENTITY = {"GIT_AUTHOR_NAME": "CodegenApp merge queue", "GIT_AUTHOR_EMAIL": "merge-queue@codegenapp.invalid",
             "GIT_COMMITTER_NAME": "CodegenApp merge queue", "GIT_COMMITTER_EMAIL": "merge-queue@codegenapp.invalid",
             "GIT_AUTHOR_DATE": "@1700000000 +0000", "GIT_COMMITTER_DATE": "@1700000000 +0000"}
OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class Built:
    sha: str
    tree: str
    expected_base_tree: str  # the tree after the PRs ahead only


@dataclass(frozen=True)
class Conflict:
    pr: int
    output_tail: str


def merge_message(pr: int) -> str:
    # "Merge pull request #N from" is how a validation of the candidate finds the PRs it carries
    # (pipeline/validation/subjects.py named_pulls), for the secrets of a fork's code.
    return f"Merge pull request #{pr} from the merge queue\n"


def _auth_env(token: str | None) -> tuple[dict[str, str], list[str]]:
    if not token:
        return {}, []
    header = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return ({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
             "GIT_CONFIG_VALUE_0": f"Authorization: Basic {header}"}, [token, header])


class CandidateBuilder:
    def __init__(self, checkouts: Checkouts) -> None:
        self.checkouts = checkouts
        self.mirrors = checkouts.mirrors
        self.git = checkouts.mirrors.git

    def _mirror(self, full_name: str) -> tuple[Mirror, str, str]:
        owner, name = full_name.split("/")
        return self.mirrors.get(full_name.lower()), owner, name

    async def build(self, full_name: str, *, token: str | None, base_ref: str, base_sha: str,
                    merges: list[tuple[int, str]], ahead: int, ref: str) -> Built | Conflict:
        """Merge each (PR, head) of `merges` onto `base_sha` in order, the first `ahead` of them being the
        PRs ahead of the candidate's batch."""
        mirror, owner, name = self._mirror(full_name)
        mirror.users += 1
        try:
            async with mirror.lock:
                result = await self._merge_all(mirror, owner, name, token, base_ref, base_sha, merges, ahead)
                if isinstance(result, Built):
                    await self._keep(mirror, ref, result.sha)
                return result
        finally:
            mirror.users -= 1

    async def has_commit(self, full_name: str, sha: str) -> bool:
        """Whether this host's mirror of `full_name` has the commit `sha` (False: no mirror yet)."""
        mirror, _, _ = self._mirror(full_name)
        return (mirror.path / "HEAD").is_file() and await self.mirrors.has_commit(mirror.path, sha)

    async def rebuild(self, full_name: str, *, token: str | None, plan: Rebuild) -> str | None:
        """Make the candidate's commit `plan` describes again, in this host's mirror, and keep it under its
        ref only if it is `plan.expected_sha`. None: it is there now; else why it is not (nothing kept)."""
        mirror, owner, name = self._mirror(full_name)
        mirror.users += 1
        try:
            async with mirror.lock:
                result = await self._merge_all(mirror, owner, name, token, plan.base_ref, plan.base_sha,
                                               list(plan.merges), plan.ahead)
                if isinstance(result, Conflict):
                    return rebuilt_mismatch(plan, None, conflict_pr=result.pr)
                mismatch = rebuilt_mismatch(plan, result.sha)
                if mismatch is None:
                    await self._keep(mirror, plan.ref, result.sha)
                return mismatch
        finally:
            mirror.users -= 1

    async def _merge_all(self, mirror: Mirror, owner: str, name: str, token: str | None, base_ref: str,
                         base_sha: str, merges: list[tuple[int, str]], ahead: int) -> Built | Conflict:
        """Under the mirror's lock: fetch what is missing, then make the merge commits (no ref yet)."""
        self.checkouts.prepare_root()
        await self.mirrors.ensure(mirror, owner, name)
        await self._fetch(mirror.path, owner, name, token, base_sha, ref=f"refs/heads/{base_ref}")
        for pr, head in merges:
            await self._fetch(mirror.path, owner, name, token, head, pr=pr)
        current = base_sha
        expected = await self._tree(mirror.path, base_sha)
        tree = expected
        for index, (pr, head) in enumerate(merges):
            code, out = await self.git.run(["merge-tree", "--write-tree", "--no-messages", current, head],
                                           git_dir=mirror.path, check=False, what="git merge-tree")
            if code == 1:
                _, detail = await self.git.run(["merge-tree", "--write-tree", "--name-only", current, head],
                                               git_dir=mirror.path, check=False)
                files = detail.decode(errors="replace").splitlines()[1:]
                return Conflict(pr, ("Conflicting files:\n" + "\n".join(files)).strip()[-OUTPUT_TAIL:])
            if code != 0:
                raise CheckoutError(f"git merge-tree failed (exit {code})")
            tree = out.decode().split("\n", 1)[0].strip()
            _, commit = await self.git.run(["commit-tree", tree, "-p", current, "-p", head,
                                            "-m", merge_message(pr)],
                                           git_dir=mirror.path, env=_IDENTITY, what="git commit-tree")
            current = commit.decode().strip()
            if index + 1 == ahead:
                expected = tree
        return Built(current, tree, expected)

    async def _keep(self, mirror: Mirror, ref: str, sha: str) -> None:
        await self.git.run(["update-ref", ref, sha], git_dir=mirror.path, what="git update-ref")
        self.mirrors.touch(mirror.path)

    async def _fetch(self, path: Path, owner: str, name: str, token: str | None, sha: str, *,
                     pr: int | None = None, ref: str | None = None) -> None:
        if await self.mirrors.has_commit(path, sha):
            return
        try:
            await self.mirrors.fetch(path, owner, name, sha=sha, token=token, pr_number=pr, ref=ref)
        except PullRequestMoved:  # pushed since it was queued (its push event removes it): the queued head
            if not await self.mirrors.has_commit(path, sha):
                await self.mirrors.fetch(path, owner, name, sha=sha, token=token, pr_number=None, ref=None)

    async def _tree(self, path: Path, sha: str) -> str:
        _, out = await self.git.run(["rev-parse", f"{sha}^{{tree}}"], git_dir=path, what="git rev-parse")
        return out.decode().strip()

    async def merge_trees(self, full_name: str, built_sha: str, count: int) -> list[str]:
        """The tree after each of the `count` merges of a built candidate, in order (its first-parent chain)."""
        mirror, _, _ = self._mirror(full_name)
        revs = [f"{built_sha}~{count - 1 - i}^{{tree}}" for i in range(count)]
        _, out = await self.git.run(["rev-parse", *revs], git_dir=mirror.path, what="git rev-parse")
        return out.decode().split()

    async def push_fast_forward(self, full_name: str, *, token: str | None, sha: str, base_ref: str) -> str | None:
        """Push `sha` to the base branch, fast-forward only (never forced). None: pushed; else why not."""
        mirror, owner, name = self._mirror(full_name)
        env, masks = _auth_env(token)
        async with mirror.lock:
            code, out = await self.git.run(["push", "--porcelain", self.mirrors.url(owner, name),
                                          f"{sha}:refs/heads/{base_ref}"],
                                         git_dir=mirror.path, env=env, masks=masks, check=False,
                                         timeout=self.mirrors.fetch_timeout, what="git push")
        if code == 0:
            return None
        rejected = [line.split("\t")[-1] for line in out.decode(errors="replace").splitlines() if line.startswith("!")]
        return f"GitHub refused the push of {sha[:7]} to {base_ref}" + (f": {rejected[0]}" if rejected else "")
