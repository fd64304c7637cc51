"""One delivery attempt (kassa.webhooks.sender), through httpx's mock transport: every
failure is an attempt's error (never an exception that would leave the delivery
leased), errors fit their column, replies are read raw and only their first bytes,
cookies never travel between receivers, and names go out in their IDNA form."""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import threading
import time
from typing import Any

import httpx

from kassa.webhooks.sender import EXCERPT_BYTES, delivery_client, post_event
from kassa.webhooks.ssrf import SystemResolver

BODY = b'{"event_id":"evt_x","event":"payment.completed"}'
HEADERS = {"Content-Type": "application/json", "X-Event-Id": "evt_x"}


async def public(host: str) -> list[str]:
    """Fake DNS: every name is one public address (nothing is connected to: mock)."""
    del host
    return ["93.184.216.34"]


def attempt(handler: Any, url: str = "http://hooks.example/x", **kwargs: Any
            ) -> tuple[Any, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response: httpx.Response = handler(request)
        return response

    async def run() -> Any:
        async with delivery_client(timeout=5.0, max_in_flight=4,
                                   transport=httpx.MockTransport(record)) as client:
            return await post_event(client, url, body=BODY, headers=HEADERS,
                                    live=kwargs.get("live", False),
                                    resolver=kwargs.get("resolver", public), exempt=(),
                                    timeout=5.0)

    return asyncio.run(run()), seen


def test_an_unexpected_failure_is_the_attempts_error_not_an_exception() -> None:
    def boom(_: httpx.Request) -> httpx.Response:
        raise ValueError("something no one planned for")

    result, seen = attempt(boom)
    assert len(seen) == 1
    assert not result.succeeded and result.status_code is None
    assert result.error == "ValueError: something no one planned for"


def test_a_location_that_is_not_a_url_is_the_attempts_error() -> None:
    result, seen = attempt(lambda _: httpx.Response(302, headers={"Location": "http://[::1"}))
    assert len(seen) == 1 and not result.succeeded
    assert result.error is not None and "location" in result.error.lower(), result


def test_errors_fit_their_column() -> None:
    async def nxdomain(host: str) -> list[str]:
        raise OSError(f"no such name {host}")

    long_name = ".".join(["a" * 60] * 4) + ".example"
    result, seen = attempt(lambda _: httpx.Response(200), url=f"https://{long_name}/x",
                           live=True, resolver=nxdomain)
    assert seen == []
    assert result.error is not None and result.error.startswith("refused")
    assert len(result.error) <= 300


def test_a_non_ascii_name_goes_out_in_its_idna_form() -> None:
    result, seen = attempt(lambda _: httpx.Response(204), url="https://bücher.example/hook",
                           live=True)
    assert result.succeeded, result
    (request,) = seen
    assert request.headers["host"] == "xn--bcher-kva.example"
    assert request.extensions["sni_hostname"] == "xn--bcher-kva.example"
    assert request.url.host == "93.184.216.34"


def test_replies_are_read_raw_and_only_their_first_bytes() -> None:
    """A receiver's compressed reply is not unpacked (a few KB could be megabytes), and
    compression is not asked for."""
    bomb = gzip.compress(b"\0" * 5_000_000)

    def compressed(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"},
                              stream=httpx.ByteStream(bomb))

    result, seen = attempt(compressed)
    assert seen[0].headers["accept-encoding"] == "identity"
    assert result.succeeded
    assert result.response_excerpt is not None
    assert len(result.response_excerpt) <= EXCERPT_BYTES
    # The raw gzip stream (its magic number first), not the first of 5 MB of NULs.
    assert result.response_excerpt.startswith("\x1f\ufffd\x08"), result.response_excerpt[:8]

    big = os.urandom(2000).hex()
    result, _ = attempt(lambda _: httpx.Response(200, stream=httpx.ByteStream(big.encode())))
    assert result.response_excerpt == big[:EXCERPT_BYTES]


def test_cookies_never_travel_between_receivers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Set-Cookie": f"session=of-{request.headers['host']}"
                                                          "; Path=/"})

    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async def run() -> None:
        async with delivery_client(timeout=5.0, max_in_flight=4,
                                   transport=httpx.MockTransport(record)) as client:
            for host in ("a.example", "b.example", "a.example"):
                await post_event(client, f"http://{host}/hook", body=BODY, headers=HEADERS,
                                 live=False, resolver=public, exempt=(), timeout=5.0)

    asyncio.run(run())
    assert len(seen) == 3
    assert all("cookie" not in r.headers for r in seen), [dict(r.headers) for r in seen]


def test_a_name_whose_dns_hangs_cannot_hold_up_everyone_elses(monkeypatch: Any) -> None:
    """Lookups of one name that never come back hold at most two resolver threads: other
    names still resolve at once (no network: getaddrinfo is played here)."""
    release = threading.Event()

    def fake_getaddrinfo(host: str, *_: Any, **__: Any) -> list[Any]:
        if host == "hangs.example":
            release.wait(10)
            raise socket.gaierror("gave up")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    resolver = SystemResolver(threads=4, per_host=2)

    async def run() -> tuple[list[str], float]:
        hanging = [asyncio.create_task(resolver("hangs.example")) for _ in range(20)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        answer = await asyncio.wait_for(resolver("fine.example"), timeout=5)
        took = time.monotonic() - started
        release.set()
        await asyncio.gather(*hanging, return_exceptions=True)
        return answer, took

    answer, took = asyncio.run(run())
    assert answer == ["93.184.216.34"]
    assert took < 1.0, took
