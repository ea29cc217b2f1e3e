"""Checkouts (pipeline/workspace/) against the fake GitHub's git smart HTTP (real git, real HTTP), and that git server."""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_installation_access_token

from pipeline.workspace.checkout import Checkouts
from pipeline.workspace.errors import CheckoutError, PullRequestMoved
from pipeline.workspace.trees import remove_tree
from tests.fakes.fixtures import APP_ID
from tests.fakes.github import FakeGitHub
from tests.gitrepos import GitRepo, executable, git_env, submodule, symlink

FILES = {"README.md": "hi\n", "app.py": "print(1)\n", "src/lib/util.py": "X = 1\n"}


# ------------------------------------------------------------------------------------------ helpers


async def installation_token(fake: FakeGitHub, key: str, installation_id: int = 1) -> str:
    async with aiohttp.ClientSession() as session:
        gh = GitHubAPI(session, "codegenapp-tests", base_url=fake.api_url)
        response = await get_installation_access_token(
            gh, installation_id=str(installation_id), app_id=str(APP_ID), private_key=key
        )
    return str(response["token"])


def git(workspace: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=workspace, env=git_env(), capture_output=True, text=True, check=True)
    return done.stdout.strip()


def git_calls(fake: FakeGitHub, full_name: str = "acme/widgets") -> list[str]:
    return [call.describe() for call in fake.calls_to("*", f"/{full_name}.git/**")]


def all_bytes_under(root: Path) -> bytes:
    chunks = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                chunks.append(path.read_bytes())
    return b"\n".join(chunks)


@pytest.fixture
async def token(fake_github: FakeGitHub, app_private_key: str) -> str:
    fake_github.add_installation(1, "acme", repos=["widgets"])
    return await installation_token(fake_github, app_private_key)


@pytest.fixture
def widgets(fake_github: FakeGitHub, token: str) -> GitRepo:
    """acme/widgets with main (2 commits) and PR #7 (feature, one commit on main)."""
    repo = fake_github.git_repo("acme/widgets")
    repo.commit(FILES, branch="main", message="init")
    repo.commit({"app.py": "print(2)\n"}, branch="main", message="two")
    repo.commit(
        {
            "app.py": "print(3)\n",
            "README.md": None,
            "run.sh": executable("#!/bin/sh\n"),
            "link": symlink("app.py"),
            "vendor/sub": submodule("c" * 40),
        },
        branch="feature",
        parent="main",
        message="feature",
    )
    fake_github.add_pull_from_repo("acme/widgets", 7, head_ref="feature", base_ref="main")
    return repo


@pytest.fixture
async def checkouts(tmp_path: Path, fake_github: FakeGitHub) -> AsyncIterator[Checkouts]:
    yield Checkouts(tmp_path / "cache", github_url=fake_github.base_url)


# ------------------------------------------------------------------------------------------ checkout


async def test_checkout_of_a_pr_head(
    checkouts: Checkouts, widgets: GitRepo, token: str, tmp_path: Path, fake_github: FakeGitHub
) -> None:
    head = widgets.rev_parse("feature")
    widgets.set_ref("refs/tags/v1.0", "main~1")
    dest = tmp_path / "ws" / "pr7"

    result = await checkouts.checkout("acme/widgets", sha=head, token=token, dest=dest, pr_number=7)

    assert result.sha == head and result.workspace == dest and result.fetched
    assert result.tracked_files == {"app.py", "src/lib/util.py", "run.sh", "link", "vendor/sub"}
    assert result.tracked_files == set(git(dest, "ls-files").splitlines())
    assert (dest / "app.py").read_text() == "print(3)\n"
    assert not (dest / "README.md").exists()
    assert os.readlink(dest / "link") == "app.py"
    assert (dest / "run.sh").stat().st_mode & stat.S_IXUSR
    assert git(dest, "rev-parse", "HEAD") == head
    assert git(dest, "status", "--porcelain") == ""
    assert git(dest, "log", "--format=%s").splitlines() == ["feature", "two", "init"]
    assert git(dest, "describe", "--tags") == "v1.0-2-g" + head[:7]  # tags follow; setuptools-scm works
    assert git(dest, "diff", "--name-only", "HEAD~1") == "README.md\napp.py\nlink\nrun.sh\nvendor/sub"
    assert (dest / "vendor" / "sub").is_dir() and not any((dest / "vendor" / "sub").iterdir())
    # A standalone repository: nothing points into the mirror, no remote, no hooks, detached HEAD.
    git_dir = dest / ".git"
    assert git_dir.is_dir() and not (git_dir / "objects/info/alternates").exists()
    assert git(dest, "remote") == "" and not (git_dir / "hooks").exists()
    assert (git_dir / "HEAD").read_text().strip() == head
    assert str(checkouts.root) not in all_bytes_under(git_dir).decode("latin-1")
    # Fetched from the base repository with the installation token.
    calls = fake_github.calls_to("*", "/acme/widgets.git/**")
    assert calls and {c.operation for c in calls} == {"git-upload-pack"} and {c.installation_id for c in calls} == {1}
    assert result.duration_seconds < 5


