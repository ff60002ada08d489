"""Who is on the other end of a request: the client's address, behind trusted reverse
proxies only. Pure.

X-Forwarded-For is whatever the client wrote plus what each proxy appended, so only the
entries added by proxies the hub trusts (`http.trusted_proxies`) are believed: walking it
from the right, the first address that is not a trusted proxy is the client. A request that
does not come from a trusted proxy is its own peer, whatever its headers say.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address

Network = IPv4Network | IPv6Network


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: Sequence[Network]) -> str:
    """The client's address ("unknown" when there is none to tell)."""
    if not peer:
        return "unknown"
    if not proxies or not forwarded_for or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            try:
                return str(ip_address(hop.strip("[]")))
            except ValueError:
                return peer  # garbage where the client's address should be: the proxy's
    return hops[0] if hops else peer
