"""Setup mode: the page that registers the GitHub App from its manifest (app.yml) and GitHub's callback."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml
from aiohttp import web

from bot import registration
from bot.config import DEFAULT_POLLING_HOOK_URL, Settings
from bot.github.github_app import ManifestRefused
from bot.reachability import unreachable_reason
from dashboard import auth
from dashboard.rendering import render, services_of

log = logging.getLogger(__name__)

APP_YML = Path(__file__).resolve().parent.parent / "app.yml"


def hook_url(settings: Settings) -> str:
    """The App's webhook URL: this app's, unless it polls because GitHub cannot reach it (then
    POLLING_HOOK_URL, a placeholder GitHub accepts by default). It stays active: GitHub logs the deliveries
    of an active webhook only, and the log is what polling reads; so GitHub POSTs each event there. In
    webhook mode it is this app's whatever it is: a GitHub Enterprise Server on the same network may reach
    a private address."""
    if settings.webhook_mode == "poll" and unreachable_reason(settings.public_url) is not None:
        return settings.polling_hook_url
    return settings.webhook_url


def manifest(settings: Settings) -> dict[str, Any]:
    """The App's manifest: app.yml's name, description, permissions and events, and this app's URLs."""
    spec = yaml.safe_load(APP_YML.read_text())
    base = settings.public_url.rstrip("/")
    return {
        "name": spec["name"],
        "description": spec.get("description", ""),
        "url": base,
        "hook_attributes": {"url": hook_url(settings), "active": True},
        "redirect_url": base + "/setup/callback",
        "callback_urls": [base + "/auth/callback"],
        "setup_url": base + "/",
        "public": False,
        "default_permissions": dict(spec["default_permissions"]),
        "default_events": list(spec["default_events"]),
    }


async def setup_page(request: web.Request) -> web.Response:
    settings = services_of(request).settings
    given = request.query.get("setup_token")
    if given is not None:
        if not registration.check_setup_token(settings, given):
            return await render(request, "setup.html", status=403, allowed=False,
                                problem="That setup link is not valid (any more). Use the link the server printed.")
        auth.update_session(request, setup=True)
        raise web.HTTPFound("/")  # the token leaves the address bar
    if not auth.session(request).get("setup"):
        return await render(request, "setup.html", allowed=False, problem=None)
    state = auth.new_state(request, "register")
    return await render(request, "setup.html", allowed=True, problem=None, state=state,
                        manifest_json=json.dumps(manifest(settings)), github_url=settings.github_url,
                        unreachable=unreachable_reason(settings.public_url), local_port=listening_port(settings),
                        hook_url=hook_url(settings),
                        placeholder_hook=settings.polling_hook_url == DEFAULT_POLLING_HOOK_URL)


def listening_port(settings: Settings) -> int:
    """The port a tunnel forwards to: PUBLIC_URL's, when GitHub cannot reach it, is where the app listens."""
    public = urlsplit(settings.public_url)
    return public.port or {"https": 443, "http": 80}.get(public.scheme, settings.port)


async def setup_callback(request: web.Request) -> web.Response:
    """GitHub sends the browser back here with the registration's code. Reloaded, or opened again later,
    it explains on a page of its own (with a way back) instead of failing bare."""
    services = services_of(request)
    settings = services.settings
    if settings.app_configured:
        return await _callback_problem(request, 409, "The GitHub App is already registered",
                                       "This registration is finished: opening its page again changes nothing.")
    if not auth.session(request).get("setup") or auth.take_state(request, request.query.get("state"),
                                                                  "register") is None:
        return await _callback_problem(
            request, 400, "This registration link has expired",
            "It was used already, is more than 10 minutes old, or was opened in another browser. "
            "Nothing was registered: start again from the setup link the server printed.")
    code = request.query.get("code", "")
    if not code.replace("-", "").replace("_", "").isalnum():
        return await _callback_problem(request, 400, "GitHub did not finish the registration",
                                       "GitHub sent no usable code back. Nothing was registered: start again.")
    try:
        body = await services.github.convert_manifest(code)
    except ManifestRefused as exc:
        return await _callback_problem(request, 502, "GitHub did not finish the registration",
                                       f"GitHub refused it ({exc.status}): {exc.message}")
    except (aiohttp.ClientError, ValueError):
        log.warning("GitHub could not be reached to finish the App's registration", exc_info=True)
        return await _callback_problem(request, 502, "GitHub did not finish the registration",
                                       "GitHub could not be reached to finish it. Nothing was registered: "
                                       "start again in a moment.")
    found = registration.Registration(
        app_id=str(body["id"]), slug=body.get("slug") or "", html_url=body.get("html_url") or "",
        client_id=body.get("client_id"), private_key=body["pem"], webhook_secret=body["webhook_secret"],
        client_secret=body.get("client_secret"), owner=(body.get("owner") or {}).get("login"))
    registration.save(settings, found)
    await services.activate(registration.apply(settings, found))
    registration.discard_setup_token(settings)
    auth.update_session(request, setup=False)
    await services.store.audit.record("app.registered", details={"app_id": found.app_id, "slug": found.slug})
    log.info("GitHub App %s (%s) registered from the dashboard", found.slug, found.app_id)
    return await render(request, "registered.html", registration=found)


async def _callback_problem(request: web.Request, status: int, heading: str, explanation: str) -> web.Response:
    return await render(request, "registration_problem.html", status=status, heading=heading,
                        explanation=explanation)
