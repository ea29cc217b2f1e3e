"""The fake GitHub's merges, refs, commits, reviews and pushes against a real git repository, over real
HTTP (gidgethub for the REST API, the git CLI for smart HTTP), GitHub's answers included."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import gidgethub
import pytest
from gidgethub.aiohttp import GitHubAPI

from tests import ghfixtures
from tests.fakes.github import FakeGitHub
from tests.gitrepos import GitRepo, git_env
from tests.test_checkout import token  # noqa: F401 (fixture: an installation token for acme/widgets)

REPO = "/repos/acme/widgets"


@pytest.fixture
async def gh(fake_github: FakeGitHub, token: str) -> AsyncIterator[GitHubAPI]:
    async with aiohttp.ClientSession() as session:
        yield GitHubAPI(session, "codegenapp-tests", base_url=fake_github.api_url, oauth_token=token)


@pytest.fixture
def widgets(fake_github: FakeGitHub, token: str) -> GitRepo:
    """acme/widgets: main has app.py and lib.py; PR #7 (feature) changes app.py in two commits."""
    repo = fake_github.git_repo("acme/widgets")
    repo.commit({"app.py": "a = 1\n", "lib.py": "b = 1\n"}, branch="main", message="init")
    repo.commit({"app.py": "a = 2\n"}, branch="feature", parent="main", message="feature one\n\nwhy")
    repo.commit({"new.py": "n = 1\n"}, branch="feature", message="feature two")
    fake_github.add_pull_from_repo("acme/widgets", 7, head_ref="feature", title="Better widgets")
    return repo


async def refused(call: Any) -> tuple[int, str]:
    """GitHub's status and message for a request that must fail."""
    with pytest.raises(gidgethub.BadRequest) as raised:
        await call
    return raised.value.status_code, str(raised.value)


async def run_git(cwd: Path, token: str | None, *args: str) -> tuple[int, str]:
    """git over the fake's smart HTTP, the token sent as GitHub's Basic auth; (exit code, stderr)."""
    extra = {}
    if token is not None:
        header = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        extra = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                 "GIT_CONFIG_VALUE_0": f"Authorization: Basic {header}"}
    process = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, env=git_env(extra), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    return process.returncode or 0, err.decode()


async def clone(fake: FakeGitHub, token: str, tmp_path: Path, branch: str = "main") -> Path:
    dest = tmp_path / "clone"
    code, err = await run_git(tmp_path, token, "clone", "-q", "-b", branch, f"{fake.base_url}/acme/widgets.git", str(dest))
    assert code == 0, err
    return dest


async def commit_in(workdir: Path, name: str, content: str, message: str) -> None:
    (workdir / name).write_text(content)
    for args in (("add", name), ("commit", "-qm", message)):
        assert (await run_git(workdir, None, *args))[0] == 0


# ------------------------------------------------------------------------------------------ pull merges


async def test_merge_makes_a_merge_commit_and_moves_the_base(fake_github: FakeGitHub, gh: GitHubAPI,
                                                            widgets: GitRepo) -> None:
    head, tip = widgets.rev_parse("feature"), widgets.rev_parse("main")
    merged = await gh.put(f"{REPO}/pulls/7/merge", data={"sha": head})

    assert merged["merged"] is True and merged["message"] == "Pull Request successfully merged"
    commit = widgets.commit_info(merged["sha"])
    assert commit.parents == (tip, head)
    assert commit.message == "Merge pull request #7 from acme/feature\n\nBetter widgets\n"
    assert commit.committer.name == "GitHub" and commit.author.name == "codegenapp-test[bot]"
    assert widgets.ls_files(merged["sha"]) == ["app.py", "lib.py", "new.py"]
    assert widgets.rev_parse("main") == merged["sha"]
    assert (await gh.getitem(f"{REPO}/branches/main"))["commit"]["sha"] == merged["sha"]
    pull = await gh.getitem(f"{REPO}/pulls/7")
    assert (pull["state"], pull["merged"], pull["merge_commit_sha"]) == ("closed", True, merged["sha"])
    assert [(m["number"], m["sha"], m["head_sha"], m["merge_method"], m["installation_id"])
            for m in fake_github.merges] == [(7, merged["sha"], head, "merge", 1)]
    assert [c.status for c in fake_github.calls_to("PUT", "/repos/acme/widgets/pulls/7/merge")] == [200]


