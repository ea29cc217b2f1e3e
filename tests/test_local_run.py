"""`codegenapp validate` below the command line (pipeline/validation/local_run.py, local_changes.py): the commit's
files and the lines it changed, read from git whatever their names, and what its snapshots hold. The command
itself, as a process, is in test_cli.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

from pipeline.validation.local_changes import unquote_path
from pipeline.validation.local_run import changed_since, tracked_files, validate_local
from pipeline.workspace.snapshots import SnapshotStore
from tests.gitrepos import git_env
from tests.sandbox_support import needs_bwrap
from tests.test_snapshots import archive_members

NAIVE = "naïve.txt"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env=git_env()).stdout


def commit(repo: Path, files: dict[str, str | None], message: str = "change") -> str:
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q", "-b", "main")
    for name, text in files.items():
        if text is None:
            (repo / name).unlink()
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").strip()


def test_git_quoted_paths_are_read_back() -> None:
    assert unquote_path(b'"b/na\\303\\257ve.txt"') == "b/naïve.txt".encode()
    assert unquote_path(b'"b/tab\\there \\"quoted\\" back\\\\slash"') == b'b/tab\there "quoted" back\\slash'
    assert unquote_path(b"b/plain name.txt") == b"b/plain name.txt"


async def test_lines_changed_since_the_merge_base_whatever_the_file_names(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commit(repo, {"app.py": "a\nb\nc\n", NAIVE: "1\n2\n", "with space.py": "x\n", "gone.py": "g\n",
                  "old-name.py": "same\n"})
    git(repo, "checkout", "-qb", "feature")
    head = commit(repo, {"app.py": "a\nB\nc\n", NAIVE: "1\n2\n3\n", "with space.py": "y\n", "gone.py": None})
    git(repo, "mv", "old-name.py", "new-name.py")
    git(repo, "commit", "-qm", "rename")
    head = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    commit(repo, {"later-on-main.py": "m\n"})  # after the branch point: not the PR's change
    changed = await changed_since(repo, "main", head)
    assert changed == {"app.py": {2}, NAIVE: {3}, "with space.py": {1}}


async def test_tracked_files_are_read_unquoted(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sha = commit(repo, {NAIVE: "n\n", "dir/ünïcode/ok.txt": "o\n", "plain.txt": "p\n"})
    assert await tracked_files(repo, sha) == {NAIVE, "dir/ünïcode/ok.txt", "plain.txt"}


@needs_bwrap
async def test_a_tracked_non_ascii_file_is_not_taken_into_the_snapshot(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commit(repo, {NAIVE: "tracked\n", ".github/codegenapp.yml":
                  "setup:\n  - mkdir -p .venv && touch .venv/ready\nvalidate:\n  - test -f .venv/ready\n"})
    store = SnapshotStore(tmp_path / "snapshots")
    report = await validate_local(repo, snapshots=store)
    assert report.conclusion == "success", report.text
    [archive] = store.root.glob("??/*.tar*")
    members = archive_members(SimpleNamespace(path=archive, compression=store.compression))
    assert ".venv/ready" in members and NAIVE not in members
