"""The client's address behind trusted proxies (hub.core.addresses)."""

from __future__ import annotations

from ipaddress import ip_network

from hub.core.addresses import client_address

PROXY = [ip_network("10.0.0.0/8"), ip_network("::1/128")]


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("203.0.113.9", "1.2.3.4", []) == "203.0.113.9"
    assert client_address(None, None, PROXY) == "unknown"


def test_a_client_cannot_forge_its_address() -> None:
    # Not from a trusted proxy: its header is ignored.
    assert client_address("203.0.113.9", "1.2.3.4", PROXY) == "203.0.113.9"
    # Through the proxy, the client wrote a fake first entry: the proxy's entry wins.
    assert client_address("10.0.0.2", "1.2.3.4, 198.51.100.7", PROXY) == "198.51.100.7"


def test_chains_of_trusted_proxies_and_garbage() -> None:
    assert client_address("10.0.0.2", "198.51.100.7, 10.0.0.5", PROXY) == "198.51.100.7"
    assert client_address("::1", "2001:db8::1", PROXY) == "2001:db8::1"
    assert client_address("10.0.0.2", "10.0.0.3, 10.0.0.4", PROXY) == "10.0.0.3"
    assert client_address("10.0.0.2", "not-an-ip", PROXY) == "10.0.0.2"
    assert client_address("10.0.0.2", " , ", PROXY) == "10.0.0.2"