async def test_merge_title_and_message_replace_githubs(gh: GitHubAPI, widgets: GitRepo) -> None:
    merged = await gh.put(f"{REPO}/pulls/7/merge", data={"commit_title": "Land #7", "commit_message": "tested"})
    assert widgets.commit_info(merged["sha"]).message == "Land #7\n\ntested\n"


async def test_squash_is_one_commit_with_the_merged_tree(fake_github: FakeGitHub, gh: GitHubAPI,
                                                         widgets: GitRepo) -> None:
    tip = widgets.commit({"lib.py": "b = 2\n"}, branch="main", message="meanwhile")  # the base moved on
    merged = await gh.put(f"{REPO}/pulls/7/merge", data={"merge_method": "squash"})

    commit = widgets.commit_info(merged["sha"])
    assert commit.parents == (tip,)
    assert commit.message == "Better widgets (#7)\n\n* feature one\n\n* feature two\n"
    assert {p: widgets.read(merged["sha"], p) for p in widgets.ls_files(merged["sha"])} == {
        "app.py": b"a = 2\n", "lib.py": b"b = 2\n", "new.py": b"n = 1\n"}
    assert fake_github.merges[0]["merge_method"] == "squash"


async def test_rebase_replays_each_commit_on_the_base(gh: GitHubAPI, widgets: GitRepo) -> None:
    tip = widgets.commit({"lib.py": "b = 2\n"}, branch="main", message="meanwhile")
    first, second = widgets.commit_info("feature~1"), widgets.commit_info("feature")
    merged = await gh.put(f"{REPO}/pulls/7/merge", data={"merge_method": "rebase"})

    top = widgets.commit_info(merged["sha"])
    below = widgets.commit_info(top.parents[0])
    assert below.parents == (tip,)
    assert [below.message, top.message] == [first.message, second.message]
    assert below.author == first.author and top.committer.name == "GitHub"
    assert top.sha != second.sha and widgets.read(top.sha, "lib.py") == b"b = 2\n"
    assert widgets.read(top.sha, "app.py") == b"a = 2\n" and widgets.rev_parse("main") == top.sha


async def test_a_conflict_is_405_and_the_pull_turns_dirty(fake_github: FakeGitHub, gh: GitHubAPI,
                                                         widgets: GitRepo) -> None:
    assert (await gh.getitem(f"{REPO}/pulls/7"))["mergeable_state"] == "clean"
    tip = widgets.commit({"app.py": "a = 3\n"}, branch="main", message="conflicting")
    pull = await gh.getitem(f"{REPO}/pulls/7")
    assert (pull["mergeable"], pull["mergeable_state"]) == (False, "dirty")

    for method in ("merge", "squash", "rebase"):
        assert await refused(gh.put(f"{REPO}/pulls/7/merge", data={"merge_method": method})) == (
            405, "Pull Request is not mergeable")
    assert widgets.rev_parse("main") == tip and fake_github.merges == []


async def test_a_stale_sha_is_409(fake_github: FakeGitHub, gh: GitHubAPI, widgets: GitRepo) -> None:
    status, message = await refused(gh.put(f"{REPO}/pulls/7/merge", data={"sha": widgets.rev_parse("main")}))
    assert (status, message) == (409, "Head branch was modified. Review and try the merge again.")
    assert fake_github.merges == []


async def test_a_merge_method_github_does_not_know_is_refused_by_the_schema(
    fake_github: FakeGitHub, gh: GitHubAPI, widgets: GitRepo
) -> None:
    ghfixtures.require_fixtures()
    status, _ = await refused(gh.put(f"{REPO}/pulls/7/merge", data={"merge_method": "fast-forward"}))
    assert status == 422
    assert "'fast-forward' is not one of ['merge', 'squash', 'rebase']" in fake_github.take_errors()[0]
    assert fake_github.merges == [] and fake_github.pulls[("acme/widgets", 7)]["state"] == "open"


