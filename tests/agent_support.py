"""Helpers for the agent-run tests: a repository on the fake GitHub with the project recorded, the
webhooks GitHub would send when PRs appear, move or close, and waiting for a run's status."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from bot.events import AppEvent, wait_for
from bot.models import Project
from bot.store import InstallationRef, RepoRef
from pipeline.agents.machine import Timing
from tests.fakes.github import FakeGitHub
from tests.pull_requests import INSTALLATION_ID

FAST = Timing(agent_poll=0.05, agent_poll_max=0.2, validation_poll=0.1, validation_poll_max=0.5,
              error_backoff=0.05, error_backoff_max=0.3, stale_grace=3.0, validation_start_grace=60.0)


def make_repository(fake: FakeGitHub, *, config: str, files: dict[str, Any] | None = None,
                    full_name: str = "acme/widgets") -> str:
    """A repository with one commit on main holding `files` and `config` as .github/codegenapp.yml;
    returns the base sha."""
    if full_name not in fake.repos:
        fake.add_installation(INSTALLATION_ID, full_name.split("/")[0], repos=[full_name])
    repo = fake.git_repo(full_name)
    base = repo.commit({"README.md": "# widgets\n", "greeting.txt": "hi\n", **(files or {}),
                        ".github/codegenapp.yml": config}, branch="main", message="base")
    fake.set_file(full_name, base, ".github/codegenapp.yml", config)
    return base


async def record_project(bot: Any, fake: FakeGitHub, full_name: str = "acme/widgets", **settings: Any) -> Project:
    """The project as the installation event would have recorded it, with agent `settings`."""
    store = bot.store
    await store.projects.upsert_installation(InstallationRef(INSTALLATION_ID, full_name.split("/")[0]))
    data = fake.repos[full_name]
    await store.projects.upsert_projects(INSTALLATION_ID, [RepoRef(data["id"], full_name, default_branch="main")])
    project = await store.projects.get_project_by_name(full_name)
    assert project is not None
    if settings:
        project = await store.agent_runs.update_project_settings(project.id, settings)
    return project


class WebhookRelay:
    """Sends the `pull_request` webhooks GitHub would (opened, synchronize, closed) when the fake's PRs
    appear, move or close: after every request the fake answers, and on `poke()` (the fake Codegen's
    direct pushes)."""

    def __init__(self, fake: FakeGitHub, bot: Any) -> None:
        self.fake = fake
        self.bot = bot
        self.known = {key: self._state(pull) for key, pull in fake.pulls.items()}
        self.sent: list[tuple[str, int, str]] = []
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _state(pull: dict[str, Any]) -> tuple[str, str]:
        return pull["state"], pull["head"]["sha"]

    def start(self) -> "WebhookRelay":
        self._task = asyncio.create_task(self._loop())
        return self

    def poke(self) -> None:
        self._poke.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            call = asyncio.create_task(self.fake.wait_for_call("*", "**", count=len(self.fake.calls) + 1,
                                                               timeout=3600))
            poke = asyncio.create_task(self._poke.wait())
            try:
                await asyncio.wait({call, poke}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (call, poke):
                    task.cancel()
                await asyncio.gather(call, poke, return_exceptions=True)
            self._poke.clear()
            await self.sync()

    async def sync(self) -> None:
        for key, pull in list(self.fake.pulls.items()):
            before, now = self.known.get(key), self._state(pull)
            self.known[key] = now
            if before == now:
                continue
            if before is None:
                action = "opened" if now[0] == "open" else None
            elif before[0] == "open" and now[0] == "closed":
                action = "closed"
            elif now[0] == "open" and before[1] != now[1]:
                action = "synchronize"
            else:
                action = None
            if action is None:
                continue
            full_name, number = key
            payload = {"action": action, "number": number, "pull_request": copy.deepcopy(pull),
                       "repository": copy.deepcopy(self.fake.repos[full_name]),
                       "installation": {"id": INSTALLATION_ID}, "sender": pull["user"]}
            answer = await self.bot.webhooks.send("pull_request", payload)
            assert answer.status == 202, answer
            self.sent.append((full_name, number, action))


async def wait_run(events: asyncio.Queue[AppEvent], run_id: str, status: str, *, timeout: float = 30.0) -> AppEvent:
    """The `agent.run.updated` event of `run_id` reaching `status`."""
    return await wait_for(events, "agent.run.updated", timeout=timeout, run_id=run_id, status=status)
