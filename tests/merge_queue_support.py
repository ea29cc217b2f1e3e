"""The app's own merge queue on the fake GitHub: a repository with several PRs off one base, each on its
own branch, the queue turned on in the project's settings, and waiting for the queue to settle."""

from __future__ import annotations

import asyncio
import copy
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import update

from bot.events import wait_for
from bot.models import Project
from pipeline.merge_queue.codec import queue_from_document
from pipeline.merge_queue.model import Queue
from tests.fakes.github import FakeGitHub
from tests.pull_requests import INSTALLATION_ID, Scenario, record_project

FULL_NAME = "acme/widgets"
MAINTAINER = "mona"


@dataclass
class QueueRepo:
    fake: FakeGitHub
    full_name: str
    base_sha: str
    pulls: dict[int, Scenario]
    project: Any

    def comment(self, number: int, body: str, user: str = MAINTAINER) -> dict[str, Any]:
        return self.pulls[number].comment_payload(body, user=user)

    def main(self) -> str:
        return self.fake.git_repo(self.full_name).rev_parse("refs/heads/main")

    def first_parents(self, since: str) -> list[str]:
        """The commits of main after `since`, oldest first (its first-parent history)."""
        out = self.fake.git_repo(self.full_name).git("rev-list", "--first-parent", "--reverse", f"{since}..main")
        return out.split()

    def tree(self, rev: str) -> str:
        return self.fake.git_repo(self.full_name).git("rev-parse", f"{rev}^{{tree}}").strip()

    def push_to_pull(self, number: int, files: dict[str, Any]) -> str:
        """A new head for PR `number` (pushed to its branch), as the fake and a synchronize event show it."""
        git = self.fake.git_repo(self.full_name)
        pull = self.fake.pulls[(self.full_name, number)]
        head = git.commit(files, branch=pull["head"]["ref"], message="more")
        git.set_ref(f"refs/pull/{number}/head", head)
        pull["head"]["sha"] = head
        self.pulls[number].head_sha = head
        return head

    def push_to_main(self, files: dict[str, Any]) -> str:
        """Someone else pushes to the base."""
        git = self.fake.git_repo(self.full_name)
        return git.commit(files, branch="main", message="someone else's change")

    def push_payload(self, before: str, after: str) -> dict[str, Any]:
        return {"ref": "refs/heads/main", "before": before, "after": after,
                "repository": copy.deepcopy(self.fake.repos[self.full_name]),
                "installation": {"id": INSTALLATION_ID}, "sender": {"login": "someone", "type": "User"}}


async def queue_repo(store: Any, fake: FakeGitHub, *, prs: dict[int, dict[str, str]], validate: list[str],
                     queue: dict[str, Any] | None = None, forks: frozenset[int] = frozenset()) -> QueueRepo:
    """A repository whose main holds a base commit, and one PR per `prs` item (number -> the files its one
    commit adds) off that base; the project's settings validate with `validate` and turn the queue on
    (`queue`: its other settings)."""
    fake.add_installation(INSTALLATION_ID, FULL_NAME.split("/")[0], repos=[FULL_NAME])
    fake.set_permission(FULL_NAME, MAINTAINER, "write")
    git = fake.git_repo(FULL_NAME)
    base = git.commit({"README.md": "# widgets\n", "app.py": "print('hello')\n"}, branch="main", message="base")
    pulls: dict[int, Scenario] = {}
    for number, files in prs.items():
        head = git.commit(files, branch=f"pr-{number}", parent=base, message=f"change {number}")
        git.set_ref(f"refs/pull/{number}/head", head)
        fork = f"stranger/{FULL_NAME.split('/')[1]}" if number in forks else None
        fake.add_pull(FULL_NAME, number, head_sha=head, base_sha=base, head_ref=f"pr-{number}",
                      head_full_name=fork, user_login="stranger" if fork else "octocat", title=f"Change {number}")
        fake.set_pull_files(FULL_NAME, number, list(files))
        pulls[number] = Scenario(fake, FULL_NAME, number, base, head)
    project = await record_project(store, next(iter(pulls.values())))
    await store.projects.update_project(project.id, {"validate_commands": validate})
    settings = {"enabled": True, "batch_size": 1, "max_parallel": 3, "flaky_retries": 0, **(queue or {})}
    # the dashboard's page for the queue's settings is not built yet: stored as it will store them
    await store.projects._db.write(lambda conn: conn.execute(
        update(Project).where(Project.id == project.id).values(merge_queue=settings)))
    return QueueRepo(fake, FULL_NAME, base, pulls, await store.projects.get_project(project.id))


