"""The merge decision and the effective auto-merge switch: pure functions of state, no I/O."""

from dataclasses import dataclass

import pytest

from bot.github.types import PullRequest
from pipeline.merge.decision import (NOT_READABLE, RequiredCheck, RequiredChecks, check_state, merge_decision,
                              merge_settings, required_checks)
from pipeline.repo_config.parse import ConfigFileError, ProjectSettings, parse_repo_config

HEAD = "a" * 40
OTHER = "b" * 40
APP = 12345


@dataclass
class Validation:
    head_sha: str = HEAD
    status: str = "completed"
    conclusion: str | None = "success"
    title: str | None = None
    test_results: dict | None = None


def pull(**changes):
    base = {"number": 1, "state": "open", "draft": False, "merged": False, "mergeable": True,
            "mergeable_state": "clean", "head": {"sha": HEAD, "ref": "feature"},
            "base": {"ref": "main", "sha": "c" * 40, "repo": {"full_name": "o/r"}}}
    base.update(changes)
    return PullRequest.parse(base, source="a test")


def run(name, status="completed", conclusion="success", app=1, id=1):
    return {"id": id, "name": name, "status": status, "conclusion": conclusion, "app": {"id": app}}


def status(context, state, id=1, updated_at="2026-01-01T00:00:00Z"):
    return {"id": id, "context": context, "state": state, "updated_at": updated_at}


def test_a_validated_open_pr_may_be_merged() -> None:
    decision = merge_decision(pull(), Validation())
    assert decision.allowed and "aaaaaaa" in decision.reason


@pytest.mark.parametrize("changes, validation, reason", [
    ({"merged": True, "state": "closed"}, Validation(), "already merged"),
    ({"state": "closed"}, Validation(), "the PR is closed"),
    ({"draft": True, "mergeable_state": "draft"}, Validation(), "the PR is a draft"),
    ({}, None, "the current head aaaaaaa has not been validated"),
    ({}, Validation(head_sha=OTHER), "the current head aaaaaaa has not been validated"),
    ({}, Validation(status="queued", conclusion=None), "still running"),
    ({}, Validation(status="in_progress", conclusion=None), "still running"),
    ({}, Validation(status="waiting", conclusion="action_required"), "/ok-to-test"),
    ({}, Validation(conclusion="failure"), "did not pass (Failed)"),
    ({}, Validation(conclusion="cancelled"), "did not pass (Cancelled)"),
    ({}, Validation(conclusion="failure", title="ruff: 3 findings on changed lines — 2 of 3 steps passed"),
     "did not pass (Failed: ruff: 3 findings on changed lines — 2 of 3 steps passed)"),
    ({}, Validation(status="superseded", conclusion="cancelled"), "did not pass (Superseded)"),
    ({}, Validation(conclusion="action_required"), "did not pass (Action required)"),
    ({"mergeable": False, "mergeable_state": "dirty"}, Validation(), "conflicts with main"),
    ({"mergeable_state": "dirty"}, Validation(), "conflicts with main"),
    ({"mergeable_state": "behind"}, Validation(), "behind main"),
])
def test_refusals(changes, validation, reason) -> None:
    decision = merge_decision(pull(**changes), validation)
    assert not decision.allowed and reason in decision.reason and not decision.retry_later


def test_a_refusal_lists_the_findings_that_failed_the_validation() -> None:
    findings = [{"path": "app.py", "line": n, "rule": "E501", "message": f"line too long ({80 + n} > 79)",
                 "level": "failure", "step": "ruff"} for n in range(1, 53)]
    findings.append({"path": "app.py", "line": 99, "rule": "D103", "message": "Missing docstring",
                     "level": "warning", "step": "ruff"})
    results = {"steps": [{"name": "ruff", "stage": "analysis", "status": "failed"}], "findings": findings}
    decision = merge_decision(pull(), Validation(conclusion="failure", title="ruff: 52 findings on changed lines",
                                                 test_results=results))
    assert "did not pass (Failed: ruff: 52 findings on changed lines)" in decision.reason
    assert "\n\n`ruff`:\n- `app.py:1 E501 line too long (81 > 79)`" in decision.reason
    assert "`app.py:50 E501" in decision.reason and "`app.py:51 E501" not in decision.reason
    assert decision.reason.endswith("- … and 2 more (see the check run's annotations)")
    assert "D103" not in decision.reason  # a warning did not fail it


