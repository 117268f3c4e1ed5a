"""Which addresses webhooks may deliver to: public ones only, unless the settings allow the others.

A URL's host is resolved and every address it resolves to must be public (not loopback, private,
link-local, shared, reserved, multicast or unspecified), so a webhook cannot make the server call its
own network (SSRF). The check runs when a webhook is saved and again before every delivery, since DNS
answers change. A delivery is then sent to the address checked (`destination`), with the URL's host name
in its Host header and as the TLS server name (certificates are verified for that name): the HTTP client
never looks the name up again, so an answer changed between the check and the connection (DNS
rebinding) cannot send it elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2


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


class RefusedTarget(Exception):
    """A delivery's URL cannot be sent to; the message says why."""


@dataclass(frozen=True)
class Destination:
    """Where a delivery goes: the URL to request, and the headers and request extensions it needs."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


def destination(url: str, *, allow_private: bool) -> Destination:
    """The URL with its host name replaced by the address it resolves to, every address checked public;
    the URL as it is when private targets are allowed. Raises RefusedTarget."""
    if allow_private:
        return Destination(url)
    target = httpx2.URL(url)
    # the name as DNS and TLS know it (an internationalized name in its ASCII form)
    host = target.raw_host.decode("ascii")
    addresses = resolve(host)
    if not addresses:
        raise RefusedTarget("the webhook's host does not resolve")
    for address in addresses:
        if not _is_public(address):
            raise RefusedTarget(f"the webhook's host resolves to {address}, not a public address")
    pinned = target.copy_with(host=addresses[0])
    if pinned == target:
        return Destination(url)
    extensions: dict[str, Any] = {"sni_hostname": host} if target.scheme == "https" else {}
    return Destination(str(pinned), {"host": target.netloc.decode("ascii")}, extensions)
