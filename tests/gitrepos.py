"""Real git repositories for tests, built with plumbing (no worktree, no index, no clock).

    repo = fake.git_repo("acme/widgets")        # a bare repository the FakeGitHub serves over smart HTTP
    base = repo.commit({"README.md": "hi", "app.py": "print(1)"}, branch="main", message="init")
    head = repo.commit({"app.py": "print(2)", "README.md": None}, branch="feature", parent="main")
    pull = fake.add_pull_from_repo("acme/widgets", 7, head_ref="feature", base_ref="main")
    # same as: fake.add_pull("acme/widgets", 7, head_sha=head, base_sha=base, head_ref="feature"),
    # which also points refs/pull/7/head at head (repo.set_ref("refs/pull/7/head", head) by hand)

A fork PR: ``fake.add_repo("alice/widgets", installation_id=None)``, ``fork = fake.git_repo(...)``,
``fork.fetch_from(repo, "main", "refs/heads/main")``, commit on a fork branch, then
``fake.add_pull_from_repo("acme/widgets", 8, head_ref="patch", head_full_name="alice/widgets")`` copies
the head into the base repository's ``refs/pull/8/head`` (GitHub's fork network). A PR that moves:
commit on its branch and ``set_ref("refs/pull/7/head", new)`` (or ``add_pull_from_repo`` again).

``commit(files, ...)`` takes ``path -> content``: ``str`` (UTF-8) or ``bytes`` for a regular file,
``executable(...)`` / ``symlink(target)`` / ``submodule(sha)`` (a gitlink) for other modes, ``None``
to delete the path. The new tree is the first parent's tree with those changes (``replace=True``:
exactly ``files``). Parents: ``parent=`` (one rev) or ``parents=[...]`` (``[]``: a root commit; two or
more: a merge); by default the current tip of ``branch`` when it exists, else a root commit.
``branch=None`` makes a commit no branch points at (e.g. for ``set_ref("refs/pull/7/head", ...)``).

One ``git fast-import`` process per commit (plus one ``rev-parse`` per parent; ~5-7 ms): blobs, tree,
commit and the ref update in one go. Author and committer are fixed and the timestamp is ``EPOCH + n``
(n counts this GitRepo's commits), so the same sequence of calls gives the same shas in every run. Git
runs with a clean environment: no system or global config, no hooks (empty template).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

AUTHOR_NAME = "A U Thor"
AUTHOR_EMAIL = "author@example.com"
COMMITTER_NAME = "C O Mitter"
COMMITTER_EMAIL = "committer@example.com"
EPOCH = 1_700_000_000
ZERO_SHA = "0" * 40
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_SCRATCH_REF = "refs/gitrepos/scratch"


class RefMoved(Exception):
    """``set_ref(..., expected=...)`` found the ref somewhere else (someone moved it meanwhile)."""


@dataclass(frozen=True)
class Signature:
    name: str
    email: str
    when: int  # seconds since the epoch (UTC)


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author: Signature
    committer: Signature
    message: str


@dataclass(frozen=True)
class FileEntry:
    """A tree entry with an explicit mode: 100644 (file), 100755 (executable), 120000 (symlink),
    160000 (gitlink: ``content`` is the submodule commit's sha)."""

    content: bytes
    mode: str = "100644"


FileValue = str | bytes | FileEntry | None


def executable(content: str | bytes) -> FileEntry:
    return FileEntry(_bytes(content), "100755")


def symlink(target: str) -> FileEntry:
    return FileEntry(target.encode(), "120000")


def submodule(sha: str) -> FileEntry:
    """A gitlink: the path is a submodule at commit ``sha`` (which need not exist in this repository)."""
    return FileEntry(sha.encode(), "160000")


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for git: nothing from the host's GIT_* variables or config files."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": AUTHOR_NAME,
        "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": COMMITTER_NAME,
        "GIT_COMMITTER_EMAIL": COMMITTER_EMAIL,
    }
    env.update(extra or {})
    return env


def _bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content


def _quote(path: str) -> bytes:
    """fast-import's C-style quoted path (always quoted: spaces, quotes and newlines are all fine)."""
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"not a valid path in a git tree: {path!r}")
    escaped = path.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n")
    return b'"' + escaped.replace(b"\t", b"\\t") + b'"'


def _data(content: bytes) -> bytes:
    return b"data %d\n" % len(content) + content + b"\n"


def _signature(text: str) -> Signature:
    """``Name <email> 1700000001 +0000`` -> Signature (the zone is dropped: these are all UTC)."""
    person, _, date = text.rpartition("> ")
    name, _, email = person.partition(" <")
    return Signature(name, email, int(date.split()[0]))


def _full_ref(branch: str) -> str:
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


