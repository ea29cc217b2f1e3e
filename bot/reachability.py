"""Whether GitHub can reach an address (PUBLIC_URL) to deliver webhooks: a pure reading of the URL's
host, no DNS lookup. A loopback, private-range, link-local or otherwise non-global address, `localhost`,
a `.local`/`.internal` name or a name without a dot is reachable only from nearby, never from GitHub."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_LOCAL_SUFFIXES = {
    ".localhost": "a loopback name",
    ".local": "a local-network (mDNS) name",
    ".internal": "an internal name",
    ".lan": "a local-network name",
    ".home.arpa": "a home-network name",
}


def unreachable_reason(url: str) -> str | None:
    """Why GitHub cannot reach `url` ("a loopback address"), or None when its host may be public."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if not host:
        return "no host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _name_problem(host)
    return _address_problem(address)


def _name_problem(host: str) -> str | None:
    if host == "localhost":
        return "a loopback name"
    for suffix, reason in _LOCAL_SUFFIXES.items():
        if host.endswith(suffix):
            return reason
    if "." not in host:
        return "a name without a domain"
    return None


def _address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "a listen-on-all address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private-range address"
    if not address.is_global:
        return "not a public address"
    return None
