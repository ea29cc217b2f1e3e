"""Headers every answer of the app carries: a Content-Security-Policy that allows scripts, styles,
images and connections (fetch, the WebSocket) only from the app itself, no inline script or style, no
framing, and forms posting only to the app or to GITHUB_URL (the App registration's manifest form).
The pages keep their scripts in dashboard/static/."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from bot.services import SETTINGS


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(_add_headers)


def content_security_policy(github_url: str) -> str:
    parts = urlsplit(github_url)
    github_origin = f"{parts.scheme}://{parts.netloc}"
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
        f"form-action 'self' {github_origin}", "base-uri 'none'", "frame-ancestors 'none'"])


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", content_security_policy(request.app[SETTINGS].github_url))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
