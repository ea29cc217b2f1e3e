"""Dashboard sessions, GitHub login, CSRF, one-time `state`s and who may see what.

- **Session**: a JWT (HS256, JWT_SECRET_KEY) in the cookie `cga_session`: HttpOnly, SameSite=Lax, Secure
  when PUBLIC_URL is https, valid 8 hours. Every browser gets one (anonymous until login) so that OAuth and
  manifest `state`s and the CSRF token can be bound to it. Login rotates it (new session id).
- **Ending sessions**: a signed-in session carries the user's session epoch (`ep`) from when it was issued.
  Logout and a revoked authorization (handlers/authorization.py) raise the user's epoch in the database,
  which ends every session of that user, in every browser: a request whose session's epoch is below the
  user's is anonymous again (its cookie is replaced; pages redirect to the login, the API answers 401).
  The epoch is read through the store, cached SESSION_EPOCH_SECONDS (bot/store/projects.py) per process;
  the process that raises it sees the raise at once, other processes within that bound.
  Personal API tokens are not sessions: they are revoked one by one on /account, or expire.
- **CSRF**: every state-changing request carries the session's token as the form field `csrf_token` or
  the header `X-CSRF-Token`. Exempt: requests with `Authorization: Bearer` (personal API tokens) and the
  webhook (signed). Under `/api/v1` a request with no session cookie at all is left
  to the API's own authentication (it answers 401).
- **States**: single-use, bound to the session id and a purpose ("login", "register"), 10 minutes.
- **Visibility**: what `GET /user/installations` and `GET /user/installations/{id}/repositories` list
  for the user (with the user's own token), cached 60 s per user. Settings need `admin` or `maintain` in
  the repository's `permissions` as the user sees it; starting, confirming, rejecting and cancelling
  agent runs and re-running validations need write access (`push`, or `maintain` / `admin`).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import jwt
from aiohttp import web
from cachetools import TTLCache
from gidgethub import BadRequest, HTTPException as GitHubHTTPException

from bot.config import WEBHOOK_PATH, Settings
from bot.github.github_app import LoginRefused
from bot.models import Project
from bot.services import SERVICES, Services

log = logging.getLogger(__name__)

COOKIE = "cga_session"
SESSION_SECONDS = 8 * 3600
STATE_SECONDS = 600
ACCESS_CACHE_SECONDS = 60
API_TOKEN_PREFIX = "cga_"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True)
class DashboardUser:
    """Who is making the request: a GitHub user, by session cookie or personal API token."""

    id: int
    login: str
    via: str  # "session" | "api_token"


@dataclass(frozen=True)
class RepoAccess:
    repo_id: int
    full_name: str
    installation_id: int
    permissions: dict[str, bool]

    @property
    def can_manage(self) -> bool:
        return bool(self.permissions.get("admin") or self.permissions.get("maintain"))

    @property
    def can_write(self) -> bool:
        return self.can_manage or bool(self.permissions.get("push"))

    @property
    def is_admin(self) -> bool:
        return bool(self.permissions.get("admin"))


@dataclass
class AuthState:
    """Per-app (per web process) state: pending `state`s and the users' access, both short-lived."""

    states: TTLCache[str, tuple[str, str, dict[str, Any]]] = field(
        default_factory=lambda: TTLCache(50_000, STATE_SECONDS))
    access: TTLCache[int, dict[int, RepoAccess]] = field(
        default_factory=lambda: TTLCache(10_000, ACCESS_CACHE_SECONDS))


AUTH = web.AppKey("dashboard_auth", AuthState)
SESSION = web.RequestKey("dashboard_session", dict)
SESSION_DIRTY = web.RequestKey("dashboard_session_dirty", bool)
USER = web.RequestKey("dashboard_user", object)


def setup(app: web.Application) -> None:
    app[AUTH] = AuthState()
    app.middlewares.append(session_middleware)
    app.router.add_get("/auth/login", login)
    app.router.add_get("/auth/callback", callback)
    app.router.add_post("/auth/logout", logout)


def _settings(request: web.Request) -> Settings:
    return request.app[SERVICES].settings


# ---------------------------------------------------------------- sessions