async def test_warm_mirror_with_the_sha_does_not_fetch(
    checkouts: Checkouts, widgets: GitRepo, token: str, tmp_path: Path, fake_github: FakeGitHub
) -> None:
    head = widgets.rev_parse("feature")
    first = await checkouts.checkout("acme/widgets", sha=head, token=token, dest=tmp_path / "a", pr_number=7)
    seen = len(git_calls(fake_github))

    second = await checkouts.checkout("acme/widgets", sha=head, token=token, dest=tmp_path / "b", pr_number=7)
    base = await checkouts.checkout("acme/widgets", sha=widgets.rev_parse("main"), token=None, dest=tmp_path / "c")

    assert first.fetched and not second.fetched and not base.fetched
    assert len(git_calls(fake_github)) == seen  # no request at all, not even info/refs
    assert second.tracked_files == first.tracked_files
    assert git(tmp_path / "b", "rev-parse", "HEAD") == head
    assert (tmp_path / "c" / "app.py").read_text() == "print(2)\n"
    # The PR moves on: its new head is not in the mirror, so it is fetched.
    new_head = widgets.commit({"app.py": "print(4)\n"}, branch="feature")
    fake_github.add_pull_from_repo("acme/widgets", 7)
    third = await checkouts.checkout("acme/widgets", sha=new_head, token=token, dest=tmp_path / "d", pr_number=7)
    assert third.fetched and len(git_calls(fake_github)) > seen
    assert (tmp_path / "d" / "app.py").read_text() == "print(4)\n"


async def test_a_pr_that_moved_is_an_error(
    checkouts: Checkouts, widgets: GitRepo, token: str, tmp_path: Path
) -> None:
    old_head = widgets.rev_parse("feature")
    new_head = widgets.commit({"app.py": "print(5)\n"}, branch="feature")
    widgets.set_ref("refs/pull/7/head", new_head)  # what GitHub does when the branch is pushed to
    dest = tmp_path / "ws"

    with pytest.raises(PullRequestMoved) as caught:
        await checkouts.checkout("acme/widgets", sha=old_head, token=token, dest=dest, pr_number=7)

    error = caught.value
    assert isinstance(error, CheckoutError) and error.reason == "moved"
    assert (error.ref, error.ref_sha, error.sha) == ("refs/pull/7/head", new_head, old_head)
    assert str(error) == (
        f"refs/pull/7/head is {new_head[:7]} but the event's head is {old_head[:7]} (the PR moved); "
        "validating the event's head needs a new event"
    )
    assert not dest.exists()


