"""Pull request scenarios on the fake GitHub: a real git repository, a PR, its webhook payload."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from bot.events import wait_for
from bot.store import InstallationRef, RepoRef
from pipeline.report.comment import COMMENT_MARKER
from tests.fakes.github import FakeGitHub

INSTALLATION_ID = 4242
APP_ID = 12345  # the test App (tests/conftest.py)
# PR numbers of the scenarios: above the ones tests seed by hand (seed_overview's #3-#9), so that the two never
# collide whatever order the tests run in.
_numbers = itertools.count(100)


@dataclass
class Scenario:
    fake: FakeGitHub
    full_name: str
    number: int
    base_sha: str
    head_sha: str

    def payload(self, action: str = "opened") -> dict[str, Any]:
        """The pull_request webhook payload GitHub would send now."""
        pull = self.fake.pulls[(self.full_name, self.number)]
        return {"action": action, "number": self.number, "pull_request": copy.deepcopy(pull),
                "repository": copy.deepcopy(self.fake.repos[self.full_name]),
                "installation": {"id": INSTALLATION_ID, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
                "sender": pull["user"]}

    def comment_payload(self, body: str, *, user: str = "octocat", user_type: str = "User",
                        via_app_id: int | None = None) -> dict[str, Any]:
        """issue_comment.created for a new comment on the PR (the comment exists in the fake too)."""
        comment = copy.deepcopy(self.fake.add_comment(self.full_name, self.number, body, user_login=user))
        comment["user"]["type"] = user_type
        if via_app_id is not None:
            comment["performed_via_github_app"] = {"id": via_app_id, "slug": "codegenapp-test", "name": "CodegenApp"}
        pull = self.fake.pulls[(self.full_name, self.number)]
        issue = {"url": pull["issue_url"], "html_url": pull["html_url"], "id": pull["id"], "node_id": pull["node_id"],
                 "number": self.number, "title": pull["title"], "user": copy.deepcopy(pull["user"]),
                 "labels": [], "state": pull["state"], "locked": False, "comments": 1, "body": pull.get("body"),
                 "author_association": "CONTRIBUTOR", "created_at": pull["created_at"],
                 "updated_at": pull["updated_at"], "closed_at": pull["closed_at"],
                 "pull_request": {"url": pull["url"], "html_url": pull["html_url"], "diff_url": pull["diff_url"],
                                  "patch_url": pull["patch_url"], "merged_at": pull["merged_at"]}}
        return {"action": "created", "issue": issue, "comment": comment,
                "repository": copy.deepcopy(self.fake.repos[self.full_name]),
                "installation": {"id": INSTALLATION_ID, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
                "sender": copy.deepcopy(comment["user"])}

    def check_run(self, *, head_sha: str | None = None, conclusion: str = "success", external_id: str = "",
                  app_id: int = APP_ID, check_run_id: int = 4_100_000_001) -> dict[str, Any]:
        """A check run as a webhook shows it (for check runs the fake did not create)."""
        head = head_sha or self.head_sha
        pull = self.fake.pulls[(self.full_name, self.number)]
        same_repo = pull["head"]["repo"]["full_name"] == self.full_name
        pulls = [{"url": pull["url"], "id": pull["id"], "number": self.number,
                  "head": {"ref": pull["head"]["ref"], "sha": head, "repo": {"id": pull["head"]["repo"]["id"]}},
                  "base": {"ref": pull["base"]["ref"], "sha": pull["base"]["sha"],
                           "repo": {"id": pull["base"]["repo"]["id"]}}}] if same_repo else []
        return {"id": check_run_id, "name": "CodegenApp", "head_sha": head, "external_id": external_id,
                "status": "completed", "conclusion": conclusion, "app": {"id": app_id, "slug": "codegenapp-test"},
                "pull_requests": pulls, "output": {"title": "", "summary": ""}}

    def requested_action_payload(self, check_run: dict[str, Any], identifier: str, *,
                                 user: str = "octocat", user_type: str = "User") -> dict[str, Any]:
        """check_run.requested_action: `user` clicked the button `identifier` of `check_run`."""
        sender = copy.deepcopy(self.fake._user(user, user_type=user_type))
        return {"action": "requested_action", "check_run": copy.deepcopy(check_run),
                "requested_action": {"identifier": identifier},
                "repository": copy.deepcopy(self.fake.repos[self.full_name]),
                "installation": {"id": INSTALLATION_ID, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
                "sender": sender}

    def push(self, files: dict[str, Any], *, message: str = "more") -> str:
        """A new head for the PR (as a push to its branch would make)."""
        repo = self.fake.git_repo(self.full_name)
        self.head_sha = repo.commit(files, branch="feature", message=message)
        repo.set_ref(f"refs/pull/{self.number}/head", self.head_sha)
        pull = self.fake.pulls[(self.full_name, self.number)]
        pull["head"]["sha"] = self.head_sha
        return self.head_sha


async def record_project(store: Any, scenario: Scenario) -> Any:
    """The scenario's project in the store, as the first event from its installation records it."""
    repo = scenario.fake.repos[scenario.full_name]
    await store.projects.upsert_installation(InstallationRef(id=INSTALLATION_ID, account_login=repo["owner"]["login"]),
                                             only_if_missing=True)
    await store.projects.upsert_projects(INSTALLATION_ID, [RepoRef(id=repo["id"], full_name=scenario.full_name,
                                                                   default_branch=repo["default_branch"])],
                                         only_if_missing=True)
    return await store.projects.get_project_by_repo_id(repo["id"])


