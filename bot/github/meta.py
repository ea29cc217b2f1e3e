"""`GET /meta`: GitHub's own address ranges. The app reads `hooks`, the addresses webhook deliveries
come from (the optional allowlist of the webhook ingress). No authentication needed."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network

from gidgethub.abc import GitHubAPI

from bot.github.errors import UnexpectedResponse, field

ENDPOINT = "GET /meta"


@dataclass(frozen=True)
class GitHubMeta:
    hooks: tuple[IPv4Network | IPv6Network, ...]


async def read_meta(gh: GitHubAPI) -> GitHubMeta:
    body = await gh.getitem("/meta")
    hooks = field(body, "hooks", ENDPOINT)
    if not isinstance(hooks, list) or not all(isinstance(entry, str) for entry in hooks):
        raise UnexpectedResponse(ENDPOINT, "`hooks` as a list of address ranges", body)
    try:
        return GitHubMeta(tuple(ip_network(entry, strict=False) for entry in hooks))
    except ValueError:
        raise UnexpectedResponse(ENDPOINT, "`hooks` as a list of address ranges", body) from None