def _decode(settings: Settings, token: str) -> dict[str, Any] | None:
    try:
        return jwt.decode(token, settings.jwt_secret_key, algorithms=["HS256"], options={"require": ["exp", "sid"]})
    except jwt.PyJWTError:
        return None


def session(request: web.Request) -> dict[str, Any]:
    """The request's session (created, anonymous, when the browser has none)."""
    current = request.get(SESSION)
    if current is None:
        raw = request.cookies.get(COOKIE)
        current = _decode(_settings(request), raw) if raw else None
        if current is None:
            current = {"sid": secrets.token_urlsafe(16), "csrf": secrets.token_urlsafe(24)}
            request[SESSION_DIRTY] = True
        request[SESSION] = current
    return current


def replace_session(request: web.Request, values: dict[str, Any]) -> dict[str, Any]:
    """A new session (new id and CSRF token), e.g. at login and logout."""
    new = {"sid": secrets.token_urlsafe(16), "csrf": secrets.token_urlsafe(24), **values}
    request[SESSION] = new
    request[SESSION_DIRTY] = True
    return new


def update_session(request: web.Request, **values: Any) -> None:
    session(request).update(values)
    request[SESSION_DIRTY] = True


def session_stands(values: Mapping[str, Any], current_epoch: int | None) -> bool:
    """Whether a signed-in session (`values`, its verified claims) is still the user's: the user exists
    (`current_epoch` is theirs, None when there is no such user) and the session was issued at that epoch
    or a later one (a later one: another process may not have seen the raise yet). A session from before
    epochs existed has none and counts as issued at 0."""
    issued = values.get("ep", 0)
    if current_epoch is None or isinstance(issued, bool) or not isinstance(issued, int):
        return False
    return issued >= current_epoch


def csrf_token(request: web.Request) -> str:
    return str(session(request)["csrf"])


def _write_cookie(request: web.Request, response: web.StreamResponse) -> None:
    settings = _settings(request)
    values = dict(request[SESSION])
    now = int(time.time())
    values.update(iat=now, exp=now + SESSION_SECONDS)
    token = jwt.encode(values, settings.jwt_secret_key, algorithm="HS256")
    response.set_cookie(COOKIE, token, max_age=SESSION_SECONDS, path="/", httponly=True, samesite="Lax",
                        secure=settings.public_url.startswith("https://"))


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


@web.middleware
async def session_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path == WEBHOOK_PATH:
        return await handler(request)
    form = None
    if request.method not in SAFE_METHODS and request.content_type in FORM_TYPES:
        try:  # read once here (aiohttp keeps it for the handler): a body that is no form is a 400, not a 500
            form = await request.post()
        except ValueError:
            return web.Response(status=400, text=f"the {request.content_type} body could not be read as a form",
                                content_type="text/plain")
    if request.method not in SAFE_METHODS and _bearer(request) is None:
        if not (request.path.startswith("/api/v1/") and COOKIE not in request.cookies):
            given = request.headers.get("X-CSRF-Token")
            if given is None and form is not None:
                given = form.get("csrf_token")  # type: ignore[assignment]
            expected = _decode(_settings(request), request.cookies.get(COOKIE, ""))
            if expected is None or not same_secret(given, expected.get("csrf")):
                return web.Response(status=403, text="CSRF token missing or wrong: reload the page and try again",
                                    content_type="text/plain")
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if request.get(SESSION_DIRTY):
            _write_cookie(request, exc)
        raise
    if request.get(SESSION_DIRTY) and not response.prepared:
        _write_cookie(request, response)
    return response


def same_secret(given: object, expected: object) -> bool:
    """Constant-time comparison of a token someone sent with ours; anything that is not a non-empty
    string (a file upload, non-ASCII text: hmac refuses to compare that) simply does not match."""
    if not isinstance(given, str) or not isinstance(expected, str) or not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------- one-time states

def new_state(request: web.Request, purpose: str, **data: Any) -> str:
    state = secrets.token_urlsafe(24)
    request.app[AUTH].states[state] = (session(request)["sid"], purpose, data)
    return state


def take_state(request: web.Request, state: str | None, purpose: str) -> dict[str, Any] | None:
    """The state's data if it was made for this session and purpose less than 10 minutes ago; used once."""
    if not state:
        return None
    found = request.app[AUTH].states.pop(state, None)
    if found is None:
        return None
    sid, made_for, data = found
    if made_for != purpose or not hmac.compare_digest(sid, str(session(request)["sid"])):
        return None
    return data


