"""Recorded wire payloads (tests/channels/wire/*.json) and a fake upstream serving them through
httpx.MockTransport: the adapters' real HTTP code runs, and no byte leaves the process.

A recording is {"request": what Kassa must send, "response": {"status", "body"}}: requests are
asserted against the first, replies are served from the second, as the upstream's raw bytes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import httpx

WIRE = Path(__file__).parent / "wire"

T = TypeVar("T")
Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def recording(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WIRE / name).read_text(encoding="utf-8"))
    return data


def json_reply(status: int, body: Any) -> httpx.Response:
    """An upstream's JSON answer, as bytes on the wire (non-ASCII left as UTF-8, as PHP does)."""
    return httpx.Response(status, content=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                          headers={"Content-Type": "application/json; charset=utf-8"})


def recorded_reply(name: str, **body_changes: Any) -> httpx.Response:
    """The recorded answer of `name`, with some top-level body fields changed."""
    response = recording(name)["response"]
    return json_reply(response["status"], {**response["body"], **body_changes})


def recorded_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = recording(name)["response"]["body"]
    return body


class FakeUpstream:
    """Answers each request with the next reply (an httpx.Response; an exception to raise as
    the transport would; or a function of the request), and keeps every request it was sent."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request: {request.method} {request.url}")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        return reply(request)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    @property
    def only_request(self) -> httpx.Request:
        assert len(self.requests) == 1, [f"{r.method} {r.url}" for r in self.requests]
        return self.requests[0]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one adapter call (pytest-asyncio is not a dependency)."""
    return asyncio.run(coro)


def unique_fields(raw: str) -> dict[str, str]:
    """Form or query fields, refusing a repeated name (a dict would hide it)."""
    pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=True)
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a field is repeated: {names}"
    return dict(pairs)


def assert_no_secret(text: str, secret: str, window: int = 8) -> None:
    """Not the secret, nor any `window` characters of it (a message cut short still leaks)."""
    for start in range(len(secret) - window + 1):
        piece = secret[start:start + window]
        assert piece not in text, f"{piece!r} of a secret appears in {text!r}"


def exception_texts(exc: BaseException) -> str:
    """What a log line or a traceback of `exc` shows: its str and repr, and its causes'."""
    texts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


def url_without_query(request: httpx.Request) -> str:
    return str(request.url.copy_with(query=None))


def query_fields(request: httpx.Request) -> dict[str, str]:
    return unique_fields(request.url.query.decode("ascii"))


def form_fields(request: httpx.Request) -> dict[str, str]:
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    return unique_fields(request.content.decode("ascii"))
