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
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import itertools
import json
import math
import re
import secrets
import shutil
import string
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode

import jwt
import orjson
from aiohttp import web
from yarl import URL
from cryptography.hazmat.primitives import serialization
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Specification

from tests.ghfixtures import REST_OPERATIONS, find_rest_spec
from tests.gitrepos import GitRepo, git_env

API_PREFIX = "/api/v3"
DOCS_URL = "https://docs.github.com/rest"
SECONDARY_RATE_LIMIT_DOCS = (
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits"
)
SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {request_id}."
)
TOKEN_LIFETIME_S = 3600
MAX_JWT_LIFETIME_S = 600
RATE_LIMIT = 5000
ANONYMOUS_RATE_LIMIT = 60
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
# The `permission` field keeps the legacy base roles; `role_name` has the real one.
LEGACY_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}
DEFAULT_INSTALLATION_PERMISSIONS = {
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
    "statuses": "write",
}
DEFAULT_EVENTS = ["check_run", "check_suite", "issue_comment", "pull_request", "push"]
_PERMISSION_LEVEL = {"read": 1, "write": 2, "admin": 3}
_HTTP_METHODS = ("get", "put", "post", "patch", "delete")
_BODY_METHODS = ("POST", "PATCH", "PUT")
_TOKEN_ALPHABET = string.ascii_letters + string.digits
# Path parameters that GitHub lets contain "/" (file paths, refs, branch names, "base...head").
_MULTI_SEGMENT_PARAMS = {"path": ".*", "ref": ".+", "branch": ".+", "basehead": ".+"}
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
_INTERNAL_RUN_KEYS = ("annotations", "actions", "images")
_EXAMPLE_REPO = "octocat/Hello-World"
# Smart HTTP paths of a repository: /{owner}/{repo}[.git]/{info/refs,git-upload-pack,git-receive-pack}
_MANIFEST_PATH = re.compile(r"/(?:organizations/[^/]+/)?settings/apps/new")
_GIT_PATH = re.compile(
    r"/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(?:\.git)?"
    r"/(?P<service>info/refs|git-upload-pack|git-receive-pack)"
)
_GIT_SERVICES = ("git-upload-pack", "git-receive-pack")
GIT_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------------------------- data


@dataclass
class Call:
    """One request the fake received. ``headers`` keys are lower-case; ``path`` has no /api/v3."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    status: int = 0
    installation_id: int | None = None
    errors: list[str] = field(default_factory=list)
    at: float = 0.0  # time.monotonic() when the request arrived
    operation: str | None = None  # "METHOD /template" of the matched REST operation
    injected: bool = False  # answered by fail_next / rate_limit_next

    def describe(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


@dataclass
class RateLimitBucket:
    """The primary (core) rate limit of one credential."""

    limit: int
    remaining: int
    reset: int

    def consume(self) -> None:
        if time.time() >= self.reset:
            self.remaining, self.reset = self.limit, int(time.time()) + 3600
        self.remaining = max(0, self.remaining - 1)

    def as_dict(self) -> dict[str, int]:
        return {
            "limit": self.limit,
            "used": self.limit - self.remaining,
            "remaining": self.remaining,
            "reset": self.reset,
        }

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset),
            "x-ratelimit-used": str(self.limit - self.remaining),
            "x-ratelimit-resource": "core",
        }


@dataclass
class Fault:
    """An injected answer for the next `remaining` requests matching method and path (shared by the fakes)."""

    method: str
    pattern: str
    remaining: int
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class _Reply:
    status: int
    body: Any = None  # JSON-serialisable; None means an empty body
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class _Principal:
    kind: str  # "app" | "installation" | "user" | "anonymous"
    installation_id: int | None = None
    repositories: frozenset[str] | None = None  # lower-case full names a restricted token may use
    user_login: str | None = None


@dataclass
class _RepoState:
    data: dict[str, Any]
    installation_id: int | None
    branches: dict[str, str] = field(default_factory=dict)  # branch -> head sha
    protections: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # ref -> path -> content
    permissions: dict[str, str] = field(default_factory=dict)  # lower-case login -> role

    @property
    def full_name(self) -> str:
        return str(self.data["full_name"])


class _GitHubError(Exception):
    """A GitHub-shaped error answer raised inside the pipeline; ``record`` makes assert_clean see it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[Any] | None = None,
        record: bool = False,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.record = record
        self.detail = detail

    def reply(self) -> _Reply:
        body: dict[str, Any] = {"message": self.message, "documentation_url": DOCS_URL, "status": str(self.status)}
        if self.errors is not None:
            body["errors"] = self.errors
        return _Reply(self.status, body)

    def describe(self) -> str:
        text = f"{self.status} {self.message}"
        if self.errors:
            text += f" {self.errors}"
        return f"{text} ({self.detail})" if self.detail else text


# ------------------------------------------------------------------------------------- spec, routes


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class RestSpec:
    """GitHub's REST description: operations, body validators and response examples.

    Loaded once per file per process (``load_rest_spec``); validators are built lazily, once per
    operation, and shared by every FakeGitHub.
    """

    _URI = "urn:codegenapp:github-rest-description"

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        # OPAQUE: plain JSON-pointer resolution, no `id` scanning of GitHub's schemas.
        resource = Specification.OPAQUE.create_resource(doc)
        self._registry: Registry[Any] = Registry().with_resource(self._URI, resource)
        self._validators: dict[tuple[str, str], Any] = {}
        self._examples: dict[tuple[str, str, int], Any] = {}

    def operations(self) -> list[tuple[str, str]]:
        return [
            (method.upper(), template)
            for template, item in self.doc.get("paths", {}).items()
            for method in item
            if method in _HTTP_METHODS
        ]

    def operation(self, method: str, template: str) -> dict[str, Any] | None:
        found = self.doc.get("paths", {}).get(template, {}).get(method.lower())
        return found if isinstance(found, dict) else None

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def body_errors(self, method: str, template: str, body: Any, *, present: bool) -> list[str]:
        operation = self.operation(method, template)
        if operation is None or "requestBody" not in operation:
            return []
        request_body = self.resolve(operation["requestBody"])
        if not present:
            return ["a request body is required"] if request_body.get("required") else []
        validator = self._validator(method, template, operation)
        if validator is None:
            return []
        return [_format_validation_error(e) for e in sorted(validator.iter_errors(body), key=lambda e: list(e.path))]

    def _validator(self, method: str, template: str, operation: dict[str, Any]) -> Any:
        key = (method, template)
        if key not in self._validators:
            ref = operation["requestBody"].get("$ref")
            base = ref.removeprefix("#") if ref else _pointer("paths", template, method.lower(), "requestBody")
            content = self.resolve(operation["requestBody"]).get("content", {})
            self._validators[key] = (
                OAS30Validator(
                    {"$ref": f"{self._URI}#{base}{_pointer('content', 'application/json', 'schema')}"},
                    registry=self._registry,
                    format_checker=oas30_format_checker,
                )
                if "schema" in content.get("application/json", {})
                else None
            )
        return self._validators[key]

    def success_status(self, method: str, template: str) -> int | None:
        operation = self.operation(method, template) or {}
        codes = sorted(int(c) for c in operation.get("responses", {}) if c.isdigit() and c.startswith("2"))
        return codes[0] if codes else None

    def example(self, method: str, template: str, status: int) -> Any:
        """A deep copy of the first example of that response; KeyError when there is none."""
        key = (method, template, status)
        if key not in self._examples:
            found = self._find_example(method, template, status)
            self._examples[key] = found if found is KeyError else orjson.dumps(found)
        if self._examples[key] is KeyError:
            raise KeyError(key)
        return orjson.loads(self._examples[key])  # a fresh copy; ~50x faster than copy.deepcopy

    def _find_example(self, method: str, template: str, status: int) -> Any:
        operation = self.operation(method, template) or {}
        response = self.resolve(operation.get("responses", {}).get(str(status), {}))
        content = response.get("content", {})
        media: dict[str, Any] = content.get("application/json") or next(iter(content.values()), {})
        if media.get("examples"):
            return self.resolve(next(iter(media["examples"].values()))).get("value", KeyError)
        return media.get("example", KeyError)


