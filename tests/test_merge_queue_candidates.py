"""A queue candidate's commit on a host whose mirror lacks it (workers on several hosts, one database): made
again from the inputs the queue's stored document keeps, used only if it is the very commit, over real git
against the fake GitHub. Two `Checkouts` roots stand for two hosts' DATA_DIRs."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from bot.models import JOB_MERGE_QUEUE, JOB_QUEUED, JOB_VALIDATE, SUBJECT_QUEUE_CANDIDATE, ValidationState
from bot.store import Store
from pipeline.merge_queue.candidates import Built, CandidateBuilder
from pipeline.merge_queue.codec import queue_to_document
from pipeline.merge_queue.decide import advance, apply
from pipeline.merge_queue.model import (LANDING, TESTING, Build, Candidate, CandidateBuilt, CandidatePassed, Enqueued,
                                        Land, Queue, QueueConfig)
from pipeline.merge_queue.rebuild import (Rebuild, candidate_of_validation_ref, candidate_ref, rebuild_of,
                                          rebuilt_mismatch, validation_ref)
from pipeline.merge_queue.restore import CandidateRestorer
from pipeline.merge_queue.service import MergeQueueService
from pipeline.workspace.checkout import Checkouts
from pipeline.workspace.errors import CheckoutError
from pipeline.workspace.volumes import GIB, RunVolumes
from tests.check_run_support import project_id  # noqa: F401 (fixture: the project octo/one, installation 1)
from tests.cli_support import worker_process
from tests.fakes.github import FakeGitHub
from tests.merge_queue_support import (MAINTAINER, QueueRepo, comments_saying, process_running, queue_check_runs,
                                       queue_repo, stored_queue)
from tests.pull_requests import INSTALLATION_ID
from tests.sandbox_support import needs_bwrap
from tests.test_check_run_recovery import app_store, served  # noqa: F401 (fixtures: a served app, its database)
from tests.test_checkout import git, installation_token

FULL_NAME = "octo/one"


def candidate(built: Built | None = None, **changes: object) -> Candidate:
    values: dict[str, object] = dict(id=4, prs=(2,), ahead=(1,), heads=("1" * 40, "2" * 40), base_sha="b" * 40,
                                     base_tree="t" * 40, created_at=0.0, status=TESTING,
                                     built_sha=built.sha if built else "c" * 40)
    values.update(changes)
    return Candidate(**values)  # type: ignore[arg-type]


def queue_of(*candidates: Candidate) -> Queue:
    return Queue(repo=FULL_NAME, base_ref="release/1.x", base_sha="b" * 40, base_tree="t" * 40,
                 candidates=candidates)


# ---- what to rebuild (pure) ---------------------------------------------------------------------------

def test_a_validation_ref_names_its_candidate_whatever_the_base_branch() -> None:
    ref = validation_ref("release/1.x", candidate(retries_used=2))
    assert candidate_of_validation_ref(ref) == ("release/1.x", 4)
    for other in (None, "", "refs/heads/main", "refs/codegenapp/queue/main/4", "refs/codegenapp/queue/4-try0"):
        assert candidate_of_validation_ref(other) is None


def test_the_rebuild_is_the_candidates_own_inputs_in_queue_order() -> None:
    plan = rebuild_of(queue_of(candidate()), "release/1.x", 4, "c" * 40)
    assert plan == Rebuild("release/1.x", 4, "b" * 40, ((1, "1" * 40), (2, "2" * 40)), 1, "c" * 40)
    assert isinstance(plan, Rebuild) and plan.ref == "refs/codegenapp/queue/release/1.x/4"


def test_nothing_is_rebuilt_for_a_queue_or_candidate_that_is_gone_or_built_again() -> None:
    assert "merge queue of release/1.x is gone" in str(rebuild_of(None, "release/1.x", 4, "c" * 40))
    assert "no longer queued" in str(rebuild_of(queue_of(candidate(id=5)), "release/1.x", 4, "c" * 40))
    assert "is now ddddddd: not rebuilt" in str(
        rebuild_of(queue_of(candidate(built_sha="d" * 40)), "release/1.x", 4, "c" * 40))


def test_only_the_expected_commit_may_be_validated() -> None:
    plan = Rebuild("main", 4, "b" * 40, ((1, "1" * 40),), 0, "c" * 40)
    assert rebuilt_mismatch(plan, "c" * 40) is None
    assert rebuilt_mismatch(plan, "e" * 40) == ("rebuilding candidate 4 of the merge queue of main (bbbbbbb + #1 at "
                                                "1111111) made eeeeeee, not ccccccc (the commit this validation is "
                                                "of): not validated")
    assert "conflicted at #1" in str(rebuilt_mismatch(plan, None, conflict_pr=1))


# ---- two hosts, real git -------------------------------------------------------------------------------

@pytest.fixture
async def token(fake_github: FakeGitHub, app_private_key: str) -> str:
    fake_github.add_installation(1, "octo", repos=["one"])
    return await installation_token(fake_github, app_private_key)


@pytest.fixture
def heads(fake_github: FakeGitHub, token: str) -> dict[str, str]:
    """main (one commit) and PRs #1 and #2 off it, each adding a file."""
    repo = fake_github.git_repo(FULL_NAME)
    base = repo.commit({"README.md": "# one\n"}, branch="main", message="base")
    for number in (1, 2):
        repo.commit({f"pr{number}.txt": f"{number}\n"}, branch=f"pr-{number}", parent=base, message=f"#{number}")
        fake_github.add_pull_from_repo(FULL_NAME, number, head_ref=f"pr-{number}")
    return {"base": base, **{str(n): repo.rev_parse(f"pr-{n}") for n in (1, 2)}}


