"""The pure part of validating GitHub's merge queue groups: what a group's ref says, which PRs a group
merges, and when it runs with the project's secrets (only when every commit is proven to come from this
repository's PRs)."""

from __future__ import annotations

from bot.events import AppEvent
from bot.github.repos import ComparedCommit
from bot.models import SUBJECT_MERGE_GROUP
from tests.ghfixtures import load_webhook
from handlers.payloads import shape_problem
from pipeline.agents.service import completions_by_pr
from pipeline.validation.subjects import (INCOMPLETE, UNTRACEABLE, MergedPull, MergeGroupRef, PullHead, describe,
                                          destroyed_reason, group_gate, merged_pulls, parse_group_ref,
                                          without_secrets_note)

SHA = "929f8209d40f77f4abc622a499c93a83babdbe64"
BASE = "b" * 40


def commit(name: str, *parents: str, message: str = "a change") -> ComparedCommit:
    return ComparedCommit(name * 40, tuple(parents), message)


# What GitHub's `merge` method makes of #12 (two commits on a branch) and then #15, onto BASE.
A1 = commit("1", BASE)
A2 = commit("2", A1.sha)
M12 = commit("3", BASE, A2.sha, message="Merge pull request #12 from acme/a\n\nthe a change")
B1 = commit("4", BASE)
M15 = commit("5", M12.sha, B1.sha, message="Merge pull request #15 from acme/b")
MERGED = [A1, A2, M12, B1, M15]
SAME_REPO = {12: PullHead(A2.sha, same_repository=True), 15: PullHead(B1.sha, same_repository=True)}


def test_a_group_ref_names_its_base_and_its_last_pr() -> None:
    assert parse_group_ref(f"refs/heads/gh-readonly-queue/main/pr-104-{SHA}") == MergeGroupRef("main", 104, SHA)
    assert parse_group_ref(f"refs/heads/gh-readonly-queue/release/2.x/pr-7-{SHA}") == \
        MergeGroupRef("release/2.x", 7, SHA)


def test_other_refs_are_no_group() -> None:
    for ref in ("refs/heads/main", f"gh-readonly-queue/main/pr-104-{SHA}",  # not a full ref
                f"refs/heads/gh-readonly-queue/main/pr-0-{SHA}", f"refs/heads/gh-readonly-queue/main/pr-x-{SHA}",
                "refs/heads/gh-readonly-queue/main/pr-104-abc", f"refs/heads/gh-readonly-queue/pr-104-{SHA}",
                f"refs/heads/gh-readonly-queue/main/pr-104-{SHA}\n"):
        assert parse_group_ref(ref) is None, ref


def test_a_merge_groups_first_parents_say_which_pr_heads_it_merges() -> None:
    assert merged_pulls(M15.sha, MERGED) == [MergedPull(15, B1.sha), MergedPull(12, A2.sha)]
    assert merged_pulls(BASE, []) == []  # nothing added to the base


def test_a_merge_method_group_of_current_same_repository_pr_heads_gets_the_secrets() -> None:
    gate = group_gate(M15.sha, MERGED, complete=True, pulls=SAME_REPO)
    assert (gate.run, gate.with_secrets) == (True, True)


def test_a_squash_or_rebase_group_cannot_be_traced_and_runs_without_secrets() -> None:
    squashed = [commit("1", BASE, message="Add the widget (#12)"), commit("2", "1" * 40, message="Fix (#15)")]
    rebased = [commit("1", BASE, message="a change"), commit("2", "1" * 40, message="another")]
    for commits in (squashed, rebased):
        assert merged_pulls("2" * 40, commits) is None
        gate = group_gate("2" * 40, commits, complete=True, pulls=SAME_REPO)
        assert (gate.run, gate.with_secrets, gate.reason) == (True, False, UNTRACEABLE)


def test_a_rebased_commit_under_a_same_repository_prs_merge_is_untrusted() -> None:
    # a fork's commit rebased onto the base, then a same-repository PR merged on top of it
    rebased_fork_commit = commit("9", BASE, message="tweak")
    merge = commit("5", rebased_fork_commit.sha, B1.sha, message="Merge pull request #15 from acme/b")
    gate = group_gate(merge.sha, [rebased_fork_commit, B1, merge], complete=True, pulls=SAME_REPO)
    assert (gate.with_secrets, gate.reason) == (False, UNTRACEABLE)


