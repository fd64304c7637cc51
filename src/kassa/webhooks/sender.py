"""One delivery attempt over HTTP: POST the event's bytes, signed, to the checked address.

The whole attempt (DNS, connect, redirects, reply) must finish within the timeout
(5 s); only a 2xx counts. Redirects are followed (at most 3), each target checked like
the first, and re-POSTed with the same body and signatures. Only the first bytes of the
reply are read and kept.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urljoin

import httpx

from kassa.core.urls import UrlError
from kassa.webhooks.service import AttemptResult
from kassa.webhooks.ssrf import Network, Resolver, Target, check_target

MAX_REDIRECTS = 3
EXCERPT_BYTES = 512
_REDIRECTS = {301, 302, 303, 307, 308}


def _request(client: httpx.AsyncClient, target: Target, body: bytes,
             headers: dict[str, str]) -> httpx.Request:
    url = httpx.URL(target.url)
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    if ":" in target.host:  # IPv6 literal
        host_header = (f"[{target.host}]" if target.port == default_port
                       else f"[{target.host}]:{target.port}")
    extensions = {}
    send_headers = {**headers, "Host": host_header}
    if target.scheme == "https":
        # TLS is checked against the name in the URL, while the connection goes to the
        # checked address; no keep-alive, so a pooled connection is never reused for
        # another name on the same address.
        extensions["sni_hostname"] = target.host
        send_headers["Connection"] = "close"
    return client.build_request("POST", url.copy_with(host=target.address), content=body,
                                headers=send_headers, extensions=extensions)


async def _post(client: httpx.AsyncClient, target: Target, body: bytes,
                headers: dict[str, str]) -> tuple[int, bytes, str | None]:
    response = await client.send(_request(client, target, body, headers), stream=True)
    try:
        excerpt = b""
        async for chunk in response.aiter_bytes():
            excerpt += chunk
            if len(excerpt) >= EXCERPT_BYTES:
                break
        return response.status_code, excerpt[:EXCERPT_BYTES], response.headers.get("location")
    finally:
        await response.aclose()


async def post_event(client: httpx.AsyncClient, url: str, *, body: bytes,
                     headers: dict[str, str], live: bool, resolver: Resolver,
                     exempt: tuple[Network, ...], timeout: float) -> AttemptResult:
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
                status, excerpt, location = await _post(client, target, body, headers)
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
        error = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    if error is None and status is not None and not 200 <= status < 300:
        error = f"HTTP {status}"
    return AttemptResult(
        url=current,
        status_code=status,
        latency_ms=int((time.perf_counter() - started) * 1000),
        response_excerpt=None if excerpt is None else excerpt.decode("utf-8", "replace"),
        error=error,
    )