def _format_validation_error(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(body)"
    text = f"{where}: {error.message}"
    if error.context:
        reasons = sorted({sub.message for sub in error.context})
        text += " [" + "; ".join(reasons)[:400] + "]"
    return text


@lru_cache(maxsize=8)
def _public_key_of(private_key_pem: str) -> Any:
    """Loading an RSA key checks it (~35 ms); tests create many fakes with the same key."""
    return serialization.load_pem_private_key(private_key_pem.encode(), password=None).public_key()


@lru_cache(maxsize=4)
def load_rest_spec(path: Path) -> RestSpec:
    return RestSpec(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    regex: re.Pattern[str]
    literal_segments: int

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def _compile_template(template: str) -> re.Pattern[str]:
    pieces = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(piece) if i % 2 == 0 else f"(?P<{piece}>{_MULTI_SEGMENT_PARAMS.get(piece, '[^/]+')})"
        for i, piece in enumerate(pieces)
    )
    return re.compile(regex)


class _Router:
    def __init__(self, operations: Iterable[tuple[str, str]]) -> None:
        routes = [
            _Route(method, template, _compile_template(template), sum("{" not in s for s in template.split("/")))
            for method, template in operations
        ]
        # The most literal template wins: ".../branches/{branch}/protection" before ".../branches/{branch}".
        self._routes = sorted(routes, key=lambda r: -r.literal_segments)

    def match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        for route in self._routes:
            if route.method == method and (found := route.regex.fullmatch(path)):
                return route, found.groupdict()
        return None


def _parse_operations(operations: Iterable[str]) -> list[tuple[str, str]]:
    return [(op.split(" ", 1)[0], op.split(" ", 1)[1]) for op in operations]


@lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    translate = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    pieces = re.split(r"(\*\*|\*|\?)", pattern)
    return re.compile("".join(translate.get(p, re.escape(p)) for p in pieces))


def _call_matches(call: Call, method: str, path_pattern: str) -> bool:
    return (method == "*" or method.upper() == call.method) and bool(_glob_regex(path_pattern).fullmatch(call.path))


# ------------------------------------------------------------------------------------------ helpers


def _copy(data: Any) -> Any:
    """A deep copy of JSON data (a JSON round trip: ~50x faster than copy.deepcopy)."""
    return orjson.loads(orjson.dumps(data))


def _dumps(data: Any) -> str:
    return orjson.dumps(data).decode()


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _fake_sha(*parts: object) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()


def _blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0:{kind}{number}".encode()).decode()


def _github_base64(content: bytes) -> str:
    """Base64 wrapped at 60 characters with a trailing newline, as the contents API sends it."""
    encoded = base64.b64encode(content).decode()
    return "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))


def _int_query(query: dict[str, str], name: str, default: int, *, low: int, high: int | None = None) -> int:
    try:
        value = int(query.get(name, default))
    except ValueError:
        value = default
    value = max(low, value)
    return min(high, value) if high is not None else value


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _parse_cgi(output: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a CGI response (headers end at the first empty line)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        return 502, {}, b"malformed CGI response\n"
    status, headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "status":
            status = int(value.split()[0])
        elif name.strip():
            headers[name.strip()] = value.strip()
    return status, headers, body


def _looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2


def _auth_kind(template: str) -> str:
    if template.startswith("/app-manifests/"):
        return "none"  # the app does not exist yet, so there is no key to sign a JWT with
    if template == "/app" or template.startswith("/app/") or template == "/repos/{owner}/{repo}/installation":
        return "jwt"
    if template == "/rate_limit":
        return "any"
    if template == "/user" or template.startswith("/user/"):
        return "user"
    return "installation"


_F = TypeVar("_F", bound=Callable[..., Any])
_HANDLERS: dict[tuple[str, str], str] = {}


def _handles(*operations: str) -> Callable[[_F], _F]:
    def register(handler: _F) -> _F:
        for operation in operations:
            method, template = operation.split(" ", 1)
            _HANDLERS[(method, template)] = handler.__name__
        return handler

    return register


@dataclass
class _Request:
    http: web.Request
    call: Call
    route: _Route
    params: dict[str, str]
    principal: _Principal
    repo: _RepoState | None

    @property
    def body(self) -> Any:
        return self.call.json if self.call.json is not None else {}

    @property
    def query(self) -> dict[str, str]:
        return self.call.query

    @property
    def repository(self) -> _RepoState:
        assert self.repo is not None, "only for /repos/{owner}/{repo}/... routes"
        return self.repo

    def int_param(self, name: str) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise _GitHubError(404, "Not Found", record=True, detail=f"{name} must be an integer") from None


# ------------------------------------------------------------------------------------------- server


class FakeGitHub:
    """See the module docstring. Public state: ``installations``, ``repos``, ``pulls``,
    ``pull_files``, ``check_runs``, ``comments``, ``reactions``, ``merges``, ``statuses``,
    ``labels``, ``deleted_refs``, ``tokens``, ``user_tokens``, ``rate_limits``, ``users``."""

    def __init__(
        self,
        *,
        app_id: int,
        private_key_pem: str,
        spec_path: Path | None = None,
        app_slug: str = "codegenapp-test",
        validate_bodies: bool = True,
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
        self._acknowledged: set[int] = set()  # ids of calls whose errors were taken
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

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_url = self.base_url + API_PREFIX

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._git_root is not None:
            shutil.rmtree(self._git_root, ignore_errors=True)
            self._git_root = None
            self._git_repos.clear()

    async def __aenter__(self) -> FakeGitHub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ calls and errors

    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        return [call for call in self.calls if _call_matches(call, method, path_pattern)]

    async def wait_for_call(self, method: str, path_pattern: str, *, count: int = 1, timeout: float = 5.0) -> Call:
        """The ``count``-th call matching, waiting (without polling) until it has been answered."""

        def arrived() -> bool:
            return len(self.calls_to(method, path_pattern)) >= count

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(arrived), timeout)
            except TimeoutError:
                seen = "\n".join(f"  {c.describe()}" for c in self.calls) or "  (none)"
                raise TimeoutError(
                    f"no call #{count} to {method} {path_pattern} within {timeout}s; calls seen:\n{seen}"
                ) from None
        return self.calls_to(method, path_pattern)[count - 1]

    def errors(self) -> list[str]:
        """Problems not yet acknowledged, one line per call."""
        return [
            f"{call.describe()}: {'; '.join(call.errors)}"
            for call in self.calls
            if call.errors and id(call) not in self._acknowledged
        ]

    def take_errors(self) -> list[str]:
        """Return the problems seen so far and acknowledge them, for tests that provoke them."""
        found = self.errors()
        self._acknowledged.update(id(call) for call in self.calls if call.errors)
        return found

    def assert_clean(self) -> None:
        problems = self.errors()
        if problems:
            raise AssertionError("FakeGitHub received requests GitHub would reject:\n" + "\n".join(problems))

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int = 502,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        if body is None and status not in (204, 304):
            body = {"message": _reason(status), "documentation_url": DOCS_URL}
        self._faults.append(Fault(method.upper(), path_pattern, times, status, dict(headers or {}), body))

    def rate_limit_next(self, method: str, path_pattern: str, *, retry_after: int = 1, times: int = 1) -> None:
        """GitHub's secondary rate limit: 403, Retry-After, and its message (remaining stays > 0)."""
        message = SECONDARY_RATE_LIMIT_MESSAGE.format(request_id=secrets.token_hex(8).upper())
        body = {"message": message, "documentation_url": SECONDARY_RATE_LIMIT_DOCS}
        self.fail_next(
            method, path_pattern, status=403, times=times, headers={"Retry-After": str(retry_after)}, body=body
        )

    def _take_fault(self, call: Call) -> _Reply | None:
        for fault in self._faults:
            if fault.remaining > 0 and _call_matches(call, fault.method, fault.pattern):
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                call.injected = True
                return _Reply(fault.status, _copy(fault.body), dict(fault.headers))
        return None

    # ------------------------------------------------------------------ state helpers

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

    def add_pull(
        self,
        full_name: str,
        number: int,
        *,
        head_sha: str,
        base_sha: str,
        head_ref: str = "feature",
        base_ref: str = "main",
        head_full_name: str | None = None,
        user_login: str = "octocat",
        draft: bool = False,
        state: str = "open",
        mergeable: bool | None = True,
        title: str | None = None,
        body: str | None = None,
    ) -> dict[str, Any]:
        """Also points ``base_ref`` at ``base_sha`` and ``head_ref`` at ``head_sha`` (in the head repo,
        which is created, not installed, when it is a fork that does not exist yet)."""
        repo = self._repo_state(full_name)
        head_repo = repo
        if head_full_name is not None and head_full_name.lower() != full_name.lower():
            if head_full_name.lower() not in self._repos:
                self.add_repo(head_full_name, installation_id=None)
                self._repos[head_full_name.lower()].data["fork"] = True
            head_repo = self._repos[head_full_name.lower()]
        repo.branches[base_ref] = base_sha
        head_repo.branches[head_ref] = head_sha
        pull = self._pull_dict(
            repo,
            number,
            head_repo=head_repo,
            head_ref=head_ref,
            head_sha=head_sha,
            base_ref=base_ref,
            base_sha=base_sha,
            user_login=user_login,
            title=title,
            body=body,
        )
        pull.update(draft=draft, state=state, mergeable=mergeable, rebaseable=mergeable)
        pull["mergeable_state"] = "draft" if draft else {True: "clean", False: "dirty", None: "unknown"}[mergeable]
        if state == "closed":
            pull["closed_at"] = _iso(_now())
        if (repo.full_name, number) not in self.pulls:
            self._pull_numbers_by_repo.setdefault(repo.full_name, []).append(number)
        self.pulls[(repo.full_name, number)] = pull
        self._git_point_pull_ref(repo, number, head_repo, head_sha)
        return pull

    def set_pull_files(
        self, full_name: str, number: int, files: Iterable[str | dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Files served by GET .../pulls/{n}/files: file names or partial diff-entry dicts
        (``filename`` required; ``status``, ``additions``, ``deletions``, ``patch``... optional)."""
        repo = self._repo_state(full_name)
        entries = [self._diff_entry(repo, item if isinstance(item, dict) else {"filename": item}) for item in files]
        self.pull_files[(repo.full_name, number)] = entries
        pull = self.pulls.get((repo.full_name, number))
        if pull is not None:
            pull.update(
                changed_files=len(entries),
                additions=sum(e["additions"] for e in entries),
                deletions=sum(e["deletions"] for e in entries),
            )
        return entries

    def set_permission(self, full_name: str, username: str, permission: str) -> None:
        if permission not in ROLES:
            raise ValueError(f"permission must be one of {ROLES}, not {permission!r}")
        self._user(username)
        self._repo_state(full_name).permissions[username.lower()] = permission

    def set_file(self, full_name: str, ref: str, path: str, content: bytes | str) -> None:
        """Served by the contents API at ``ref`` (a branch, or a sha: a branch pointing at it works too)."""
        data = content.encode() if isinstance(content, str) else content
        self._repo_state(full_name).files.setdefault(ref, {})[path.strip("/")] = data

    def set_branch(self, full_name: str, branch: str, sha: str) -> None:
        self._repo_state(full_name).branches[branch] = sha

    def set_branch_protection(self, full_name: str, branch: str, protection: dict[str, Any] | None) -> None:
        """``None`` unprotects; a dict (may be empty) overrides top-level keys of GitHub's example."""
        repo = self._repo_state(full_name)
        if protection is None:
            repo.protections.pop(branch, None)
        else:
            repo.protections[branch] = dict(protection)

    def add_comment(
        self,
        full_name: str,
        issue_number: int,
        body: str,
        *,
        user_login: str = "octocat",
        author_association: str = "CONTRIBUTOR",
    ) -> dict[str, Any]:
        """A comment someone else wrote (the bot's own come in through the API)."""
        repo = self._repo_state(full_name)
        comment = self._comment_dict(repo, issue_number, body, self._user(user_login), author_association)
        comment["performed_via_github_app"] = None
        return comment

    def add_user_token(self, login: str, *, installation_ids: Iterable[int] | None = None) -> str:
        """A user-to-server token (ghu_) for the /user endpoints; ``None``: every installation."""
        self._require_started()
        token = "ghu_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))
        self._user(login)
        ids = None if installation_ids is None else list(installation_ids)
        self.user_tokens[token] = {"login": login, "installation_ids": ids}
        return token

    def approve_oauth_as(self, login: str | None, *, installation_ids: Iterable[int] | None = None) -> None:
        """Make GET /login/oauth/authorize approve at once as ``login`` (a browser is redirected straight
        back with a code); the token it yields sees ``installation_ids`` (``None``: every installation).
        ``approve_oauth_as(None)``: the authorize page is shown instead (its button approves)."""
        self.oauth_login = login
        if login is not None:
            self._user(login)
            self._oauth_installations[login.lower()] = None if installation_ids is None else list(installation_ids)

    def expire_tokens(self, installation_id: int | None = None) -> None:
        """Make installation tokens (of one installation, or all) expired, as an hour later."""
        past = _iso(_now() - timedelta(seconds=1))
        for info in self.tokens.values():
            if installation_id is None or info["installation_id"] == installation_id:
                info["expires_at"] = past

    # ------------------------------------------------------------------ git repositories

    @property
    def git_root(self) -> Path:
        """Where the bare repositories live: ``<git_root>/<owner>/<repo>.git`` (lower case)."""
        if self._git_root is None:
            self._require_started()
            self._git_root = Path(tempfile.mkdtemp(prefix="fakegithub-git-"))
        return self._git_root

    def git_repo(self, full_name: str) -> GitRepo:
        """The real git repository of ``full_name`` (created empty the first time; the repository must
        have been added with ``add_repo``/``add_installation`` or by ``add_pull`` for a fork)."""
        state = self._repo_state(full_name)
        key = state.full_name.lower()
        if key not in self._git_repos:
            owner, name = key.split("/")
            self._git_repos[key] = GitRepo.init(
                self.git_root / owner / f"{name}.git",
                default_branch=state.data["default_branch"],
                on_ref_update=lambda ref, sha: self._git_ref_updated(key, ref, sha),
            )
            # As on GitHub: refs/pull/* are advertised to fetches but cannot be pushed to.
            for setting, value in (
                ("receive.hideRefs", "refs/pull"),
                ("uploadpack.allowAnySHA1InWant", "true"),
                ("http.receivepack", "true"),
                ("gc.auto", "0"),
                ("core.logAllRefUpdates", "false"),
            ):
                self._git_repos[key].git("config", setting, value)
        return self._git_repos[key]

    def add_pull_from_repo(
        self,
        full_name: str,
        number: int,
        *,
        head_ref: str = "feature",
        base_ref: str = "main",
        head_full_name: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """``add_pull`` with ``head_sha``/``base_sha`` taken from the branches of the git repositories
        (the head branch from ``head_full_name``'s repository for a fork, which must exist then);
        ``refs/pull/{number}/head`` of the base repository is pointed at the head. ``options`` go to
        ``add_pull`` (``user_login``, ``draft``, ``title``...)."""
        base_git = self.git_repo(full_name)
        head_git = self.git_repo(head_full_name) if head_full_name is not None else base_git
        return self.add_pull(
            full_name,
            number,
            head_sha=head_git.rev_parse(f"refs/heads/{head_ref}"),
            base_sha=base_git.rev_parse(f"refs/heads/{base_ref}"),
            head_ref=head_ref,
            base_ref=base_ref,
            head_full_name=head_full_name,
            **options,
        )

    def _git_ref_updated(self, key: str, ref: str, sha: str | None) -> None:
        state = self._repos.get(key)
        if state is None or not ref.startswith("refs/heads/"):
            return
        branch = ref.removeprefix("refs/heads/")
        if sha is None:
            state.branches.pop(branch, None)
        else:
            state.branches[branch] = sha

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

    def _git_after_push(self, key: str) -> None:
        """Sync the fake's branches with the pushed repository, and move open pulls whose head branch moved."""
        state, git = self._repos.get(key), self._git_repos.get(key)
        if state is None or git is None:
            return
        heads = {ref.removeprefix("refs/heads/"): sha for ref, sha in git.refs("refs/heads/").items()}
        state.branches = dict(heads)  # the git repository is the truth once it is pushed to
        for (full, number), pull in self.pulls.items():
            if (
                pull["state"] == "open"
                and pull["head"]["repo"]["full_name"].lower() == key
                and heads.get(pull["head"]["ref"], pull["head"]["sha"]) != pull["head"]["sha"]
            ):
                pull["head"]["sha"] = heads[pull["head"]["ref"]]
                pull["updated_at"] = _iso(_now())
                self._git_point_pull_ref(self._repo_state(full), number, state, pull["head"]["sha"])

    async def _serve_git(self, request: web.Request, call: Call, found: re.Match[str]) -> web.StreamResponse:
        service = request.query.get("service") if found["service"] == "info/refs" else found["service"]
        call.operation = service if service in _GIT_SERVICES else None
        full_name = f"{found['owner']}/{found['repo']}"
        state = self._repos.get(full_name.lower())
        if call.operation is None:
            call.errors.append("dumb HTTP git (info/refs without ?service=) is not served by GitHub")
            return self._git_text(403, "Dumb HTTP protocol is not supported.")
        if (request.method, found["service"]) not in (("GET", "info/refs"), ("POST", service)):
            call.errors.append(f"{request.method} is not how git calls {found['service']}")
            return self._git_text(405, "Method Not Allowed")
        push = service == "git-receive-pack"
        problem = self._git_access_problem(call, state, full_name, push=push)
        if problem is not None:
            return problem
        assert state is not None
        key = state.full_name.lower()
        if key not in self._git_repos:
            call.errors.append(f"{state.full_name} has no git repository: call fake.git_repo({state.full_name!r})")
            return self._git_text(404, "Repository not found.")
        fault = self._take_fault(call)
        if fault is not None:
            return web.Response(status=fault.status, text=_reason(fault.status), headers=fault.headers)
        body = await request.read()
        owner, name = key.split("/")
        env = git_env(
            {
                "GIT_PROJECT_ROOT": str(self.git_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": f"/{owner}/{name}.git/{found['service']}",
                "REQUEST_METHOD": request.method,
                "QUERY_STRING": request.query_string,
                "CONTENT_TYPE": request.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),  # aiohttp has already undone chunking and gzip
                "REMOTE_USER": self._git_user(call) or "",
                "REMOTE_ADDR": request.remote or "127.0.0.1",
                "HTTP_GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
                "SERVER_PROTOCOL": "HTTP/1.1",
                "GATEWAY_INTERFACE": "CGI/1.1",
            }
        )
        process = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(body), GIT_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            call.errors.append(f"git http-backend took more than {GIT_TIMEOUT_S}s")
            return self._git_text(504, "Gateway Timeout")
        status, headers, payload = _parse_cgi(out)
        if process.returncode != 0 or status >= 500:
            call.errors.append(f"git http-backend failed ({process.returncode}): {err.decode(errors='replace')}")
        if push and status == 200 and request.method == "POST":
            self._git_after_push(key)
        return web.Response(status=status, body=payload, headers=headers)

    def _git_access_problem(
        self, call: Call, state: _RepoState | None, full_name: str, *, push: bool
    ) -> web.Response | None:
        """None when the request may go on; else GitHub's answer (recording what GitHub would reject)."""
        challenge = self._git_text(401, "Invalid username or token.", {"WWW-Authenticate": 'Basic realm="GitHub"'})
        credential = self._git_credential(call.headers.get("authorization"))
        if credential is None:
            if state is not None and not state.data["private"] and not push:
                return None  # anonymous read of a public repository
            return challenge  # git's normal first step: it retries with credentials when it has some
        try:
            principal = self._any_principal(credential) if credential else None
        except _GitHubError as error:
            principal, detail = None, error.describe()
        else:
            detail = "the app's JWT is no git credential" if principal and principal.kind == "app" else ""
        if principal is None or principal.kind == "app":
            call.errors.append(f"git: bad credentials ({detail or 'empty password'})")
            return challenge
        call.installation_id = principal.installation_id
        try:
            visible = state is not None and self._accessible_repo(principal, full_name) is state
        except _GitHubError:
            visible = False
        if state is None or (not visible and state.data["private"]):
            call.errors.append(f"git: {full_name} does not exist or {principal.kind} cannot see it")
            return self._git_text(404, "Repository not found.")
        if push:
            info = self.tokens.get(credential)
            can_write = visible and (info is None or info["permissions"].get("contents") == "write")
            if not can_write:
                call.errors.append(f"git: push to {full_name} without contents: write")
                return self._git_text(403, f"Permission to {state.full_name}.git denied to {self._bot()['login']}.")
        return None

    @staticmethod
    def _git_credential(header: str | None) -> str | None:
        """The password of HTTP Basic auth ("" when malformed), None without an Authorization header."""
        if header is None:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return ""
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ""
        return password if user else ""

    def _git_user(self, call: Call) -> str | None:
        if call.installation_id is None:
            return None
        return self._bot()["login"]

    @staticmethod
    def _git_text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, text=text + "\n", content_type="text/plain", headers=headers)

    # ------------------------------------------------------------------ web flows: OAuth and App manifests

    def _web_flow_handler(self, method: str, path: str) -> Callable[..., Any] | None:
        if path == "/login/oauth/authorize" and method in ("GET", "POST"):
            return self._oauth_authorize
        if path == "/login/oauth/access_token" and method == "POST":
            return self._oauth_access_token
        if method == "POST" and _MANIFEST_PATH.fullmatch(path):
            return self._manifest_new
        return None

    @staticmethod
    def _html(status: int, body: str) -> web.Response:
        page = f"<!doctype html><html lang=en><meta charset=utf-8><title>Fake GitHub</title><body>{body}</body></html>"
        return web.Response(status=status, text=page, content_type="text/html")

    async def _oauth_authorize(self, request: web.Request, call: Call) -> web.Response:
        form = dict(await request.post()) if request.method == "POST" else {}
        params = {**dict(request.query), **{k: str(v) for k, v in form.items()}}
        client_id, redirect_uri, state = params.get("client_id"), params.get("redirect_uri"), params.get("state", "")
        if client_id != self.client_id:
            call.errors.append(f"OAuth authorize: unknown client_id {client_id!r}")
            return self._html(404, "<p>The client_id is not an App on this GitHub.</p>")
        if not redirect_uri:
            call.errors.append("OAuth authorize: no redirect_uri")
            return self._html(400, "<p>redirect_uri is missing.</p>")
        login = str(form["login"]) if request.method == "POST" and form.get("login") else self.oauth_login
        if login is None:
            hidden = "".join(f'<input type=hidden name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in params.items())
            return self._html(200, f'<h1>Authorize {html.escape(self.app_slug)}</h1><form method=post>{hidden}'
                                   '<label>Login <input name=login value=octocat></label>'
                                   '<button type=submit>Authorize</button></form>')
        self._user(login)
        code = secrets.token_hex(10)
        self._oauth_codes[code] = {"login": login, "client_id": client_id, "redirect_uri": redirect_uri}
        target = URL(redirect_uri).update_query(code=code, state=state)
        return web.Response(status=302, headers={"Location": str(target)})

    async def _oauth_access_token(self, request: web.Request, call: Call) -> web.Response:
        if request.content_type == "application/json":
            params = {k: str(v) for k, v in (await request.json()).items()}
        else:
            params = {k: str(v) for k, v in (await request.post()).items()}
        params = {**dict(request.query), **params}
        wants_json = "application/json" in request.headers.get("Accept", "")

        def answer(values: dict[str, str]) -> web.Response:
            if wants_json:
                return web.json_response(values)
            return web.Response(text=urlencode(values), content_type="application/x-www-form-urlencoded")

        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            call.errors.append("OAuth access_token: bad client credentials")
            return answer({"error": "incorrect_client_credentials",
                           "error_description": "The client_id and/or client_secret passed are incorrect."})
        grant = self._oauth_codes.pop(params.get("code", ""), None)
        if grant is None or ("redirect_uri" in params and params["redirect_uri"] != grant["redirect_uri"]):
            call.errors.append("OAuth access_token: bad or used code")
            return answer({"error": "bad_verification_code",
                           "error_description": "The code passed is incorrect or expired."})
        login = grant["login"]
        token = self.add_user_token(login, installation_ids=self._oauth_installations.get(login.lower()))
        self.oauth_grants.append({"login": login, "token": token})
        return answer({"access_token": token, "token_type": "bearer", "scope": ""})

    async def _manifest_new(self, request: web.Request, call: Call) -> web.Response:
        form = await request.post()
        state = request.query.get("state") or str(form.get("state") or "")
        try:
            manifest = json.loads(str(form.get("manifest") or ""))
        except json.JSONDecodeError:
            call.errors.append("manifest flow: the form field manifest is not JSON")
            return self._html(422, "<p>Invalid manifest.</p>")
        problems = [key for key in ("url", "hook_attributes", "redirect_url") if not manifest.get(key)]
        if problems:
            call.errors.append(f"manifest flow: manifest lacks {', '.join(problems)}")
            return self._html(422, f"<p>Invalid manifest: {html.escape(', '.join(problems))}</p>")
        code = secrets.token_hex(10)
        self.manifests[code] = manifest
        target = URL(manifest["redirect_url"]).update_query(code=code, state=state)
        return web.Response(status=302, headers={"Location": str(target)})

    # ------------------------------------------------------------------ request pipeline

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        full_path = unquote(request.rel_url.raw_path)
        is_api = full_path == API_PREFIX or full_path.startswith(API_PREFIX + "/")
        call = Call(
            method=request.method,
            path=(full_path[len(API_PREFIX) :] or "/") if is_api else full_path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=None,
            at=time.monotonic(),
        )
        if not is_api and (web_flow := self._web_flow_handler(request.method, full_path)) is not None:
            try:
                await request.read()
                web_response = await web_flow(request, call)
            except Exception as exc:  # a bug in the fake must fail the test, not hang or vanish
                call.errors.append(f"FakeGitHub raised {exc!r}:\n{traceback.format_exc()}")
                web_response = web.Response(status=500, text="Server Error")
            call.status = web_response.status
            self.calls.append(call)
            async with self._changed:
                self._changed.notify_all()
            return web_response
        if not is_api and (found := _GIT_PATH.fullmatch(full_path)):
            try:
                git_response = await self._serve_git(request, call, found)
            except Exception as exc:  # a bug in the fake must fail the test, not hang or vanish
                call.errors.append(f"FakeGitHub raised {exc!r}:\n{traceback.format_exc()}")
                git_response = self._git_text(500, "Server Error")
            call.status = git_response.status
            self.calls.append(call)
            async with self._changed:
                self._changed.notify_all()
            return git_response
        bucket = self._bucket(call.headers.get("authorization", ""))
        try:
            reply = await self._process(request, call, bucket) if is_api else self._not_api(call)
        except Exception as exc:  # a bug in the fake must fail the test, not hang or vanish
            call.errors.append(f"FakeGitHub raised {exc!r}:\n{traceback.format_exc()}")
            reply = _Reply(500, {"message": "Server Error"})
        if call.operation != "GET /rate_limit":
            bucket.consume()
        call.status = reply.status
        response = self._response(reply, bucket)
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        return response

    def _not_api(self, call: Call) -> _Reply:
        call.errors.append(f"not under {API_PREFIX}: nothing is served there yet")
        return _Reply(404, {"message": "Not Found"})

    async def _process(self, request: web.Request, call: Call, bucket: RateLimitBucket) -> _Reply:
        body_problem = await self._read_body(request, call)
        fault = self._take_fault(call)
        matched = self._router.match(call.method, call.path)
        if matched is None:
            call.errors.append(f"no operation in GitHub's REST description matches {call.method} {call.path}")
            return fault or _Reply(404, {"message": "Not Found", "documentation_url": DOCS_URL, "status": "404"})
        route, params = matched
        call.operation = route.name
        try:
            principal, repo = self._authenticate(call, route, params)
            if body_problem is not None:
                raise body_problem
            self._validate_body(call, route)
        except _GitHubError as error:
            if error.record:
                call.errors.append(error.describe())
            return fault or error.reply()
        if fault is not None:
            return fault
        if bucket.remaining <= 0 and route.template != "/rate_limit":
            who = f"installation ID {principal.installation_id}" if principal.installation_id else "this credential"
            return _GitHubError(403, f"API rate limit exceeded for {who}.").reply()
        return self._run_handler(_Request(request, call, route, params, principal, repo))

    async def _read_body(self, request: web.Request, call: Call) -> _GitHubError | None:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            return _GitHubError(413, "Request body too large", record=True, detail=exc.text)
        if not raw:
            return None
        try:
            call.json = orjson.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            call.json = raw.decode("utf-8", "replace")
            return _GitHubError(400, "Problems parsing JSON", record=True, detail=str(exc))
        return None

    def _validate_body(self, call: Call, route: _Route) -> None:
        if self.spec is None or not self.validate_bodies or call.method not in _BODY_METHODS:
            return
        present = call.json is not None
        errors = self.spec.body_errors(route.method, route.template, call.json, present=present)
        if errors:
            raise _GitHubError(422, "Invalid request.", errors=errors, record=True)

    def _run_handler(self, request: _Request) -> _Reply:
        name = _HANDLERS.get((request.route.method, request.route.template))
        try:
            return getattr(self, name)(request) if name else self._default_reply(request.route)
        except _GitHubError as error:
            if error.record:
                request.call.errors.append(error.describe())
            return error.reply()

    def _default_reply(self, route: _Route) -> _Reply:
        if self.spec is None:
            return _Reply(204)
        status = self.spec.success_status(route.method, route.template) or 204
        try:
            return _Reply(status, self.spec.example(route.method, route.template, status))
        except KeyError:
            return _Reply(status)

    def _response(self, reply: _Reply, bucket: RateLimitBucket) -> web.Response:
        headers = {
            **bucket.headers(),
            "x-github-request-id": secrets.token_hex(8).upper(),
            "x-github-api-version-selected": "2022-11-28",
            **reply.headers,
        }
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, content_type=reply.content_type, headers=headers)
        if reply.body is None:
            return web.Response(status=reply.status, headers=headers)
        return web.json_response(reply.body, status=reply.status, headers=headers, dumps=_dumps)

    def _bucket(self, authorization: str) -> RateLimitBucket:
        credential = authorization.partition(" ")[2].strip()
        key = "app" if _looks_like_jwt(credential) else credential or "anonymous"
        if key not in self.rate_limits:
            limit = ANONYMOUS_RATE_LIMIT if key == "anonymous" else RATE_LIMIT
            self.rate_limits[key] = RateLimitBucket(limit, limit, int(time.time()) + 3600)
        return self.rate_limits[key]

    # ------------------------------------------------------------------ authentication

    def _authenticate(self, call: Call, route: _Route, params: dict[str, str]) -> tuple[_Principal, _RepoState | None]:
        if not call.headers.get("user-agent"):
            raise _GitHubError(
                403,
                "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
                record=True,
            )
        credential = self._credential(call.headers.get("authorization"))
        kind = _auth_kind(route.template)
        if kind == "none":
            principal = _Principal("anonymous")
        elif kind == "jwt":
            principal = self._app_principal(credential)
        elif kind == "user":
            principal = self._user_principal(credential)
        elif kind == "any":
            principal = _Principal("anonymous") if credential is None else self._any_principal(credential)
        else:
            principal = self._installation_principal(credential)
        call.installation_id = principal.installation_id
        if principal.kind == "app" and params.get("installation_id", "").isdigit():
            call.installation_id = int(params["installation_id"])
        repo = None
        if route.template.startswith("/repos/{owner}/{repo}") and kind != "jwt":
            repo = self._accessible_repo(principal, f"{params['owner']}/{params['repo']}")
        return principal, repo

    @staticmethod
    def _credential(header: str | None) -> str | None:
        if header is None:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() not in ("token", "bearer") or not value.strip():
            raise _GitHubError(
                401, "Bad credentials", record=True, detail=f"malformed Authorization header {header[:20]!r}"
            )
        return value.strip()

    def _app_principal(self, credential: str | None) -> _Principal:
        if credential is None:
            raise _GitHubError(401, "Requires authentication", record=True, detail="this endpoint needs the app's JWT")
        if not _looks_like_jwt(credential):
            raise _GitHubError(
                401, "A JSON web token could not be decoded", record=True, detail="expected the app's JWT, got a token"
            )
        problem = self._jwt_problem(credential)
        if problem is not None:
            raise _GitHubError(401, problem, record=True, detail="JWT rejected")
        return _Principal("app")

    def _jwt_problem(self, token: str) -> str | None:
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"], "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            return (
                "'Expiration time' claim ('exp') must be a numeric value representing the future time "
                "at which the assertion expires."
            )
        except jwt.ImmatureSignatureError:
            return "'Issued at' claim ('iat') must be an Integer representing a time in the past."
        except jwt.PyJWTError:
            return "A JSON web token could not be decoded"
        if str(claims["iss"]) != str(self.app_id):
            return "'Issuer' claim ('iss') must be the app's id: integration not found"
        try:
            lifetime = float(claims["exp"]) - float(claims["iat"])
        except (TypeError, ValueError):
            return "A JSON web token could not be decoded"
        if lifetime > MAX_JWT_LIFETIME_S:
            return "'Expiration time' claim ('exp') is too far in the future"
        return None

    def _installation_principal(self, credential: str | None) -> _Principal:
        if credential is None:
            raise _GitHubError(401, "Requires authentication", record=True, detail="no installation token")
        if _looks_like_jwt(credential):
            raise _GitHubError(
                403,
                "Resource not accessible by integration",
                record=True,
                detail="the app's JWT was used where an installation token is needed",
            )
        if credential in self.user_tokens:
            return self._user_principal(credential)
        info = self.tokens.get(credential)
        if info is None:
            raise _GitHubError(401, "Bad credentials", record=True, detail="unknown token")
        if _parse_iso(info["expires_at"]) <= _now():
            raise _GitHubError(401, "Bad credentials", record=True, detail="installation token expired")
        if info["installation_id"] not in self.installations:
            raise _GitHubError(401, "Bad credentials", record=True, detail="the installation was deleted")
        names = info.get("repository_names")
        allowed = None if names is None else frozenset(n.lower() for n in names)
        return _Principal("installation", installation_id=info["installation_id"], repositories=allowed)

    def _user_principal(self, credential: str | None) -> _Principal:
        if credential is None:
            raise _GitHubError(401, "Requires authentication", record=True, detail="no user token")
        info = self.user_tokens.get(credential)
        if info is None:
            if credential in self.tokens:
                raise _GitHubError(
                    403,
                    "Resource not accessible by integration",
                    record=True,
                    detail="installation token on a /user endpoint",
                )
            raise _GitHubError(401, "Bad credentials", record=True, detail="unknown user token")
        return _Principal("user", user_login=info["login"])

    def _any_principal(self, credential: str) -> _Principal:
        if _looks_like_jwt(credential):
            return self._app_principal(credential)
        if credential in self.user_tokens:
            return self._user_principal(credential)
        return self._installation_principal(credential)

    def _user_installations(self, principal: _Principal) -> list[int]:
        info = next((i for i in self.user_tokens.values() if i["login"] == principal.user_login), None)
        ids = info["installation_ids"] if info else []
        return sorted(self.installations) if ids is None else [i for i in ids if i in self.installations]

    def _accessible_repo(self, principal: _Principal, full_name: str) -> _RepoState:
        repo = self._repos.get(full_name.lower())
        if repo is not None and repo.installation_id is not None:
            if principal.kind == "user":
                if repo.installation_id in self._user_installations(principal):
                    return repo
            elif repo.installation_id == principal.installation_id and (
                principal.repositories is None or repo.full_name.lower() in principal.repositories
            ):
                return repo
        who = f"installation {principal.installation_id}" if principal.kind == "installation" else principal.kind
        raise _GitHubError(404, "Not Found", record=True, detail=f"{who} cannot access {full_name}")

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

    def _pull_ref(self, repo: _RepoState, ref: str, sha: str) -> dict[str, Any]:
        owner = repo.data["owner"]
        return {
            "label": f"{owner['login']}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": _copy(owner),
            "repo": _copy(repo.data),
        }

    def _pull_dict(
        self,
        repo: _RepoState,
        number: int,
        *,
        head_repo: _RepoState,
        head_ref: str,
        head_sha: str,
        base_ref: str,
        base_sha: str,
        user_login: str,
        title: str | None,
        body: str | None,
    ) -> dict[str, Any]:
        full, pid = repo.full_name, next(self._ids["pull"])
        api, html = f"{self.api_url}/repos/{full}", f"{self.base_url}/{full}"
        now = _iso(_now())
        pull = self._example("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", 200)
        pull.update(
            url=f"{api}/pulls/{number}",
            id=pid,
            node_id=_node_id("PullRequest", pid),
            html_url=f"{html}/pull/{number}",
            diff_url=f"{html}/pull/{number}.diff",
            patch_url=f"{html}/pull/{number}.patch",
            issue_url=f"{api}/issues/{number}",
            commits_url=f"{api}/pulls/{number}/commits",
            review_comments_url=f"{api}/pulls/{number}/comments",
            review_comment_url=f"{api}/pulls/comments{{/number}}",
            comments_url=f"{api}/issues/{number}/comments",
            statuses_url=f"{api}/statuses/{head_sha}",
            number=number,
            state="open",
            locked=False,
            title=title or f"Pull request #{number}",
            user=self._user(user_login),
            body=body,
            labels=[],
            milestone=None,
            active_lock_reason=None,
            created_at=now,
            updated_at=now,
            closed_at=None,
            merged_at=None,
            merge_commit_sha=None,
            assignee=None,
            assignees=[],
            requested_reviewers=[],
            requested_teams=[],
            head=self._pull_ref(head_repo, head_ref, head_sha),
            base=self._pull_ref(repo, base_ref, base_sha),
            author_association="CONTRIBUTOR",
            auto_merge=None,
            merged=False,
            merged_by=None,
            comments=0,
            review_comments=0,
            maintainer_can_modify=False,
            commits=1,
            additions=0,
            deletions=0,
            changed_files=0,
        )
        pull["_links"] = {
            "self": {"href": pull["url"]},
            "html": {"href": pull["html_url"]},
            "issue": {"href": pull["issue_url"]},
            "comments": {"href": pull["comments_url"]},
            "review_comments": {"href": pull["review_comments_url"]},
            "review_comment": {"href": pull["review_comment_url"]},
            "commits": {"href": pull["commits_url"]},
            "statuses": {"href": pull["statuses_url"]},
        }
        return pull

    def _diff_entry(self, repo: _RepoState, given: dict[str, Any]) -> dict[str, Any]:
        filename = given["filename"]
        additions, deletions = int(given.get("additions", 1)), int(given.get("deletions", 0))
        sha = given.get("sha") or _fake_sha(repo.full_name, filename)
        entry: dict[str, Any] = {
            "sha": sha,
            "filename": filename,
            "status": "modified",
            "additions": additions,
            "deletions": deletions,
            "changes": additions + deletions,
            "blob_url": f"{self.base_url}/{repo.full_name}/blob/{sha}/{filename}",
            "raw_url": f"{self.base_url}/{repo.full_name}/raw/{sha}/{filename}",
            "contents_url": f"{self.api_url}/repos/{repo.full_name}/contents/{filename}?ref={sha}",
        }
        entry.update(given)
        return entry

    def _comment_dict(
        self, repo: _RepoState, issue_number: int, body: str, user: dict[str, Any], author_association: str
    ) -> dict[str, Any]:
        number = next(self._ids["comment"])
        api, now = f"{self.api_url}/repos/{repo.full_name}", _iso(_now())
        kind = "pull" if (repo.full_name, issue_number) in self.pulls else "issues"
        comment = self._example("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments", 201)
        comment.update(
            id=number,
            node_id=_node_id("IssueComment", number),
            url=f"{api}/issues/comments/{number}",
            html_url=f"{self.base_url}/{repo.full_name}/{kind}/{issue_number}#issuecomment-{number}",
            body=body,
            user=user,
            created_at=now,
            updated_at=now,
            issue_url=f"{api}/issues/{issue_number}",
            author_association=author_association,
            performed_via_github_app=self._app_dict(),
        )
        self.comments[number] = comment
        self._comment_issue[number] = (repo.full_name, issue_number)
        return comment

    def _installation_repos(self, installation_id: int) -> list[_RepoState]:
        return sorted(
            (r for r in self._repos.values() if r.installation_id == installation_id), key=lambda r: r.data["id"]
        )

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

    # ------------------------------------------------------------------ handlers: app and installations

    @_handles("GET /app")
    def _get_app(self, request: _Request) -> _Reply:
        return _Reply(200, self._app_dict())

    @_handles("GET /app/installations")
    def _list_installations(self, request: _Request) -> _Reply:
        return self._paginate(request, [self.installations[i] for i in sorted(self.installations)])

    @_handles("GET /app/installations/{installation_id}")
    def _get_installation(self, request: _Request) -> _Reply:
        installation = self.installations.get(request.int_param("installation_id"))
        if installation is None:
            raise _GitHubError(404, "Not Found")
        return _Reply(200, installation)

    @_handles("GET /repos/{owner}/{repo}/installation")
    def _get_repo_installation(self, request: _Request) -> _Reply:
        repo = self._repos.get(f"{request.params['owner']}/{request.params['repo']}".lower())
        if repo is None or repo.installation_id is None:
            raise _GitHubError(404, "Not Found")
        return _Reply(200, self.installations[repo.installation_id])

    @_handles("POST /app/installations/{installation_id}/access_tokens")
    def _create_access_token(self, request: _Request) -> _Reply:
        installation_id = request.int_param("installation_id")
        installation = self.installations.get(installation_id)
        if installation is None:
            raise _GitHubError(404, "Not Found")
        body = request.body if isinstance(request.body, dict) else {}
        selected = self._token_repositories(installation_id, body.get("repositories"), body.get("repository_ids"))
        permissions = body.get("permissions") or installation["permissions"]
        for name, level in permissions.items():
            granted = installation["permissions"].get(name)
            if granted is None or _PERMISSION_LEVEL.get(level, 0) > _PERMISSION_LEVEL.get(granted, 0):
                raise _GitHubError(422, "The permissions requested are not granted to this installation.")
        token = "ghs_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))
        response: dict[str, Any] = {
            "token": token,
            "expires_at": _iso(_now() + timedelta(seconds=TOKEN_LIFETIME_S)),
            "permissions": dict(permissions),
            "repository_selection": "selected",
        }
        if selected is not None:
            response["repositories"] = [_copy(r.data) for r in selected]
        names = None if selected is None else [r.full_name for r in selected]
        self.tokens[token] = {**response, "installation_id": installation_id, "repository_names": names}
        return _Reply(201, response)

    def _token_repositories(self, installation_id: int, names: Any, ids: Any) -> list[_RepoState] | None:
        if names is None and ids is None:
            return None
        installed = self._installation_repos(installation_id)
        selected = [r for r in installed if r.data["name"] in (names or []) or r.data["id"] in (ids or [])]
        missing = set(names or []) - {r.data["name"] for r in installed}
        missing |= set(ids or []) - {r.data["id"] for r in installed}
        if missing:
            raise _GitHubError(
                422,
                "There is at least one repository that does not exist or is not accessible to the parent installation.",
            )
        return selected

    @_handles("GET /installation/repositories")
    def _list_installation_repos(self, request: _Request) -> _Reply:
        principal = request.principal
        if principal.kind != "installation" or principal.installation_id is None:
            raise _GitHubError(403, "Resource not accessible by integration", record=True)
        repos = [
            r.data
            for r in self._installation_repos(principal.installation_id)
            if principal.repositories is None or r.full_name.lower() in principal.repositories
        ]
        return self._repositories_page(request, repos)

    def _repositories_page(self, request: _Request, repos: list[dict[str, Any]]) -> _Reply:
        return self._paginate(
            request,
            repos,
            lambda page, total: {"total_count": total, "repository_selection": "selected", "repositories": page},
        )

    @_handles("POST /app-manifests/{code}/conversions")
    def _convert_manifest(self, request: _Request) -> _Reply:
        code = request.params["code"]
        if code in self._used_manifest_codes:
            raise _GitHubError(404, "Not Found")
        self._used_manifest_codes.add(code)
        app = self._example("POST", "/app-manifests/{code}/conversions", 201)
        app.update(self._app_dict())
        app.update(
            client_id=self.client_id,
            client_secret=self.client_secret,
            webhook_secret=self.manifest_webhook_secret,
            pem=self.private_key_pem,
        )
        return _Reply(201, app)

    @_handles("GET /rate_limit")
    def _get_rate_limit(self, request: _Request) -> _Reply:
        authorization = request.call.headers.get("authorization", "")
        core = self._bucket(authorization).as_dict()
        overview = self._example("GET", "/rate_limit", 200)
        overview.setdefault("resources", {})["core"] = core
        overview["rate"] = core
        return _Reply(200, overview)

    # ------------------------------------------------------------------ handlers: user-to-server

    @_handles("GET /user")
    def _get_user(self, request: _Request) -> _Reply:
        return _Reply(200, self._user(request.principal.user_login or "octocat"))

    @_handles("GET /user/installations")
    def _list_user_installations(self, request: _Request) -> _Reply:
        installations = [self.installations[i] for i in self._user_installations(request.principal)]
        return self._paginate(request, installations, lambda page, total: {"total_count": total, "installations": page})

    @_handles("GET /user/installations/{installation_id}/repositories")
    def _list_user_installation_repos(self, request: _Request) -> _Reply:
        installation_id = request.int_param("installation_id")
        if installation_id not in self._user_installations(request.principal):
            raise _GitHubError(404, "Not Found")
        repos = []
        for state in self._installation_repos(installation_id):
            repo = _copy(state.data)
            # The user's own permissions on it (set_permission; "read" when none was set).
            role = state.permissions.get((request.principal.user_login or "").lower(), "read")
            repo["permissions"] = {
                "admin": role == "admin",
                "maintain": role in ("admin", "maintain"),
                "push": role in ("admin", "maintain", "write"),
                "triage": role in ("admin", "maintain", "write", "triage"),
                "pull": True,
            }
            repos.append(repo)
        return self._repositories_page(request, repos)

    # ------------------------------------------------------------------ handlers: repository

    @_handles("GET /repos/{owner}/{repo}")
    def _get_repo(self, request: _Request) -> _Reply:
        return _Reply(200, request.repository.data)

    @_handles("GET /repos/{owner}/{repo}/collaborators/{username}/permission")
    def _get_permission(self, request: _Request) -> _Reply:
        username = request.params["username"]
        role = request.repository.permissions.get(username.lower())
        if role is None:
            if username.lower() not in self.users:
                raise _GitHubError(404, "Not Found")
            role = "none"
        user = self._user(username)
        user["permissions"] = {
            "admin": role == "admin",
            "maintain": role in ("admin", "maintain"),
            "push": role in ("admin", "maintain", "write"),
            "triage": role in ("admin", "maintain", "write", "triage"),
            "pull": role != "none",
        }
        user["role_name"] = role
        return _Reply(200, {"permission": LEGACY_PERMISSION[role], "role_name": role, "user": user})

    @_handles("GET /repos/{owner}/{repo}/contents/{path}")
    def _get_content(self, request: _Request) -> _Reply:
        repo = request.repository
        path = request.params["path"].strip("/")
        ref = request.query.get("ref") or repo.data["default_branch"]
        files = self._files_at(repo, ref)
        if path in files:
            if "raw" in request.call.headers.get("accept", ""):
                return _Reply(200, raw=files[path], content_type="application/vnd.github.raw")
            return _Reply(200, self._content_entry(repo, ref, path, files[path], with_content=True))
        prefix = f"{path}/" if path else ""
        children = sorted({p[len(prefix) :].split("/")[0] for p in files if p.startswith(prefix)})
        if not children:
            raise _GitHubError(404, "Not Found")
        listing = []
        for child in children:
            child_path = prefix + child
            if child_path in files:
                listing.append(self._content_entry(repo, ref, child_path, files[child_path], with_content=False))
            else:
                listing.append(self._content_entry(repo, ref, child_path, None, with_content=False))
        return _Reply(200, listing)

    def _files_at(self, repo: _RepoState, ref: str) -> dict[str, bytes]:
        sha = self._resolve_sha(repo, ref)
        names = [ref, sha, *(branch for branch, head in repo.branches.items() if head == sha)]
        merged: dict[str, bytes] = {}
        for name in names:
            for path, content in repo.files.get(name, {}).items():
                merged.setdefault(path, content)
        return merged

    def _content_entry(
        self, repo: _RepoState, ref: str, path: str, content: bytes | None, *, with_content: bool
    ) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{repo.full_name}"
        is_file = content is not None
        sha = _blob_sha(content) if content is not None else _fake_sha(repo.full_name, ref, path)
        entry: dict[str, Any] = {
            "type": "file" if is_file else "dir",
            "size": len(content) if content is not None else 0,
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "url": f"{api}/contents/{path}?ref={ref}",
            "git_url": f"{api}/git/{'blobs' if is_file else 'trees'}/{sha}",
            "html_url": f"{self.base_url}/{repo.full_name}/{'blob' if is_file else 'tree'}/{ref}/{path}",
            "download_url": f"{self.base_url}/{repo.full_name}/raw/{ref}/{path}" if is_file else None,
        }
        if with_content and content is not None:
            entry.update(encoding="base64", content=_github_base64(content))
        entry["_links"] = {"self": entry["url"], "git": entry["git_url"], "html": entry["html_url"]}
        return entry

    @_handles("GET /repos/{owner}/{repo}/branches/{branch}")
    def _get_branch(self, request: _Request) -> _Reply:
        repo, name = request.repository, request.params["branch"]
        if name not in repo.branches:
            raise _GitHubError(404, "Branch not found")
        sha = repo.branches[name]
        api = f"{self.api_url}/repos/{repo.full_name}"
        branch = self._example("GET", "/repos/{owner}/{repo}/branches/{branch}", 200)
        commit = branch.get("commit")
        if not isinstance(commit, dict):
            commit = {}
        commit.update(sha=sha, url=f"{api}/commits/{sha}", html_url=f"{self.base_url}/{repo.full_name}/commit/{sha}")
        protected = name in repo.protections
        branch.update(
            name=name,
            commit=commit,
            protected=protected,
            protection_url=f"{api}/branches/{name}/protection",
            _links={"self": f"{api}/branches/{name}", "html": f"{self.base_url}/{repo.full_name}/tree/{name}"},
        )
        if not protected:
            branch["protection"] = {
                "enabled": False,
                "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
            }
        return _Reply(200, branch)

    @_handles("GET /repos/{owner}/{repo}/branches/{branch}/protection")
    def _get_branch_protection(self, request: _Request) -> _Reply:
        repo, name = request.repository, request.params["branch"]
        if name not in repo.branches:
            raise _GitHubError(404, "Branch not found")
        if name not in repo.protections:
            raise _GitHubError(404, "Branch not protected")
        protection = self._example("GET", "/repos/{owner}/{repo}/branches/{branch}/protection", 200)
        protection["url"] = f"{self.api_url}/repos/{repo.full_name}/branches/{name}/protection"
        protection.update(_copy(repo.protections[name]))
        return _Reply(200, protection)

    @_handles("GET /repos/{owner}/{repo}/git/ref/{ref}")
    def _get_ref(self, request: _Request) -> _Reply:
        repo, ref = request.repository, request.params["ref"]
        branch = ref.removeprefix("heads/")
        if not ref.startswith("heads/") or branch not in repo.branches:
            raise _GitHubError(404, "Not Found")
        sha, api = repo.branches[branch], f"{self.api_url}/repos/{repo.full_name}"
        return _Reply(
            200,
            {
                "ref": f"refs/{ref}",
                "node_id": _node_id("Ref", int(_fake_sha(repo.full_name, ref)[:8], 16)),
                "url": f"{api}/git/refs/{ref}",
                "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"},
            },
        )

    @_handles("DELETE /repos/{owner}/{repo}/git/refs/{ref}")
    def _delete_ref(self, request: _Request) -> _Reply:
        repo, ref = request.repository, request.params["ref"]
        branch = ref.removeprefix("heads/")
        if not ref.startswith("heads/") or branch not in repo.branches:
            raise _GitHubError(422, "Reference does not exist")
        del repo.branches[branch]
        self.deleted_refs.append({"repository": repo.full_name, "ref": f"refs/{ref}"})
        return _Reply(204)

    @_handles("POST /repos/{owner}/{repo}/statuses/{sha}")
    def _create_status(self, request: _Request) -> _Reply:
        repo, sha, body = request.repository, request.params["sha"], request.body
        number = next(self._ids["status"])
        status = self._example("POST", "/repos/{owner}/{repo}/statuses/{sha}", 201)
        now = _iso(_now())
        status.update(
            url=f"{self.api_url}/repos/{repo.full_name}/statuses/{sha}",
            avatar_url=None,
            id=number,
            node_id=_node_id("StatusContext", number),
            state=body["state"],
            description=body.get("description"),
            target_url=body.get("target_url"),
            context=body.get("context", "default"),
            created_at=now,
            updated_at=now,
            creator=self._bot(),
        )
        self.statuses.append({**status, "sha": sha, "repository": repo.full_name})
        return _Reply(201, status)

    @_handles("GET /repos/{owner}/{repo}/commits/{ref}/status")
    def _get_combined_status(self, request: _Request) -> _Reply:
        repo = request.repository
        sha = self._resolve_sha(repo, request.params["ref"])
        latest: dict[str, dict[str, Any]] = {}
        for status in self.statuses:
            if status["repository"] == repo.full_name and status["sha"] == sha:
                latest[status["context"]] = {k: v for k, v in status.items() if k not in ("sha", "repository")}
        states = {s["state"] for s in latest.values()}
        state = (
            "failure"
            if states & {"failure", "error"}
            else "pending"
            if not states or "pending" in states
            else "success"
        )
        combined = self._example("GET", "/repos/{owner}/{repo}/commits/{ref}/status", 200)
        combined.update(
            state=state,
            statuses=list(latest.values()),
            sha=sha,
            total_count=len(latest),
            repository=_copy(repo.data),
            commit_url=f"{self.api_url}/repos/{repo.full_name}/commits/{sha}",
            url=f"{self.api_url}/repos/{repo.full_name}/commits/{sha}/status",
        )
        return _Reply(200, combined)

    # ------------------------------------------------------------------ handlers: check runs

    @_handles("POST /repos/{owner}/{repo}/check-runs")
    def _create_check_run(self, request: _Request) -> _Reply:
        repo, body = request.repository, request.body
        conclusion = body.get("conclusion")
        status = "completed" if conclusion is not None else body.get("status", "queued")
        if (status == "completed" or body.get("completed_at")) and conclusion is None:
            raise _GitHubError(
                422,
                "Invalid request.",
                record=True,
                errors=["`conclusion` is required when `status` is `completed` or `completed_at` is given"],
            )
        number = next(self._ids["check_run"])
        api, now = f"{self.api_url}/repos/{repo.full_name}", _iso(_now())
        run = self._example("POST", "/repos/{owner}/{repo}/check-runs", 201)
        run.pop("deployment", None)
        head_sha = body["head_sha"]
        suite = self._suites.setdefault((repo.full_name, head_sha), next(self._ids["check_suite"]))
        run.update(
            id=number,
            node_id=_node_id("CheckRun", number),
            head_sha=head_sha,
            external_id=body.get("external_id", ""),
            url=f"{api}/check-runs/{number}",
            html_url=f"{self.base_url}/{repo.full_name}/runs/{number}",
            details_url=body.get("details_url", f"{self.base_url}/apps/{self.app_slug}"),
            status=status,
            conclusion=conclusion,
            started_at=body.get("started_at", now),
            completed_at=body.get("completed_at", now if status == "completed" else None),
            output={
                "title": None,
                "summary": None,
                "text": None,
                "annotations_count": 0,
                "annotations_url": f"{api}/check-runs/{number}/annotations",
            },
            name=body["name"],
            check_suite={"id": suite},
            app=self._app_dict(),
            pull_requests=self._check_run_pulls(repo, head_sha),
            annotations=[],
            actions=list(body.get("actions", [])),
            images=[],
        )
        self._apply_output(run, body.get("output"))
        self.check_runs[number] = run
        self._run_repo[number] = repo.full_name
        return _Reply(201, self._public_run(run))

    @_handles("PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}")
    def _update_check_run(self, request: _Request) -> _Reply:
        run, body = self._check_run(request), request.body
        conclusion = body.get("conclusion", run["conclusion"])
        status = "completed" if "conclusion" in body else body.get("status", run["status"])
        if (status == "completed" or body.get("completed_at")) and conclusion is None:
            raise _GitHubError(
                422,
                "Invalid request.",
                record=True,
                errors=["`conclusion` is required when `status` is `completed` or `completed_at` is given"],
            )
        for key in ("name", "details_url", "external_id", "started_at", "completed_at"):
            if key in body:
                run[key] = body[key]
        run.update(status=status, conclusion=conclusion)
        if status == "completed" and not run.get("completed_at"):
            run["completed_at"] = _iso(_now())
        if "actions" in body:
            run["actions"] = list(body["actions"])
        self._apply_output(run, body.get("output"))
        return _Reply(200, self._public_run(run))

    @_handles("GET /repos/{owner}/{repo}/check-runs/{check_run_id}")
    def _get_check_run(self, request: _Request) -> _Reply:
        return _Reply(200, self._public_run(self._check_run(request)))

    @_handles("GET /repos/{owner}/{repo}/commits/{ref}/check-runs")
    def _list_check_runs(self, request: _Request) -> _Reply:
        repo, query = request.repository, request.query
        sha = self._resolve_sha(repo, request.params["ref"])
        runs = [
            run
            for number, run in sorted(self.check_runs.items(), reverse=True)
            if self._run_repo[number] == repo.full_name
            and run["head_sha"] == sha
            and query.get("check_name") in (None, run["name"])
            and query.get("status") in (None, run["status"])
            and query.get("app_id") in (None, str(run["app"]["id"]))
        ]
        if query.get("filter", "latest") == "latest":
            newest: dict[str, dict[str, Any]] = {}
            for run in runs:
                newest.setdefault(run["name"], run)
            runs = list(newest.values())
        public = [self._public_run(run) for run in runs]
        return self._paginate(request, public, lambda page, total: {"total_count": total, "check_runs": page})

    def _check_run(self, request: _Request) -> dict[str, Any]:
        number = request.int_param("check_run_id")
        if self._run_repo.get(number) != request.repository.full_name:
            raise _GitHubError(404, "Not Found")
        return self.check_runs[number]

    def _check_run_pulls(self, repo: _RepoState, head_sha: str) -> list[dict[str, Any]]:
        def ref(side: dict[str, Any]) -> dict[str, Any]:
            return {
                "ref": side["ref"],
                "sha": side["sha"],
                "repo": {"id": side["repo"]["id"], "url": side["repo"]["url"], "name": side["repo"]["name"]},
            }

        return [
            {
                "url": pull["url"],
                "id": pull["id"],
                "number": pull["number"],
                "head": ref(pull["head"]),
                "base": ref(pull["base"]),
            }
            for pull in (self.pulls[(repo.full_name, n)] for n in self._pull_numbers_by_repo.get(repo.full_name, ()))
            if pull["state"] == "open"
            and pull["head"]["sha"] == head_sha
            and pull["head"]["repo"]["full_name"] == repo.full_name
        ]

    @staticmethod
    def _apply_output(run: dict[str, Any], output: dict[str, Any] | None) -> None:
        if not output:
            return
        for key in ("title", "summary", "text"):
            if key in output:
                run["output"][key] = output[key]
        run["annotations"].extend(_copy(output.get("annotations", [])))
        run["images"].extend(_copy(output.get("images", [])))
        run["output"]["annotations_count"] = len(run["annotations"])

    @staticmethod
    def _public_run(run: dict[str, Any]) -> dict[str, Any]:
        return _copy({k: v for k, v in run.items() if k not in _INTERNAL_RUN_KEYS})

    # ------------------------------------------------------------------ handlers: comments, reactions, labels

    @_handles("POST /repos/{owner}/{repo}/issues/{issue_number}/comments")
    def _create_comment(self, request: _Request) -> _Reply:
        comment = self._comment_dict(
            request.repository, request.int_param("issue_number"), request.body["body"], self._bot(), "NONE"
        )
        return _Reply(201, comment)

    @_handles("GET /repos/{owner}/{repo}/issues/{issue_number}/comments")
    def _list_comments(self, request: _Request) -> _Reply:
        key = (request.repository.full_name, request.int_param("issue_number"))
        found = [self.comments[n] for n in sorted(self.comments) if self._comment_issue[n] == key]
        return self._paginate(request, found)

    @_handles("PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}")
    def _update_comment(self, request: _Request) -> _Reply:
        comment = self._comment(request)
        comment.update(body=request.body["body"], updated_at=_iso(_now()))
        return _Reply(200, comment)

    @_handles("DELETE /repos/{owner}/{repo}/issues/comments/{comment_id}")
    def _delete_comment(self, request: _Request) -> _Reply:
        comment = self._comment(request)
        del self.comments[comment["id"]]
        return _Reply(204)

    def _comment(self, request: _Request) -> dict[str, Any]:
        number = request.int_param("comment_id")
        if number not in self.comments or self._comment_issue[number][0] != request.repository.full_name:
            raise _GitHubError(404, "Not Found")
        return self.comments[number]

    @_handles("POST /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions")
    def _create_reaction(self, request: _Request) -> _Reply:
        """Any comment id is accepted: comments from webhook payloads are not in the fake's state."""
        comment_id, content = request.int_param("comment_id"), request.body["content"]
        bot = self._bot()
        for existing in self.reactions:
            if (existing["comment_id"], existing["content"], existing["user"]["login"]) == (
                comment_id,
                content,
                bot["login"],
            ):
                return _Reply(200, {k: v for k, v in existing.items() if k not in ("comment_id", "repository")})
        number = next(self._ids["reaction"])
        reaction = self._example("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions", 201)
        reaction.update(
            id=number, node_id=_node_id("Reaction", number), user=bot, content=content, created_at=_iso(_now())
        )
        self.reactions.append({**reaction, "comment_id": comment_id, "repository": request.repository.full_name})
        return _Reply(201, reaction)

    @_handles("POST /repos/{owner}/{repo}/issues/{issue_number}/labels")
    def _add_labels(self, request: _Request) -> _Reply:
        key = (request.repository.full_name, request.int_param("issue_number"))
        body = request.body
        given = body.get("labels", []) if isinstance(body, dict) else body
        names = self.labels.setdefault(key, [])
        for label in given if isinstance(given, list) else []:
            name = label.get("name") if isinstance(label, dict) else str(label)
            if name and name not in names:
                names.append(name)
        return _Reply(200, self._label_list(request.repository, key))

    @_handles("DELETE /repos/{owner}/{repo}/issues/{issue_number}/labels/{name}")
    def _remove_label(self, request: _Request) -> _Reply:
        key = (request.repository.full_name, request.int_param("issue_number"))
        names = self.labels.get(key, [])
        if request.params["name"] not in names:
            raise _GitHubError(404, "Label does not exist")
        names.remove(request.params["name"])
        return _Reply(200, self._label_list(request.repository, key))

    def _label_list(self, repo: _RepoState, key: tuple[str, int]) -> list[dict[str, Any]]:
        labels = [
            {
                "id": _ID_STARTS["label"] + int(_fake_sha(name)[:6], 16),
                "node_id": _node_id("Label", len(name)),
                "url": f"{self.api_url}/repos/{repo.full_name}/labels/{name}",
                "name": name,
                "description": None,
                "color": "ededed",
                "default": False,
            }
            for name in self.labels.get(key, [])
        ]
        if key in self.pulls:
            self.pulls[key]["labels"] = _copy(labels)
        return labels

    # ------------------------------------------------------------------ handlers: pull requests

    def _pull(self, request: _Request) -> dict[str, Any]:
        pull = self.pulls.get((request.repository.full_name, request.int_param("pull_number")))
        if pull is None:
            raise _GitHubError(404, "Not Found")
        return pull

    @_handles("GET /repos/{owner}/{repo}/pulls/{pull_number}")
    def _get_pull(self, request: _Request) -> _Reply:
        return _Reply(200, self._pull(request))

    @_handles("GET /repos/{owner}/{repo}/pulls")
    def _list_pulls(self, request: _Request) -> _Reply:
        repo, query = request.repository, request.query
        state, head, base = query.get("state", "open"), query.get("head"), query.get("base")
        found = [
            pull
            for (full, _), pull in self.pulls.items()
            if full == repo.full_name
            and state in ("all", pull["state"])
            and (head is None or head in (pull["head"]["label"], pull["head"]["ref"]))
            and base in (None, pull["base"]["ref"])
        ]
        found.sort(key=lambda p: p["number"], reverse=query.get("direction", "desc") == "desc")
        return self._paginate(request, found)

    @_handles("GET /repos/{owner}/{repo}/pulls/{pull_number}/files")
    def _list_pull_files(self, request: _Request) -> _Reply:
        pull = self._pull(request)
        return self._paginate(request, self.pull_files.get((request.repository.full_name, pull["number"]), []))

    @_handles("POST /repos/{owner}/{repo}/pulls")
    def _create_pull(self, request: _Request) -> _Reply:
        repo, body = request.repository, request.body
        head_owner, _, head_ref = body["head"].rpartition(":")
        head_repo = repo
        if head_owner and head_owner.lower() != repo.data["owner"]["login"].lower():
            head_repo = self._repos.get(f"{head_owner}/{repo.data['name']}".lower(), repo)
        if body["base"] not in repo.branches:
            raise _GitHubError(
                422, "Validation Failed", errors=[{"resource": "PullRequest", "field": "base", "code": "invalid"}]
            )
        if head_ref not in head_repo.branches:
            raise _GitHubError(
                422, "Validation Failed", errors=[{"resource": "PullRequest", "field": "head", "code": "invalid"}]
            )
        for (full, _), pull in self.pulls.items():
            if (
                full == repo.full_name
                and pull["state"] == "open"
                and pull["head"]["ref"] == head_ref
                and pull["base"]["ref"] == body["base"]
            ):
                message = f"A pull request already exists for {pull['head']['label']}."
                raise _GitHubError(
                    422, "Validation Failed", errors=[{"resource": "PullRequest", "code": "custom", "message": message}]
                )
        number = 1 + max((n for (full, n) in self.pulls if full == repo.full_name), default=0)
        pull = self.add_pull(
            repo.full_name,
            number,
            head_sha=head_repo.branches[head_ref],
            base_sha=repo.branches[body["base"]],
            head_ref=head_ref,
            base_ref=body["base"],
            head_full_name=head_repo.full_name,
            user_login=self._bot()["login"],
            draft=bool(body.get("draft", False)),
            mergeable=None,
            title=body.get("title"),
            body=body.get("body"),
        )
        pull["maintainer_can_modify"] = bool(body.get("maintainer_can_modify", False))
        return _Reply(201, pull)

    @_handles("PATCH /repos/{owner}/{repo}/pulls/{pull_number}")
    def _update_pull(self, request: _Request) -> _Reply:
        pull, body, repo = self._pull(request), request.body, request.repository
        if "base" in body:
            if body["base"] not in repo.branches:
                raise _GitHubError(
                    422, "Validation Failed", errors=[{"resource": "PullRequest", "field": "base", "code": "invalid"}]
                )
            pull["base"] = self._pull_ref(repo, body["base"], repo.branches[body["base"]])
        if body.get("state") == "open" and pull["merged"]:
            raise _GitHubError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": "state cannot be changed. The pull request has been merged.",
                    }
                ],
            )
        for key in ("title", "body", "maintainer_can_modify"):
            if key in body:
                pull[key] = body[key]
        if "state" in body:
            pull["state"] = body["state"]
            pull["closed_at"] = _iso(_now()) if body["state"] == "closed" else None
        pull["updated_at"] = _iso(_now())
        return _Reply(200, pull)

    @_handles("PUT /repos/{owner}/{repo}/pulls/{pull_number}/merge")
    def _merge_pull(self, request: _Request) -> _Reply:
        pull, repo = self._pull(request), request.repository
        body = request.body if isinstance(request.body, dict) else {}
        if pull["state"] != "open" or pull["mergeable"] is False:
            raise _GitHubError(405, "Pull Request is not mergeable")
        if "sha" in body and body["sha"] != pull["head"]["sha"]:
            raise _GitHubError(409, "Head branch was modified. Review and try the merge again.")
        sha, now = _fake_sha("merge", repo.full_name, pull["number"], pull["head"]["sha"]), _iso(_now())
        pull.update(
            state="closed",
            merged=True,
            merged_at=now,
            closed_at=now,
            updated_at=now,
            merge_commit_sha=sha,
            merged_by=self._bot(),
            mergeable=None,
            mergeable_state="unknown",
        )
        repo.branches[pull["base"]["ref"]] = sha
        self.merges.append(
            {
                "repository": repo.full_name,
                "number": pull["number"],
                "sha": sha,
                "head_sha": pull["head"]["sha"],
                "merge_method": body.get("merge_method", "merge"),
                "commit_title": body.get("commit_title"),
                "commit_message": body.get("commit_message"),
                "installation_id": request.principal.installation_id,
            }
        )
        return _Reply(200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})

    @_handles("PUT /repos/{owner}/{repo}/pulls/{pull_number}/update-branch")
    def _update_pull_branch(self, request: _Request) -> _Reply:
        pull = self._pull(request)
        body = request.body if isinstance(request.body, dict) else {}
        expected = body.get("expected_head_sha")
        if expected is not None and expected != pull["head"]["sha"]:
            raise _GitHubError(422, "expected head sha didn't match current head ref.")
        return _Reply(202, {"message": "Updating pull request branch.", "url": pull["html_url"]})