# ---------------------------------------------------------------- who is asking

def token_expired(expires_at: datetime | None, now: datetime) -> bool:
    """A personal API token stops authenticating at its expiry (None: it never expires)."""
    return expires_at is not None and now >= expires_at


async def authenticate(request: web.Request) -> DashboardUser | None:
    """The user behind the request: `Authorization: Bearer cga_...` (a personal API token) or the session
    cookie; None when neither names a user. Cached on the request."""
    if USER in request:
        return request[USER]  # type: ignore[return-value]
    user: DashboardUser | None = None
    bearer = _bearer(request)
    if bearer is not None:
        if bearer.startswith(API_TOKEN_PREFIX):
            found = await request.app[SERVICES].store.projects.user_for_api_token(bearer)
            if (found is not None and found.user.access_token_encrypted
                    and not token_expired(found.expires_at, datetime.now(UTC))):
                user = DashboardUser(found.user.id, found.user.login, "api_token")
    else:
        current = session(request)
        if "uid" in current:
            epoch = await request.app[SERVICES].store.projects.session_epoch(int(current["uid"]))
            if session_stands(current, epoch):
                user = DashboardUser(int(current["uid"]), str(current["login"]), "session")
            else:  # ended by a logout (in any browser) or a revoked authorization
                replace_session(request, {})
    request[USER] = user
    return user


async def require_user(request: web.Request) -> DashboardUser:
    """The user, or: a page is redirected to the login, the API answers 401."""
    user = await authenticate(request)
    if user is None:
        if request.path.startswith("/api/"):
            raise web.HTTPUnauthorized(text='{"error": "log in or send Authorization: Bearer <token>"}',
                                       content_type="application/json")
        raise web.HTTPFound("/auth/login?" + urlencode({"next": request.path_qs}))
    return user


async def repository_access(request: web.Request, user: DashboardUser) -> dict[int, RepoAccess]:
    """Repository id -> what the user may do there, as GitHub lists it for the user (cached 60 s)."""
    cache = request.app[AUTH].access
    if (found := cache.get(user.id)) is not None:
        return found
    services: Services = request.app[SERVICES]
    token = await services.store.projects.user_access_token(user.id)
    access: dict[int, RepoAccess] = {}
    if token is not None:
        try:
            async for installation_id, repo in services.github.user(token).repositories():
                access[int(repo["id"])] = RepoAccess(int(repo["id"]), repo["full_name"], installation_id,
                                                     dict(repo.get("permissions") or {}))
        except BadRequest as exc:
            if exc.status_code not in (401, 403):
                raise
            log.info("GitHub refused %s's token (%s): they see nothing until they log in again",
                     user.login, exc.status_code)
            await services.store.projects.forget_user_tokens(user.id)
    cache[user.id] = access
    return access


def forget_access(request: web.Request, user_id: int) -> None:
    request.app[AUTH].access.pop(user_id, None)


async def visible_projects(request: web.Request) -> list[Project]:
    """The (non-archived) projects the requesting user may see; [] for nobody."""
    user = await authenticate(request)
    if user is None:
        return []
    access = await repository_access(request, user)
    projects = await request.app[SERVICES].store.projects.list_projects()
    return [p for p in projects if p.github_repo_id in access]


async def visible_project_ids(request: web.Request) -> set[str]:
    return {p.id for p in await visible_projects(request)}


async def project_access(request: web.Request, project: Project) -> RepoAccess | None:
    """What the requesting user may do on the project's repository (None: nobody, or not visible)."""
    user = await authenticate(request)
    if user is None:
        return None
    return (await repository_access(request, user)).get(project.github_repo_id)


async def can_manage(request: web.Request, project: Project) -> bool:
    access = await project_access(request, project)
    return access is not None and access.can_manage


async def is_admin(request: web.Request, project: Project) -> bool:
    access = await project_access(request, project)
    return access is not None and access.is_admin


async def can_write(request: web.Request, project: Project) -> bool:
    access = await project_access(request, project)
    return access is not None and access.can_write


