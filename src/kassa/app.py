"""create_app(settings) -> the ASGI app: API, docs and (in `kassa serve`) the worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kassa.balances.endpoints import api as balances_api
from kassa.config import Settings
from kassa.context import ServiceContext, build_context
from kassa.db.database import Database, open_database
from kassa.facades.cryptogw import CryptoEndpoints
from kassa.facades.edge import FacadeEdge
from kassa.facades.epay import EpayEndpoints
from kassa.history.endpoints import api as history_api
from kassa.http.api import Api, Dispatcher, FastRoutes, internal_error, json_response
from kassa.http.auth import Authenticator
from kassa.http.openapi import docs_routes
from kassa.http.ratelimit import RateLimiter
from kassa.invoices.endpoints import api as invoices_api
from kassa.payment_resources.endpoints import api as payment_resources_api
from kassa.payments.endpoints import api as payments_api
from kassa.refunds.endpoints import api as refunds_api
from kassa.tasks.endpoints import api as tasks_api
from kassa.upstreams.endpoints import NotifyEndpoints
from kassa.web.checkout import CheckoutPages
from kassa.web.console import ConsolePages
from kassa.webhooks.endpoints import api as webhooks_api
from kassa.worker.runner import Worker


def all_operations() -> Api:
    api = Api()
    for part in (tasks_api, payments_api, refunds_api, balances_api, history_api, webhooks_api,
                 payment_resources_api, invoices_api):
        api.operations.extend(part.operations)
    return api


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    # Keep the exception's headers: a 405 must say which methods are allowed (Allow).
    return json_response(exc.status_code, {"error": {"code": code, "message": str(exc.detail)}},
                         dict(exc.headers) if exc.headers else None)


async def _server_error(_: Request, exc: Exception) -> Response:
    return internal_error(exc)


async def _health(_: Request) -> Response:
    return json_response(200, {"status": "ok"})


def create_app(settings: Settings, *, db: Database | None = None,
               ctx: ServiceContext | None = None, run_worker: bool | None = None
               ) -> FastRoutes:
    ctx = ctx or build_context(settings)
    db = db or open_database(settings.resolved_database_url, pool_size=settings.db_pool_size,
                             sqlite_synchronous=settings.sqlite_synchronous)
    api = all_operations()
    limiter = RateLimiter(settings.rate_limit, settings.redis_url)
    auth = Authenticator(db, ctx)
    dispatcher = Dispatcher(db, ctx, auth, limiter)
    facade_edge = FacadeEdge(db, ctx, limiter)
    checkout = CheckoutPages(db, ctx)
    console = ConsolePages(db, ctx, RateLimiter(settings.console_login_rate_limit,
                                                settings.redis_url))
    console.on_key_rotated = auth.forget
    with_worker = settings.run_worker if run_worker is None else run_worker
    worker = Worker(db, ctx) if with_worker else None
    if worker is not None:
        dispatcher.after_write = facade_edge.after_write = worker.deliverer.wake.set
        checkout.after_write = console.after_write = worker.deliverer.wake.set

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(worker.run_forever()) if worker else None
        try:
            yield
        finally:
            if worker and task:
                worker.stop()
                await task
            db.close()

    api_routes = dispatcher.routes(api)
    # The protocol facades (SPEC §9): EasyPay at the paths its clients expect, the crypto
    # gateway at seed 002's.
    facade_routes = [*EpayEndpoints(facade_edge).routes(),
                     *CryptoEndpoints(facade_edge).routes(),
                     # where live upstreams notify Kassa (verify triad, 1)
                     *NotifyEndpoints(facade_edge).routes()]
    # The pages (SPEC §10): the hosted checkout, its QR codes and static files; the console.
    routes = [Route("/healthz", _health, methods=["GET"]), *api_routes, *facade_routes,
              *checkout.routes(), *console.routes(),
              *docs_routes(api, ctx.public_url)]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.db = db
    app.state.ctx = ctx
    return FastRoutes([*api_routes, *facade_routes], app)
