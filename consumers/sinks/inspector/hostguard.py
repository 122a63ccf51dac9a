"""The ``Host`` header allow-list of the inspector page: its guard against DNS rebinding.

A site whose name an attacker makes resolve to 127.0.0.1 could otherwise have the
victim's browser read the events (and the page's replay token) from the loopback port:
the browser sends that site's name as ``Host``, which is not on this list. Accepted are
the bound address, the loopback names and the sink's ``allowed_hosts``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def host_name(header: str) -> str:
    """The name of a ``Host`` header value, without the port (IPv6 keeps its brackets)."""
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if ":" in header else header


def is_loopback(host: str) -> bool:
    """``host`` (a bind address) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HostAllowList:
    """The names a request's ``Host`` may carry, compared without case."""

    def __init__(self, bound_host: str, allowed_hosts: Iterable[str] = ()) -> None:
        names = (*LOOPBACK_NAMES, bound_host, *allowed_hosts)
        self._names = frozenset(name.lower() for name in names)

    def allows(self, host_header: str) -> bool:
        return host_name(host_header).lower() in self._names