async def require_project(request: web.Request, owner: str, repo: str, *, manage: bool = False,
                          write: bool = False) -> Project:
    """The project `owner/repo`: 404 when it does not exist or the user may not see it, 403 when `manage`
    and the user has neither admin nor maintain on the repository, or `write` and no write access."""
    user = await require_user(request)
    project = await request.app[SERVICES].store.projects.get_project_by_name(f"{owner}/{repo}")
    return await _check(request, user, project, manage=manage, write=write)


async def require_project_id(request: web.Request, project_id: str, *, manage: bool = False,
                             write: bool = False) -> Project:
    """The same by the project's id (the JSON API)."""
    user = await require_user(request)
    project = await request.app[SERVICES].store.projects.get_project(project_id)
    return await _check(request, user, project, manage=manage, write=write)


async def _check(request: web.Request, user: DashboardUser, project: Project | None, *, manage: bool,
                 write: bool = False) -> Project:
    access = (await repository_access(request, user)).get(project.github_repo_id) if project else None
    if project is None or project.archived_at is not None or access is None:
        raise web.HTTPNotFound(text="no such project")
    if manage and not access.can_manage:
        raise web.HTTPForbidden(text=f"changing {project.name}'s settings needs admin or maintain on the repository")
    if write and not access.can_write:
        raise web.HTTPForbidden(text=f"this needs write access to {project.name}")
    return project


# ---------------------------------------------------------------- login and logout

_SAME_ORIGIN_PATH = re.compile(r"/(?![/\\])[!-~]*")  # printable ASCII, no "//" or "/\\" at the start


def _safe_next(value: str | None) -> str:
    """Where a login may send the browser back to: a path of this site, else "/". No control characters
    or spaces (browsers drop tabs and newlines: "/%09/evil.example" would be "//evil.example"), no backslash
    (read as "/"), and nothing that makes it another origin."""
    if not value or not _SAME_ORIGIN_PATH.fullmatch(value) or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


async def login(request: web.Request) -> web.StreamResponse:
    settings = _settings(request)
    if not settings.github_client_id or not settings.github_client_secret:
        raise web.HTTPServiceUnavailable(
            text="GitHub login needs GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET (or an App registered from /)")
    state = new_state(request, "login", next=_safe_next(request.query.get("next")))
    query = urlencode({"client_id": settings.github_client_id, "redirect_uri": settings.public_url + "/auth/callback",
                       "state": state})
    raise web.HTTPFound(f"{settings.github_url}/login/oauth/authorize?{query}")


async def callback(request: web.Request) -> web.StreamResponse:
    services: Services = request.app[SERVICES]
    settings = services.settings
    data = take_state(request, request.query.get("state"), "login")
    if data is None:
        raise web.HTTPBadRequest(text="this login link is expired or was already used: log in again")
    code = request.query.get("code")
    if not code:
        raise web.HTTPBadRequest(text=f"GitHub did not authorize the login: {request.query.get('error', 'no code')}")
    try:
        token = await services.github.user_token(code, client_id=settings.github_client_id or "",
                                                 client_secret=settings.github_client_secret or "",
                                                 redirect_uri=settings.public_url + "/auth/callback")
        user_id, login = await services.github.user(token).me()
    except LoginRefused as exc:
        raise web.HTTPBadRequest(text=f"GitHub refused the login: {exc}") from None
    except (aiohttp.ClientError, GitHubHTTPException, ValueError) as exc:
        log.warning("login failed: %r", exc)
        raise web.HTTPBadGateway(text="GitHub could not be reached to finish the login; try again") from exc
    epoch = await services.store.projects.save_user(user_id, login, access_token=token)
    forget_access(request, user_id)
    replace_session(request, {"uid": user_id, "login": login, "ep": epoch})
    await services.store.audit.record("dashboard.login", actor=login)
    raise web.HTTPFound(_safe_next(data.get("next")))


async def logout(request: web.Request) -> web.StreamResponse:
    """Ends every session of the user, in every browser (a copied cookie included), not only this one."""
    user = await authenticate(request)
    if user is not None and user.via == "session":
        services: Services = request.app[SERVICES]
        await services.store.projects.end_sessions(user.id)
        forget_access(request, user.id)
        await services.store.audit.record("dashboard.logout", actor=user.login)
    replace_session(request, {})
    raise web.HTTPFound("/")