async def test_fork_pr_is_fetched_from_the_base_repository(
    checkouts: Checkouts, widgets: GitRepo, token: str, tmp_path: Path, fake_github: FakeGitHub
) -> None:
    fake_github.add_repo("alice/widgets", installation_id=None)  # a fork the app is not installed on
    fork = fake_github.git_repo("alice/widgets")
    fork.fetch_from(widgets, "main", "refs/heads/main")
    head = fork.commit({"fork.txt": "from alice\n"}, branch="patch", parent="main")
    pull = fake_github.add_pull_from_repo("acme/widgets", 8, head_ref="patch", head_full_name="alice/widgets")
    assert pull["head"]["repo"]["full_name"] == "alice/widgets" and pull["head"]["sha"] == head

    result = await checkouts.checkout("acme/widgets", sha=head, token=token, dest=tmp_path / "ws", pr_number=8)

    assert (tmp_path / "ws" / "fork.txt").read_text() == "from alice\n"
    assert "fork.txt" in result.tracked_files and git(tmp_path / "ws", "rev-parse", "HEAD") == head
    assert git_calls(fake_github, "alice/widgets") == []  # only the base repository was asked


async def test_push_event_ref_and_bare_sha(
    checkouts: Checkouts, widgets: GitRepo, token: str, tmp_path: Path
) -> None:
    main = widgets.rev_parse("main")
    older = widgets.rev_parse("main~1")
    result = await checkouts.checkout(
        "acme/widgets", sha=older, token=token, dest=tmp_path / "a", ref="refs/heads/main"
    )
    assert result.fetched and (tmp_path / "a" / "app.py").read_text() == "print(1)\n"  # found in the ref's history
    dangling = widgets.commit({"x": "y"}, branch=None, parent=main)
    result = await checkouts.checkout("acme/widgets", sha=dangling, token=token, dest=tmp_path / "b")
    assert result.fetched and git(tmp_path / "b", "rev-parse", "HEAD") == dangling


async def test_missing_token_or_wrong_token_is_an_authentication_error(
    checkouts: Checkouts, fake_github: FakeGitHub, token: str, tmp_path: Path, app_private_key: str
) -> None:
    fake_github.add_repo("acme/secret", installation_id=1, private=True)
    head = fake_github.git_repo("acme/secret").commit({"s.txt": "secret"})
    fake_github.add_installation(2, "other", repos=["thing"])
    foreign = await installation_token(fake_github, app_private_key, installation_id=2)
    cases = {None: "auth", "ghs_" + "x" * 36: "auth", foreign: "not_found"}
    for given, reason in cases.items():
        with pytest.raises(CheckoutError) as caught:
            await checkouts.checkout("acme/secret", sha=head, token=given, dest=tmp_path / "ws", ref="refs/heads/main")
        assert caught.value.reason == reason, caught.value
        if reason == "auth":
            assert "authentication failed" in str(caught.value)
        assert given is None or given not in str(caught.value)
        assert not (tmp_path / "ws").exists()
    fake_github.expire_tokens(1)
    with pytest.raises(CheckoutError, match="authentication failed"):
        await checkouts.checkout("acme/secret", sha=head, token=token, dest=tmp_path / "ws", ref="refs/heads/main")
    assert len(fake_github.take_errors()) == 3  # bad token, foreign token, expired token


