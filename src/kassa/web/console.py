"""The merchant console (SPEC §10): HTTP only. Sign-in sessions are kassa.sessions'; what a page
shows and what a button does are the services' the API uses, called with the session's
principal, so the console sees exactly what the account's API key of that mode sees.

    GET  /console                               to the overview, or to sign-in
    GET  /console/login, POST /console/login    sign in with an API key and its secret
    POST /console/logout
    GET  /console/overview                      balance, escrow, refunds on their way
    GET  /console/transactions                  ?type= &status= &starting_after=
    GET  /console/orders                        ?status= &starting_after=
    GET  /console/orders/{order_id}             the order, its refunds, a refund form
    POST /console/orders/{order_id}/refund
    GET  /console/invoices                      paid orders, ?starting_after=
    GET  /console/invoices/{order_id}.pdf
    GET  /console/webhooks                      endpoints, a form to add one, recent events
    POST /console/webhooks
    GET  /console/webhooks/{endpoint_id}        an endpoint's delivery log
    POST /console/events/{event_id}/resend      (endpoint_id= to resend to one endpoint)
    GET  /console/keys                          API keys (hints) and the webhook secret
    POST /console/keys/rotate                   a new key and secret, shown once
    POST /console/webhook-secret/rotate         a new webhook secret, shown once (live)

Every page needs a session (else 303 to sign-in); every POST a session's CSRF token
(else 403, nothing read or changed). Another account's (or the other mode's) order,
endpoint or event is 404, as through the API. Secrets shown once are in the answer to
the POST that made them, never in a URL, a redirect or a log line.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import pydantic
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kassa.accounts import service as accounts
from kassa.accounts.schemas import KeyPair, Principal
from kassa.balances import service as balances
from kassa.context import ServiceContext
from kassa.core.ids import ORDER_ID
from kassa.core.money import MoneyError, parse_decimal_amount
from kassa.db.database import Database
from kassa.errors import AlreadyRotated, AuthError, KassaError, NotFound, RateLimited
from kassa.history import service as history
from kassa.history.schemas import TransactionsQuery
from kassa.http.api import validation_error, write_unit
from kassa.http.ratelimit import RateLimiter
from kassa.idempotency import service as idempotency
from kassa.invoices import service as invoices
from kassa.invoices.schemas import PDF, invoice_filename
from kassa.payments import service as payments
from kassa.refunds import service as refunds
from kassa.refunds.schemas import RefundRequest, render_refund
from kassa.sessions import service as sessions
from kassa.web import csrf
from kassa.web.i18n import format_amount, translator
from kassa.web.pages import PAGE_HEADERS, Pages, read_form
from kassa.webhooks import service as webhooks
from kassa.webhooks.schemas import DeliveriesQuery, EndpointCreate, EventsQuery

log = logging.getLogger("kassa.console")
SESSION_COOKIE = "kassa_console"
PATH = "/console"
PAGE_SIZE = 20
# Ids as Kassa hands them out; anything else names nothing and never reaches the database.
ENDPOINT_ID = re.compile(r"we_[0-9a-f]{20}")
EVENT_ID = re.compile(r"evt_[0-9a-f]{20}")
CURSOR = re.compile(r"[A-Za-z0-9_]{1,40}")
DIGITS = re.compile(r"[0-9]{1,9}")
ORDER_STATUSES = ("pending", "processing", "completed", "failed", "expired", "refunded")
PAID = ("completed", "refunded")
REFUND_REASONS = ("task_cancelled", "quality_issue", "task_failed", "duplicate_payment", "other")
KEY_GRACE_CHOICES = (0, 3600, 86400)
NOTICES = frozenset({"refund_requested", "resent", "endpoint_created"})
ALREADY_ROTATED = AlreadyRotated("This was rotated since the page was shown (was the form "
                                 "sent twice?); nothing was rotated again")

Page = Callable[[Request, sessions.Session, str, bool], Awaitable[Response]]


def when(value: datetime | str | None) -> str:
    """A time as the console shows it: UTC, to the second."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