def test_the_head_that_moved_after_validation_is_not_merged() -> None:
    # validated a, the PR now points at b: the decision is about b, which nobody validated
    decision = merge_decision(pull(head={"sha": OTHER, "ref": "feature"}), Validation(head_sha=HEAD))
    assert not decision.allowed and "bbbbbbb has not been validated" in decision.reason


def test_unknown_mergeability_asks_to_read_again() -> None:
    for changes in ({"mergeable": None, "mergeable_state": "unknown"}, {"mergeable_state": "unknown"}):
        decision = merge_decision(pull(**changes), Validation())
        assert not decision.allowed and decision.retry_later


@pytest.mark.parametrize("state", ["blocked", "unstable", "has_hooks", "clean"])
def test_states_the_merge_request_decides(state) -> None:
    # "blocked" is often stale right after a check completes: the merge request (405) is the authority
    assert merge_decision(pull(mergeable_state=state), Validation()).allowed


# ---- required checks -------------------------------------------------------------------------------

def test_required_checks_from_a_protection() -> None:
    protection = {"required_status_checks": {"strict": True, "contexts": ["ci/lint", "build"],
                                             "checks": [{"context": "ci/lint", "app_id": None},
                                                        {"context": "build", "app_id": 77},
                                                        {"context": "any", "app_id": -1}]}}
    assert required_checks(protection) == RequiredChecks(True, (
        RequiredCheck("ci/lint"), RequiredCheck("build", 77), RequiredCheck("any")))
    assert required_checks({"required_status_checks": {"contexts": ["x"]}}).checks == (RequiredCheck("x"),)
    assert required_checks({}) == RequiredChecks(True, ())
    assert required_checks(None) == NOT_READABLE


def test_required_checks_from_a_branch_summary() -> None:
    off = {"enabled": False, "required_status_checks": {"enforcement_level": "off", "contexts": ["x"], "checks": []}}
    assert required_checks(off).checks == ()
    on = {"enabled": True, "required_status_checks": {"enforcement_level": "everyone", "contexts": ["x"],
                                                      "checks": [{"context": "x", "app_id": 5}]}}
    assert required_checks(on).checks == (RequiredCheck("x", 5),)


def test_check_state() -> None:
    lint = RequiredCheck("lint")
    assert check_state(lint, [run("lint")], []) == "success"
    assert check_state(lint, [run("lint", conclusion="neutral")], []) == "success"
    assert check_state(lint, [run("lint", conclusion="skipped")], []) == "success"
    assert check_state(lint, [run("lint", status="in_progress", conclusion=None)], []) == "pending"
    assert check_state(lint, [run("lint", conclusion="failure")], []) == "failure"
    assert check_state(lint, [run("lint", conclusion="failure", id=1), run("lint", id=2)], []) == "success"
    assert check_state(lint, [], [status("lint", "success")]) == "success"
    assert check_state(lint, [], [status("lint", "pending")]) == "pending"
    assert check_state(lint, [], [status("lint", "error")]) == "error"
    assert check_state(lint, [], [status("lint", "failure", id=1, updated_at="2026-01-01T00:00:00Z"),
                                  status("lint", "success", id=2, updated_at="2026-01-02T00:00:00Z")]) == "success"
    assert check_state(lint, [run("other")], [status("other", "success")]) == "missing"
    # a check bound to an app: another app's run of the same name, or a status, does not count
    bound = RequiredCheck("lint", 77)
    assert check_state(bound, [run("lint", app=1)], [status("lint", "success")]) == "missing"
    assert check_state(bound, [run("lint", app=77)], []) == "success"


