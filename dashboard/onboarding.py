"""Setup mode: the page that registers the GitHub App from its manifest (app.yml) and GitHub's callback."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from bot import registration
from bot.config import WEBHOOK_PATH, Settings
from bot.github.github_app import ManifestRefused
from dashboard import auth
from dashboard.rendering import render, services_of

log = logging.getLogger(__name__)

APP_YML = Path(__file__).resolve().parent.parent / "app.yml"


def manifest(settings: Settings) -> dict[str, Any]:
    """The App's manifest: app.yml's name, description, permissions and events, and this app's URLs."""
    spec = yaml.safe_load(APP_YML.read_text())
    base = settings.public_url.rstrip("/")
    return {
        "name": spec["name"],
        "description": spec.get("description", ""),
        "url": base,
        "hook_attributes": {"url": base + WEBHOOK_PATH, "active": True},
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
                        manifest_json=json.dumps(manifest(settings)), github_url=settings.github_url)


async def setup_callback(request: web.Request) -> web.Response:
    services = services_of(request)
    settings = services.settings
    if settings.app_configured:
        raise web.HTTPConflict(text="a GitHub App is already configured")
    if not auth.session(request).get("setup") or auth.take_state(request, request.query.get("state"),
                                                                  "register") is None:
        raise web.HTTPBadRequest(text="this registration link is expired, used, or from another browser: "
                                      "start again from the setup link")
    code = request.query.get("code", "")
    if not code.replace("-", "").replace("_", "").isalnum():
        raise web.HTTPBadRequest(text="GitHub sent no usable code")
    try:
        body = await services.github.convert_manifest(code)
    except ManifestRefused as exc:
        raise web.HTTPBadGateway(text=f"GitHub refused the registration ({exc.status}): {exc.message}") from None
    except (aiohttp.ClientError, ValueError) as exc:
        raise web.HTTPBadGateway(text="GitHub could not be reached to finish the registration") from exc
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
