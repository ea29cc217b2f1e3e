"""The agent run's state machine and prompts, without I/O."""

from dataclasses import replace

import pytest

from pipeline.agents.backend import AgentStatus, Mode
from pipeline.agents.machine import (AgentObserved, AwaitValidation, CallFailed, Cancel, Confirm, Finish, Idle,
                                     PullFacts, PullObserved, RecordPullRequest, Refuse, Reject, ResumeForFix,
                                     RunFacts, StartAgent, StartValidation, StorePlan, Tick, Timing, Transition,
                                     ValidationFacts, Wait, backoff, next_step, observation_needed)
from pipeline.agents.prompts import (PromptContext, execute_prompt, fix_context, fix_prompt, plan_prompt, slug,
                                     title_of)

T = Timing()
RUNNING = AgentStatus("running", raw_status="ACTIVE")
OPEN = PullFacts("open", "b" * 40)


def facts(status: str, **changes) -> RunFacts:
    return replace(RunFacts(status=status), **changes)


def validation(conclusion: str | None, *, status: str = "completed", id: str = "v1", head: str = "b" * 40):
    return ValidationFacts(id=id, head_sha=head, status=status, conclusion=conclusion, title=f"tests {conclusion}")


# ---- starting and the plan ----------------------------------------------------------------------------------


def test_a_new_run_plans_first_unless_plans_are_auto_confirmed() -> None:
    assert next_step(facts("pending"), Tick()) == StartAgent(Mode.PLAN)
    assert next_step(facts("pending", auto_confirm=True), Tick()) == StartAgent(Mode.EXECUTE)


def test_a_plan_is_stored_then_waits_for_a_decision() -> None:
    run = facts("planning", agent_started=True)
    assert observation_needed(run) == "agent"
    assert next_step(run, AgentObserved(RUNNING)) == Wait(T.agent_poll, seen_active=True)
    done = AgentObserved(AgentStatus("finished", plan_text="  1. do it\n"))
    assert next_step(run, done) == StorePlan("1. do it")
    assert isinstance(next_step(run, AgentObserved(AgentStatus("finished", plan_text=" "))), Finish)
    waiting = facts("awaiting_confirmation")
    assert observation_needed(waiting) == "nothing"
    assert isinstance(next_step(waiting, Tick()), Idle)
    on_pr = facts("awaiting_confirmation", pr_number=4)
    assert observation_needed(on_pr) == "pull"
    assert isinstance(next_step(on_pr, PullObserved(OPEN, None)), Idle)
    assert next_step(on_pr, PullObserved(PullFacts("closed", "b" * 40), None)).status == "cancelled"


def test_confirm_and_reject_apply_only_to_a_waiting_plan() -> None:
    waiting = facts("awaiting_confirmation")
    assert next_step(waiting, Confirm("alice")) == Transition("running", "plan confirmed by alice")
    assert next_step(waiting, Reject("bob")) == Finish("cancelled", "plan rejected by bob")
    refused = next_step(facts("running", agent_started=True), Confirm("alice"))
    assert isinstance(refused, Refuse) and "(it is working)" in refused.reason
    # after confirm the run is running without an agent yet: it starts one to execute
    assert next_step(facts("running"), Tick()) == StartAgent(Mode.EXECUTE)


def test_cancel_ends_any_run_that_has_not_ended() -> None:
    for status in ("pending", "planning", "awaiting_confirmation", "running", "pr_open", "validating", "fixing"):
        assert next_step(facts(status), Cancel("carol")) == Finish("cancelled", "cancelled by carol")
    assert isinstance(next_step(facts("completed"), Cancel("carol")), Refuse)
    assert isinstance(next_step(facts("failed"), Tick()), Idle)


def test_polls_back_off_to_a_cap() -> None:
    assert [backoff(n, 5, 60, 1.5) for n in range(8)] == [5, 7.5, 11.25, 16.875, 25.3125, 37.96875, 56.953125, 60]
    assert next_step(facts("running", agent_started=True, polls=20), AgentObserved(RUNNING)).seconds == T.agent_poll_max


# ---- the PR --------------------------------------------------------------------------------------------------


