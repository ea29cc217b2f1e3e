"""Who the client is: the peer's address, or, when the peer is a proxy listed in TRUSTED_PROXIES, the
address that proxy saw, from `X-Forwarded-For`. Pure functions."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address
UNKNOWN = "unknown"


def _address(text: str | None) -> Address | None:
    try:
        found = ip_address((text or "").strip())
    except ValueError:
        return None
    if isinstance(found, IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped  # ::ffff:192.0.2.1 is 192.0.2.1 (a dual-stack listener)
    return found


def within(address: str, networks: tuple[Network, ...]) -> bool:
    found = _address(address)
    return found is not None and any(found in network for network in networks)


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address. `X-Forwarded-For` is read right to left, from the hop the peer (a trusted
    proxy) added, skipping further trusted proxies: the first address that is not one is the client. An
    entry that is no address stops the walk (the client wrote it): the last hop a trusted proxy saw counts."""
    found = _address(peer)
    if found is None:
        return peer or UNKNOWN
    if not trusted or not any(found in network for network in trusted):
        return str(found)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        previous = _address(hop)
        if previous is None:
            break
        found = previous
        if not any(found in network for network in trusted):
            break
    return str(found)


def rate_key(address: str) -> str:
    """The rate limits' key for an address: an IPv6 client counts by its /64 (one host gets a whole /64)."""
    found = _address(address)
    if isinstance(found, IPv6Address):
        return str(ip_network(f"{found}/64", strict=False))
    return str(found) if found is not None else address