async def test_the_token_is_never_written_to_disk_put_in_argv_or_logged(
    widgets: GitRepo, token: str, tmp_path: Path, fake_github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    argv_log = tmp_path / "argv.log"
    wrapper = tmp_path / "git-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {argv_log}\nexec git "$@"\n')
    wrapper.chmod(0o755)
    checkouts = Checkouts(tmp_path / "cache", github_url=fake_github.base_url, git=str(wrapper))
    caplog.set_level("DEBUG")
    head = widgets.rev_parse("feature")
    await checkouts.checkout("acme/widgets", sha=head, token=token, dest=tmp_path / "ws", pr_number=7)
    moved = widgets.commit({"n": "1"}, branch="feature")
    widgets.set_ref("refs/pull/7/head", moved)
    await checkouts.checkout("acme/widgets", sha=moved, token=token, dest=tmp_path / "w2", pr_number=7)
    with pytest.raises(CheckoutError):  # a fetch that fails
        await checkouts.checkout("acme/widgets", sha="f" * 40, token=token, dest=tmp_path / "w3", pr_number=99)

    header = base64.b64encode(f"x-access-token:{token}".encode())
    everything = all_bytes_under(tmp_path)
    assert b" fetch " in argv_log.read_bytes()
    assert token.encode() not in everything and header not in everything  # includes the argv log
    assert token not in caplog.text and header.decode() not in caplog.text
    config = (checkouts.mirror_path("acme/widgets") / "config").read_text()
    assert f'url = "{checkouts.github_url}/acme/widgets.git"' in config


async def test_a_transient_server_error_is_retried(
    tmp_path: Path, widgets: GitRepo, token: str, fake_github: FakeGitHub
) -> None:
    checkouts = Checkouts(tmp_path / "cache", github_url=fake_github.base_url, retry_delays=(0.01,))
    head = widgets.rev_parse("feature")
    fake_github.fail_next("POST", "/acme/widgets.git/git-upload-pack", status=502)
    result = await checkouts.checkout("acme/widgets", sha=head, token=token, dest=tmp_path / "a", pr_number=7)
    assert result.fetched and (tmp_path / "a" / "app.py").exists()
    fake_github.fail_next("GET", "/acme/widgets.git/info/refs", status=503, times=2)
    with pytest.raises(CheckoutError) as caught:
        await checkouts.checkout("acme/widgets", sha="e" * 40, token=token, dest=tmp_path / "b", pr_number=7)
    assert caught.value.reason == "git" and "503" in str(caught.value)


async def test_unknown_pr_ref(checkouts: Checkouts, widgets: GitRepo, token: str, tmp_path: Path) -> None:
    with pytest.raises(CheckoutError) as caught:
        await checkouts.checkout("acme/widgets", sha="f" * 40, token=token, dest=tmp_path / "ws", pr_number=99)
    assert caught.value.reason == "missing_ref" and "refs/pull/99/head" in str(caught.value)


async def test_invalid_arguments(checkouts: Checkouts, tmp_path: Path, fake_github: FakeGitHub) -> None:
    sha = "a" * 40
    bad = [
        dict(full_name="acme", sha=sha),
        dict(full_name="acme/../x", sha=sha),
        dict(full_name="acme/widgets", sha="HEAD"),
        dict(full_name="acme/widgets", sha="--upload-pack=touch /tmp/x"),
        dict(full_name="acme/widgets", sha=sha, ref="main"),
        dict(full_name="acme/widgets", sha=sha, ref="refs/heads/a..b"),
        dict(full_name="acme/widgets", sha=sha, pr_number=0),
    ]
    for case in bad:
        with pytest.raises(CheckoutError) as caught:
            await checkouts.checkout(
                case.pop("full_name"), token=None, dest=tmp_path / "ws", **case  # type: ignore[arg-type]
            )
        assert caught.value.reason == "invalid", case
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(CheckoutError) as caught:
        await checkouts.checkout("acme/widgets", sha=sha, token=None, dest=tmp_path / "full")
    assert caught.value.reason == "workspace" and (tmp_path / "full" / "x").exists()
    assert fake_github.calls == []


async def test_concurrent_checkouts_of_one_repository_fetch_once(
    checkouts: Checkouts, widgets: GitRepo, token: str, tmp_path: Path, fake_github: FakeGitHub
) -> None:
    head = widgets.rev_parse("feature")
    results = await asyncio.gather(
        *(
            checkouts.checkout("acme/widgets", sha=head, token=token, dest=tmp_path / f"ws{i}", pr_number=7)
            for i in range(4)
        )
    )
    assert sorted(r.fetched for r in results) == [False, False, False, True]
    for result in results:
        assert (result.workspace / "app.py").read_text() == "print(3)\n"
        assert git(result.workspace, "status", "--porcelain") == ""
    assert len(fake_github.calls_to("GET", "/acme/widgets.git/info/refs")) == 1


async def test_least_recently_used_mirrors_are_evicted(
    tmp_path: Path, fake_github: FakeGitHub, token: str
) -> None:
    checkouts = Checkouts(tmp_path / "cache", github_url=fake_github.base_url, max_mirrors=2)
    heads = {}
    for name in ("a", "b", "c", "d"):
        fake_github.add_repo(f"acme/{name}", installation_id=1)
        heads[name] = fake_github.git_repo(f"acme/{name}").commit({"name": name})
    uses = []

    async def use(name: str) -> None:
        uses.append(name)
        await checkouts.checkout(f"acme/{name}", sha=heads[name], token=token, dest=tmp_path / "ws" / str(len(uses)))

    def mirrors() -> set[str]:
        return {p.name for p in (tmp_path / "cache" / "mirrors" / "acme").glob("*.git")}

    await use("a")
    await use("b")
    await use("a")  # a is now more recent than b
    await use("c")
    assert mirrors() == {"a.git", "c.git"}
    # A mirror in use is never evicted: hold a's lock as a running checkout would.
    async with checkouts.mirrors.get("acme/a").lock:
        await use("d")
    assert mirrors() == {"a.git", "d.git"}  # c was the least recently used that was free
    assert not any((tmp_path / "cache" / "trash").iterdir())


async def test_remove_a_workspace_pr_code_has_mangled(
    checkouts: Checkouts, widgets: GitRepo, token: str, tmp_path: Path
) -> None:
    dest = tmp_path / "ws"
    await checkouts.checkout("acme/widgets", sha=widgets.rev_parse("feature"), token=token, dest=dest, pr_number=7)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (dest / "escape").symlink_to(outside)
    (dest / "escape-file").symlink_to(outside / "keep.txt")
    locked = dest / "build" / "locked"
    locked.mkdir(parents=True)
    (locked / "inner").mkdir()
    (locked / "inner" / "f").write_text("x")
    (dest / "readonly").mkdir()
    (dest / "readonly" / "g").write_text("y")
    deep = dest / "deep"
    deep.mkdir()
    current = deep
    for _ in range(200):
        current = current / "d"
        current.mkdir()
    if os.geteuid() == 0:  # as the sandbox leaves it: owned by its uid, except hard-linked files
        for path in [dest, *dest.rglob("*")]:
            st = path.lstat()
            if not (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
                os.chown(path, 61000, 61000, follow_symlinks=False)
    (locked / "inner").chmod(0)
    locked.chmod(0)
    (dest / "readonly").chmod(0o500)
    (dest / "src").chmod(0o000)

    remove_tree(dest)

    assert not dest.exists()
    assert (outside / "keep.txt").read_text() == "keep"
    remove_tree(dest)  # already gone: fine
    link = tmp_path / "link-to-outside"
    link.symlink_to(outside)
    remove_tree(link)
    assert not link.is_symlink() and (outside / "keep.txt").exists()


def test_remove_tree_without_root_chmods_what_it_cannot_enter(tmp_path: Path) -> None:
    """What remove_tree does when the app is not root: run as the sandbox uid (as root) or as ourselves."""
    top = Path(tempfile.mkdtemp(dir="/tmp")) if os.geteuid() == 0 else tmp_path / "top"
    top.mkdir(exist_ok=True)
    try:
        for sub in ("a/b/c", "ro/x", "none/y"):
            (top / sub).mkdir(parents=True)
            (top / sub / "f").write_text("f")
        (top / "escape").symlink_to(tmp_path)
        (tmp_path / "keep").write_text("keep")
        if os.geteuid() == 0:
            for path in [top, *top.rglob("*")]:
                os.chown(path, 61000, 61000, follow_symlinks=False)
        (top / "a" / "b").chmod(0)
        (top / "ro").chmod(0o500)
        (top / "none").chmod(0)
        pid = os.fork()
        if pid == 0:  # the child: drop to the sandbox uid (when root) and remove the tree
            status = 1
            try:
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(61000)
                    os.setuid(61000)
                remove_tree(top)
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not top.exists() and (tmp_path / "keep").exists()
    finally:
        remove_tree(top)


def test_remove_tree_falls_back_to_rm_for_very_deep_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "top"
    current = top
    for _ in range(30):
        current = current / "d"
    current.mkdir(parents=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 12, hard))  # fewer than 30 levels of descriptors
    try:
        remove_tree(top)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not top.exists()


async def test_git_timeout_kills_git(tmp_path: Path, widgets: GitRepo, token: str, fake_github: FakeGitHub) -> None:
    slow = tmp_path / "slow-git"
    slow.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = fetch ] && exec sleep 30; done\nexec git "$@"\n')
    slow.chmod(0o755)
    checkouts = Checkouts(tmp_path / "cache", github_url=fake_github.base_url, git=str(slow), fetch_timeout=0.1)
    with pytest.raises(CheckoutError) as caught:
        await checkouts.checkout("acme/widgets", sha=widgets.rev_parse("feature"), token=token,
                                 dest=tmp_path / "ws", pr_number=7)
    assert caught.value.reason == "timeout" and "timed out" in str(caught.value)


