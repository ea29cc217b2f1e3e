"""Pull request scenarios on the fake GitHub: a real git repository, a PR, its webhook payload."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from tests.fakes.github import FakeGitHub

INSTALLATION_ID = 4242
_numbers = itertools.count(1)


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

    def push(self, files: dict[str, Any], *, message: str = "more") -> str:
        """A new head for the PR (as a push to its branch would make)."""
        repo = self.fake.git_repo(self.full_name)
        self.head_sha = repo.commit(files, branch="feature", message=message)
        repo.set_ref(f"refs/pull/{self.number}/head", self.head_sha)
        pull = self.fake.pulls[(self.full_name, self.number)]
        pull["head"]["sha"] = self.head_sha
        return self.head_sha


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
