"""The merge queue shell's pure parts: the queue's document round-trips, who may enter the queue (GitHub's
own answers on branch protection), what a candidate's validation says to the decider, and the comment line."""

from __future__ import annotations

import dataclasses
import json
import socket

from bot.github.types import PullRequest
from bot.models import JOB_VALIDATE, SUBJECT_QUEUE_CANDIDATE, ValidationState
from bot.store import Store
from pipeline.merge.decision import RequiredCheck, RequiredChecks
from pipeline.merge_queue.admission import (admission, approvals, method_refusal, protection_readable,
                                            required_approvals, strict)
from pipeline.merge_queue.codec import queue_from_document, queue_to_document
from pipeline.merge_queue.decide import advance, apply
from pipeline.merge_queue.model import (Candidate, CandidateBuilt, CandidateFailed, CandidatePassed, Enqueued, Entry,
                                        Queue, QueueConfig)
from pipeline.merge_queue.report import (ejection_report, landed_output, merge_refused, pr_of_external_id,
                                         queue_external_id)
from pipeline.merge_queue.rebuild import candidate_of_validation_ref, validation_ref
from pipeline.merge_queue.service import MergeQueueService, broken_backoff, could_not_run, verdict_of
from pipeline.report.comment import with_queue_line
from tests.check_run_support import project_id  # noqa: F401 (fixture)
from tests.merge_queue_support import queue_check_runs, queue_repo


def pull(**changes: object) -> PullRequest:
    values: dict[str, object] = dict(repository="acme/widgets", number=7, state="open", head_sha="h" * 40,
                                     head_ref="feature", base_sha="b" * 40, base_ref="main", fork=False,
                                     mergeable=True, mergeable_state="clean")
    values.update(changes)
    return PullRequest(**values)  # type: ignore[arg-type]


# ---- codec -------------------------------------------------------------------------------------------

def test_a_queue_survives_its_document_through_json_with_every_field() -> None:
    queue = Queue("acme/widgets", "main", "a" * 40, "t" * 40)
    config = QueueConfig(batch_size=2, max_parallel=2)
    for pr in (1, 2, 3):
        queue = apply(queue, Enqueued(pr, f"{pr}" * 40, "mona", 100.0 + pr, validated_tree="v" * 40 if pr == 2 else None))
    queue, _ = advance(queue, config, 200.0)
    queue = apply(queue, CandidateBuilt(1, "c" * 40, "d" * 40, "t" * 40))
    queue, _ = advance(queue, config, 201.0)
    queue = apply(queue, CandidateFailed(1, "pytest", "boom"))
    queue, _ = advance(queue, config, 202.0)
    document = json.loads(json.dumps(queue_to_document(queue)))
    assert queue_from_document(document) == queue
    assert isinstance(queue_from_document(document).candidates[0].prs, tuple)


def test_a_document_without_a_newer_field_takes_its_default() -> None:
    entry = Entry(pr=1, head_sha="h" * 40, seq=1, enqueued_at=1.0, enqueued_by="mona")
    document = queue_to_document(Queue("acme/widgets", "main", "a" * 40, "t" * 40, entries=(entry,)))
    del document["entries"][0]["validated_tree"], document["own_tips"], document["entries"][0]["announce_tries"]
    decoded = queue_from_document(document)
    assert decoded.entries[0].validated_tree is None and decoded.own_tips == ()
    assert decoded.entries[0].announce_tries == 0


# ---- admission ---------------------------------------------------------------------------------------

def test_a_pr_is_admitted_when_github_would_let_it_merge() -> None:
    assert admission(pull(), required=RequiredChecks(True), approvals_needed=0, approved=0).allowed


def test_a_pr_is_refused_with_githubs_reason() -> None:
    none = RequiredChecks(True)
    assert admission(pull(mergeable_state="dirty"), required=none, approvals_needed=0, approved=0).reason == \
        "the PR has conflicts with main; resolve them and push"
    assert admission(pull(), required=none, approvals_needed=2, approved=1).reason == \
        "it is not approved: branch protection requires 2 approving reviews, it has 1"
    lint = RequiredChecks(True, (RequiredCheck("lint"), RequiredCheck("CodegenApp", 12345)))
    refused = admission(pull(), required=lint, approvals_needed=0, approved=0,
                        own_check=RequiredCheck("CodegenApp", 12345))
    assert refused.reason == "required check `lint` has not reported on this head"  # the app's own check is the queue's to run
    assert admission(pull(draft=True), required=none, approvals_needed=0, approved=0).reason == "the PR is a draft"
    assert not admission(pull(state="closed"), required=none, approvals_needed=0, approved=0).allowed


