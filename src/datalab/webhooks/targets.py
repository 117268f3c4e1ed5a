"""Which addresses webhooks may deliver to: public ones only, unless the settings allow the others.

A URL's host is resolved and every address it resolves to must be public (not loopback, private,
link-local, shared, reserved, multicast or unspecified), so a webhook cannot make the server call its
own network (SSRF). The check runs when a webhook is saved and again before every delivery, since DNS
answers change. The HTTP client resolves the name once more when it connects: a name whose answer
changes between the two lookups (DNS rebinding) is not caught by this check.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str) -> list[str]:
    """The addresses a host name (or address) resolves to; empty when it does not resolve."""
    try:
        return [str(ipaddress.ip_address(host.split("%", 1)[0]))]
    except ValueError:
        pass
    try:
        answers = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (UnicodeError, ValueError, OSError):
        return []
    return sorted({str(answer[4][0]) for answer in answers})


def non_public_address(url: str) -> str | None:
    """The first address the URL's host resolves to that is not public, or None (also when the host
    does not resolve: nothing can be sent to it then)."""
    host = urlsplit(url).hostname or ""
    for address in resolve(host):
        if not _is_public(address):
            return address
    return None
