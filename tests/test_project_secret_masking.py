"""A project's secret is masked in what the app says outside a validation's own run: the PR comment and
the check run of a run that ended without its report, and the log line, event and audit entry of an agent run's outcome."""

from __future__ import annotations

import json
import logging

from bot.models import AGENT_FAILED
from bot.store.agent_runs import NewRun
from pipeline.report.comment import COMMENT_MARKER
from tests.pull_requests import comments_on, open_pull_request, record_project, seed_validation

SECRET = "tok-0123456789abcdef-SECRET-7788"


async def test_the_comment_of_a_cancelled_run_is_masked_of_the_projects_secrets(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config="validate:\n  - 'true'\n")
    project = await record_project(bot.store, scenario)
    await bot.store.projects.set_secret(project.id, "API_TOKEN", SECRET)
    state = await seed_validation(bot.store, scenario, conclusion=None)
    assert await bot.store.validations.start(state.id)
    service = bot.services.validations
    check_run_id = await service.repo(project).check_runs.create_once(
        head_sha=scenario.head_sha, details_url=service.details_url(state.id), external_id=state.id,
        title="Validation queued", summary="Validating.", look_first=False)
    await bot.store.validations.set_check_run(state.id, check_run_id)
    state = await bot.store.validations.get(state.id)
    # the run's comment says "Validating…" (as announce_running writes it)
    await service.write_comment(service.repo(project), project.id, scenario.number,
                                f"{COMMENT_MARKER}\n### Validating `{scenario.head_sha[:7]}`…")
    assert await service.cancel(project, state, reason=f"/cancel by alice, who pasted {SECRET}", actor="alice")
    [comment] = comments_on(fake_github, scenario)
    assert "### Validation cancelled" in comment["body"]
    assert "who pasted ***" in comment["body"] and SECRET not in comment["body"]
    [completed] = [call.json for call in fake_github.calls_to("PATCH", "/repos/acme/widgets/check-runs/*")]
    assert completed["conclusion"] == "cancelled" and "who pasted ***" in completed["output"]["title"]
    assert SECRET not in json.dumps(completed)


async def test_an_agent_runs_outcome_is_logged_masked_of_the_projects_secrets(bot, fake_github, caplog) -> None:
    scenario = open_pull_request(fake_github, config="validate:\n  - 'true'\n")
    project = await record_project(bot.store, scenario)
    await bot.store.projects.set_secret(project.id, "API_TOKEN", SECRET)
    before = await bot.store.agent_runs.create(NewRun(
        project_id=project.id, target_text="Greet", source="api", requested_by="me", backend="codegen",
        auto_confirm=False, max_fix_attempts=1))
    after = await bot.store.agent_runs.get(before.id)
    after.status = AGENT_FAILED
    reason = f"the agent run failed: Codegen reports that the run failed: token {SECRET} rejected"
    with bot.services.bus.subscribe() as events, \
            caplog.at_level(logging.INFO, logger="pipeline.agents.service"):
        await bot.services.agent_runs.changed(project, before, after, reason)
        published = [events.get_nowait() for _ in range(events.qsize())]
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"agent run {after.id}")]
    assert "token *** rejected" in line and SECRET not in line
    assert SECRET not in json.dumps([event.data for event in published], default=str)
    audit = json.dumps([entry.details for entry in await bot.store.audit.list(project_id=project.id)], default=str)
    assert "token *** rejected" in audit and SECRET not in audit
