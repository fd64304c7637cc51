"""Where a webhook may go. Live mode: https only, and the host must not resolve to a
loopback, private, link-local, multicast, reserved or cloud-metadata address, in any
spelling (`core.urls` reads decimal, hex, octal and IPv4-mapped forms). Test mode: http,
and loopback besides public addresses; still never private or metadata ones.

Checked when an endpoint is registered and again before every request (redirects
included), and the request is then sent to the address that was checked, so a DNS
answer that changes in between (rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from kassa.core.urls import UrlError, check_url, is_forbidden_address, literal_address

# host -> the addresses it resolves to (as text). The system resolver by default; tests
# pass their own to play DNS.
Resolver = Callable[[str], Awaitable[list[str]]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SystemResolver:
    """getaddrinfo on threads of its own, at most `per_host` at a time for one name.

    A name whose nameserver never answers ties up a thread until the system gives up
    (the caller's 5 s timeout doesn't free it). On the event loop's shared executor a few
    such names would hold every thread, and every other merchant's lookups would time
    out; here they hold at most `per_host` threads each, and wait for each other."""

    def __init__(self, *, threads: int = 16, per_host: int = 2) -> None:
        self.threads = threads
        self.per_host = per_host
        self._executor: ThreadPoolExecutor | None = None
        self._by_host: dict[str, asyncio.Semaphore] = {}

    async def __call__(self, host: str) -> list[str]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="kassa-dns")
        gate = self._by_host.setdefault(host, asyncio.Semaphore(self.per_host))
        try:
            async with gate:
                infos = await asyncio.get_running_loop().run_in_executor(
                    self._executor, functools.partial(socket.getaddrinfo, host, None,
                                                      type=socket.SOCK_STREAM))
        finally:
            if not gate.locked() and host in self._by_host and len(self._by_host) > 1000:
                del self._by_host[host]  # don't keep a gate per name ever seen
        return list(dict.fromkeys(str(info[4][0]) for info in infos))



@dataclass(frozen=True, slots=True)
class Target:
    """A URL and the address its request goes to."""
    url: str
    scheme: str
    host: str  # as written in the URL (for Host and TLS server name)
    port: int
    address: str  # the checked IP the connection is made to


def url_host(url: str) -> str:
    """The receiver a URL names, as "name:port": what the in-flight cap counts by, so URLs
    that differ only in path or query share one cap."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 443 if parts.scheme == "https" else 80
    return f"{(parts.hostname or '').lower().rstrip('.')}:{port or default}"[:300]


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def allowed_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, *, live: bool,
                    exempt: tuple[Network, ...]) -> bool:
    """Public addresses always; exempt networks always; loopback in test mode only (a
    merchant's own machine). Never private, link-local, metadata, CGNAT or reserved ones
    otherwise: test keys are easy to come by (the demo's are published)."""
    if any(addr.version == net.version and addr in net for net in exempt):
        return True
    if not live and addr.is_loopback:
        return True
    return not is_forbidden_address(addr)


def check_literal(url: str, *, live: bool, exempt: tuple[Network, ...] = ()) -> None:
    """The checks that need no DNS: the URL's form, and its address if it is written as
    one. UrlError says why not."""
    check_url(url, live=live and not exempt, field="url")
    host = urlsplit(url).hostname or ""
    literal = literal_address(host)
    if literal is not None and not allowed_address(literal, live=live, exempt=exempt):
        raise UrlError(f"url points at an internal address ({literal}); webhooks may reach "
                       + ("public addresses only" if live else "public or loopback addresses"))


async def check_target(url: str, *, live: bool, resolver: Resolver,
                       exempt: tuple[Network, ...] = ()) -> Target:
    """The address to send `url`'s request to, or UrlError saying why not."""
    # With exempt networks, the literal-address rule is applied below (with the exemption).
    check_url(url, live=live and not exempt, field="url")
    parts = urlsplit(url)
    if live and parts.scheme != "https":
        raise UrlError("url must use https in live mode")
    assert parts.hostname is not None  # check_url insists on one
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            answers = await asyncio.wait_for(resolver(host.rstrip(".")), timeout=5.0)
        except (OSError, UnicodeError, TimeoutError) as exc:
            raise UrlError(f"url host {host!r} does not resolve") from exc
        addresses = [a for a in (literal_address(x.split("%")[0]) for x in answers) if a]
        if not addresses:
            raise UrlError(f"url host {host!r} does not resolve")
    # Every address must be acceptable: a name with one public and one internal address
    # could be steered to the internal one.
    bad = [a for a in addresses if not allowed_address(a, live=live, exempt=exempt)]
    if bad:
        raise UrlError(f"url host {host!r} resolves to an internal address ({bad[0]}); "
                       + ("live-mode webhooks must reach a public address" if live else
                          "test-mode webhooks may reach public or loopback addresses"))
    return Target(url=url, scheme=parts.scheme, host=host, port=port, address=str(addresses[0]))