def test_required_checks_must_be_green() -> None:
    required = RequiredChecks(True, (RequiredCheck("ci/lint"), RequiredCheck("build")))
    decision = merge_decision(pull(), Validation(), required=required,
                              check_runs=[run("build", status="queued", conclusion=None)], statuses=[])
    assert not decision.allowed
    assert decision.reason == ("required check `ci/lint` has not reported on this head; "
                               "required check `build` is still pending")
    failing = merge_decision(pull(), Validation(), required=required, check_runs=[run("build", conclusion="failure")],
                             statuses=[status("ci/lint", "success")])
    assert not failing.allowed and failing.reason == "required check `build` did not pass (Failed)"
    waiting = merge_decision(pull(), Validation(), required=required,
                             check_runs=[run("build", conclusion="action_required")],
                             statuses=[status("ci/lint", "error")])
    assert waiting.reason == ("required check `ci/lint` did not pass (Error); "
                              "required check `build` did not pass (Action required)")
    green = merge_decision(pull(), Validation(), required=required, check_runs=[run("build")],
                           statuses=[status("ci/lint", "success")])
    assert green.allowed


def test_the_apps_own_required_check_is_judged_by_the_stored_validation() -> None:
    own = RequiredCheck("CodegenApp", APP)
    required = RequiredChecks(True, (RequiredCheck("CodegenApp", APP),))
    # GitHub may still show the check run in progress: the stored success is what counts
    in_progress = [run("CodegenApp", status="in_progress", conclusion=None, app=APP)]
    assert merge_decision(pull(), Validation(), required=required, check_runs=in_progress, own_check=own).allowed
    assert not merge_decision(pull(), Validation(conclusion="failure"), required=required, own_check=own).allowed
    # the same name from another app is someone else's check
    other = RequiredChecks(True, (RequiredCheck("CodegenApp", 999),))
    assert not merge_decision(pull(), Validation(), required=other, own_check=own).allowed


def test_unreadable_protection_requires_nothing() -> None:
    assert merge_decision(pull(), Validation(), required=NOT_READABLE).allowed


# ---- the auto-merge switch -------------------------------------------------------------------------

@pytest.mark.parametrize("file, project, pr, expected", [
    (None, False, None, (False, "default")),
    (None, True, None, (True, "project")),
    ("auto_merge: false\n", True, None, (False, "repository")),
    ("auto_merge: true\n", False, None, (True, "repository")),
    ("auto_merge: true\n", True, False, (False, "pull_request")),
    (None, False, True, (True, "pull_request")),
    ("auto_merge: {method: squash}\n", True, None, (True, "project")),
])
def test_auto_merge_precedence(file, project, pr, expected) -> None:
    repo = parse_repo_config(file) if file else None
    settings = merge_settings(repo, ProjectSettings(auto_merge_enabled=project), pr_auto_merge=pr)
    assert (settings.auto_merge, settings.auto_merge_source) == expected


def test_merge_method_and_branch_deletion_come_from_the_file() -> None:
    settings = merge_settings(parse_repo_config("auto_merge: {method: rebase}\ndelete_branch_after_merge: true\n"),
                              ProjectSettings())
    assert (settings.method, settings.delete_branch, settings.auto_merge) == ("rebase", True, False)
    default = merge_settings(None, ProjectSettings())
    assert (default.method, default.delete_branch) == ("merge", False)


def test_delete_branch_after_merge_is_a_boolean() -> None:
    with pytest.raises(ConfigFileError, match='line 1: "delete_branch_after_merge" must be true or false, got "maybe"'):
        parse_repo_config("delete_branch_after_merge: maybe\n")
    with pytest.raises(ConfigFileError, match="has no value"):
        parse_repo_config("delete_branch_after_merge:\n")
