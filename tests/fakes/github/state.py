"""``FakeState``: the in-memory data model every part of the fake works on, and the builders they share.

The state is plain dicts and lists (``installations``, ``repos``, ``pulls``, ``check_runs``, ``comments``
...), created by ``FakeState.__init__``; the resource mixins (``apps.py``, ``repos.py``, ``pulls.py``,
``check_runs.py``, ``issues.py``, ``git.py``) and the server (``server.py``, ``auth.py``) subclass
``FakeState`` and read and write it through ``self``. What more than one of them needs lives here:
installations and repositories (``add_installation``/``add_repo``, the roots of everything else), users,
the app, examples from the REST description, pagination, and keeping ``refs/pull/N/head`` in step.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests.fakes.github.common import (
    RateLimitBucket,
    _copy,
    _fake_sha,
    _int_query,
    _iso,
    _node_id,
    _now,
    _Principal,
    _Reply,
    _RepoState,
    _Request,
)
from tests.fakes.github.rest import RestSpec
from tests.gitrepos import GitRepo

DEFAULT_INSTALLATION_PERMISSIONS = {
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
    "statuses": "write",
}
DEFAULT_EVENTS = ["check_run", "check_suite", "issue_comment", "pull_request", "push"]
_ID_STARTS = {
    "user": 1001,
    "repo": 500_001,
    "pull": 700_000_001,
    "check_run": 4_000_000_001,
    "check_suite": 3_000_001,
    "comment": 1_000_000_001,
    "reaction": 9_000_001,
    "status": 6_000_001,
    "label": 8_000_001,
}
_EXAMPLE_REPO = "octocat/Hello-World"


class FakeState:
    """The data model. ``FakeGitHub.__init__`` sets the app's identity and the server's runtime, then
    calls ``FakeState.__init__`` for the state below."""

    # Set by FakeGitHub.__init__ (identity, REST description) and start() (URLs).
    app_id: int
    app_slug: str
    private_key_pem: str
    client_id: str
    client_secret: str
    manifest_webhook_secret: str
    validate_bodies: bool
    spec: RestSpec | None
    base_url: str
    api_url: str

    def __init__(self) -> None:
        self._ids = {kind: itertools.count(start) for kind, start in _ID_STARTS.items()}

        self.installations: dict[int, dict[str, Any]] = {}
        self.repos: dict[str, dict[str, Any]] = {}  # full name -> repository
        self._repos: dict[str, _RepoState] = {}  # lower-case full name -> state
        self.users: dict[str, dict[str, Any]] = {}  # lower-case login -> simple user
        self.pulls: dict[tuple[str, int], dict[str, Any]] = {}
        self._pull_numbers_by_repo: dict[str, list[int]] = {}  # so a check run does not scan every PR
        # Files of a PR for GET .../pulls/{n}/files: set with set_pull_files(), or put GitHub
        # diff-entry dicts here directly, keyed by (full name as given to add_repo, number).
        self.pull_files: dict[tuple[str, int], list[dict[str, Any]]] = {}
        # id -> check run + "annotations" (accumulated over updates), "actions", "images"
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.reactions: list[dict[str, Any]] = []  # reaction + "comment_id", "repository"
        # repository, number, sha (of the merge), head_sha, merge_method, commit_title, commit_message, installation_id
        self.merges: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []  # commit status + "sha", "repository"
        self.labels: dict[tuple[str, int], list[str]] = {}
        self.deleted_refs: list[dict[str, str]] = []
        self.tokens: dict[str, dict[str, Any]] = {}  # token -> response + "installation_id", "repository_names"
        self.user_tokens: dict[str, dict[str, Any]] = {}
        self.rate_limits: dict[str, RateLimitBucket] = {}
        self._run_repo: dict[int, str] = {}
        self._comment_issue: dict[int, tuple[str, int]] = {}
        self._suites: dict[tuple[str, str], int] = {}
        self._used_manifest_codes: set[str] = set()
        # Web flows (not under /api/v3): OAuth login and the App manifest registration.
        # Who "clicks Authorize" on GET /login/oauth/authorize: set with approve_oauth_as(); None shows a page.
        self.oauth_login: str | None = None
        self._oauth_installations: dict[str, list[int] | None] = {}  # lower-case login -> installation ids
        self._oauth_codes: dict[str, dict[str, Any]] = {}  # code -> login, client_id, redirect_uri
        self.oauth_grants: list[dict[str, Any]] = []  # every token handed out: login, token
        self.manifests: dict[str, dict[str, Any]] = {}  # code -> manifest posted to .../settings/apps/new
        self._git_root: Path | None = None
        self._git_repos: dict[str, GitRepo] = {}  # lower-case full name -> repository

    # ------------------------------------------------------------------ installations and repositories

    def add_installation(
        self,
        installation_id: int,
        account_login: str,
        *,
        account_type: str = "Organization",
        repos: Iterable[str] = (),
        permissions: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``repos`` are full names or names under ``account_login``."""
        self._require_started()
        account = self._user(account_login, user_type=account_type)
        settings = "organizations/" + account_login + "/settings" if account_type == "Organization" else "settings"
        installation = self._example("GET", "/repos/{owner}/{repo}/installation", 200)
        installation.update(
            id=installation_id,
            client_id=self.client_id,
            account=account,
            repository_selection="selected",
            access_tokens_url=f"{self.api_url}/app/installations/{installation_id}/access_tokens",
            repositories_url=f"{self.api_url}/installation/repositories",
            html_url=f"{self.base_url}/{settings}/installations/{installation_id}",
            app_id=self.app_id,
            app_slug=self.app_slug,
            target_id=account["id"],
            target_type=account_type,
            permissions=dict(permissions or DEFAULT_INSTALLATION_PERMISSIONS),
            events=list(DEFAULT_EVENTS),
            created_at=_iso(_now()),
            updated_at=_iso(_now()),
            single_file_name=None,
            has_multiple_single_files=False,
            single_file_paths=[],
            suspended_at=None,
            suspended_by=None,
        )
        self.installations[installation_id] = installation
        for name in repos:
            self.add_repo(name if "/" in name else f"{account_login}/{name}", installation_id=installation_id)
        return installation

    def add_repo(
        self, full_name: str, *, installation_id: int | None, default_branch: str = "main", private: bool = False
    ) -> dict[str, Any]:
        """Creates the installation too (for the repo's owner) when it does not exist yet.
        ``installation_id=None`` makes a repository the app is not installed on (e.g. a fork)."""
        self._require_started()
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"expected owner/name, got {full_name!r}")
        if installation_id is not None and installation_id not in self.installations:
            self.add_installation(installation_id, owner)
        data = self._repo_dict(full_name, private=private, default_branch=default_branch)
        state = _RepoState(data=data, installation_id=installation_id)
        state.branches[default_branch] = _fake_sha(full_name, default_branch)
        self._repos[full_name.lower()] = state
        self.repos[full_name] = data
        return data

    # ------------------------------------------------------------------ builders

    def _require_started(self) -> None:
        if not self.base_url:
            raise RuntimeError("FakeGitHub.start() first: URLs in the objects need the port")

    def _example(self, method: str, template: str, status: int) -> dict[str, Any]:
        if self.spec is None:
            return {}
        try:
            found = self.spec.example(method, template, status)
        except KeyError:
            return {}
        return found if isinstance(found, dict) else {}

    def _repo_state(self, full_name: str) -> _RepoState:
        try:
            return self._repos[full_name.lower()]
        except KeyError:
            raise KeyError(f"unknown repository {full_name!r}: add_repo() it first") from None

    def _user(self, login: str, *, user_type: str = "User") -> dict[str, Any]:
        key = login.lower()
        if key not in self.users:
            number = next(self._ids["user"])
            api = f"{self.api_url}/users/{login}"
            self.users[key] = {
                "login": login,
                "id": number,
                "node_id": _node_id("User", number),
                "avatar_url": f"{self.base_url}/avatars/u/{number}",
                "gravatar_id": "",
                "url": api,
                "html_url": f"{self.base_url}/{login}",
                "followers_url": f"{api}/followers",
                "following_url": f"{api}/following{{/other_user}}",
                "gists_url": f"{api}/gists{{/gist_id}}",
                "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
                "subscriptions_url": f"{api}/subscriptions",
                "organizations_url": f"{api}/orgs",
                "repos_url": f"{api}/repos",
                "events_url": f"{api}/events{{/privacy}}",
                "received_events_url": f"{api}/received_events",
                "type": user_type,
                "user_view_type": "public",
                "site_admin": False,
            }
        return _copy(self.users[key])

    def _bot(self) -> dict[str, Any]:
        return self._user(f"{self.app_slug}[bot]", user_type="Bot")

    def _app_dict(self) -> dict[str, Any]:
        app = self._example("GET", "/app", 200)
        app.update(
            id=self.app_id,
            slug=self.app_slug,
            client_id=self.client_id,
            node_id=_node_id("Integration", self.app_id),
            owner=self._user("codegenapp-dev", user_type="Organization"),
            name=f"CodegenApp ({self.app_slug})",
            description="",
            external_url=self.base_url,
            html_url=f"{self.base_url}/apps/{self.app_slug}",
            permissions=dict(DEFAULT_INSTALLATION_PERMISSIONS),
            events=list(DEFAULT_EVENTS),
            installations_count=len(self.installations),
        )
        return app

    def _retarget(self, text: str, full_name: str) -> str:
        host = self.base_url.removeprefix("http://")
        return (
            text.replace("https://api.github.com/", self.api_url + "/")
            .replace("https://github.com/", self.base_url + "/")
            .replace("git@github.com:", f"git@{host}:")
            .replace("git://github.com/", f"git://{host}/")
            .replace(_EXAMPLE_REPO, full_name)
        )

    def _repo_dict(self, full_name: str, *, private: bool, default_branch: str) -> dict[str, Any]:
        owner_login, name = full_name.split("/")
        owner_is_org = any(
            i["account"]["login"].lower() == owner_login.lower() and i["account"]["type"] == "Organization"
            for i in self.installations.values()
        )
        owner = self._user(owner_login, user_type="Organization" if owner_is_org else "User")
        repo = self._example("GET", "/repos/{owner}/{repo}", 200)
        for key in ("parent", "source", "template_repository", "organization"):
            repo.pop(key, None)
        repo = {k: self._retarget(v, full_name) if isinstance(v, str) else v for k, v in repo.items()}
        number = next(self._ids["repo"])
        now = _iso(_now())
        repo.update(
            id=number,
            node_id=_node_id("Repository", number),
            name=name,
            full_name=full_name,
            owner=owner,
            private=private,
            visibility="private" if private else "public",
            html_url=f"{self.base_url}/{full_name}",
            url=f"{self.api_url}/repos/{full_name}",
            clone_url=f"{self.base_url}/{full_name}.git",
            git_url=f"git://{self.base_url.removeprefix('http://')}/{full_name}.git",
            ssh_url=f"git@127.0.0.1:{full_name}.git",
            default_branch=default_branch,
            fork=False,
            archived=False,
            disabled=False,
            is_template=False,
            created_at=now,
            updated_at=now,
            pushed_at=now,
        )
        if owner_is_org:
            repo["organization"] = owner
        return repo

    def _resolve_sha(self, repo: _RepoState, ref: str) -> str:
        ref = ref.removeprefix("refs/heads/").removeprefix("heads/")
        return repo.branches.get(ref, ref)

    def _paginate(
        self, request: _Request, items: list[Any], wrap: Callable[[list[Any], int], Any] | None = None
    ) -> _Reply:
        per_page = _int_query(request.query, "per_page", 30, low=1, high=100)
        page = _int_query(request.query, "page", 1, low=1)
        last = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]

        def link(number: int, rel: str) -> str:
            return f'<{request.http.url.update_query(page=number, per_page=per_page)}>; rel="{rel}"'

        links = [link(page + 1, "next"), link(last, "last")] if page < last else []
        links += [link(1, "first"), link(page - 1, "prev")] if page > 1 else []
        headers = {"Link": ", ".join(links)} if links else {}
        return _Reply(200, wrap(chunk, len(items)) if wrap else chunk, headers)

    # ------------------------------------------------------------------ shared by auth.py and apps.py

    def _user_installations(self, principal: _Principal) -> list[int]:
        info = next((i for i in self.user_tokens.values() if i["login"] == principal.user_login), None)
        ids = info["installation_ids"] if info else []
        return sorted(self.installations) if ids is None else [i for i in ids if i in self.installations]

    # ------------------------------------------------------------------ shared by pulls.py and git.py

    def _git_point_pull_ref(self, base: _RepoState, number: int, head: _RepoState, head_sha: str) -> None:
        """refs/pull/N/head of the base repository's git repository -> head_sha, when it is a commit there
        or in the head repository's git repository (GitHub shares objects across a fork network)."""
        base_git = self._git_repos.get(base.full_name.lower())
        if base_git is None or not re.fullmatch(r"[0-9a-f]{40}", head_sha):
            return
        ref = f"refs/pull/{number}/head"
        if base_git.has_commit(head_sha):
            base_git.set_ref(ref, head_sha)
            return
        head_git = self._git_repos.get(head.full_name.lower())
        if head_git is not None and head_git is not base_git and head_git.has_commit(head_sha):
            base_git.fetch_from(head_git, head_sha, ref)