def test_an_execution_that_opened_a_pr_records_it() -> None:
    run = facts("running", agent_started=True)
    done = AgentStatus("finished", pr_number=7, pr_url="https://github.com/acme/w/pull/7")
    assert next_step(run, AgentObserved(done)) == RecordPullRequest(7, "https://github.com/acme/w/pull/7")
    no_pr = next_step(run, AgentObserved(AgentStatus("finished", summary="nothing to do")))
    assert isinstance(no_pr, Finish) and no_pr.status == "failed" and "nothing to do" in no_pr.reason


def test_a_run_on_an_existing_pr_waits_for_its_new_head() -> None:
    run = facts("running", agent_started=True, origin_pr=True, pr_number=3, fix_base_sha="a" * 40)
    moved = AgentObserved(AgentStatus("finished"), PullFacts("open", "c" * 40))
    assert next_step(run, moved) == AwaitValidation("c" * 40)
    same = next_step(run, AgentObserved(AgentStatus("finished"), PullFacts("open", "a" * 40)))
    assert isinstance(same, Finish) and same.needs_human and "without pushing" in same.reason


def test_validation_states_drive_the_run() -> None:
    run = facts("pr_open", pr_number=7)
    assert observation_needed(run) == "pull"
    assert next_step(run, PullObserved(OPEN, None)) == Wait(T.validation_poll, status="pr_open")
    assert next_step(run, PullObserved(OPEN, validation(None, status="in_progress"))) == \
        Wait(T.validation_poll, status="validating", validation_id="v1")
    assert next_step(run, PullObserved(OPEN, validation("success"))) == Finish("completed", "the validation passed")
    cancelled = next_step(run, PullObserved(OPEN, validation("cancelled")))
    assert isinstance(cancelled, Finish) and cancelled.status == "cancelled"
    waiting = next_step(run, PullObserved(OPEN, validation("action_required", status="waiting")))
    assert isinstance(waiting, Finish) and waiting.needs_human
    neutral = next_step(run, PullObserved(OPEN, validation("neutral")))
    assert isinstance(neutral, Finish) and neutral.needs_human
    assert neutral.reason == "the validation ended without a verdict an agent can act on (Neutral): a human is needed"


def test_a_lost_webhook_starts_the_validation_after_a_grace() -> None:
    run = facts("pr_open", pr_number=7, seconds_in_status=T.validation_start_grace + 1)
    assert next_step(run, PullObserved(OPEN, None)) == StartValidation(OPEN.head_sha)


def test_a_merged_or_closed_pr_ends_the_run() -> None:
    run = facts("validating", pr_number=7)
    assert next_step(run, PullObserved(PullFacts("merged", "b" * 40), None)) == \
        Finish("completed", "the pull request was merged")
    assert next_step(run, PullObserved(PullFacts("closed", "b" * 40), None)) == \
        Finish("cancelled", "the pull request was closed")
    fixing = facts("fixing", agent_started=True, pr_number=7)
    assert next_step(fixing, AgentObserved(RUNNING, PullFacts("closed", "b" * 40))).status == "cancelled"


# ---- the fix loop --------------------------------------------------------------------------------------------


def test_a_failure_is_sent_back_to_the_agent_until_the_attempts_run_out() -> None:
    run = facts("validating", pr_number=7, max_fix_attempts=2)
    assert next_step(run, PullObserved(OPEN, validation("failure"))) == ResumeForFix("v1", 1)
    assert next_step(replace(run, fix_attempts=1), PullObserved(OPEN, validation("timed_out", id="v2"))) == \
        ResumeForFix("v2", 2)
    exhausted = next_step(replace(run, fix_attempts=2), PullObserved(OPEN, validation("failure", id="v3")))
    assert isinstance(exhausted, Finish) and exhausted.status == "failed" and exhausted.needs_human
    assert "after 2 fix attempt(s)" in exhausted.reason and "a human is needed" in exhausted.reason
    no_fixes = next_step(replace(run, max_fix_attempts=0), PullObserved(OPEN, validation("failure")))
    assert isinstance(no_fixes, Finish) and "turned off" in no_fixes.reason


def test_a_failure_already_answered_is_not_answered_twice() -> None:
    run = facts("validating", pr_number=7, handled_validation_id="v1", fix_attempts=1)
    assert isinstance(next_step(run, PullObserved(OPEN, validation("failure"))), Wait)


