"""How GitHub writes merges into a real repository (``tests.gitrepos.GitRepo``), without a worktree:
the three methods of ``PUT .../pulls/{n}/merge`` (``merge``, ``squash``, ``rebase``), the merge commit
of ``POST .../merges``, and whether a head merges cleanly into a base. Each returns the new tip, or None
on a conflict; moving the branch is the caller's business. Knows nothing of the fake's state.

Messages are GitHub's defaults: a merge commit is "Merge pull request #N from owner/branch" then the
PR's title; a squash "Title (#N)" then "* subject" of each commit; ``commit_title``/``commit_message``
replace the first line / the rest. Merges and squashes are authored by whoever merges and committed
by "GitHub <noreply@github.com>", as on github.com; a rebase keeps each commit's author."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.gitrepos import GitRepo, Signature

GITHUB_NAME, GITHUB_EMAIL = "GitHub", "noreply@github.com"
MERGE_METHODS = ("merge", "squash", "rebase")


@dataclass(frozen=True)
class PullToLand:
    """What the merge of one pull request needs to know about it."""

    number: int
    title: str
    head_sha: str
    head_label: str  # "owner/branch", as in GitHub's merge message
    commit_title: str | None = None
    commit_message: str | None = None


def _now_signature(name: str, email: str) -> Signature:
    return Signature(name, email, int(time.time()))


def _message(title: str, body: str) -> str:
    return f"{title}\n\n{body}\n" if body else f"{title}\n"


def merges_cleanly(git: GitRepo, base_tip: str, head: str) -> bool:
    return git.merge_tree(base_tip, head) is not None


def merge_commit(git: GitRepo, base_tip: str, head: str, message: str, merger: Signature) -> str | None:
    """A merge commit of ``head`` into ``base_tip`` (parents: base tip, head), or None on a conflict."""
    tree = git.merge_tree(base_tip, head)
    if tree is None:
        return None
    return git.commit_tree(tree, [base_tip, head], message, author=merger,
                           committer=_now_signature(GITHUB_NAME, GITHUB_EMAIL))


def land_pull(git: GitRepo, method: str, base_tip: str, pull: PullToLand, merger: Signature) -> str | None:
    """The base's new tip after merging ``pull`` with ``method``, or None on a conflict."""
    if method == "merge":
        title = pull.commit_title or f"Merge pull request #{pull.number} from {pull.head_label}"
        body = pull.title if pull.commit_message is None else pull.commit_message
        return merge_commit(git, base_tip, pull.head_sha, _message(title, body), merger)
    if method == "squash":
        tree = git.merge_tree(base_tip, pull.head_sha)
        if tree is None:
            return None
        title = pull.commit_title or f"{pull.title} (#{pull.number})"
        body = pull.commit_message
        if body is None:
            body = "\n\n".join(f"* {git.commit_info(sha).message.splitlines()[0]}"
                               for sha in _pull_commits(git, base_tip, pull.head_sha))
        return git.commit_tree(tree, [base_tip], _message(title, body), author=merger,
                               committer=_now_signature(GITHUB_NAME, GITHUB_EMAIL))
    if method == "rebase":
        return _rebase(git, base_tip, pull.head_sha)
    raise ValueError(f"merge method must be one of {MERGE_METHODS}, not {method!r}")


def _pull_commits(git: GitRepo, base_tip: str, head: str) -> list[str]:
    """The pull's own commits, oldest first (merge commits left out, as a rebase merge does)."""
    return git.git("rev-list", "--reverse", "--topo-order", "--no-merges", head, f"^{base_tip}").split()


def _rebase(git: GitRepo, base_tip: str, head: str) -> str | None:
    tip = base_tip
    for sha in _pull_commits(git, base_tip, head):
        tree = git.cherry_pick_tree(sha, tip)
        if tree is None:
            return None
        info = git.commit_info(sha)
        tip = git.commit_tree(tree, [tip], info.message, author=info.author,
                              committer=_now_signature(GITHUB_NAME, GITHUB_EMAIL))
    return tip
