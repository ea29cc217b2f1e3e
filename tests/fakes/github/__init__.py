"""FakeGitHub: a real HTTP server on 127.0.0.1 that behaves like the parts of GitHub the bot uses.

The bot talks to it over real HTTP (gidgethub + aiohttp) at ``api_url`` (``/api/v3`` prefix, as on
GitHub Enterprise). Requests are routed by GitHub's own OpenAPI description
(``tests.ghfixtures.find_rest_spec()``), request bodies are validated against it, and responses start
from its examples. Whatever GitHub would reject - a body that breaks the schema, bad or missing
credentials, a token used on a repository its installation does not own, a path that is no
operation - is answered like GitHub does *and* recorded in ``Call.errors``; ``assert_clean()``
(run by the ``fake_github`` fixture after each test) turns those into a failure. A test that
provokes such errors on purpose acknowledges them with ``take_errors()``.

State is set up with ``add_installation``/``add_repo``/``add_pull``/... after ``start()``. The dicts
they return are the live state: mutating them (``pull["mergeable"] = False``) changes what is served.

Path globs (``wait_for_call``, ``calls_to``, ``fail_next``, ``rate_limit_next``) match the path
without ``/api/v3``: ``*`` matches within one segment, ``**`` across segments, ``?`` one character;
the method may be ``"*"``.

**Git over smart HTTP.** ``git_repo("acme/widgets")`` creates a real bare repository under ``git_root``
(a temporary directory the fake owns and deletes on ``close()``) and returns a ``tests.gitrepos.GitRepo``
to build commits with. It is served at ``{base_url}/acme/widgets.git`` (``.git`` optional, names
case-insensitive) by ``git http-backend`` as CGI: ``info/refs``, ``git-upload-pack`` (protocol v2) and
``git-receive-pack``. Authentication as on GitHub: HTTP Basic, any username (``x-access-token`` by
convention), the password a live installation token (or a user token). Reads of a public repository
need no credentials; a private one without credentials gets 401 + ``WWW-Authenticate: Basic
realm="GitHub"`` (git's normal challenge, not an error); a bad or expired token 401, a token that cannot
see a private repository 404 ("Repository not found."), a push without ``contents: write`` on the
repository 403 - those are recorded in ``Call.errors`` like API errors. Git requests are recorded as
Calls with the full path (``/acme/widgets.git/git-upload-pack``), ``operation`` "git-upload-pack" /
"git-receive-pack" and the token's ``installation_id``; they use no REST rate limit and are not checked
against the REST description. ``fail_next`` works on them too. ``refs/pull/*`` are hidden from pushes
(as on GitHub); a successful push updates the fake's branch state and the head of open pulls on the
pushed branch (including their ``refs/pull/N/head``).

Git and the pull state: ``add_pull`` points ``refs/pull/N/head`` of the base repository's git repository
(when there is one) at ``head_sha`` if that commit exists there or in the head repository's git
repository (copied over, like GitHub's fork network). Shas that are no commit (the usual fake ones)
are left alone. ``add_pull_from_repo`` does the same with shas read from the branches. Commits made
through a ``GitRepo`` from ``git_repo()`` update the fake's branch state (``GET .../branches/{b}``).
With a git repository, merging a pull (``PUT .../merge``), ``POST .../merges`` and ref writes act on it
for real, and a branch that moves has its pulls' mergeability recomputed (``merges.py``, ``refs.py``).

**Where things are.** ``FakeGitHub`` (here) composes one mixin per part; each works on the shared
state through ``self`` and registers its REST handlers with ``@_handles("METHOD /template")``:

- ``state.py`` - ``FakeState``: the in-memory data model (the public dicts listed on ``FakeGitHub``),
  ``add_installation``/``add_repo``, and the builders several parts share (users, the app, pagination).
- ``common.py`` - records (``Call``, ``Fault``, ``RateLimitBucket``...), ``_GitHubError``, helpers,
  ``_handles`` and ``_Request``.
- ``rest.py`` - GitHub's REST description (``RestSpec``, ``load_rest_spec``) and the router.
- ``server.py`` - the aiohttp server and request pipeline, call recording (``calls_to``,
  ``wait_for_call``, ``assert_clean``...), fault injection (``fail_next``, ``rate_limit_next``), held or slow
  answers (``hold_next``), rate limits.
- ``auth.py`` - the app's JWT, installation and user tokens, which repositories a principal may see.
- ``apps.py`` - app, installations, access tokens, manifests, /user endpoints, OAuth and manifest web flows.
- ``repos.py`` - repository, collaborator permission, contents, branches, protection, git refs.
- ``refs.py`` - git refs (get, create, update, delete) and ``block_app_pushes``: branches the App may not
  push to (pushes declined as GitHub's branch protection does); ``receive_pack.py`` - the declining answer.
- ``commits.py`` - ``GET .../git/commits/{sha}`` and the commit shapes, read from git.
- ``pulls.py`` - pull requests; ``reviews.py`` - their reviews (``add_review``); ``merges.py`` - merging
  pulls (for real in git when the repository has one: ``git_merges.py``), ``POST .../merges``, and the
  mergeability of pulls when a branch moves; ``check_runs.py`` - check runs, check suites, commit
  statuses; ``issues.py`` - issue comments, reactions, labels.
- ``git.py`` - git over smart HTTP and the real repositories of ``git_repo()``.
- ``compare.py`` - ``GET .../compare/{base}...{head}`` from those repositories.
- ``inflight.py`` - ``WritesInFlight`` (``fake.writes_in_flight``): installation-token writes in flight at once per
  installation, the most and every overlap; ``write_delay`` holds each write so that concurrent ones overlap.
- ``meta.py`` - ``GET /meta``: the ``hooks`` ranges webhooks come from (``hook_ranges``).
- ``hooks.py`` - the App's webhook and delivery log: ``deliver()`` sends a webhook as GitHub does and logs it;
  ``GET /app/hook/deliveries`` (cursor-paged), ``GET .../{id}``, ``POST .../{id}/attempts``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from tests.fakes.github.apps import TOKEN_LIFETIME_S, AppsMixin
from tests.fakes.github.auth import MAX_JWT_LIFETIME_S, AuthMixin, _public_key_of
from tests.fakes.github.check_runs import CheckRunsMixin
from tests.fakes.github.commits import CommitsMixin
from tests.fakes.github.compare import CompareMixin
from tests.fakes.github.common import DOCS_URL, Call, Fault, RateLimitBucket, _fake_sha
from tests.fakes.github.git import GIT_TIMEOUT_S, GitMixin
from tests.fakes.github.hooks import HooksMixin
from tests.fakes.github.inflight import Overlap, WritesInFlight
from tests.fakes.github.issues import IssuesMixin
from tests.fakes.github.merges import MergesMixin
from tests.fakes.github.meta import MetaMixin
from tests.fakes.github.pulls import PullsMixin
from tests.fakes.github.refs import RefsMixin
from tests.fakes.github.repos import LEGACY_PERMISSION, ROLES, ReposMixin
from tests.fakes.github.reviews import ReviewsMixin
from tests.fakes.github.rest import RestSpec, _parse_operations, _Router, load_rest_spec
from tests.fakes.github.server import (
    ANONYMOUS_RATE_LIMIT,
    API_PREFIX,
    RATE_LIMIT,
    SECONDARY_RATE_LIMIT_DOCS,
    SECONDARY_RATE_LIMIT_MESSAGE,
    ServerMixin,
)
from tests.fakes.github.state import DEFAULT_EVENTS, DEFAULT_INSTALLATION_PERMISSIONS
from tests.ghfixtures import REST_OPERATIONS, find_rest_spec

__all__ = [
    "ANONYMOUS_RATE_LIMIT",
    "API_PREFIX",
    "DEFAULT_EVENTS",
    "DEFAULT_INSTALLATION_PERMISSIONS",
    "DOCS_URL",
    "GIT_TIMEOUT_S",
    "LEGACY_PERMISSION",
    "MAX_JWT_LIFETIME_S",
    "RATE_LIMIT",
    "ROLES",
    "SECONDARY_RATE_LIMIT_DOCS",
    "SECONDARY_RATE_LIMIT_MESSAGE",
    "TOKEN_LIFETIME_S",
    "Call",
    "FakeGitHub",
    "Fault",
    "Overlap",
    "RateLimitBucket",
    "RestSpec",
    "WritesInFlight",
    "find_rest_spec",
    "load_rest_spec",
]


class FakeGitHub(ServerMixin, AuthMixin, AppsMixin, ReposMixin, RefsMixin, CommitsMixin, PullsMixin, MergesMixin,
                 ReviewsMixin, CheckRunsMixin, IssuesMixin, GitMixin, MetaMixin, HooksMixin, CompareMixin):
    """See the package docstring. Public state: ``installations``, ``repos``, ``pulls``,
    ``pull_files``, ``reviews``, ``check_runs``, ``comments``, ``reactions``, ``merges``, ``statuses``,
    ``labels``, ``deleted_refs``, ``refused_ref_updates``, ``tokens``, ``user_tokens``, ``rate_limits``,
    ``users``, ``hook_ranges``, ``hook_deliveries``, ``redelivery_requests``."""

    def __init__(
        self,
        *,
        app_id: int,
        private_key_pem: str,
        spec_path: Path | None = None,
        app_slug: str = "codegenapp-test",
        validate_bodies: bool = True,
        write_delay: float = 0.0,
    ) -> None:
        self.app_id = app_id
        # Tests check every request body against GitHub's schema; bench/ingest.py turns it off, as
        # its job is to time the app, not the schema validator.
        self.validate_bodies = validate_bodies
        self.app_slug = app_slug
        self.private_key_pem = private_key_pem
        self.client_id = f"Iv1.{_fake_sha('client', app_id)[:16]}"
        self.client_secret = _fake_sha("secret", app_id)
        self.manifest_webhook_secret = _fake_sha("webhook", app_id)[:20]
        self._public_key = _public_key_of(private_key_pem)
        path = spec_path if spec_path is not None else find_rest_spec()
        self.spec: RestSpec | None = load_rest_spec(Path(path).resolve()) if path is not None else None
        self._router = _Router(self.spec.operations() if self.spec else _parse_operations(REST_OPERATIONS))
        self.base_url = ""
        self.api_url = ""
        self._runner: web.AppRunner | None = None
        self.calls: list[Call] = []
        self._changed = asyncio.Condition()
        self._faults: list[Fault] = []
        self._holds = []
        self._acknowledged: set[int] = set()  # ids of calls whose errors were taken
        # Installation-token writes in flight per installation (inflight.py); each is held `write_delay`
        # seconds so that two sent at about the same time overlap here.
        self.writes_in_flight = WritesInFlight()
        self.write_delay = write_delay
        # The data model: installations, repos, pulls, check runs, comments... (state.py).
        super().__init__()