def test_a_fix_that_pushed_nothing_counts_as_an_attempt() -> None:
    run = facts("fixing", agent_started=True, agent_resumed=True, agent_seen_active=True, pr_number=7,
                fix_base_sha="b" * 40, fix_attempts=1, max_fix_attempts=3, handled_validation_id="v1")
    assert next_step(run, AgentObserved(AgentStatus("finished"), OPEN)) == ResumeForFix("v1", 2, no_change=True)
    moved = AgentObserved(AgentStatus("finished"), PullFacts("open", "d" * 40))
    assert next_step(run, moved) == AwaitValidation("d" * 40)


def test_a_finished_status_right_after_a_resume_is_not_believed_at_once() -> None:
    run = facts("fixing", agent_started=True, agent_resumed=True, agent_seen_active=False, pr_number=7,
                fix_base_sha="b" * 40, seconds_since_agent_start=1)
    assert isinstance(next_step(run, AgentObserved(AgentStatus("finished"), OPEN)), Wait)
    later = replace(run, seconds_since_agent_start=T.stale_grace + 1)
    assert isinstance(next_step(later, AgentObserved(AgentStatus("finished"), OPEN)), ResumeForFix)


# ---- errors ------------------------------------------------------------------------------------------------


def test_errors_end_the_run_or_back_off() -> None:
    run = facts("running", agent_started=True, pr_number=None)
    terminal = next_step(run, CallFailed("Codegen requires payment (402)", terminal=True))
    assert terminal == Finish("failed", "Codegen requires payment (402)", needs_human=False)
    first = next_step(run, CallFailed("502", terminal=False))
    assert first == Wait(T.error_backoff, error="502")
    limited = next_step(run, CallFailed("429", retry_after=42.0))
    assert isinstance(limited, Wait) and limited.seconds == 42.0
    last = next_step(replace(run, transient_errors=T.max_transient_errors - 1), CallFailed("timeout"))
    assert isinstance(last, Finish) and "gave up after" in last.reason
    failed = next_step(run, AgentObserved(AgentStatus("failed", raw_status="ERROR", error="boom")))
    assert failed == Finish("failed", "the agent run failed: boom", needs_human=False)
    unsaid = next_step(run, AgentObserved(AgentStatus("failed", raw_status="MAX_ITERATIONS_REACHED")))
    assert unsaid == Finish("failed", "the agent run failed: the agent service reported it as max iterations "
                                      "reached", needs_human=False)


# ---- prompts -----------------------------------------------------------------------------------------------


CTX = PromptContext(goal="Add a greeting", repository="acme/widgets", base_branch="main",
                    branch="codegenapp/1234abcd-add-a-greeting", repository_rules="Use tabs.",
                    planning_statement="Small steps.")


def test_prompts_carry_the_goal_rules_planning_statement_and_plan() -> None:
    plan = plan_prompt(CTX)
    assert "PLAN only" in plan and "Add a greeting" in plan and "Use tabs." in plan and "Small steps." in plan
    execute = execute_prompt(replace(CTX, plan="1. greet"))
    assert "Confirmed plan" in execute and "1. greet" in execute and "Open one pull request against `main`" in execute
    on_pr = execute_prompt(replace(CTX, pr_number=9, branch="feature"))
    assert "pull request #9" in on_pr and "`feature`" in on_pr and "do not open another" in on_pr


def test_a_fix_prompt_names_the_failing_step_and_its_masked_tail() -> None:
    results = {"steps": [{"name": "checkout", "stage": "checkout", "status": "passed", "output_tail": ""},
                         {"name": "pytest", "stage": "validate", "status": "failed",
                          "output_tail": "x" * 5000 + "\nAssertionError token=s3cr3t"},
                         {"name": "lint", "stage": "validate", "status": "timed_out", "output_tail": "slow",
                          "detail": "stopped after 1 min"}]}
    fix = fix_context(title="pytest failed — 1 of 3 steps passed", head_sha="f" * 40, results=results, attempt=2,
                      max_attempts=3, redact=lambda text: text.replace("s3cr3t", "***"))
    text = fix_prompt(replace(CTX, pr_number=9, branch="feature"), fix)
    assert "attempt 2 of 3" in text and "`feature`" in text and "pytest failed" in text
    assert "Step `pytest` (validate) failed." in text and "AssertionError token=***" in text
    assert "s3cr3t" not in text and "x" * 3001 not in text
    assert "Step `lint` (validate) timed out: stopped after 1 min" in text and "checkout" not in text


