"""The HTTP side every protocol facade shares: reading a request's parameters however a
client sends them, running a unit of work in its own transaction (again, when it lost a
uniqueness race or a deadlock), and the per-account rate limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection
from starlette.requests import Request

from kassa.accounts.schemas import Principal
from kassa.context import ServiceContext
from kassa.db.database import Database
from kassa.http.api import read_body, write_unit
from kassa.http.ratelimit import RateLimiter

T = TypeVar("T")
MAX_PARAM_CHARS = 4096


class BadParameters(Exception):
    """The request's parameters could not be read; the message is safe to show."""


class FacadeEdge:
    def __init__(self, db: Database, ctx: ServiceContext, limiter: RateLimiter) -> None:
        self.db = db
        self.ctx = ctx
        self.limiter = limiter
        # Wakes this process's deliverer after a committed write (as the native API does).
        self.after_write: Callable[[], None] | None = None

    async def read(self, unit: Callable[[Connection], T]) -> T:
        return await self.db.read(unit)

    async def write(self, unit: Callable[[Connection], T]) -> T:
        """In a transaction of its own, again after a lost race or an upstream's answer
        (http.api.write_unit)."""
        return await write_unit(self.db, unit, self.after_write)

    async def hit(self, principal: Principal) -> None:
        """Count an authenticated protocol request (its own quota: protocol traffic never
        uses up the native API's)."""
        await self.limiter.hit(f"facade:{principal.account_id}:{principal.mode}")


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadParameters(f"parameter {name} must be a string")
    text = str(value)
    if "\x00" in text or len(text) > MAX_PARAM_CHARS:
        raise BadParameters(f"parameter {name} is not acceptable")
    return text


async def request_params(request: Request, limit: int) -> dict[str, str]:
    """Query parameters, then the body's (a form, multipart or urlencoded, or a JSON
    object), the body's winning. EasyPay clients in the wild use all of these."""
    params = {k: _text(k, v) for k, v in request.query_params.items()}
    if request.method != "POST":
        return params
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        # (bounded by the same limit: the whole body is read before it is parsed)
        raw = await read_body(request, limit)
        request._body = raw
        try:
            form = await request.form(max_files=0, max_fields=100)
        except Exception as exc:  # a broken or oversized form (files are not taken)
            raise BadParameters("the multipart form could not be read") from exc
        params.update({k: _text(k, v) for k, v in form.items()})
        return params
    raw = await read_body(request, limit)
    if not raw.strip():
        return params
    if content_type == "application/json" or raw.lstrip()[:1] == b"{":
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadParameters("the body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BadParameters("the body must be a JSON object")
        params.update({str(k): _text(str(k), v) for k, v in data.items() if v is not None})
        return params
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise BadParameters("the body is not UTF-8") from exc
    params.update({k: _text(k, v) for k, v in parse_qsl(text, keep_blank_values=True)})
    return params
