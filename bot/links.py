"""Which addresses the app shows as links: to GitHub only http(s) URLs on the configured GitHub
(GITHUB_URL: same scheme, host and port, under its path); elsewhere (an agent's own page) only http(s).

A URL that comes from outside (an agent API's answer) may be `javascript:`, `data:` or any other site;
as a link on a page it would run in the dashboard's origin or send a maintainer elsewhere.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

MAX_LINK_LENGTH = 2048


def _http_parts(url: object) -> SplitResult | None:
    if not isinstance(url, str) or len(url) > MAX_LINK_LENGTH or "\\" in url:
        return None
    if any(char.isspace() or not char.isprintable() for char in url):
        return None  # browsers drop tabs and newlines from URLs: what is checked must be what is followed
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    return parts if parts.scheme.lower() in ("http", "https") and parts.hostname else None


def github_link(url: object, github_url: str) -> str | None:
    """`url` when it is a link on the GitHub at `github_url`, else None."""
    parts, base = _http_parts(url), urlsplit(github_url)
    if parts is None or parts.scheme.lower() != base.scheme.lower():
        return None
    if parts.netloc.lower() != base.netloc.lower():  # also refuses user:password@ before the host
        return None
    root = base.path.rstrip("/")
    if root and parts.path != root and not parts.path.startswith(root + "/"):
        return None
    return url  # type: ignore[return-value]


def web_link(url: object) -> str | None:
    """`url` when it is an http(s) URL with a host (a link outside GitHub, such as an agent's page)."""
    return url if _http_parts(url) is not None else None  # type: ignore[return-value]
