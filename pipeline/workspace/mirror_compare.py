"""What a commit that exists only in the local mirror (a merge queue's candidate) adds to its base, read
from the mirror with git: the `compare` answer GitHub cannot give for a commit it does not have."""

from __future__ import annotations

from bot.github.repos import ComparedCommit, Comparison
from pipeline.workspace.checkout import Checkouts


async def mirror_comparison(checkouts: Checkouts, full_name: str, base: str, head: str) -> Comparison:
    """The files (without patches: every line counts as changed) and the commits of `base..head` (all of
    them: git lists every one)."""
    mirror = checkouts.mirrors.get(full_name.lower())
    git = checkouts.mirrors.git
    async with mirror.lock:
        _, names = await git.run(["diff", "--name-status", "-z", "--no-renames", base, head], git_dir=mirror.path,
                                 what="git diff")
        _, log = await git.run(["log", "-z", "--format=%H %P%n%B", f"{base}..{head}"], git_dir=mirror.path,
                               what="git log")
    fields = names.decode(errors="replace").split("\0")
    statuses = {"A": "added", "D": "removed", "M": "modified"}
    files = [{"filename": path, "status": statuses.get(code[:1], "modified")}
             for code, path in zip(fields[0::2], fields[1::2]) if path]
    commits = []
    for entry in filter(None, (e.strip() for e in log.decode(errors="replace").split("\0"))):
        shas, _, message = entry.partition("\n")
        sha, *parents = shas.split()
        commits.append(ComparedCommit(sha, tuple(parents), message.strip()))
    return Comparison(files=files, commits=commits, complete=True)
