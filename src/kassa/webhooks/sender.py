"""One delivery attempt over HTTP: POST the event's bytes, signed, to the checked address
(or, for an EasyPay notification, GET it with the signed parameters in the query).

The whole attempt (DNS, connect, redirects, reply) must finish within the timeout
(5 s); only a 2xx counts, and for a protocol notification only a 2xx whose reply is the
word the protocol asks for (`success`). Redirects are followed (at most 3), each target
checked like the first, and sent again with the same method, body and signatures. Only
the first bytes of the reply are read and kept.
"""

from __future__ import annotations

import asyncio
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urljoin

import httpx

from kassa.core.urls import UrlError
from kassa.webhooks.service import AttemptResult
from kassa.webhooks.ssrf import Network, Resolver, Target, check_target

MAX_REDIRECTS = 3
EXCERPT_BYTES = 512
ERROR_CHARS = 300  # the width of the attempt's error column
_REDIRECTS = {301, 302, 303, 307, 308}


def delivery_client(*, timeout: float, max_in_flight: int,
                    transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The HTTP client deliveries go out on: no redirects of its own (post_event checks
    each hop), no proxies from the environment, and no cookie jar: requests go to
    addresses, and one receiver's cookies must never reach another merchant's receiver
    on the same address."""
    return httpx.AsyncClient(
        follow_redirects=False, verify=True, trust_env=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        timeout=httpx.Timeout(timeout), transport=transport,
        limits=httpx.Limits(max_connections=max_in_flight * 2,
                            max_keepalive_connections=max_in_flight))


def _request(client: httpx.AsyncClient, target: Target, body: bytes,
             headers: dict[str, str], method: str) -> httpx.Request:
    url = httpx.URL(target.url)
    host = url.raw_host.decode("ascii")  # IDNA (punycode) form of a non-ASCII name
    default_port = 443 if target.scheme == "https" else 80
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    host_header = host if target.port == default_port else f"{host}:{target.port}"
    extensions = {}
    send_headers = {**headers, "Host": host_header,
                    # Only the first bytes of the reply are kept: never let a small
                    # compressed reply unpack into megabytes.
                    "Accept-Encoding": "identity"}
    if target.scheme == "https":
        # TLS is checked against the name in the URL, while the connection goes to the
        # checked address; no keep-alive, so a pooled connection is never reused for
        # another name on the same address.
        extensions["sni_hostname"] = url.raw_host.decode("ascii")
        send_headers["Connection"] = "close"
    return client.build_request(method, url.copy_with(host=target.address),
                                content=body or None, headers=send_headers,
                                extensions=extensions)


async def _send(client: httpx.AsyncClient, target: Target, body: bytes,
                headers: dict[str, str], method: str) -> tuple[int, bytes, str | None]:
    response = await client.send(_request(client, target, body, headers, method), stream=True)
    try:
        excerpt = b""
        try:
            # Raw bytes: a compressed reply is kept compressed, never unpacked.
            async for chunk in response.aiter_raw():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break
        except httpx.StreamConsumed:  # a reply already in memory (a test transport)
            excerpt = response.content[:EXCERPT_BYTES]
        return response.status_code, excerpt[:EXCERPT_BYTES], response.headers.get("location")
    finally:
        await response.aclose()


def reply_is(excerpt: bytes, word: bytes) -> bool:
    """The reply is exactly `word` (seed 003: 纯字符串success), give or take surrounding
    whitespace and a UTF-8 byte order mark, which PHP receivers often send before it."""
    return excerpt.strip().removeprefix(b"\xef\xbb\xbf").strip() == word


async def post_event(client: httpx.AsyncClient, url: str, *, body: bytes,
                     headers: dict[str, str], live: bool, resolver: Resolver,
                     exempt: tuple[Network, ...], timeout: float, method: str = "POST",
                     expect_reply: bytes | None = None) -> AttemptResult:
    started = time.perf_counter()
    current = url
    status: int | None = None
    excerpt: bytes | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout):
            for hop in range(MAX_REDIRECTS + 1):
                target = await check_target(current, live=live, resolver=resolver,
                                            exempt=exempt)
                status, excerpt, location = await _send(client, target, body, headers, method)
                if status in _REDIRECTS and location:
                    if hop == MAX_REDIRECTS:
                        error = f"more than {MAX_REDIRECTS} redirects"
                        break
                    current = urljoin(current, location)
                    continue
                break
    except TimeoutError:
        error = f"no reply within {timeout:g} s"
    except UrlError as exc:
        error = f"refused: {exc}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception as exc:  # whatever it was, it is this attempt's failure
        # (a URL httpx can't send, a Location header that isn't a URL, ...): recorded and
        # retried like any other, never an escape that would leave the delivery leased.
        error = f"{type(exc).__name__}: {exc}"
    if error is None and status is not None and not 200 <= status < 300:
        error = f"HTTP {status}"
    elif error is None and expect_reply is not None and not reply_is(excerpt or b"",
                                                                     expect_reply):
        error = f"the reply was not {expect_reply.decode()!r}"
    return AttemptResult(
        url=current,
        status_code=status,
        latency_ms=int((time.perf_counter() - started) * 1000),
        response_excerpt=None if excerpt is None else excerpt.decode("utf-8", "replace"),
        error=None if error is None else error[:ERROR_CHARS],
    )