async def seed_validation(store: Any, scenario: Scenario, *, conclusion: str | None = "success",
                          head_sha: str | None = None) -> Any:
    """A stored validation of the PR's head, completed with `conclusion` (None: still queued),
    without running anything."""
    project = await record_project(store, scenario)
    state = await store.validations.create(project_id=project.id, pr_number=scenario.number,
                                           head_sha=head_sha or scenario.head_sha, base_sha=scenario.base_sha)
    if conclusion is not None:
        assert await store.validations.start(state.id)
        assert await store.validations.complete(state.id, conclusion=conclusion, title="seeded", results={})
    return await store.validations.get(state.id)


def open_pull_request(fake: FakeGitHub, *, config: str | None, base_files: dict[str, Any] | None = None,
                      head_files: dict[str, Any] | None = None, fork_owner: str | None = None,
                      author: str = "octocat", full_name: str = "acme/widgets") -> Scenario:
    """A repository with a base commit (holding `config` as .github/codegenapp.yml) and a PR on top."""
    if full_name not in fake.repos:
        fake.add_installation(INSTALLATION_ID, full_name.split("/")[0], repos=[full_name])
    repo = fake.git_repo(full_name)
    files = {"README.md": "# widgets\n", "app.py": "print('hello')\n", **(base_files or {})}
    if config is not None:
        files[".github/codegenapp.yml"] = config
    base = repo.commit(files, branch="main", message="base")
    head = repo.commit(head_files or {"app.py": "print('changed')\n"}, branch="feature", parent=base,
                       message="change")
    number = next(_numbers)
    repo.set_ref(f"refs/pull/{number}/head", head)
    if config is not None:
        fake.set_file(full_name, base, ".github/codegenapp.yml", config.encode())
    head_full_name = f"{fork_owner}/{full_name.split('/')[1]}" if fork_owner else None
    fake.add_pull(full_name, number, head_sha=head, base_sha=base, head_full_name=head_full_name,
                  user_login=author)
    changed = list((head_files or {"app.py": ""}).keys())
    fake.set_pull_files(full_name, number, changed)
    return Scenario(fake, full_name, number, base, head)


async def validate(bot: Any, scenario: Scenario, action: str = "opened", *, timeout: float = 60,
                   until_job_finished: bool = False) -> Any:
    """Deliver the PR's `action` event to `bot` (tests/conftest.py's BotUnderTest); return the validation of
    its head once completed (with `until_job_finished`, once its job, auto-merge included, has finished too)."""
    with bot.services.bus.subscribe() as events:
        answer = await bot.webhooks.send("pull_request", scenario.payload(action))
        assert answer.status == 202
        try:
            done = await wait_for(events, "validation.completed", timeout=timeout, head_sha=scenario.head_sha)
        except TimeoutError:
            raise AssertionError(f"no validation of {scenario.head_sha[:12]} completed within {timeout:g} s; "
                                 f"where it stood: {_check_runs_of(scenario)}") from None
        if until_job_finished:
            await wait_for(events, "job.finished", timeout=timeout, kind="validate")
    return await bot.store.validations.get(done.data["validation_id"])


def _check_runs_of(scenario: Scenario) -> str:
    """The head's check runs on the fake GitHub as a stalled test reports them: status, title and the
    end of the live output (the running step's tail)."""
    runs = [r for r in scenario.fake.check_runs.values() if r["head_sha"] == scenario.head_sha]
    return "\n".join(f"{r['name']} {r['status']}: {r['output']['title']}\n{(r['output']['text'] or '')[-3000:]}"
                     for r in runs) or "no check run"


def check_run(fake: FakeGitHub, state: Any) -> dict[str, Any]:
    """The validation's check run on the fake GitHub."""
    return fake.check_runs[state.check_run_id]


def comments_on(fake: FakeGitHub, scenario: Scenario) -> list[dict[str, Any]]:
    """The app's sticky validation comments (those starting with its marker)."""
    return [c for c in fake.comments.values() if c["body"].startswith(COMMENT_MARKER)]
