"""The resync of open pull requests: a safety net beyond GitHub's 3-day delivery log (like Prow's resync).

At start and every RESYNC_INTERVAL seconds (0: never), for each project of an active installation,
installation by installation, the open PRs are listed (`GET /repos/{owner}/{repo}/pulls?state=open`,
100 a page) and `decision.plan_repository` says what to do: record them in the PR overview's table,
mark as closed the ones the table holds open that GitHub no longer lists, and validate the ones whose
head has no validation through `ValidationService.start` (trigger "resync"), as a push would, at most
RESYNC_MAX_STARTS a run, each installation a fair share of it (`decision.installation_share`). Starts go
one at a time (each waits for its check run, which the GitHub client paces per installation).

One process at a time resyncs, across processes: the run holds the database lease "resync", renewed
in the background every third of its time (`bot.store.leases.held`) however long a GitHub call takes;
a run whose lease is lost is cancelled. A repository that fails (404, 403, 5xx after the client's
retries) is logged and the others go on; when the client refuses a request because GitHub work is
paused for a short while (its outage circuit), the repository waits that pause out once. What the last run did is kept in the
app state "resync" (for /health, whatever process asks) and published on the bus as "resync.finished".
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from bot.errors import GitHubUnavailable
from bot.events import EventBus
from bot.github.github_app import GitHubApp
from bot.github.types import ListedPull
from bot.models import PR_CLOSED, PR_OPEN, Project, new_id, utcnow
from bot.store import Store
from bot.store.leases import run_once
from bot.store.tracked_pulls import PullSnapshot
from pipeline.resync.decision import RepositoryPlan, installation_share, plan_repository
from pipeline.validation.gate import head_moved_on
from pipeline.validation.service import ValidationService

log = logging.getLogger(__name__)

LEASE = "resync"
STATE_KEY = "resync"
TRIGGER = "resync"
LEASE_TTL = timedelta(minutes=10)  # renewed every third of it while the run lasts
MAX_PAUSE_WAIT = 60.0  # the longest pause of the GitHub client a repository waits out, once


@dataclass
class ResyncReport:
    """What one run did (kept as the app state "resync" for /health)."""
    started_at: str
    finished_at: str | None = None
    repositories: int = 0
    open_pulls: int = 0
    started: int = 0
    recorded: int = 0
    closed: int = 0
    left_over: int = 0  # PRs still needing a validation when the run's bound was reached
    max_starts: int = 0
    failures: list[str] = field(default_factory=list)  # "owner/repo: what went wrong"

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def cut_short(self) -> bool:
        return self.left_over > 0

    def as_state(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed, "cut_short": self.cut_short}

    def summary(self) -> str:
        text = (f"resync: {self.repositories} repositories, {self.open_pulls} open pull requests; "
                f"started {self.started} validations, recorded {self.recorded}, marked {self.closed} closed")
        if self.cut_short:
            text += (f"; stopped at RESYNC_MAX_STARTS={self.max_starts}: {self.left_over} more need a validation "
                     "(the next resync starts them)")
        if self.failures:
            text += f"; {len(self.failures)} failed: " + "; ".join(self.failures)
        return text


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Resync:
    """Resyncs at start, then every `interval` seconds, until `stop()`."""

    def __init__(self, store: Store, github: GitHubApp, validations: ValidationService, bus: EventBus, *,
                 interval: float, max_starts: int,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.store = store
        self.github = github
        self.validations = validations
        self.bus = bus
        self.interval = interval
        self.max_starts = max_starts
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval <= 0:
            log.info("resync of open pull requests off (RESYNC_INTERVAL=0)")
            return
        self._task = self._task or asyncio.create_task(self._loop(), name="resync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - the database is away, say: the next run tries again
                log.exception("resync: the run failed; trying again in %.0f s", self.interval)
            await asyncio.sleep(self.interval)

    async def run_once(self) -> ResyncReport | None:
        """One resync, or None when another process holds the lease (it is resyncing)."""
        async with self._lock:
            if not self.github.configured:
                return None
            return await run_once(self.store.leases, LEASE, self.holder, ttl=LEASE_TTL, work=self._run, doing="resync")

    async def _run(self) -> ResyncReport:
        report = ResyncReport(started_at=utcnow().isoformat(), max_starts=self.max_starts)
        installations: dict[int, list[Project]] = {}
        for project in await self.store.projects.active_projects():  # installation by installation
            installations.setdefault(project.installation_id, []).append(project)
        for left, projects in zip(range(len(installations), 0, -1), installations.values()):
            until = report.started + installation_share(self.max_starts - report.started, left)
            for project in projects:
                report.repositories += 1
                try:
                    await self._repository(project, report, budget=until - report.started)
                except Exception as exc:  # noqa: BLE001 - one repository never stops the others
                    log.warning("resync of %s failed: %s", project.name, _why(exc), exc_info=True)
                    report.failures.append(f"{project.name}: {_why(exc)}")
        report.finished_at = utcnow().isoformat()
        (log.warning if report.failed or report.cut_short else log.info)("%s", report.summary())
        await self.store.app_state.put(STATE_KEY, report.as_state())
        self.bus.publish("resync.finished", **report.as_state())
        return report

    async def _repository(self, project: Project, report: ResyncReport, *, budget: int) -> None:
        tracked_open = await self.store.tracked_pulls.open_pulls(project.id)  # before the listing: see close_missed
        listed, error = await self._list(project)
        validated = await self.store.validations.validated_heads(
            project.id, sorted({item.pull.head_sha for item in listed}))
        plan = plan_repository(listed, validated=validated, tracked_open=tracked_open, complete=error is None,
                               budget=budget)
        report.open_pulls += len(listed)
        report.left_over += plan.left_over
        await self._apply(project, plan, report)
        if error is not None:
            log.warning("resync: listing the open pull requests of %s failed: %s", project.name, _why(error))
            report.failures.append(f"{project.name}: {_why(error)}")

    async def _list(self, project: Project) -> tuple[list[ListedPull], Exception | None]:
        """The open PRs, and the error that cut the listing short (None: it is complete). A pause of the
        GitHub client (`retry_after`, a short outage pause or rate limit) is waited out once."""
        pulls = self.github.repo(project.installation_id, project.name).pulls
        waited = False
        while True:
            listed: list[ListedPull] = []
            try:
                async for item in pulls.open_pulls():
                    listed.append(item)
                return listed, None
            except GitHubUnavailable as exc:
                if waited or exc.retry_after is None or exc.retry_after > MAX_PAUSE_WAIT:
                    return listed, exc
                waited = True
                log.info("resync: %s waits %.1f s for GitHub work to resume: %s", project.name,
                         exc.retry_after, exc)
                await self._sleep(exc.retry_after)
            except Exception as exc:  # noqa: BLE001 - 404, 403, a body not as expected...
                return listed, exc

    async def _apply(self, project: Project, plan: RepositoryPlan, report: ResyncReport) -> None:
        # Recorded before validating, as the pull_request handler does: a started validation finds its PR.
        for item in plan.record:
            if await self.store.tracked_pulls.record(project.id, snapshot(item)):
                report.recorded += 1
                self.bus.publish("pr.updated", project_id=project.id, pr_number=item.pull.number, state=PR_OPEN,
                                 head_sha=item.pull.head_sha)
        for number in await self.store.tracked_pulls.close_missed(project.id, plan.close, closed_at=utcnow()):
            report.closed += 1
            log.info("resync: %s#%d is no longer open on GitHub: recorded as closed", project.name, number)
            self.bus.publish("pr.updated", project_id=project.id, pr_number=number, state=PR_CLOSED, head_sha=None)
        for pull in plan.start:
            # The listing may be minutes old by now (starts are paced): a push since then, or a webhook's
            # validation of this very head, makes this start wrong (it would end the newer head's run).
            recorded = await self.store.tracked_pulls.get(project.id, pull.number)
            if (recorded is not None and head_moved_on(pull.head_sha, recorded.head_sha, recorded.state == PR_OPEN)) \
                    or await self.store.validations.validated_heads(project.id, [pull.head_sha]):
                log.info("resync: %s#%d at %s needs no start any more (moved on, or validated meanwhile)",
                         project.name, pull.number, pull.head_sha[:7])
                continue
            await self.validations.start(project, pull, trigger=TRIGGER)
            report.started += 1
            log.info("resync: validating %s#%d at %s (no validation of that head)", project.name, pull.number,
                     pull.head_sha[:7])


def snapshot(listed: ListedPull) -> PullSnapshot:
    """The PR overview's record of an open PR as the listing describes it."""
    pull = listed.pull
    return PullSnapshot(number=pull.number, title=pull.title, author=pull.author, head_sha=pull.head_sha,
                        head_ref=pull.head_ref, base_ref=pull.base_ref, is_fork=pull.fork, draft=pull.draft,
                        state=PR_OPEN, opened_at=listed.created_at, updated_at=listed.updated_at or utcnow(),
                        closed_at=None)
