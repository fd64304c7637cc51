"""Callback and return URL checks, including the SSRF rules for live mode.

Literal addresses are recognised in every spelling a resolver would accept:
dotted, decimal ("2130706433"), hex ("0x7f000001"), octal and short forms
(via inet_aton), bracketed IPv6 and IPv4-mapped IPv6.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


class UrlError(ValueError):
    pass


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    h = host.strip("[]")
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        try:
            addr = ipaddress.IPv4Address(socket.inet_aton(h))
        except (OSError, ValueError):
            return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_forbidden_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address):
        # 6to4 and Teredo addresses carry an IPv4 address inside: judge that one too.
        inner = [addr.sixtofour, *(addr.teredo or ())]
        if any(v4 is not None and is_forbidden_address(v4) for v4 in inner):
            return True
    return (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local)
        or str(addr) == "100.100.100.200"  # Alibaba Cloud metadata
        or addr in ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
    )


def check_url(url: str, *, live: bool, field: str) -> str:
    """Validate a merchant-supplied URL. Live mode: https and no internal targets."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlError(f"{field} is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlError(f"{field} is not a valid URL") from exc
    del port
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UrlError(f"{field} must be an absolute http(s) URL")
    if (any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url)
            or parts.username or parts.password):
        raise UrlError(f"{field} must not contain spaces, control characters or credentials")
    if live:
        if parts.scheme != "https":
            raise UrlError(f"{field} must use https in live mode")
        host = parts.hostname.lower().rstrip(".")
        if host == "localhost" or host.endswith(".localhost") or host in _METADATA_HOSTS:
            raise UrlError(f"{field} must not point at an internal host in live mode")
        addr = literal_address(host)
        if addr is not None and is_forbidden_address(addr):
            raise UrlError(f"{field} must not point at an internal address in live mode")
    return url