async def stored_queue(bot: Any, repo: QueueRepo) -> Queue:
    stored = await bot.store.merge_queues.load(repo.project.id, "main")
    assert stored is not None
    return queue_from_document(stored.state)


def left_the_queue(fake: FakeGitHub, number: int) -> bool:
    """PR `number` was queued and has left the queue of main since: its "Merge queue" check runs (one a
    head it was queued with) are all completed (landed, ejected or taken out)."""
    runs = [r for r in fake.check_runs.values()
            if r["name"] == "Merge queue" and r.get("external_id") == f"merge-queue:main:{number}"]
    return bool(runs) and all(r["status"] == "completed" for r in runs)


async def until_idle(bot: Any, events: Any, repo: QueueRepo | None = None, *numbers: int,
                     timeout: float = 120) -> None:
    """Wait until each of `numbers` (default: every PR of `repo`) has left the queue of main and the queue
    has nothing queued or running (`events`: a bus subscription made before the queue was started). Not
    merely the first idle queue: with PRs queued one after the other, the first may land before the next
    is queued."""
    numbers = numbers or (tuple(repo.pulls) if repo is not None else ())
    async with asyncio.timeout(timeout):
        while not (all(left_the_queue(repo.fake, n) for n in numbers if repo is not None)
                   and not await bot.store.merge_queues.active()):
            await wait_for(events, "merge_queue.updated", timeout=timeout, base_ref="main", active=False)


def mirror_tree(bot: Any, sha: str) -> str:
    """The tree of `sha` in the app's mirror (a candidate commit exists only there)."""
    mirror = Path(bot.services.settings.data_dir) / "git" / "mirrors" / "acme" / "widgets.git"
    return subprocess.run(["git", "--git-dir", str(mirror), "rev-parse", f"{sha}^{{tree}}"], check=True,
                          capture_output=True, text=True).stdout.strip()


def comments_saying(fake: FakeGitHub, opening: str) -> list[str]:
    """The comments (their hidden marker line left out) that begin with `opening`, oldest first."""
    bodies = [c["body"].split("\n", 1)[1] if c["body"].startswith("<!--") else c["body"]
              for c in fake.comments.values()]
    return [body for body in bodies if body.startswith(opening)]


def queue_check_runs(fake: FakeGitHub, head_sha: str) -> list[dict[str, Any]]:
    return [r for r in fake.check_runs.values() if r["name"] == "Merge queue" and r["head_sha"] == head_sha]


async def until_stored_idle(store: Any, project_id: str, *, timeout: float = 30) -> None:
    """Wait (polling the database another process writes, within `timeout`) until no queue of the project
    has anything queued or running."""
    async with asyncio.timeout(timeout):
        while await store.merge_queues.active():
            await asyncio.sleep(0.1)


async def process_running(marker: str, *, timeout: float = 30) -> int:
    """The pid of the process whose command line holds `marker` (unique to the test), once it runs."""
    async with asyncio.timeout(timeout):
        while True:
            found = subprocess.run(["pgrep", "-f", "-x", marker], capture_output=True, text=True).stdout.split()
            if found:
                return int(found[0])
            await asyncio.sleep(0.05)
