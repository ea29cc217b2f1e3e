"""Helpers of the check-run tests (tests/test_check_run_claim.py, tests/test_check_run_recovery.py): a
ValidationService without the parts that run validations, a recorded pull request, the check runs of a
head on the fake GitHub, the queued validate jobs, and validations begun and aged by hand; the fixtures
`project_id` (a recorded project) and `other_store` (a second process's store on the same database)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bot.crypto import Crypto
from bot.db import Database

from bot.events import EventBus, JobWakeup
from bot.github.types import PullRequest
from bot.models import JOB_VALIDATE, ValidationState, utcnow
from bot.store import InstallationRef, RepoRef, Store
from bot.store.validations import CHECK_RUN_CLAIM_STALE
from pipeline.validation.service import ValidationService
from tests.fakes.github import FakeGitHub
from tests.pull_requests import Scenario, open_pull_request, record_project

CHECK_RUNS = "/repos/*/*/check-runs"


@pytest.fixture
async def other_store(database_url: str, store: Store) -> AsyncIterator[Store]:
    """A second engine on the same database: another worker process."""
    other = Store(Database(database_url), Crypto(Crypto.generate_key()))
    yield other
    await other.close()


@pytest.fixture
async def project_id(store: Store) -> str:
    await store.projects.upsert_installation(InstallationRef(id=1, account_login="octo"))
    await store.projects.upsert_projects(1, [RepoRef(10, "octo/one")])
    project = await store.projects.get_project_by_repo_id(10)
    assert project is not None
    return project.id


def validation_service_without_runner(store: Store, github: Any, *, bus: EventBus | None = None,
                                      merges: Any = None, volumes: Any = None,
                                      agent_configured: Callable[[Any], bool] = lambda project: False,
                                      public_url: str = "http://app.test", data_dir: Path = Path("/nonexistent"),
                                      chromium_path: str = "") -> ValidationService:
    """A ValidationService with no runner and no checkouts (and, unless given, no merges or volumes): what
    `start`, the handlers and the check-run recovery use, without running a validation."""
    return ValidationService(store, github, EventBus() if bus is None else bus, JobWakeup(),
                             runner=None, checkouts=None, merges=merges, volumes=volumes,  # type: ignore[arg-type]
                             agent_configured=agent_configured,
                             public_url=public_url, data_dir=data_dir, chromium_path=chromium_path)


async def recorded_pull_request(store: Store, fake: FakeGitHub) -> tuple[Any, Scenario, PullRequest]:
    """A new PR (no config) on the fake GitHub, its project recorded: (project, scenario, parsed PR)."""
    scenario = open_pull_request(fake, config=None)
    project = await record_project(store, scenario)
    pr = PullRequest.parse(fake.pulls[(scenario.full_name, scenario.number)], source="the fake",
                           repository=scenario.full_name)
    return project, scenario, pr


def check_runs_of(fake: FakeGitHub, head_sha: str) -> list[dict[str, Any]]:
    """The check runs the fake GitHub holds for `head_sha`, oldest first."""
    return [run for _, run in sorted(fake.check_runs.items()) if run["head_sha"] == head_sha]


async def queued_validations(store: Store) -> list[str]:
    """The validations whose validate jobs are queued (claiming those jobs), in the queue's order."""
    jobs = await store.jobs.claim("test", limit=50, lease_seconds=60, kinds=frozenset({JOB_VALIDATE}))
    assert all(job.args.keys() == {"validation_id"} for job in jobs), [job.args for job in jobs]
    return [job.args["validation_id"] for job in jobs]


async def begin_validation(store: Store, project_id: str, claimer: str, *, pr: PullRequest | None = None,
                           head_sha: str = "a" * 40, restart: bool = False) -> Any:
    """`ValidationStore.begin` as a delivery's job calls it (`claimer` being the delivery), for `pr` or
    else PR 1 at `head_sha`."""
    number, head, base = (pr.number, pr.head_sha, pr.base_sha) if pr is not None else (1, head_sha, "b" * 40)
    return await store.validations.begin(project_id=project_id, pr_number=number, head_sha=head, restart=restart,
                                         base_sha=base, is_fork=False, author="octocat",
                                         trigger="pull_request.opened", claimer=claimer)


async def age_validation(store: Store, validation_id: str, by: timedelta = CHECK_RUN_CLAIM_STALE * 2) -> None:
    """As if the process that claimed or ended this validation had gone quiet `by` ago."""
    row = await store.validations.get(validation_id)
    assert row is not None
    values: dict[str, Any] = {"check_run_claimed_at": utcnow() - by}
    if row.completed_at is not None:
        values["completed_at"] = utcnow() - by
    stmt = update(ValidationState).where(ValidationState.id == validation_id).values(**values)
    await store.db.write(lambda conn: conn.execute(stmt))