def host(tmp_path: Path, fake_github: FakeGitHub, name: str) -> Checkouts:
    return Checkouts(tmp_path / name / "git", github_url=fake_github.base_url)


def mirror_has(checkouts: Checkouts, sha: str) -> bool:
    return subprocess.run(["git", "--git-dir", str(checkouts.mirror_path(FULL_NAME)), "cat-file", "-e",
                           f"{sha}^{{commit}}"], capture_output=True).returncode == 0


async def built_on_host_a(store: Store, project_id: str, a: Checkouts, heads: dict[str, str],
                          token: str) -> tuple[Built, Candidate, ValidationState]:
    """Candidate 4 (#1 ahead, then #2) built in host A's mirror, stored in the queue of main as the queue
    does, and its validation begun (its job is what host B's worker claims)."""
    c = candidate(heads=(heads["1"], heads["2"]), base_sha=heads["base"], built_sha=None)
    built = await CandidateBuilder(a).build(FULL_NAME, token=token, base_ref="main", base_sha=heads["base"],
                                            merges=[(1, heads["1"]), (2, heads["2"])], ahead=1,
                                            ref="refs/codegenapp/queue/main/4")
    assert isinstance(built, Built)
    c = replace(c, built_sha=built.sha, built_tree=built.tree)
    await store_queue(store, project_id, c)
    state = await store.validations.begin_candidate(
        project_id=project_id, subject=SUBJECT_QUEUE_CANDIDATE, subject_ref=validation_ref("main", c), pr_number=2,
        head_sha=built.sha, base_sha=heads["base"], trigger="merge_queue", then_queue=JOB_VALIDATE)
    return built, c, state


async def store_queue(store: Store, project_id: str, c: Candidate) -> None:
    stored = await store.merge_queues.load(project_id, "main")
    queue = Queue(repo=FULL_NAME, base_ref="main", base_sha=c.base_sha, base_tree=c.base_tree, candidates=(c,))
    assert await store.merge_queues.save(project_id, "main", queue_to_document(queue),
                                         version=stored.version if stored else 0, active=True)