class GitRepo:
    """A git repository on disk (normally bare). ``on_ref_update(ref, sha_or_None)`` is called after
    this object changes a ref (the FakeGitHub uses it to keep its branch state in step)."""

    def __init__(self, path: Path, *, on_ref_update: Callable[[str, str | None], None] | None = None) -> None:
        self.path = Path(path)
        self._on_ref_update = on_ref_update
        self._commits = 0

    @classmethod
    def init(
        cls,
        path: Path,
        *,
        default_branch: str = "main",
        on_ref_update: Callable[[str, str | None], None] | None = None,
    ) -> GitRepo:
        """Create a bare repository (no hooks) at ``path`` unless one is there already."""
        path = Path(path)
        if not (path / "HEAD").exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["git", "init", "--quiet", "--bare", "--template=", f"--initial-branch={default_branch}", str(path)],
                env=git_env(),
                check=True,
                capture_output=True,
            )
        return cls(path, on_ref_update=on_ref_update)

    def git(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        """Run git on this repository; stdout as text. Raises RuntimeError with git's stderr."""
        done = subprocess.run(
            ["git", f"--git-dir={self.path}", *args], input=input, env=git_env(), capture_output=True
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr.decode().strip()}")
        return done.stdout.decode()

    # ------------------------------------------------------------------ reading

    def resolve(self, rev: str) -> str | None:
        """The commit ``rev`` names, or None."""
        if rev.startswith("-"):
            raise ValueError(f"not a revision: {rev!r}")
        out = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", check=False)
        return out.strip() or None

    def rev_parse(self, rev: str) -> str:
        sha = self.resolve(rev)
        if sha is None:
            raise KeyError(f"{rev!r} is not a commit in {self.path}")
        return sha

    def has_commit(self, sha: str) -> bool:
        return self.resolve(sha) == sha

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is ``descendant`` or in its history (a fast-forward from one to the other)."""
        done = subprocess.run(
            ["git", f"--git-dir={self.path}", "merge-base", "--is-ancestor", ancestor, descendant],
            env=git_env(),
            capture_output=True,
        )
        return done.returncode == 0

    def commit_info(self, rev: str) -> CommitInfo:
        sha = self.rev_parse(rev)
        header, _, message = self.git("cat-file", "commit", sha).partition("\n\n")
        fields: dict[str, list[str]] = {}
        for line in header.splitlines():
            if not line.startswith(" "):  # continuation lines belong to gpgsig & co.
                key, _, value = line.partition(" ")
                fields.setdefault(key, []).append(value)
        return CommitInfo(
            sha=sha,
            tree=fields["tree"][0],
            parents=tuple(fields.get("parent", [])),
            author=_signature(fields["author"][0]),
            committer=_signature(fields["committer"][0]),
            message=message,
        )

    def merge_tree(self, ours: str, theirs: str) -> str | None:
        """The tree of merging ``theirs`` into ``ours`` (from their merge base), or None on a conflict."""
        done = subprocess.run(
            ["git", f"--git-dir={self.path}", "merge-tree", "--write-tree", "--no-messages", "--name-only",
             "--allow-unrelated-histories", ours, theirs],
            env=git_env(),
            capture_output=True,
        )
        if done.returncode == 1:
            return None
        if done.returncode != 0:
            raise RuntimeError(f"git merge-tree {ours} {theirs} failed: {done.stderr.decode().strip()}")
        return done.stdout.decode().split("\n", 1)[0].strip()

    def cherry_pick_tree(self, commit: str, onto: str) -> str | None:
        """The tree of applying ``commit``'s change (against its first parent) on ``onto``, or None on a
        conflict. merge-tree of git < 2.40 has no --merge-base, so the merge base is forced with a scratch
        commit: ``onto``'s tree on ``commit``'s parent (it stays unreachable)."""
        info = self.commit_info(commit)
        parent = info.parents[0] if info.parents else self.commit_tree(EMPTY_TREE, [], "empty")
        scratch = self.commit_tree(self.commit_info(onto).tree, [parent], "scratch")
        return self.merge_tree(scratch, commit)

    def refs(self, prefix: str = "refs/") -> dict[str, str]:
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        return dict(line.split(" ", 1) for line in out.splitlines())

    def ls_files(self, rev: str) -> list[str]:
        return self.git("ls-tree", "-r", "--name-only", "-z", "--end-of-options", rev).split("\0")[:-1]

    def read(self, rev: str, path: str) -> bytes:
        return subprocess.run(
            ["git", f"--git-dir={self.path}", "cat-file", "blob", f"{rev}:{path}"],
            env=git_env(),
            capture_output=True,
            check=True,
        ).stdout

    # ------------------------------------------------------------------ writing

    def commit(
        self,
        files: Mapping[str, FileValue] | None = None,
        *,
        branch: str | None = "main",
        parent: str | None = None,
        parents: Sequence[str] | None = None,
        message: str | None = None,
        replace: bool = False,
    ) -> str:
        """Create a commit (see the module docstring) and return its sha."""
        if parent is not None and parents is not None:
            raise ValueError("give parent= or parents=, not both")
        if parents is None:
            if parent is not None:
                parents = [parent]
            else:
                tip = self.resolve(_full_ref(branch)) if branch is not None else None
                parents = [tip] if tip else []
        parent_shas = [self.rev_parse(rev) for rev in parents]
        self._commits += 1
        when = f"{EPOCH + self._commits} +0000".encode()
        text = (message if message is not None else f"commit {self._commits}").encode()
        if not text.endswith(b"\n"):
            text += b"\n"
        stream = [
            b"feature done\n",
            f"commit {_SCRATCH_REF}\n".encode(),
            b"mark :1\n",
            b"author %s <%s> %s\n" % (AUTHOR_NAME.encode(), AUTHOR_EMAIL.encode(), when),
            b"committer %s <%s> %s\n" % (COMMITTER_NAME.encode(), COMMITTER_EMAIL.encode(), when),
            _data(text),
        ]
        if parent_shas:
            stream.append(f"from {parent_shas[0]}\n".encode())
        else:  # fast-import would otherwise continue from the scratch ref if it exists
            stream = [stream[0], f"reset {_SCRATCH_REF}\n".encode(), *stream[1:]]
        stream += [f"merge {sha}\n".encode() for sha in parent_shas[1:]]
        if replace:
            stream.append(b"deleteall\n")
        for path, value in sorted((files or {}).items()):
            if value is None:
                stream.append(b"D " + _quote(path) + b"\n")
            else:
                entry = value if isinstance(value, FileEntry) else FileEntry(_bytes(value))
                if entry.mode == "160000":
                    stream.append(b"M 160000 " + entry.content + b" " + _quote(path) + b"\n")
                else:
                    stream.append(f"M {entry.mode} inline ".encode() + _quote(path) + b"\n" + _data(entry.content))
        stream += [b"\n", b"get-mark :1\n"]
        if branch is not None:
            stream += [f"reset {_full_ref(branch)}\n".encode(), b"from :1\n\n"]
        stream += [f"reset {_SCRATCH_REF}\n".encode(), f"from {ZERO_SHA}\n\n".encode(), b"done\n"]
        out = self.git("fast-import", "--quiet", "--force", "--date-format=raw", input=b"".join(stream))
        sha = out.strip()
        if branch is not None:
            self._notify(_full_ref(branch), sha)
        return sha

    def commit_tree(
        self,
        tree: str,
        parents: Sequence[str],
        message: str,
        *,
        author: Signature | None = None,
        committer: Signature | None = None,
    ) -> str:
        """A commit of ``tree`` (no ref moves); author and committer default to this module's, dated now."""
        env = {}
        for role, who in (("AUTHOR", author), ("COMMITTER", committer)):
            if who is not None:
                env |= {f"GIT_{role}_NAME": who.name, f"GIT_{role}_EMAIL": who.email,
                        f"GIT_{role}_DATE": f"{who.when} +0000"}
        args = [arg for parent in parents for arg in ("-p", parent)]
        done = subprocess.run(
            ["git", f"--git-dir={self.path}", "commit-tree", tree, *args],
            input=message.encode(),
            env=git_env(env),
            capture_output=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"git commit-tree failed: {done.stderr.decode().strip()}")
        return done.stdout.decode().strip()

    def set_ref(self, ref: str, rev: str, *, expected: str | None = None) -> str:
        """Point ``ref`` (full name, e.g. refs/pull/7/head; a bare name means a branch) at ``rev``.
        With ``expected`` (a sha, or ZERO_SHA for "must not exist"), only if the ref is still there,
        else ``RefMoved``."""
        ref, sha = _full_ref(ref), self.rev_parse(rev)
        try:
            self.git("update-ref", "--no-deref", ref, sha, *([expected] if expected is not None else []))
        except RuntimeError as error:
            if expected is None:
                raise
            raise RefMoved(str(error)) from None
        self._notify(ref, sha)
        return sha

    def delete_ref(self, ref: str) -> None:
        ref = _full_ref(ref)
        self.git("update-ref", "--no-deref", "-d", ref)
        self._notify(ref, None)

    def fetch_from(self, other: GitRepo, rev: str, ref: str) -> str:
        """Copy ``rev`` (and its history) from another repository into ``ref`` here - how GitHub's fork
        network makes a fork's commits visible in the base repository (refs/pull/N/head)."""
        sha = other.rev_parse(rev)
        self.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(other.path), f"+{sha}:{_full_ref(ref)}")
        self._notify(_full_ref(ref), sha)
        return sha

    def _notify(self, ref: str, sha: str | None) -> None:
        if self._on_ref_update is not None:
            self._on_ref_update(ref, sha)
