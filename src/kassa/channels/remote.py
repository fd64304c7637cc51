"""What the live upstream adapters share: one HTTP exchange whose every failure becomes an
UpstreamError with a message that is safe to show (no URL, no credential in it)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from kassa.channels.base import UpstreamError


async def exchange_json(client: httpx.AsyncClient, name: str, request: httpx.Request
                        ) -> tuple[int, Any]:
    """Send `request`; (HTTP status, decoded JSON). Unreachable, timed out, or a reply that
    is not JSON (a load balancer's error page): UpstreamError."""
    try:
        response = await client.send(request)
    except httpx.TimeoutException as exc:
        raise UpstreamError(f"{name} unreachable: no reply in time ({type(exc).__name__})"
                            ) from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{name} unreachable: {type(exc).__name__}") from exc
    try:
        return response.status_code, orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        # Not quoted: an error page may echo the request, and with it a credential.
        kind = response.headers.get("content-type", "no content type")[:60]
        raise UpstreamError(f"{name} answered HTTP {response.status_code} with something "
                            f"other than JSON ({kind}, {len(response.content)} bytes)"
                            ) from exc


# No upstream collects more than this in one order (10 trillion yuan): a larger amount is
# nonsense, and would not fit the database's BIGINT either.
MAX_MINOR_UNITS = 10**15


def checked_amount(minor: int, name: str) -> int:
    if minor > MAX_MINOR_UNITS:
        raise UpstreamError(f"{name}'s amount is out of any range")
    return minor


def text_field(body: dict[str, Any], name: str) -> str:
    """A field an upstream sends as text or as a number ("1.00", 1, 20220726190052)."""
    value = body.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UpstreamError(f"the upstream's {name} is neither text nor a whole number")
    return str(value)