async def test_a_candidate_built_on_one_host_is_checked_out_on_another(
        store: Store, project_id: str, fake_github: FakeGitHub, heads: dict[str, str], token: str,
        tmp_path: Path) -> None:
    a, b = host(tmp_path, fake_github, "a"), host(tmp_path, fake_github, "b")
    built, _, state = await built_on_host_a(store, project_id, a, heads, token)
    project = await store.projects.get_project(project_id)

    # without the restore, host B asks GitHub for a commit it never had
    with pytest.raises(CheckoutError):
        await b.checkout(FULL_NAME, sha=built.sha, token=token, dest=tmp_path / "ws-b-before",
                         ref=state.subject_ref)

    await CandidateRestorer(store.merge_queues, CandidateBuilder(b))(project, state, token)
    result = await b.checkout(FULL_NAME, sha=built.sha, token=token, dest=tmp_path / "ws-b", ref=state.subject_ref)
    assert result.sha == built.sha and not result.fetched
    assert git(result.workspace, "rev-parse", "HEAD^{tree}") == built.tree
    assert result.tracked_files == {"README.md", "pr1.txt", "pr2.txt"}
    assert git(result.workspace, "log", "--format=%s", "--first-parent").splitlines()[:2] == [
        "Merge pull request #2 from the merge queue", "Merge pull request #1 from the merge queue"]
    kept = subprocess.run(["git", "--git-dir", str(b.mirror_path(FULL_NAME)), "rev-parse",
                           "refs/codegenapp/queue/main/4"], capture_output=True, text=True).stdout.strip()
    assert kept == built.sha  # kept from gc on host B too

    # host A has it already: nothing is fetched or rebuilt there
    calls = len(fake_github.calls_to("*", f"/{FULL_NAME}.git/**"))
    await CandidateRestorer(store.merge_queues, CandidateBuilder(a))(project, state, token)
    assert len(fake_github.calls_to("*", f"/{FULL_NAME}.git/**")) == calls


async def test_a_rebuild_from_tampered_inputs_fails_and_keeps_nothing(
        store: Store, project_id: str, fake_github: FakeGitHub, heads: dict[str, str], token: str,
        tmp_path: Path) -> None:
    a, b = host(tmp_path, fake_github, "a"), host(tmp_path, fake_github, "b")
    built, c, state = await built_on_host_a(store, project_id, a, heads, token)
    # the same PRs in the other order: the same tree, but not the commit that was to be validated
    await store_queue(store, project_id, replace(c, ahead=(2,), prs=(1,), heads=(heads["2"], heads["1"])))
    project = await store.projects.get_project(project_id)

    with pytest.raises(CheckoutError) as failed:
        await CandidateRestorer(store.merge_queues, CandidateBuilder(b))(project, state, token)

    assert failed.value.reason == "missing_commit"
    assert str(failed.value).startswith("rebuilding candidate 4 of the merge queue of main")
    assert f"not {built.sha[:7]} (the commit this validation is of): not validated" in str(failed.value)
    assert not mirror_has(b, built.sha)
    assert subprocess.run(["git", "--git-dir", str(b.mirror_path(FULL_NAME)), "rev-parse", "--verify", "--quiet",
                           "refs/codegenapp/queue/main/4"], capture_output=True).returncode != 0


# ---- landing from a host whose mirror lacks the candidate ------------------------------------------------

async def landing_on_host_b(bot, fake_github: FakeGitHub, tmp_path: Path, method: str, *,
                            tamper: bool = False) -> tuple[QueueRepo, Built, MergeQueueService]:
    """PR #1's candidate built (and passed) on host A, its landing recorded in the stored queue; the service
    of host B, whose mirror (made by an earlier checkout) lacks the candidate. `tamper`: the stored queue
    says the candidate is another commit (it cannot be made again)."""
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"],
                            queue={"method": method})
    token = await bot.services.github.installation_token(INSTALLATION_ID)
    head = repo.pulls[1].head_sha
    config = QueueConfig(method=method, batch_size=1)
    queue = apply(Queue(repo.full_name, "main", repo.base_sha, repo.tree(repo.base_sha)),
                  Enqueued(1, head, MAINTAINER, 0.0))
    queue, actions = advance(queue, config, 1.0)
    [c] = [a.candidate for a in actions if isinstance(a, Build)]
    built = await CandidateBuilder(host(tmp_path, fake_github, "a")).build(
        repo.full_name, token=token, base_ref="main", base_sha=repo.base_sha, merges=[(1, head)], ahead=0,
        ref=candidate_ref("main", c.id))
    assert isinstance(built, Built)
    built_sha = "f" * 40 if tamper else built.sha
    queue, _ = advance(apply(queue, CandidateBuilt(c.id, built_sha, built.tree, built.expected_base_tree)), config, 2.0)
    queue, actions = advance(apply(queue, CandidatePassed(c.id)), config, 3.0)
    assert [type(a) for a in actions] == [Land]
    assert await bot.store.merge_queues.save(repo.project.id, "main", queue_to_document(queue), version=0, active=True)
    b = host(tmp_path, fake_github, "b")
    await b.checkout(repo.full_name, sha=repo.base_sha, token=token, dest=tmp_path / "ws-b")
    first = bot.services.merge_queues
    return repo, built, MergeQueueService(bot.store, bot.services.github, bot.services.bus, bot.services.wakeup,
                                          bot.services.validations, bot.services.merges, CandidateBuilder(b),
                                          agent_configured=lambda project: False, public_url=first.public_url)