async def test_merging_one_pull_makes_a_conflicting_one_dirty_and_a_push_fixes_it(
    fake_github: FakeGitHub, gh: GitHubAPI, widgets: GitRepo, token: str, tmp_path: Path
) -> None:
    widgets.commit({"app.py": "a = 9\n"}, branch="other", parent="main", message="other")
    fake_github.add_pull_from_repo("acme/widgets", 8, head_ref="other")
    assert (await gh.getitem(f"{REPO}/pulls/8"))["mergeable_state"] == "clean"

    await gh.put(f"{REPO}/pulls/7/merge")
    pull = await gh.getitem(f"{REPO}/pulls/8")
    assert (pull["mergeable"], pull["mergeable_state"]) == (False, "dirty")

    workdir = await clone(fake_github, token, tmp_path, branch="other")
    assert (await run_git(workdir, token, "pull", "-q", "--no-rebase", "-X", "theirs", "origin", "main"))[0] == 0
    code, err = await run_git(workdir, token, "push", "-q", "origin", "HEAD:other")
    assert code == 0, err
    pull = await gh.getitem(f"{REPO}/pulls/8")
    assert (pull["mergeable"], pull["mergeable_state"]) == (True, "clean")
    assert pull["head"]["sha"] == widgets.rev_parse("other")


async def test_a_pull_created_or_rebased_through_the_api_has_its_mergeability(gh: GitHubAPI, widgets: GitRepo) -> None:
    widgets.commit({"app.py": "a = 6\n"}, branch="release", parent="main")
    widgets.commit({"app.py": "a = 7\n"}, branch="fix", parent="main")
    created = await gh.post(f"{REPO}/pulls", data={"title": "Fix", "head": "fix", "base": "main"})
    assert (created["mergeable"], created["mergeable_state"]) == (True, "clean")
    moved = await gh.patch(f"{REPO}/pulls/{created['number']}", data={"base": "release"})
    assert (moved["mergeable"], moved["mergeable_state"]) == (False, "dirty")