def test_a_pr_github_would_refuse_to_merge_is_refused_at_queue_not_after_its_testing() -> None:
    none = RequiredChecks(True)
    blocked = admission(pull(mergeable_state="blocked"), required=none, approvals_needed=0, approved=0,
                        protection_read=False)
    assert blocked.reason.startswith("GitHub says branch protection blocks merging it (the app cannot read")
    assert "cannot read" not in admission(pull(mergeable_state="blocked"), required=none, approvals_needed=0,
                                          approved=0).reason
    # "up to date before merging": the PR behind another is refused by GitHub once the one ahead lands
    behind = admission(pull(), required=none, approvals_needed=0, approved=0, up_to_date=True)
    assert "up to date with main" in behind.reason and "fast-forward" in behind.reason
    assert admission(pull(), required=none, approvals_needed=0, approved=0, up_to_date=True,
                     method="fast-forward").allowed
    assert strict({"required_status_checks": {"strict": True, "contexts": []}})
    assert not strict({"required_status_checks": None}) and not strict(None)
    refused = method_refusal("squash", {"allow_merge_commit": True, "allow_squash_merge": False})
    assert refused is not None and "does not allow squash merging" in refused
    assert admission(pull(), required=none, approvals_needed=0, approved=0, method="squash",
                     method_refused=refused).reason == refused
    assert method_refusal("merge", {}) is None and method_refusal("fast-forward", {"allow_merge_commit": False}) is None
    # a 404 that says the branch is not protected tells; a 403 (no permission) or a bare 404 does not
    assert protection_readable(404, "Branch not protected")
    assert not protection_readable(403, "Resource not accessible by integration")
    assert not protection_readable(404, "Not Found")


def test_the_queues_check_run_names_its_pr_and_its_texts_say_it_in_words() -> None:
    assert pr_of_external_id(queue_external_id("release/2.x", 14)) == 14
    assert pr_of_external_id("7f3e0a") is None and pr_of_external_id(None) is None
    assert merge_refused(405, "Pull Request is not mergeable") == \
        ("branch protection or the repository's merge settings do not allow it "
         "(GitHub said “Pull Request is not mergeable”)")
    landed = landed_output("main", "a" * 40, 3, (1, 3, 4))["summary"]
    assert landed == "Merged into `main` as aaaaaaa: the merge queue tested it together with #1, #4."
    assert "tested it." in landed_output("main", "a" * 40, 3, (3,))["summary"]
    run = {"name": "Merge queue", "external_id": queue_external_id("main", 2),
           "output": {"title": "Ejected: pytest failed", "summary": "Taken out … `pytest` failed with #1"}}
    assert ejection_report(run) == "Taken out … `pytest` failed with #1"
    assert ejection_report({**run, "name": "CodegenApp"}) is None
    assert ejection_report({**run, "external_id": "7f3e0a"}) is None


def test_approvals_count_each_reviewers_latest_decision() -> None:
    reviews = [{"user": {"login": "a"}, "state": "APPROVED", "commit_id": "old"},
               {"user": {"login": "b"}, "state": "APPROVED", "commit_id": "new"},
               {"user": {"login": "b"}, "state": "COMMENTED", "commit_id": "new"},
               {"user": {"login": "c"}, "state": "APPROVED", "commit_id": "new"},
               {"user": {"login": "c"}, "state": "CHANGES_REQUESTED", "commit_id": "new"}]
    assert approvals(reviews, "new") == 2
    assert approvals(reviews, "new", dismiss_stale=True) == 1
    assert required_approvals({"required_pull_request_reviews": {"required_approving_review_count": 2}}) == 2
    assert required_approvals({}) == 0 and required_approvals(None) == 0


# ---- verdicts and refs -------------------------------------------------------------------------------

def _validation(**values: object) -> ValidationState:
    state = ValidationState()
    for key, value in {"status": "completed", "conclusion": "failure", "title": "Failed", "test_results": {},
                       **values}.items():
        setattr(state, key, value)
    return state


def test_a_candidates_validation_becomes_the_deciders_event() -> None:
    c = Candidate(4, (7,), (), ("h" * 40,), "b" * 40, "t" * 40, 0.0, built_sha="c" * 40)

    def of(**values: object) -> ValidationState:
        return _validation(head_sha="c" * 40, **values)

    assert verdict_of(c, of(conclusion="success")) == CandidatePassed(4)
    steps = {"steps": [{"name": "checkout", "status": "passed"},
                       {"name": "pytest", "status": "failed", "output_tail": "E assert 1 == 2"}]}
    assert verdict_of(c, of(test_results=steps)) == CandidateFailed(4, "pytest", "E assert 1 == 2")
    assert verdict_of(c, of(test_results={"error": "sandbox gone"})) == CandidateFailed(4, "validation", "sandbox gone")
    assert verdict_of(c, of(status="in_progress", conclusion=None)) is None
    # "Nothing to validate" (no steps configured): the queue only serialises the merges
    assert verdict_of(c, of(conclusion="neutral", title="Nothing to validate")) == CandidatePassed(4)
    # a validation of another commit (an older queue's candidate 4, say) says nothing of this one
    assert verdict_of(c, _validation(conclusion="success", head_sha="d" * 40)) is None
    assert verdict_of(c, _validation(test_results=steps, head_sha="d" * 40)) is None