class ConsolePages(Pages):
    def __init__(self, db: Database, ctx: ServiceContext, login_limiter: RateLimiter) -> None:
        super().__init__(db, ctx)
        self.login_limiter = login_limiter
        # Wakes this process's deliverer after a committed write (a refund, a resend).
        self.after_write: Callable[[], None] | None = None
        # Told (account_id, mode) after a key rotation: this process's API forgets the
        # keys it had looked up (others within auth_cache_seconds).
        self.on_key_rotated: Callable[[str, str], None] | None = None

    # --- sessions ------------------------------------------------------------------------

    async def _session(self, request: Request) -> sessions.Session | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not sessions.plausible_token(token):
            return None
        found = await self.db.read(lambda conn: sessions.session(conn, self.ctx, token=token))
        if found is not None and found.needs_touch:
            try:  # best effort: a busy database costs a minute of idle time, not the page
                await self.db.write(lambda conn: sessions.touch(
                    conn, self.ctx, session_hash=found.session_hash))
            except DBAPIError as exc:
                log.warning("console session not touched: %s", type(exc).__name__)
        return found

    def _csrf(self, request: Request) -> str:
        return sessions.csrf_token(self.ctx, token=request.cookies[SESSION_COOKIE])

    @staticmethod
    def _to_login() -> RedirectResponse:
        return RedirectResponse(f"{PATH}/login", status_code=303, headers=PAGE_HEADERS)

    def _guarded(self, handler: Page, *, post: bool = False
                 ) -> Callable[[Request], Awaitable[Response]]:
        """A console page: signed in (else to sign-in), and for a POST, the session's CSRF
        token (else 403 before anything is read or changed)."""
        async def endpoint(request: Request) -> Response:
            lang, remember = self._language(request)
            session = await self._session(request)
            if session is None:
                return self._to_login()
            if any("\x00" in v for v in request.query_params.values()):
                return self._problem(request, session, lang, 400)  # no column takes NUL
            if post:
                form = await read_form(request)
                if not sessions.csrf_ok(self.ctx, token=request.cookies[SESSION_COOKIE],
                                        submitted=form.get(csrf.FIELD)):
                    return self._problem(request, session, lang, 403)
                request.state.form = form
            return await handler(request, session, lang, remember)
        endpoint.__name__ = handler.__name__
        return endpoint

    def _render(self, request: Request, session: sessions.Session, template: str,
                lang: str, remember: bool, *, status: int = 200, section: str = "",
                **values: Any) -> Response:
        notice = request.query_params.get("notice")
        # Where the language links go: this page, or for the answer to a form, the page
        # the form was on (a POST's URL answers no GET).
        values.setdefault("here", request.url.path if request.method == "GET"
                          else f"{PATH}/overview")
        return self._page(template, status, lang, remember, principal=session.principal,
                          csrf_token=self._csrf(request), section=section, when=when,
                          money=format_amount,
                          notice=notice if notice in NOTICES else None, **values)

    def _problem(self, request: Request, session: sessions.Session, lang: str, status: int,
                 message: str | None = None) -> Response:
        """A page saying what went wrong (not_found, forbidden, bad_request), with the
        service's own message where there is one."""
        kind = {404: "not_found", 403: "forbidden"}.get(status, "bad_request")
        return self._render(request, session, "console/problem.html", lang, False,
                            status=status, kind=kind, message=message)

    async def _read(self, unit: Callable[[Connection], Any]) -> Any:
        return await self.db.read(unit)

    async def _write(self, unit: Callable[[Connection], Any]) -> Any:
        return await write_unit(self.db, unit, self.after_write)

    @staticmethod
    def _back(path: str, **params: str) -> RedirectResponse:
        query = f"?{urlencode(params)}" if params else ""
        return RedirectResponse(path + query, status_code=303, headers=PAGE_HEADERS)

    # --- signing in and out --------------------------------------------------------------

    def _login_page(self, request: Request, lang: str, remember: bool, *, status: int = 200,
                    error: str | None = None) -> Response:
        token = csrf.valid_token(request.cookies.get(csrf.COOKIE)) or csrf.new_token()
        response = self._page("console/login.html", status, lang, remember, csrf_token=token,
                              error=error, principal=None, section="", notice=None,
                              here=f"{PATH}/login")
        response.set_cookie(csrf.COOKIE, token, path=PATH, secure=self._secure,
                            httponly=True, samesite="strict")
        return response

    async def root(self, request: Request) -> Response:
        session = await self._session(request)
        target = f"{PATH}/overview" if session is not None else f"{PATH}/login"
        return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)

    async def login_form(self, request: Request) -> Response:
        lang, remember = self._language(request)
        if await self._session(request) is not None:
            return RedirectResponse(f"{PATH}/overview", status_code=303, headers=PAGE_HEADERS)
        return self._login_page(request, lang, remember)

    async def login(self, request: Request) -> Response:
        """POST /console/login (api_key, api_secret): a new session, or the form again with
        one message for every wrong credential. Attempts are limited per client address."""
        lang, _ = self._language(request)
        form = await read_form(request)
        if not csrf.tokens_match(request.cookies.get(csrf.COOKIE), form.get(csrf.FIELD)):
            return self._login_page(request, lang, False, status=403, error="forbidden")
        client = _client(request)
        try:
            await self.login_limiter.hit(f"console-login:{client}")
        except RateLimited as exc:
            log.warning("console sign-in refused from %s: too many attempts", client)
            response = self._login_page(request, lang, False, status=429,
                                        error="rate_limited")
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        api_key, api_secret = form.get("api_key", ""), form.get("api_secret", "")
        previous = request.cookies.get(SESSION_COOKIE)

        def unit(conn: Connection) -> tuple[str, Principal]:
            signed_in = sessions.sign_in(conn, self.ctx, api_key=api_key,
                                         api_secret=api_secret)
            sessions.sign_out(conn, self.ctx, token=previous)  # a browser, one session
            return signed_in
        try:
            token, principal = await self._write(unit)
        except AuthError as exc:
            rotated = exc.extra.get("reason") == "rotated"
            log.warning("console sign-in refused from %s: %s", client,
                        "a rotated key" if rotated else "unknown key or wrong secret")
            return self._login_page(request, lang, False, status=401,
                                    error="rotated" if rotated else "invalid")
        log.info("console sign-in: account %s, %s mode, from %s", principal.account_id,
                 principal.mode, client)
        response = RedirectResponse(f"{PATH}/overview", status_code=303, headers=PAGE_HEADERS)
        response.set_cookie(SESSION_COOKIE, token, path=PATH, secure=self._secure,
                            httponly=True, samesite="strict",
                            max_age=self.ctx.settings.console_max_age_seconds)
        response.delete_cookie(csrf.COOKIE, path=PATH)
        return response

    async def logout(self, request: Request, session: sessions.Session, lang: str,
                     remember: bool) -> Response:
        """POST /console/logout (a guarded POST: without a session it is at sign-in already)."""
        token = request.cookies[SESSION_COOKIE]
        await self._write(lambda conn: sessions.sign_out(conn, self.ctx, token=token))
        response = self._to_login()
        response.delete_cookie(SESSION_COOKIE, path=PATH)
        return response

    # --- pages ---------------------------------------------------------------------------

    async def overview(self, request: Request, session: sessions.Session, lang: str,
                       remember: bool) -> Response:
        p = session.principal
        now = self.ctx.clock.now()
        balance, (recent, _) = await self._read(lambda conn: (  # one snapshot
            balances.account_balance(conn, principal=p, now=now),
            payments.list_orders(conn, principal=p, statuses=None, starting_after=None,
                                 limit=5)))
        return self._render(request, session, "console/overview.html", lang, remember,
                            section="overview", balance=balance, recent=recent)

    async def transactions(self, request: Request, session: sessions.Session, lang: str,
                           remember: bool) -> Response:
        params = {k: v for k, v in request.query_params.items()
                  if k in ("type", "status", "starting_after") and v}
        if not CURSOR.fullmatch(params.get("starting_after", "txn")):
            return self._problem(request, session, lang, 400)
        try:
            query = TransactionsQuery.model_validate({**params, "limit": PAGE_SIZE})
        except pydantic.ValidationError as exc:
            return self._problem(request, session, lang, 400,
                                 validation_error(exc, "query").message)
        try:
            page = await self._read(lambda conn: history.list_transactions(
                conn, principal=session.principal, query=query))
        except KassaError as exc:
            return self._problem(request, session, lang, exc.http_status,
                                 exc.message)
        next_url = None
        if page["has_more"]:
            next_url = "?" + urlencode({"type": query.type, "status": query.status,
                                        "starting_after": page["next_cursor"]})
        return self._render(request, session, "console/transactions.html", lang, remember,
                            section="transactions", page=page, query=query,
                            next_url=next_url)

    def _order_statuses(self, request: Request) -> tuple[str, tuple[str, ...] | None] | None:
        status = request.query_params.get("status") or "all"
        if status == "all":
            return status, None
        return (status, (status,)) if status in ORDER_STATUSES else None

    async def _orders_page(self, request: Request, session: sessions.Session,
                           statuses: tuple[str, ...] | None, base: dict[str, str]
                           ) -> tuple[list[dict[str, Any]], str | None] | None:
        """A page of orders after ?starting_after (an order of theirs) and the next page's
        link; None for a cursor that is not one of their orders."""
        after = request.query_params.get("starting_after") or None
        if after is not None and not ORDER_ID.fullmatch(after):
            return None
        try:
            rows, more = await self._read(lambda conn: payments.list_orders(
                conn, principal=session.principal, statuses=statuses,
                starting_after=after, limit=PAGE_SIZE))
        except NotFound:
            return None
        next_url = ("?" + urlencode({**base, "starting_after": rows[-1]["order_id"]})
                    if more else None)
        return rows, next_url

    async def orders(self, request: Request, session: sessions.Session, lang: str,
                     remember: bool) -> Response:
        chosen = self._order_statuses(request)
        found = None if chosen is None else await self._orders_page(
            request, session, chosen[1], {"status": chosen[0]})
        if chosen is None or found is None:
            return self._problem(request, session, lang, 400)
        rows, next_url = found
        return self._render(request, session, "console/orders.html", lang, remember,
                            section="orders", orders=rows, chosen_status=chosen[0],
                            statuses=ORDER_STATUSES, next_url=next_url)

    async def _order_page(self, request: Request, session: sessions.Session, lang: str,
                          remember: bool, *, status: int = 200, error: str | None = None,
                          form: dict[str, str] | None = None) -> Response:
        order_id = request.path_params["order_id"]
        if not ORDER_ID.fullmatch(order_id):
            return self._problem(request, session, lang, 404)
        p = session.principal
        try:
            order, its_refunds = await self._read(lambda conn: (
                payments.get_order(conn, principal=p, order_id=order_id),
                refunds.refunds_of(conn, principal=p, order_id=order_id)))
        except NotFound:
            return self._problem(request, session, lang, 404)
        # What the service would refuse is refused there, with its message; the form is
        # offered while the payment is complete and not yet fully refunded.
        refundable = order["status"] == "completed"
        return self._render(request, session, "console/order.html", lang, remember,
                            status=status, section="orders", here=f"{PATH}/orders/{order_id}",
                            order=order,
                            refunds=its_refunds, refundable=refundable,
                            paid=order["status"] in PAID, reasons=REFUND_REASONS,
                            error=error, form=form or {}, form_key=secrets.token_urlsafe(16))

    async def order(self, request: Request, session: sessions.Session, lang: str,
                    remember: bool) -> Response:
        return await self._order_page(request, session, lang, remember)

    async def refund(self, request: Request, session: sessions.Session, lang: str,
                     remember: bool) -> Response:
        """POST /console/orders/{order_id}/refund (amount in the order's currency, blank
        for all that is left; reason; reason_detail; refund_method)."""
        order_id = request.path_params["order_id"]
        if not ORDER_ID.fullmatch(order_id):
            return self._problem(request, session, lang, 404)
        form: dict[str, str] = request.state.form
        p = session.principal
        try:
            order = await self._read(
                lambda conn: payments.get_order(conn, principal=p, order_id=order_id))
        except NotFound:
            return self._problem(request, session, lang, 404)
        fields: dict[str, Any] = {
            "order_id": order_id, "reason": form.get("reason", ""),
            "refund_method": form.get("refund_method", "original"),
            "reason_detail": form.get("reason_detail", "").strip() or None}
        amount_text = form.get("amount", "").strip()
        try:
            if amount_text:
                fields["amount"] = parse_decimal_amount(amount_text, order["currency"]).minor
            request_model = RefundRequest.model_validate(fields)
        except MoneyError:
            return await self._order_page(request, session, lang, remember, status=400,
                                          error=translator(lang)("console.refund.bad_amount"),
                                          form=form)
        except pydantic.ValidationError as exc:
            return await self._order_page(request, session, lang, remember, status=400,
                                          error=validation_error(exc, "form").message,
                                          form=form)
        def refund(conn: Connection) -> idempotency.Response:
            made = refunds.request_refund(conn, self.ctx, principal=p, request=request_model)
            return 200, orjson.dumps(render_refund(made))
        unit: Callable[[Connection], idempotency.Response] = refund
        form_key = form.get("form_key", "")
        if form_key:  # the form sent twice (a double click, a reload) refunds once
            unit = idempotency.idempotent(
                self.ctx, account_id=p.account_id, mode=p.mode,
                key=idempotency.check_key(f"console:{form_key}"),
                req_hash=idempotency.request_hash(
                    "POST", request.url.path, request_model.model_dump_json().encode()),
                work=refund)
        try:
            await self._write(unit)
        except KassaError as exc:
            return await self._order_page(request, session, lang, remember,
                                          status=exc.http_status, error=exc.message,
                                          form=form)
        return self._back(f"{PATH}/orders/{order_id}", notice="refund_requested")

    async def invoices(self, request: Request, session: sessions.Session, lang: str,
                       remember: bool) -> Response:
        found = await self._orders_page(request, session, PAID, {})
        if found is None:
            return self._problem(request, session, lang, 400)
        rows, next_url = found
        return self._render(request, session, "console/invoices.html", lang, remember,
                            section="invoices", orders=rows, next_url=next_url)

    async def invoice(self, request: Request, session: sessions.Session, lang: str,
                      remember: bool) -> Response:
        order_id = request.path_params["order_id"]
        if not ORDER_ID.fullmatch(order_id):
            return self._problem(request, session, lang, 404)
        try:
            facts = await self._read(lambda conn: invoices.invoice_facts(
                conn, principal=session.principal, order_id=order_id))
        except NotFound:
            return self._problem(request, session, lang, 404)
        except KassaError as exc:  # not paid (409)
            return self._problem(request, session, lang, exc.http_status,
                                 exc.message)
        pdf = await run_in_threadpool(functools.partial(invoices.invoice_pdf, facts))
        return Response(pdf, media_type=PDF, headers={
            "Content-Disposition": f'attachment; filename="{invoice_filename(order_id)}"',
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    async def _webhooks_page(self, request: Request, session: sessions.Session, lang: str,
                             remember: bool, *, status: int = 200, error: str | None = None,
                             form: dict[str, str] | None = None) -> Response:
        p = session.principal
        cursor = request.query_params.get("starting_after") or None
        if cursor is not None and not EVENT_ID.fullmatch(cursor):
            return self._problem(request, session, lang, 400)
        query = EventsQuery(limit=PAGE_SIZE, starting_after=cursor)
        try:
            endpoints, events = await self._read(lambda conn: (
                webhooks.list_endpoints(conn, principal=p)["data"],
                webhooks.list_events(conn, principal=p, query=query)))
        except KassaError as exc:
            return self._problem(request, session, lang, 400, exc.message)
        next_url = ("?" + urlencode({"starting_after": events["next_cursor"]})
                    if events["has_more"] else None)
        return self._render(request, session, "console/webhooks.html", lang, remember,
                            status=status, section="webhooks", here=f"{PATH}/webhooks",
                            endpoints=endpoints,
                            events=events["data"], next_url=next_url, error=error,
                            form=form or {})

    async def webhooks(self, request: Request, session: sessions.Session, lang: str,
                       remember: bool) -> Response:
        return await self._webhooks_page(request, session, lang, remember)

    async def create_endpoint(self, request: Request, session: sessions.Session, lang: str,
                              remember: bool) -> Response:
        form: dict[str, str] = request.state.form
        p = session.principal
        try:
            body = EndpointCreate.model_validate({
                "url": form.get("url", "").strip(),
                "description": form.get("description", "").strip() or None})
        except pydantic.ValidationError as exc:
            return await self._webhooks_page(request, session, lang, remember, status=400,
                                             error=validation_error(exc, "form").message,
                                             form=form)
        try:
            await webhooks.vet_url(self.ctx, url=body.url, mode=p.mode)
            await self._write(lambda conn: webhooks.create_endpoint(
                conn, self.ctx, principal=p, request=body))
        except KassaError as exc:
            return await self._webhooks_page(request, session, lang, remember,
                                             status=exc.http_status, error=exc.message,
                                             form=form)
        return self._back(f"{PATH}/webhooks", notice="endpoint_created")

    async def endpoint(self, request: Request, session: sessions.Session, lang: str,
                       remember: bool) -> Response:
        endpoint_id = request.path_params["endpoint_id"]
        if not ENDPOINT_ID.fullmatch(endpoint_id):
            return self._problem(request, session, lang, 404)
        cursor = request.query_params.get("starting_after") or None
        if cursor is not None and not CURSOR.fullmatch(cursor):
            return self._problem(request, session, lang, 400)
        query = DeliveriesQuery(limit=PAGE_SIZE, starting_after=cursor)
        p = session.principal
        try:
            endpoint, deliveries = await self._read(lambda conn: (
                webhooks.get_endpoint(conn, principal=p, endpoint_id=endpoint_id),
                webhooks.endpoint_deliveries(conn, principal=p, endpoint_id=endpoint_id,
                                             query=query)))
        except NotFound:
            return self._problem(request, session, lang, 404)
        except KassaError as exc:
            return self._problem(request, session, lang, 400, exc.message)
        next_url = ("?" + urlencode({"starting_after": deliveries["next_cursor"]})
                    if deliveries["has_more"] else None)
        return self._render(request, session, "console/endpoint.html", lang, remember,
                            section="webhooks", endpoint=endpoint,
                            deliveries=deliveries["data"], next_url=next_url)

    async def resend(self, request: Request, session: sessions.Session, lang: str,
                     remember: bool) -> Response:
        """POST /console/events/{event_id}/resend (endpoint_id: to that endpoint only)."""
        event_id = request.path_params["event_id"]
        form: dict[str, str] = request.state.form
        endpoint_id = form.get("endpoint_id") or None
        if not EVENT_ID.fullmatch(event_id) or (
                endpoint_id is not None and not ENDPOINT_ID.fullmatch(endpoint_id)):
            return self._problem(request, session, lang, 404)
        try:
            await self._write(lambda conn: webhooks.resend(
                conn, self.ctx, principal=session.principal, event_id=event_id,
                endpoint_id=endpoint_id))
        except NotFound:
            return self._problem(request, session, lang, 404)
        except KassaError as exc:
            return self._problem(request, session, lang, exc.http_status,
                                 exc.message)
        back = f"{PATH}/webhooks/{endpoint_id}" if endpoint_id else f"{PATH}/webhooks"
        return self._back(back, notice="resent")

    async def _keys_page(self, request: Request, session: sessions.Session, lang: str,
                         remember: bool, *, status: int = 200, error: str | None = None,
                         **shown_once: Any) -> Response:
        """The keys page; after a rotation (a POST's answer) with what was made, shown
        this once. Its rotation forms carry the key generation and secret version they
        were shown with, so a form sent again (a reload) rotates nothing twice."""
        p = session.principal

        def unit(conn: Connection) -> tuple[Any, int, int | None]:
            return (accounts.key_hints(conn, self.ctx, principal=p),
                    accounts.key_generation(conn, principal=p),
                    webhooks.secret_version(conn, principal=p) if p.live else None)
        keys, generation, version = await self._read(unit)
        return self._render(request, session, "console/keys.html", lang, remember,
                            status=status, error=error, section="keys", here=f"{PATH}/keys",
                            keys=keys,
                            grace_choices=KEY_GRACE_CHOICES, generation=generation,
                            secret_version=version, new_key=shown_once.get("new_key"),
                            new_webhook_secret=shown_once.get("new_webhook_secret"))

    async def keys(self, request: Request, session: sessions.Session, lang: str,
                   remember: bool) -> Response:
        return await self._keys_page(request, session, lang, remember)

    async def rotate_key(self, request: Request, session: sessions.Session, lang: str,
                         remember: bool) -> Response:
        """POST /console/keys/rotate (grace_seconds: 0, 3600 or 86400). The new key and
        secret are in this answer only; the mode's other console sessions end."""
        form: dict[str, str] = request.state.form
        try:
            generation = _number(form.get("generation"))
            grace = _number(form.get("grace_seconds"))
        except ValueError:
            return self._problem(request, session, lang, 400)
        if grace is None or grace not in KEY_GRACE_CHOICES:
            return self._problem(request, session, lang, 400)
        p = session.principal
        # A form sent again (a reload of the new key's page) first hears that the key was
        # rotated since; the service checks it again under the account's lock.
        if generation is not None and generation != await self._read(
                lambda conn: accounts.key_generation(conn, principal=p)):
            return self._problem(request, session, lang, 409, ALREADY_ROTATED.message)
        if not self._secret_confirmed(session, form):
            return await self._keys_page(request, session, lang, remember, status=403,
                                         error=translator(lang)("console.keys.bad_secret"))

        def unit(conn: Connection) -> KeyPair:
            pair = accounts.rotate_api_key(conn, self.ctx, principal=p, grace_seconds=grace,
                                           generation=generation)
            sessions.after_rotation(conn, self.ctx, current=session, new_api_key=pair.api_key)
            return pair
        try:
            pair = await self._write(unit)
        except KassaError as exc:  # rotated since (a form sent twice), the demo's key
            return self._problem(request, session, lang, exc.http_status, exc.message)
        if self.on_key_rotated is not None:
            self.on_key_rotated(p.account_id, p.mode)
        log.info("console: the %s mode API key of account %s was rotated (the old one works "
                 "%d s more), from %s", p.mode, p.account_id, grace, _client(request))
        return await self._keys_page(request, session, lang, remember, new_key=pair)

    def _secret_confirmed(self, session: sessions.Session, form: dict[str, str]) -> bool:
        """A rotation asks again for the secret of the key the session was opened with: a
        stolen session cookie alone makes no key or webhook secret of its own."""
        secret = form.get("api_secret", "").strip()
        if not secret or len(secret) > sessions.CREDENTIAL_MAX:
            return False
        try:
            accounts.check_secret(self.ctx, session.principal, secret)
        except AuthError:
            return False
        return True

    async def rotate_webhook_secret(self, request: Request, session: sessions.Session,
                                    lang: str, remember: bool) -> Response:
        """POST /console/webhook-secret/rotate: live sessions only (as through the API); the
        old secret keeps signing too for the configured grace period."""
        p = session.principal
        try:
            version = _number(request.state.form.get("version"))
        except ValueError:
            return self._problem(request, session, lang, 400)
        if p.live and version is not None and version != await self._read(
                lambda conn: webhooks.secret_version(conn, principal=p)):
            return self._problem(request, session, lang, 409, ALREADY_ROTATED.message)
        if p.live and not self._secret_confirmed(session, request.state.form):
            return await self._keys_page(request, session, lang, remember, status=403,
                                         error=translator(lang)("console.keys.bad_secret"))
        try:
            view = await self._write(lambda conn: webhooks.rotate_secret(
                conn, self.ctx, principal=p, grace_period_seconds=None,
                version=version))
        except KassaError as exc:
            return self._problem(request, session, lang, exc.http_status,
                                 exc.message)
        log.info("console: the webhook secret of account %s was rotated, from %s",
                 p.account_id, _client(request))
        return await self._keys_page(request, session, lang, remember,
                                     new_webhook_secret=view)

    # --- routes --------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        g = self._guarded
        return [
            Route(PATH, self.root, methods=["GET"]),
            Route(f"{PATH}/login", self.login_form, methods=["GET"]),
            Route(f"{PATH}/login", self.login, methods=["POST"]),
            Route(f"{PATH}/logout", g(self.logout, post=True), methods=["POST"]),
            Route(f"{PATH}/overview", g(self.overview), methods=["GET"]),
            Route(f"{PATH}/transactions", g(self.transactions), methods=["GET"]),
            Route(f"{PATH}/orders", g(self.orders), methods=["GET"]),
            Route(f"{PATH}/orders/{{order_id}}", g(self.order), methods=["GET"]),
            Route(f"{PATH}/orders/{{order_id}}/refund", g(self.refund, post=True),
                  methods=["POST"]),
            Route(f"{PATH}/invoices", g(self.invoices), methods=["GET"]),
            Route(f"{PATH}/invoices/{{order_id}}.pdf", g(self.invoice), methods=["GET"]),
            Route(f"{PATH}/webhooks", g(self.webhooks), methods=["GET"]),
            Route(f"{PATH}/webhooks", g(self.create_endpoint, post=True), methods=["POST"]),
            Route(f"{PATH}/webhooks/{{endpoint_id}}", g(self.endpoint), methods=["GET"]),
            Route(f"{PATH}/events/{{event_id}}/resend", g(self.resend, post=True),
                  methods=["POST"]),
            Route(f"{PATH}/keys", g(self.keys), methods=["GET"]),
            Route(f"{PATH}/keys/rotate", g(self.rotate_key, post=True), methods=["POST"]),
            Route(f"{PATH}/webhook-secret/rotate", g(self.rotate_webhook_secret, post=True),
                  methods=["POST"]),
        ]


def _number(text: str | None) -> int | None:
    """An optional form number: None when absent; ValueError when not a number."""
    if text is None or text == "":
        return None
    if not DIGITS.fullmatch(text):  # ASCII digits only ("²".isdigit() is True)
        raise ValueError("not a number")
    return int(text)


def _client(request: Request) -> str:
    """The client's address as this server sees it (a proxy's, behind one)."""
    return request.client.host if request.client else "unknown"
