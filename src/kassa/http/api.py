"""Routes declared once, with their models: dispatch and the OpenAPI document both
come from the same declaration.

An endpoint turns a validated call into a *unit of work* (a function of a
database connection returning a status and a JSON-able body, or for a read declared with
another media type, a RawBody: the bytes of an invoice PDF). This module owns
everything around it: credentials, rate limit, body size, JSON and model
validation, Idempotency-Key, the transaction, and errors in the seed's format.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import pydantic
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from kassa.accounts.schemas import Principal
from kassa.context import ServiceContext
from kassa.db.database import Database
from kassa.errors import (
    KassaError,
    PayloadTooLarge,
    RateLimited,
    RequestInProgress,
    UpstreamUnavailable,
    ValidationError,
)
from kassa.http.auth import Authenticator
from kassa.http.ratelimit import RateLimiter
from kassa.idempotency import service as idempotency
from kassa.upstreams.calls import (
    MAX_UPSTREAM_CALLS,
    UpstreamCallNeeded,
    UpstreamSlot,
    fill_slot,
)

log = logging.getLogger("kassa.http")
T = TypeVar("T")

JSON = "application/json"
Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RawBody:
    """The answer of a read declared with a media type other than JSON (Api.get(media_type=…)):
    `render` makes its bytes once the read's transaction is over, off the event loop (an
    invoice PDF takes milliseconds to draw), and they go out with `headers`."""

    render: Callable[[], bytes]
    headers: dict[str, str] = field(default_factory=dict)


UnitResult = tuple[int, Body | RawBody]


@dataclass(slots=True)
class Call:
    request: Request
    principal: Principal
    ctx: ServiceContext
    db: Database
    body: Any = None  # the validated request model (writes with a body)
    query: Any = None  # the validated query model (reads)
    # An upstream order opened for this request before its transaction (live channels).
    upstream: UpstreamSlot = field(default_factory=UpstreamSlot)


Unit = Callable[[Connection], UnitResult]
# An endpoint makes the unit of work from the call; one that must first do something
# slow outside the database (a DNS lookup) may be a coroutine function instead.
Handler = Callable[[Call], Unit | Awaitable[Unit]]


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    description: str
    status: int
    write: bool
    body_model: type[pydantic.BaseModel] | None
    query_model: type[pydantic.BaseModel] | None
    response_model: type[pydantic.BaseModel] | None
    errors: tuple[type[KassaError], ...]
    tags: tuple[str, ...]
    need_secret: bool  # X-API-Secret required (every write; reads of secrets)
    # What a success carries: JSON (a dict), or for a read, another type made by a RawBody;
    # its headers are named here (with a description) for the OpenAPI document.
    media_type: str = JSON
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Api:
    operations: list[Operation] = field(default_factory=list)

    def _add(self, method: str, path: str, *, summary: str, status: int, write: bool,
             body: type[pydantic.BaseModel] | None, query: type[pydantic.BaseModel] | None,
             response: type[pydantic.BaseModel] | None,
             errors: tuple[type[KassaError], ...], tags: tuple[str, ...],
             need_secret: bool | None = None, media_type: str = JSON,
             response_headers: dict[str, str] | None = None) -> Callable[[Handler], Handler]:
        if media_type != JSON and (write or response is not None):
            # A write's answer is stored as JSON for Idempotency-Key replays.
            raise ValueError(f"{method} {path}: only a read without a response model may "
                             f"answer {media_type}")

        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(
                method=method, path=path, handler=handler, summary=summary,
                description=(handler.__doc__ or "").strip(), status=status, write=write,
                body_model=body, query_model=query, response_model=response, errors=errors,
                tags=tags, need_secret=write if need_secret is None else need_secret,
                media_type=media_type, response_headers=dict(response_headers or {})))
            return handler
        return register

    def post(self, path: str, *, summary: str, body: type[pydantic.BaseModel],
             response: type[pydantic.BaseModel] | None, status: int = 200,
             errors: tuple[type[KassaError], ...] = (), tags: tuple[str, ...] = (),
             method: str = "POST") -> Callable[[Handler], Handler]:
        """A write (POST, or PATCH/DELETE through `method`): secret required, JSON body,
        Idempotency-Key honoured, one transaction."""
        return self._add(method, path, summary=summary, status=status, write=True, body=body,
                         query=None, response=response, errors=errors, tags=tags)

    def get(self, path: str, *, summary: str, response: type[pydantic.BaseModel] | None,
            query: type[pydantic.BaseModel] | None = None,
            errors: tuple[type[KassaError], ...] = (), tags: tuple[str, ...] = (),
            need_secret: bool = False, write: bool = False, media_type: str = JSON,
            response_headers: dict[str, str] | None = None) -> Callable[[Handler], Handler]:
        """A read: the key alone will do (unless need_secret). With `write=True`, a GET that
        changes something (seed 004's retry): a write like a POST (secret required,
        Idempotency-Key honoured, one transaction), with no body. With a `media_type` other
        than JSON (a read only, response=None), the unit answers a RawBody of that type;
        `response_headers` names the headers it sends, for the OpenAPI document."""
        return self._add("GET", path, summary=summary, status=200, write=write, body=None,
                         query=query, response=response, errors=errors, tags=tags,
                         need_secret=need_secret or write, media_type=media_type,
                         response_headers=response_headers)


def json_response(status: int, body: Body | bytes, headers: dict[str, str] | None = None
                  ) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, media_type=JSON, headers=headers)


def error_response(exc: KassaError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return json_response(exc.http_status, exc.body(), headers)


def internal_error(exc: BaseException) -> Response:
    """An unexpected failure: logged with its traceback, answered without details."""
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
    return json_response(500, {"error": {"code": "internal_error",
                                         "message": "Internal error. Please try again."}})


def validation_error(exc: pydantic.ValidationError, where: str) -> ValidationError:
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or where
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "Unknown field"
        details.append({"field": loc, "message": message})
    first = details[0] if details else {"field": where, "message": "invalid"}
    return ValidationError(f"Invalid request parameters: {first['field']}: {first['message']}",
                           details=details)


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def parse_body(model: type[pydantic.BaseModel], raw: bytes) -> pydantic.BaseModel:
    if not raw.strip():
        if any(f.is_required() for f in model.model_fields.values()):
            raise ValidationError("Request body must be a JSON object")
        raw = b"{}"  # nothing is required (fail, cancel): an empty body means defaults
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("Request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ValidationError("Request body must be a JSON object")
    if b"\\u0000" in raw and _has_nul(data):  # no text column takes NUL (PostgreSQL refuses)
        raise ValidationError("Strings may not contain NUL characters (\\u0000)")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_error(exc, "body") from exc


_WRITE_ATTEMPTS = 3
_RETRY_SQLSTATES = {"40P01", "40001"}  # deadlock_detected, serialization_failure


def worth_retrying(exc: DBAPIError) -> bool:
    return isinstance(exc, IntegrityError) or getattr(
        exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


async def write_unit(db: Database, unit: Callable[[Connection], T],
                     after_write: Callable[[], None] | None = None) -> T:
    """Run a request's unit of work in a transaction of its own, and run it again when:
    - a concurrent request won a uniqueness race (same task, same key) or PostgreSQL broke a
      deadlock by rolling this one back: nothing of it was written, and the rerun sees what
      the other committed;
    - it needs a live upstream to open an order first (UpstreamCallNeeded): the upstream is
      asked now, with no transaction open, and the rerun writes its answer."""
    upstream_calls = 0
    failures = 0
    while True:
        try:
            result = await db.write(unit)
        except UpstreamCallNeeded as need:
            upstream_calls += 1
            if upstream_calls > MAX_UPSTREAM_CALLS:  # the order kept changing under us
                raise UpstreamUnavailable(
                    "The order changed while its payment channel was asked; nothing was "
                    "changed by this request", payment_method=need.order.payment_method,
                    retry_allowed=True, suggested_actions=["Retry the request"]) from need
            await fill_slot(need)
            continue
        except DBAPIError as exc:
            failures += 1
            if failures == _WRITE_ATTEMPTS or not worth_retrying(exc):
                raise
            continue
        if after_write is not None:
            after_write()
        return result


async def _unit_of(op: Operation, call: Call) -> Unit:
    made = op.handler(call)
    return await made if inspect.isawaitable(made) else made


class Dispatcher:
    """Turns an Operation into a Starlette endpoint."""

    def __init__(self, db: Database, ctx: ServiceContext, auth: Authenticator,
                 limiter: RateLimiter) -> None:
        self.db = db
        self.ctx = ctx
        self.auth = auth
        self.limiter = limiter
        self._in_flight: set[tuple[str, str, str]] = set()
        # Called after every committed write (most record events): wakes this process's
        # webhook deliverer at once instead of at its next poll.
        self.after_write: Callable[[], None] | None = None

    def endpoint(self, op: Operation) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await self._dispatch(op, request)
            except KassaError as exc:
                return error_response(exc)
            except ClientDisconnect:
                # The client hung up before sending its whole body: nothing was done.
                return json_response(400, {"error": {"code": "client_disconnected",
                                                     "message": "The request was not received"}})

        endpoint.__name__ = op.handler.__name__
        return endpoint

    async def _dispatch(self, op: Operation, request: Request) -> Response:
        principal = await self.auth.principal(request.headers, need_secret=op.need_secret)
        await self.limiter.hit(f"{principal.account_id}:{principal.mode}")
        call = Call(request=request, principal=principal, ctx=self.ctx, db=self.db)
        if op.query_model is not None:
            query = dict(request.query_params)
            if _has_nul(query):
                raise ValidationError("Query parameters may not contain NUL characters")
            try:
                call.query = op.query_model.model_validate(query)
            except pydantic.ValidationError as exc:
                raise validation_error(exc, "query") from exc
        if not op.write:
            work = await _unit_of(op, call)
            status, body = await self.db.read(work)
            if isinstance(body, RawBody):
                content = await run_in_threadpool(body.render)
                return Response(content, status_code=status, media_type=op.media_type,
                                headers=body.headers)
            return json_response(status, body)

        raw = b""  # a write by GET (Api.get(write=True)) has no body
        if op.body_model is not None:
            raw = await read_body(request, self.ctx.settings.max_body_bytes)
            call.body = parse_body(op.body_model, raw)
        work = await _unit_of(op, call)

        def serialised(conn: Connection) -> idempotency.Response:
            status, body = work(conn)
            return status, orjson.dumps(body)

        unit: Callable[[Connection], idempotency.Response] = serialised
        key = request.headers.get("idempotency-key")
        flight: tuple[str, str, str] | None = None
        if key is not None:
            idempotency.check_key(key)
            flight = (principal.account_id, principal.mode, key)
            if flight in self._in_flight:
                raise RequestInProgress(
                    "A request with this Idempotency-Key is still being processed",
                    idempotency_key=key)
            self._in_flight.add(flight)
            unit = idempotency.idempotent(
                self.ctx, account_id=principal.account_id, mode=principal.mode, key=key,
                req_hash=idempotency.request_hash(op.method, request.url.path, raw),
                work=serialised)
        try:
            status, content = await write_unit(self.db, unit, self.after_write)
        finally:
            if flight is not None:
                self._in_flight.discard(flight)
        return json_response(status, content)

    def routes(self, api: Api) -> list[Route]:
        return [Route(op.path, self.endpoint(op), methods=[op.method]) for op in api.operations]


Endpoint = Callable[[Request], Awaitable[Response]]


class FastRoutes:
    """ASGI front for the API routes: exact (method, path) lookup, no middleware stack.

    Starlette's router and middleware cost about half of a small request here
    (PERF-NOTES). The same routes stay registered in the Starlette app behind
    this one, which still answers everything else (docs, 404, 405, lifespan).
    """

    def __init__(self, routes: list[Route], fallback: Any) -> None:
        self.fallback = fallback
        self.static: dict[tuple[str, str], Endpoint] = {}
        self.dynamic: list[tuple[str, Route]] = []
        for route in routes:
            for method in route.methods or ():
                if "{" in route.path:
                    self.dynamic.append((method, route))
                else:
                    self.static[(method, route.path)] = route.endpoint

    def _find(self, scope: dict[str, Any]) -> Endpoint | None:
        method, path = scope["method"], scope["path"]
        endpoint = self.static.get((method, path))
        if endpoint is not None:
            return endpoint
        for route_method, route in self.dynamic:
            if route_method == method:
                match = route.path_regex.match(path)
                if match:
                    scope["path_params"] = match.groupdict()
                    return route.endpoint
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        endpoint = self._find(scope) if scope["type"] == "http" else None
        if endpoint is None:
            await self.fallback(scope, receive, send)
            return
        try:
            response = await endpoint(Request(scope, receive))
        except Exception as exc:
            response = internal_error(exc)
        await response(scope, receive, send)