# --------------------------------------------------------------------------- the fake's git server


async def test_fake_git_server_auth_rules(
    fake_github: FakeGitHub, widgets: GitRepo, token: str, tmp_path: Path
) -> None:
    fake_github.add_repo("acme/secret", installation_id=1, private=True)
    fake_github.git_repo("acme/secret").commit({"s": "1"})
    loop = asyncio.get_running_loop()

    def ls_remote(full_name: str, secret: str | None) -> subprocess.CompletedProcess[str]:
        extra = {}
        if secret is not None:
            header = base64.b64encode(f"x-access-token:{secret}".encode()).decode()
            extra = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                     "GIT_CONFIG_VALUE_0": f"Authorization: Basic {header}"}
        return subprocess.run(["git", "ls-remote", f"{fake_github.base_url}/{full_name}.git"],
                              env=git_env(extra), capture_output=True, text=True)

    async def run(full_name: str, secret: str | None) -> subprocess.CompletedProcess[str]:
        return await loop.run_in_executor(None, ls_remote, full_name, secret)

    public_anonymous = await run("acme/widgets", None)
    assert public_anonymous.returncode == 0 and "refs/pull/7/head" in public_anonymous.stdout
    assert (await run("acme/secret", token)).returncode == 0
    denied = await run("acme/secret", None)
    assert denied.returncode != 0 and "terminal prompts disabled" in denied.stderr
    assert fake_github.calls_to("GET", "/acme/secret.git/info/refs")[1].status == 401
    assert fake_github.errors() == []  # the anonymous challenge is normal git behaviour
    assert (await run("acme/secret", "ghs_nope")).returncode != 0
    assert fake_github.calls_to("GET", "/acme/secret.git/info/refs")[-1].status == 401
    assert fake_github.take_errors() == [
        "GET /acme/secret.git/info/refs -> 401: git: bad credentials (401 Bad credentials (unknown token))"
    ]


