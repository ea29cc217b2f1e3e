"""Registering the GitHub App through the setup page over HTTP, as a browser does: open the setup link,
post the page's manifest form to (the fake) GitHub, and follow GitHub back to /setup/callback."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import aiohttp

_FORM_ACTION = re.compile(r'<form id="register" method="post" action="([^"]+)"')
_MANIFEST = re.compile(r'name="manifest" value="([^"]*)"')


@dataclass(frozen=True)
class Callback:
    status: int
    page: str
    url: str  # /setup/callback?code=...&state=...: what a reload opens again


async def register_app(session: aiohttp.ClientSession, setup_link: str) -> Callback:
    """Opens `setup_link` (`.../?setup_token=...`) in `session` (a cookie jar that keeps 127.0.0.1's
    cookies) and presses "Register GitHub App" for a personal account."""
    async with session.get(setup_link) as response:
        page = await response.text()
    action, manifest = _FORM_ACTION.search(page), _MANIFEST.search(page)
    assert action and manifest, f"no registration form on the setup page:\n{page}"
    async with session.post(html.unescape(action.group(1)), data={"manifest": html.unescape(manifest.group(1))}) as response:
        return Callback(response.status, await response.text(), str(response.url))