def test_a_fix_prompt_lists_every_finding_of_a_step_whose_long_output_would_push_them_out() -> None:
    # the analysis verdict puts the findings at the top of the tail; ~3 KB of stderr after them
    listed = ["app.py:3 F401 `os` imported but unused", "app.py:9 E501 line too long (120 > 88)",
              "lib/util.py:14 token=s3cr3t B105 hard-coded password"]
    ruff = {"name": "ruff", "stage": "analysis", "status": "failed", "detail": "3 findings on changed lines",
            "output_tail": "\n".join(listed) + "\n\n" + "warning: noisy stderr line\n" * 150}
    stored = [{"path": "app.py", "line": 3, "end_line": 3, "level": "failure", "rule": "F401",
               "message": "`os` imported but unused", "step": "ruff"},
              {"path": "app.py", "line": 9, "end_line": 9, "level": "failure", "rule": "E501",
               "message": "line too long\n (120 > 88)", "step": None},  # the one analysis step found it
              {"path": "lib/util.py", "line": 14, "end_line": 14, "level": "failure", "rule": "B105",
               "message": "hard-coded password s3cr3t", "step": "ruff"},
              {"path": "app.py", "line": 1, "end_line": 1, "level": "warning", "rule": "W1", "message": "meh",
               "step": "ruff"}]
    results = {"steps": [{"name": "pytest", "stage": "validate", "status": "passed", "output_tail": "ok"}, ruff],
               "findings": stored}
    fix = fix_context(title="ruff: 3 findings on changed lines", head_sha="f" * 40, results=results, attempt=1,
                      max_attempts=3, redact=lambda text: text.replace("s3cr3t", "***"))
    text = fix_prompt(replace(CTX, pr_number=9, branch="feature"), fix)
    assert "Step `ruff` (analysis) failed: 3 findings on changed lines" in text
    assert "- app.py:3 F401 `os` imported but unused" in text
    assert "- app.py:9 E501 line too long (120 > 88)" in text
    assert "- lib/util.py:14 B105 hard-coded password ***" in text and "s3cr3t" not in text
    assert "W1" not in text  # a warning does not fail the check

    many = {**results, "findings": [{**stored[0], "line": n} for n in range(1, 61)]}
    text = fix_prompt(replace(CTX, pr_number=9, branch="feature"),
                      fix_context(title="t", head_sha="f" * 40, results=many, attempt=1, max_attempts=3))
    assert "- app.py:50 F401" in text and "- app.py:51 F401" not in text and "- … and 10 more" in text

    old = {"steps": results["steps"]}  # stored before findings were: the step's tail as before
    text = fix_prompt(replace(CTX, pr_number=9, branch="feature"),
                      fix_context(title="t", head_sha="f" * 40, results=old, attempt=1, max_attempts=3))
    assert "Step `ruff` (analysis) failed" in text and "findings on the changed lines:" not in text
    assert "noisy stderr line" in text


def test_a_fix_prompt_carries_the_rules_and_the_planning_statement_as_every_prompt_does() -> None:
    fix = fix_context(title="pytest failed", head_sha="f" * 40, results={}, attempt=1, max_attempts=3)
    on_pr = replace(CTX, pr_number=9, branch="feature")
    for prompt in (plan_prompt(CTX), execute_prompt(CTX), fix_prompt(on_pr, fix)):
        assert "## Repository rules\n\nUse tabs." in prompt and "## Planning statement\n\nSmall steps." in prompt


def test_slug_and_title() -> None:
    assert slug("Add a /health endpoint!! (fast)") == "add-a-health-endpoint-fast"
    assert slug("¡¡¡") == "change"
    assert len(slug("word " * 40)) <= 40
    assert title_of("\n  Fix it\nmore") == "Fix it"
    assert title_of("y" * 100).endswith("…") and len(title_of("y" * 100)) == 72


@pytest.mark.parametrize("status,state", [("COMPLETE", "finished"), ("complete", "finished"), ("Failed", "failed"),
                                          ("ERROR", "failed"), ("cancelled", "failed"), ("ACTIVE", "running"),
                                          ("PENDING", "running"), ("EVALUATION", "running"), (None, "running")])
def test_codegen_statuses_compare_case_insensitively(status, state) -> None:
    from pipeline.agents.codegen import state_of
    assert state_of(status) == state
