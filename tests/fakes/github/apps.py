"""``AppsMixin``: the GitHub App side: the app, its installations and installation tokens, the
manifest conversion, the /user endpoints of user-to-server tokens, and the web flows outside /api/v3
(OAuth login, the App manifest registration form).

As on GitHub, a manifest whose webhook URL GitHub cannot reach over the public Internet (a loopback or
private address, ``localhost``, a name without a domain) is not converted: 422 with GitHub's words."""

from __future__ import annotations

import html
import ipaddress
import json
import re
import secrets
import string
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from yarl import URL

from tests.fakes.github.common import (
    Call,
    _copy,
    _GitHubError,
    _handles,
    _iso,
    _now,
    _Reply,
    _RepoState,
    _Request,
)
from tests.fakes.github.state import FakeState

TOKEN_LIFETIME_S = 3600
_PERMISSION_LEVEL = {"read": 1, "write": 2, "admin": 3}
_TOKEN_ALPHABET = string.ascii_letters + string.digits
_MANIFEST_PATH = re.compile(r"/(?:organizations/[^/]+/)?settings/apps/new")
_UNREACHABLE_HOOK = "Webhook URL is not supported because it isn't reachable over the public Internet ({host})"


def _unreachable_host(url: str) -> str | None:
    """The host of a webhook URL GitHub cannot reach over the public Internet (None: it may)."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    try:
        return None if ipaddress.ip_address(host).is_global else host
    except ValueError:
        return host if host == "localhost" or host.endswith(".localhost") or "." not in host else None


class AppsMixin(FakeState):
    """App, installations, tokens, manifests, /user, OAuth (see the module docstring)."""

    # ------------------------------------------------------------------ state helpers

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
        hook = (self.manifests.get(code) or {}).get("hook_attributes") or {}
        if hook.get("url") and (host := _unreachable_host(str(hook["url"]))) is not None:
            message = _UNREACHABLE_HOOK.format(host=host)
            raise _GitHubError(422, message, record=True, detail="manifest hook_attributes.url",
                               errors=[{"resource": "Hook", "field": "url", "code": "custom", "message": message}])
        app = self._example("POST", "/app-manifests/{code}/conversions", 201)
        app.update(self._app_dict())
        app.update(
            client_id=self.client_id,
            client_secret=self.client_secret,
            webhook_secret=self.manifest_webhook_secret,
            pem=self.private_key_pem,
        )
        return _Reply(201, app)

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

    # ------------------------------------------------------------------ builders

    def _installation_repos(self, installation_id: int) -> list[_RepoState]:
        return sorted(
            (r for r in self._repos.values() if r.installation_id == installation_id), key=lambda r: r.data["id"]
        )