async def test_without_git_a_merge_is_made_up_as_before(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    fake_github.add_pull("acme/widgets", 3, head_sha="a" * 40, base_sha="b" * 40)
    merged = await gh.put(f"{REPO}/pulls/3/merge")
    assert merged["merged"] and len(merged["sha"]) == 40
    assert (await gh.getitem(f"{REPO}/branches/main"))["commit"]["sha"] == merged["sha"]
    assert fake_github.merges[0]["sha"] == merged["sha"]


# ------------------------------------------------------------------------------------------ branch merges


async def test_merges_endpoint(fake_github: FakeGitHub, gh: GitHubAPI, widgets: GitRepo) -> None:
    tip, head = widgets.rev_parse("main"), widgets.rev_parse("feature")
    merged = await gh.post(f"{REPO}/merges", data={"base": "main", "head": "feature"})
    assert [p["sha"] for p in merged["parents"]] == [tip, head]
    assert merged["commit"]["message"] == "Merge feature into main"
    assert widgets.rev_parse("main") == merged["sha"] == (await gh.getitem(f"{REPO}/branches/main"))["commit"]["sha"]
    assert fake_github.calls_to("POST", "/repos/acme/widgets/merges")[0].status == 201

    assert await gh.post(f"{REPO}/merges", data={"base": "main", "head": head}) is None  # nothing to merge
    assert fake_github.calls_to("POST", "/repos/acme/widgets/merges")[1].status == 204

    widgets.commit({"lib.py": "b = 3\n"}, branch="left", parent="main")
    widgets.commit({"lib.py": "b = 4\n"}, branch="right", parent="main")
    message = {"base": "left", "head": "right", "commit_message": "both"}
    assert await refused(gh.post(f"{REPO}/merges", data=message)) == (409, "Merge conflict")
    assert await refused(gh.post(f"{REPO}/merges", data={"base": "nope", "head": "right"})) == (
        404, "Base does not exist")
    assert await refused(gh.post(f"{REPO}/merges", data={"base": "left", "head": "nope"})) == (
        404, "Head does not exist")
    assert fake_github.errors() == []


async def test_merges_body_is_checked_against_the_schema(fake_github: FakeGitHub, gh: GitHubAPI,
                                                         widgets: GitRepo) -> None:
    ghfixtures.require_fixtures()
    assert (await refused(gh.post(f"{REPO}/merges", data={"base": "main"})))[0] == 422
    assert "'head' is a required property" in fake_github.take_errors()[0]


# ------------------------------------------------------------------------------------------ refs and commits


async def test_create_update_and_delete_refs(fake_github: FakeGitHub, gh: GitHubAPI, widgets: GitRepo) -> None:
    tip, head = widgets.rev_parse("main"), widgets.rev_parse("feature")
    created = await gh.post(f"{REPO}/git/refs", data={"ref": "refs/heads/queue", "sha": tip})
    assert created["ref"] == "refs/heads/queue" and created["object"]["sha"] == tip
    assert widgets.rev_parse("queue") == tip and fake_github.calls_to("POST", "/repos/acme/widgets/git/refs")[0].status == 201
    assert await refused(gh.post(f"{REPO}/git/refs", data={"ref": "refs/heads/queue", "sha": tip})) == (
        422, "Reference already exists")
    assert await refused(gh.post(f"{REPO}/git/refs", data={"ref": "refs/heads/x", "sha": "f" * 40})) == (
        422, "Object does not exist")

    updated = await gh.patch(f"{REPO}/git/refs/heads/queue", data={"sha": head})  # a fast-forward
    assert updated["object"]["sha"] == head == (await gh.getitem(f"{REPO}/git/ref/heads/queue"))["object"]["sha"]
    assert await refused(gh.patch(f"{REPO}/git/refs/heads/queue", data={"sha": tip})) == (
        422, "Update is not a fast forward")
    assert widgets.rev_parse("queue") == head
    assert (await gh.patch(f"{REPO}/git/refs/heads/queue", data={"sha": tip, "force": True}))["object"]["sha"] == tip
    assert (await gh.getitem(f"{REPO}/branches/queue"))["commit"]["sha"] == tip
    assert await refused(gh.patch(f"{REPO}/git/refs/heads/nope", data={"sha": tip})) == (
        422, "Reference does not exist")

    await gh.delete(f"{REPO}/git/refs/heads/queue")
    assert "refs/heads/queue" not in widgets.refs() and "queue" not in fake_github._repo_state("acme/widgets").branches
    assert await refused(gh.getitem(f"{REPO}/git/ref/heads/queue")) == (404, "Not Found")
    assert fake_github.errors() == []


async def test_ref_bodies_are_checked_against_the_schema(fake_github: FakeGitHub, gh: GitHubAPI,
                                                         widgets: GitRepo) -> None:
    ghfixtures.require_fixtures()
    assert (await refused(gh.patch(f"{REPO}/git/refs/heads/main", data={"force": True})))[0] == 422
    assert (await refused(gh.post(f"{REPO}/git/refs", data={"ref": "refs/heads/x"})))[0] == 422
    errors = fake_github.take_errors()
    assert "'sha' is a required property" in errors[0] and "'sha' is a required property" in errors[1]


async def test_a_ref_update_moves_the_mergeability_of_pulls(fake_github: FakeGitHub, gh: GitHubAPI,
                                                            widgets: GitRepo) -> None:
    conflicting = widgets.commit({"app.py": "a = 5\n"}, branch=None, parent="main")
    await gh.patch(f"{REPO}/git/refs/heads/main", data={"sha": conflicting})
    assert (await gh.getitem(f"{REPO}/pulls/7"))["mergeable_state"] == "dirty"


async def test_get_commit(gh: GitHubAPI, widgets: GitRepo) -> None:
    info = widgets.commit_info("feature")
    commit = await gh.getitem(f"{REPO}/git/commits/{info.sha}")
    assert (commit["sha"], commit["tree"]["sha"], commit["message"]) == (info.sha, info.tree, "feature two")
    assert [p["sha"] for p in commit["parents"]] == [widgets.rev_parse("feature~1")]
    assert commit["author"]["name"] == "A U Thor" and commit["committer"]["email"] == "committer@example.com"
    assert commit["author"]["date"].endswith("Z")
    assert await refused(gh.getitem(f"{REPO}/git/commits/{'f' * 40}")) == (404, "Not Found")


async def test_branch_follows_the_repository(gh: GitHubAPI, widgets: GitRepo) -> None:
    sha = widgets.commit({"lib.py": "b = 7\n"}, branch="main", message="seven")
    branch = await gh.getitem(f"{REPO}/branches/main")
    assert branch["commit"]["sha"] == sha and branch["commit"]["commit"]["message"] == "seven"
    assert await refused(gh.getitem(f"{REPO}/branches/nope")) == (404, "Branch not found")


# ------------------------------------------------------------------------------------------ reviews


async def test_reviews(fake_github: FakeGitHub, gh: GitHubAPI, widgets: GitRepo) -> None:
    fake_github.add_review("acme/widgets", 7, "alice", "CHANGES_REQUESTED", body="no")
    fake_github.add_review("acme/widgets", 7, "bob")
    reviews = [r async for r in gh.getiter(f"{REPO}/pulls/7/reviews")]
    assert [(r["user"]["login"], r["state"], r["commit_id"]) for r in reviews] == [
        ("alice", "CHANGES_REQUESTED", widgets.rev_parse("feature")), ("bob", "APPROVED", widgets.rev_parse("feature"))]
    assert [r async for r in gh.getiter(f"{REPO}/pulls/7/reviews?per_page=1")][1]["user"]["login"] == "bob"
    assert await refused(gh.getitem(f"{REPO}/pulls/99/reviews")) == (404, "Not Found")
    with pytest.raises(ValueError):
        fake_github.add_review("acme/widgets", 7, "carol", "LGTM")


# ------------------------------------------------------------------------------------------ pushes


async def test_a_non_fast_forward_push_needs_force(fake_github: FakeGitHub, widgets: GitRepo, token: str,
                                                   tmp_path: Path) -> None:
    workdir = await clone(fake_github, token, tmp_path)
    await commit_in(workdir, "mine.txt", "mine\n", "mine")
    widgets.commit({"lib.py": "b = 8\n"}, branch="main", message="theirs")  # main moved on meanwhile
    code, err = await run_git(workdir, token, "push", "origin", "HEAD:main")
    assert code != 0 and "rejected" in err
    assert widgets.commit_info("main").message == "theirs\n"

    code, err = await run_git(workdir, token, "push", "--force", "origin", "HEAD:main")
    assert code == 0, err
    assert widgets.commit_info("main").message == "mine\n"
    assert fake_github._repo_state("acme/widgets").branches["main"] == widgets.rev_parse("main")


async def test_a_branch_the_app_may_not_push_to(fake_github: FakeGitHub, gh: GitHubAPI, widgets: GitRepo,
                                                token: str, tmp_path: Path) -> None:
    fake_github.block_app_pushes("acme/widgets", "main")
    tip = widgets.rev_parse("main")
    workdir = await clone(fake_github, token, tmp_path)
    await commit_in(workdir, "mine.txt", "mine\n", "a fast-forward")

    code, err = await run_git(workdir, token, "push", "origin", "HEAD:main")
    assert code != 0
    assert "! [remote rejected] HEAD -> main (protected branch hook declined)" in err
    assert "remote: error: GH006: Protected branch update failed for refs/heads/main." in err
    assert widgets.rev_parse("main") == tip
    code, err = await run_git(workdir, token, "push", "origin", "HEAD:refs/heads/elsewhere")
    assert code == 0, err  # other branches are fine

    forward = widgets.commit({"lib.py": "b = 9\n"}, branch=None, parent="main")
    assert await refused(gh.patch(f"{REPO}/git/refs/heads/main", data={"sha": forward})) == (
        422, "Protected branch update failed for refs/heads/main.")
    assert await refused(gh.post(f"{REPO}/merges", data={"base": "main", "head": "feature"})) == (
        403, "Protected branch update failed for refs/heads/main.")
    assert [(r["ref"], r["via"], r["installation_id"]) for r in fake_github.refused_ref_updates] == [
        ("refs/heads/main", "push", 1), ("refs/heads/main", "api", 1), ("refs/heads/main", "api", 1)]
    assert widgets.rev_parse("main") == tip

    merged = await gh.put(f"{REPO}/pulls/7/merge")  # merging a pull through GitHub is still allowed
    assert widgets.rev_parse("main") == merged["sha"]
    assert fake_github.errors() == []