def test_a_validation_that_could_not_run_fails_nobody_and_is_tried_again_later_each_time() -> None:
    assert could_not_run(_validation(test_results={"error": "the sandbox is not available"})) == \
        "the sandbox is not available"
    checkout = {"steps": [{"name": "checkout", "stage": "checkout", "status": "failed",
                           "output_tail": "fatal: couldn't find remote ref\n"}]}
    assert could_not_run(_validation(test_results=checkout)) == "the checkout failed: fatal: couldn't find remote ref"
    assert could_not_run(_validation(conclusion="cancelled", title="Cancelled: from the dashboard")) == \
        "Cancelled: from the dashboard"
    failed = {"steps": [{"name": "checkout", "stage": "checkout", "status": "passed"},
                        {"name": "pytest", "stage": "validate", "status": "failed"}]}
    assert could_not_run(_validation(test_results=failed)) is None  # the tree failed: its verdict stands
    assert could_not_run(_validation(conclusion="neutral")) is None
    # the config file read from the base is broken: every PR would fail on it, none is to blame
    invalid = _validation(title="Invalid .github/codegenapp.yml", test_results={"config_error": "line 3: bad"})
    assert could_not_run(invalid) == ".github/codegenapp.yml on the base is invalid: line 3: bad"
    candidate = Candidate(1, (7,), (), ("h" * 40,), "b" * 40, "t" * 40, 0.0)
    waits = [broken_backoff(dataclasses.replace(candidate, attempt=n)) for n in (1, 2, 3, 10)]
    assert waits == [15.0, 30.0, 60.0, 600.0]


def test_a_candidates_validation_ref_names_its_base_and_try() -> None:
    c = Candidate(id=12, prs=(3,), ahead=(), heads=("h" * 40,), base_sha="a" * 40, base_tree="t" * 40,
                  created_at=1.0, retries_used=1)
    assert validation_ref("release/2.x", c) == "refs/codegenapp/queue/release/2.x/12-try1"
    assert candidate_of_validation_ref(validation_ref("release/2.x", c)) == ("release/2.x", 12)
    assert candidate_of_validation_ref("refs/heads/gh-readonly-queue/main/pr-1-x") is None


def test_the_sticky_comment_has_one_queue_line_replaced_in_place() -> None:
    body = "<!-- codegenapp:validation -->\n### ✓ Validation passed\n"
    once = with_queue_line(body, "**Merge queue:** #1")
    twice = with_queue_line(once, "**Merge queue:** #2")
    assert twice.count("Merge queue") == 1 and "#2" in twice and twice.startswith(body.rstrip())
    assert with_queue_line(twice, None).rstrip() == body.rstrip()


# ---- a candidate's validation in the store (SQLite and PostgreSQL) -------------------------------------

async def test_a_candidates_validation_is_begun_once_per_try_with_its_job_and_nothing_to_recover(
        store: Store, project_id: str) -> None:
    async def begin(ref: str) -> ValidationState:
        return await store.validations.begin_candidate(
            project_id=project_id, subject=SUBJECT_QUEUE_CANDIDATE, subject_ref=ref, pr_number=3, head_sha="c" * 40,
            base_sha="b" * 40, trigger="merge_queue", then_queue=JOB_VALIDATE)

    first = await begin("refs/codegenapp/queue/main/1-try0")
    assert (await begin("refs/codegenapp/queue/main/1-try0")).id == first.id  # a job run again joins it
    retry = await begin("refs/codegenapp/queue/main/1-try1")
    assert retry.id != first.id and first.check_run_settled and first.check_run_id is None
    assert await store.validations.unsettled() == []  # no check run to create or complete, ever
    jobs = await store.jobs.claim("test", limit=10, lease_seconds=30, kinds=frozenset({JOB_VALIDATE}))
    assert sorted(job.args["validation_id"] for job in jobs) == sorted([first.id, retry.id])
    found = await store.validations.of_subject_ref(project_id, SUBJECT_QUEUE_CANDIDATE,
                                                   "refs/codegenapp/queue/main/1-try1")
    assert found is not None and found.id == retry.id


# ---- the service's own parts ----------------------------------------------------------------------------

def test_two_processes_on_hosts_with_long_names_hold_the_queues_leases_as_two(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 63)  # the longest a host name may be

    def service() -> MergeQueueService:
        return MergeQueueService(store, None, None, None, None, None, None,  # type: ignore[arg-type]
                                 agent_configured=lambda project: False, public_url="http://app.example")

    first, second = service(), service()
    assert first.holder != second.holder and len(first.holder) <= 64


async def test_a_landing_found_untested_is_said_once_when_done_again_after_a_crash(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    service, head = bot.services.merge_queues, repo.pulls[1].head_sha
    for _ in range(2):  # the second: resumed after a kill before the landing was saved
        await service._landed_untested(repo.project, service.repo(repo.project), "main", 1, head, "e" * 40,
                                       "its tree differs from the one tested")
    said = [c["body"] for c in fake_github.comments.values() if "did not test" in c["body"]]
    assert len(said) == 1, said
    assert queue_check_runs(fake_github, head)[-1]["conclusion"] == "neutral"