@pytest.mark.parametrize("method", ["fast-forward", "merge"])
async def test_a_candidate_built_on_one_host_lands_from_another(bot, fake_github: FakeGitHub, tmp_path: Path,
                                                                method: str) -> None:
    repo, built, host_b = await landing_on_host_b(bot, fake_github, tmp_path, method)

    await host_b.run(repo.project.id, "main")  # resumes the landing

    assert comments_saying(fake_github, "Merge queue:") == []  # no "refused the push ... merging it instead"
    if method == "fast-forward":
        assert repo.main() == built.sha and fake_github.merges == []
    else:
        assert [m["number"] for m in fake_github.merges] == [1] and repo.tree("main") == built.tree
    assert queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]["conclusion"] == "success"
    assert await bot.store.merge_queues.active() == []


async def test_a_candidate_that_cannot_be_made_again_here_is_landed_later_not_ejected(
        bot, fake_github: FakeGitHub, tmp_path: Path) -> None:
    repo, _, host_b = await landing_on_host_b(bot, fake_github, tmp_path, "fast-forward", tamper=True)
    async def queue_jobs_later() -> int:
        return sum(row.count - row.ready for row in (await bot.store.jobs.queue_summary()).rows
                   if (row.kind, row.status) == (JOB_MERGE_QUEUE, JOB_QUEUED))

    assert await queue_jobs_later() == 0
    await host_b.run(repo.project.id, "main")

    assert repo.main() == repo.base_sha and fake_github.merges == [] and fake_github.comments == {}
    [c] = (await stored_queue(bot, repo)).candidates
    assert c.status == LANDING and [e.pr for e in (await stored_queue(bot, repo)).queued()] == [1]
    assert await queue_jobs_later() == 1  # tried again later


# ---- end to end: the candidate's validation runs in a worker with a DATA_DIR of its own -----------------

@needs_bwrap
@pytest.mark.slow
async def test_a_worker_on_another_host_validates_the_candidate_and_it_lands(
        served, app_store, fake_github: FakeGitHub, tmp_path: Path) -> None:  # noqa: F811 (fixtures)
    marker = f"sleep 2.{uuid.uuid4().int % 10**6:06d}"  # unique: the test waits for host A to run it
    app = await served()  # host A: DATA_DIR tmp_path/data, its database the one both hosts share
    shared = Path(app.env["DATA_DIR"])
    host_b = worker_process({**app.env, "DATA_DIR": str(tmp_path / "host-b" / "data"),
                             "DATABASE_URL": f"sqlite:///{shared / 'codegenapp.db'}",
                             "ENCRYPTION_KEY": (shared / "encryption-key").read_text().strip(),
                             "JWT_SECRET_KEY": (shared / "jwt-secret-key").read_text().strip()})
    try:
        repo = await queue_repo(app_store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[marker])
        assert (await app.webhooks.send("issue_comment", repo.comment(1, "/queue"))).status == 202
        await process_running(marker)  # A built the candidate and validates it
        await app.kill()  # A is gone, and its mirror with it as far as B is concerned
        await host_b.start()
        await fake_github.wait_until(lambda: (runs := queue_check_runs(fake_github, repo.pulls[1].head_sha))
                                     and runs[-1]["status"] == "completed", timeout=60)
        assert queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]["conclusion"] == "success"
        assert [m["number"] for m in fake_github.merges] == [1]
        validations = [v for v in await app_store.validations.for_project(repo.project.id)
                       if v.subject == SUBJECT_QUEUE_CANDIDATE]
        assert {v.conclusion for v in validations} == {"success"}, [v.test_results for v in validations]
        assert any("rebuilt candidate 1 of the merge queue of main" in line for line in host_b.log)
        assert await host_b.terminate() == 0  # stopped, its runs' disks unmounted
    finally:
        await host_b.stop()
        await app.kill()
        # what A's next start would do: unmount the disk of the run it was killed in
        await RunVolumes(shared / "workspaces", limit_bytes=GIB, min_free_bytes=0).start()