def test_a_message_naming_a_same_repository_pr_proves_nothing() -> None:
    single_parent = commit("5", BASE, message="Merge pull request #15 from acme/b")
    assert not group_gate(single_parent.sha, [single_parent], complete=True, pulls=SAME_REPO).with_secrets
    fork_head = commit("8", BASE)
    spoofed = commit("5", BASE, fork_head.sha, message="Merge pull request #15 from acme/b")
    gate = group_gate(spoofed.sha, [fork_head, spoofed], complete=True, pulls=SAME_REPO)
    assert (gate.with_secrets, gate.reason) == (False, "the commit merged as #15 is not that pull request's head")
    octopus = commit("5", BASE, B1.sha, fork_head.sha, message="Merge pull request #15 from acme/b")
    assert not group_gate(octopus.sha, [B1, fork_head, octopus], complete=True, pulls=SAME_REPO).with_secrets
    unrelated = group_gate(M15.sha, [*MERGED, commit("7", BASE)], complete=True, pulls=SAME_REPO)
    assert (unrelated.with_secrets, unrelated.reason) == (False, UNTRACEABLE)


def test_a_fork_or_unknown_pr_merged_into_the_group_withholds_the_secrets() -> None:
    fork = group_gate(M15.sha, MERGED, complete=True, pulls={**SAME_REPO, 12: PullHead(A2.sha, False)})
    assert (fork.run, fork.with_secrets, fork.reason) == (True, False, "#12 comes from a fork")
    unknown = group_gate(M15.sha, MERGED, complete=True, pulls={12: None, 15: PullHead(B1.sha, False)})
    assert unknown.reason == "#15 comes from a fork; #12 is not a known pull request of this repository"
    moved = group_gate(M15.sha, MERGED, complete=True, pulls={**SAME_REPO, 12: PullHead(A1.sha, True)})
    assert not moved.with_secrets


def test_a_truncated_comparison_is_untrusted() -> None:
    gate = group_gate(M15.sha, MERGED, complete=False, pulls=SAME_REPO)
    assert (gate.with_secrets, gate.reason) == (False, INCOMPLETE)
    assert without_secrets_note(SUBJECT_MERGE_GROUP, gate) == (
        f"merge queue group: run without the project's secrets: {INCOMPLETE}")


def test_a_destroyed_groups_reason_in_words() -> None:
    assert destroyed_reason("merged") == "the merge group was merged"
    assert destroyed_reason("dequeued") == "the merge group was removed from the queue"
    assert destroyed_reason("invalidated").startswith("the merge group was invalidated")
    assert destroyed_reason(None) == "the merge group was destroyed"


def test_what_a_validation_validated_in_words() -> None:
    assert describe("pull_request", 3) == "pull request #3"
    assert describe("merge_group", 104) == "merge queue group for #104"
    assert describe("queue_candidate", 5) == "merge queue candidate for #5"


def test_a_groups_completion_nudges_no_agent_run() -> None:
    # a group's validation is no PR's: `pr_number` None would select (and nudge) every run without a PR
    group = AppEvent("validation.completed", {"project_id": "p", "pr_number": None, "validation_id": "g"})
    pull = AppEvent("validation.completed", {"project_id": "p", "pr_number": 7, "validation_id": "v"})
    assert completions_by_pr([group, pull]) == {("p", 7): [pull]}


def test_a_merge_group_delivery_without_what_the_app_reads_is_skipped() -> None:
    payload = load_webhook("merge_group", "checks_requested")
    assert shape_problem("merge_group", "g", payload) is None
    del payload["merge_group"]["head_sha"]
    assert shape_problem("merge_group", "g", payload).startswith(
        "a merge_group.checks_requested delivery that has no `merge_group.head_sha`")
    payload = load_webhook("merge_group", "checks_requested")
    payload["merge_group"]["head_ref"] = "refs/heads/main"
    assert shape_problem("merge_group", "g", payload) == (
        "a merge_group.checks_requested delivery that has `merge_group.head_ref` 'refs/heads/main', "
        "not a merge queue's branch")