async def test_fake_git_server_push_moves_branches_and_pulls(
    fake_github: FakeGitHub, widgets: GitRepo, token: str, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    header = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    env = git_env({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                   "GIT_CONFIG_VALUE_0": f"Authorization: Basic {header}"})
    loop = asyncio.get_running_loop()

    def run(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)

    async def arun(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return await loop.run_in_executor(None, lambda: run(*args, cwd=cwd))

    cloned = await arun("clone", "-q", "-b", "feature", f"{fake_github.base_url}/acme/widgets.git", str(clone))
    assert cloned.returncode == 0, cloned.stderr
    (clone / "agent.txt").write_text("by the agent\n")
    run("add", "agent.txt", cwd=clone)
    run("commit", "-qm", "agent", cwd=clone)
    new_head = run("rev-parse", "HEAD", cwd=clone).stdout.strip()
    pushed = await arun("push", "-q", "origin", "HEAD:feature", "HEAD:refs/heads/agent", cwd=clone)
    assert pushed.returncode == 0, pushed.stderr
    assert fake_github.calls_to("POST", "/acme/widgets.git/git-receive-pack")[0].installation_id == 1
    assert widgets.refs("refs/pull/")["refs/pull/7/head"] == new_head
    assert fake_github.pulls[("acme/widgets", 7)]["head"]["sha"] == new_head
    hidden = await arun("push", "origin", "HEAD:refs/pull/7/head", cwd=clone)
    assert hidden.returncode != 0 and "hidden ref" in hidden.stderr
