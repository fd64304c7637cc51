"""The hosted checkout (SPEC §10): HTTP only. What an order shows and what a payer may do
with it are the payment service's (kassa.payments.service); this module turns requests
into its calls and its answers into pages.

    GET  /checkout/{order_id}           the page (HTML, English or Chinese)
    GET  /checkout/{order_id}/status    {"status", "message", "return_url"}, polled by the page
    POST /checkout/{order_id}/card      test mode: pay a card order with a sandbox test card
    POST /checkout/{order_id}/simulate  test mode: settle a pending order now (outcome=...)
    GET  /qr/{order_id}.png             the QR code of where the payer pays
    GET  /static/...                    the page's CSS and JavaScript

Anyone with an order's id may open its page, as with any hosted checkout session; the page
shows only what the payer needs. POSTs carry a double-submit CSRF token (kassa.web.csrf)
and answer 303 back to the page, with at most a short notice code in the URL: never what
was typed. A card number is handed to the service and goes nowhere else: not into a log,
a page, an error or a redirect.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from kassa.context import ServiceContext
from kassa.db.database import Database
from kassa.errors import InvalidOrderState, OrderNotFound, ValidationError
from kassa.http.api import json_response, write_unit
from kassa.payments import service as payments
from kassa.payments.schemas import CheckoutView
from kassa.web import csrf
from kassa.web.i18n import NOTICES, Translator, format_amount, translator
from kassa.web.pages import PAGE_HEADERS, STATIC_DIR, Pages, read_form
from kassa.web.qr import QrTooLong, qr_png

# An order id as Kassa makes them (ord_ and 20 hex digits), with room to spare; anything
# else is not found without asking the database.
ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
STATUSES = ("pending", "processing", "completed", "failed", "expired", "refunded")


def countdown_text(seconds: int) -> str:
    """899 -> "14:59"; an hour or more -> "1:00:00"."""
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def countdown_state(view: CheckoutView) -> str:
    """running (pending, time left), expired (out of time) or stopped (no longer waiting)."""
    if view.status == "pending":
        return "running" if view.seconds_left > 0 else "expired"
    return "expired" if view.status == "expired" else "stopped"


def message_key(view: CheckoutView) -> str | None:
    """What the page tells the payer about the order's status (None: nothing to say)."""
    if view.status == "pending":
        return "message.expired" if view.seconds_left == 0 else None
    if view.status == "failed":
        if view.failure_code == "insufficient_funds":
            return "message.insufficient_funds"
        if view.failure_code == "payment_failed" and view.payment_method == "card":
            return "message.declined"
        return "message.failed"
    if view.status == "completed":
        return "message.redirecting" if view.return_url else "message.paid"
    return {"processing": "message.processing", "expired": "message.expired",
            "refunded": "message.refunded"}.get(view.status)


def web_link(url: str | None) -> str | None:
    """A link the page may show or follow: http(s) only."""
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None


class CheckoutPages(Pages):
    def __init__(self, db: Database, ctx: ServiceContext) -> None:
        super().__init__(db, ctx)
        # Wakes this process's deliverer after a committed write (as the API does): a
        # simulated payment announces payment.completed / payment.failed.
        self.after_write: Callable[[], None] | None = None

    # --- helpers -------------------------------------------------------------------------

    async def _view(self, order_id: str) -> CheckoutView | None:
        if not ORDER_ID.fullmatch(order_id):
            return None
        now = self.ctx.clock.now()
        return await self.db.read(
            lambda conn: payments.checkout_view(conn, self.ctx, order_id=order_id, now=now))

    def _problem(self, status: int, kind: str, lang: str, remember: bool = False,
                 back: str | None = None) -> HTMLResponse:
        """A page saying what went wrong: not_found (404), forbidden (403), bad_request."""
        return self._page("error.html", status, lang, remember, kind=kind, back=back)

    @staticmethod
    def _back(order_id: str, notice: str | None = None) -> RedirectResponse:
        target = f"/checkout/{order_id}" + (f"?notice={notice}" if notice else "")
        return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)

    # --- pages ---------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        """GET /checkout/{order_id}."""
        lang, remember = self._language(request)
        view = await self._view(request.path_params["order_id"])
        if view is None:
            return self._problem(404, "not_found", lang, remember)
        t = translator(lang)
        token = csrf.valid_token(request.cookies.get(csrf.COOKIE)) or csrf.new_token()
        notice = request.query_params.get("notice")
        key = f"notice.{notice}" if notice in NOTICES else message_key(view)
        response = self._page(
            "checkout.html", 200, lang, remember, v=view, csrf_token=token,
            amount=format_amount(view.amount, view.currency),
            method_label=_method_label(t, view.payment_method),
            status_label=t(f"status.{view.status}"),
            status_labels={s: t(f"status.{s}") for s in STATUSES},
            message=t(key) if key else "",
            countdown=countdown_text(view.seconds_left),
            countdown_state=countdown_state(view),
            pay_url=web_link(view.pay_url), return_url=web_link(view.return_url))
        response.set_cookie(csrf.COOKIE, token, path=csrf.COOKIE_PATH, secure=self._secure,
                            httponly=True, samesite="strict")
        return response

    async def status(self, request: Request) -> Response:
        """GET /checkout/{order_id}/status: what the page's script polls."""
        lang, _ = self._language(request)
        order_id = request.path_params["order_id"]
        view = await self._view(order_id)
        if view is None:
            return json_response(404, {"error": {"code": "order_not_found",
                                                 "message": "No such order"}},
                                 {"Cache-Control": "no-store"})
        key = message_key(view)
        return json_response(200, {
            "status": view.status,
            "message": translator(lang)(key) if key else None,
            "return_url": web_link(view.return_url),
        }, {"Cache-Control": "no-store"})

    async def _post(self, request: Request,
                    unit: Callable[[str, dict[str, str]], Callable[[Connection], object]]
                    ) -> Response:
        """A form POST: CSRF first (403, nothing read or changed), then the service's unit
        of work in its own transaction, then 303 back to the page."""
        lang, _ = self._language(request)
        order_id = request.path_params["order_id"]
        form = await read_form(request)
        if not csrf.tokens_match(request.cookies.get(csrf.COOKIE), form.get(csrf.FIELD)):
            back = f"/checkout/{order_id}" if ORDER_ID.fullmatch(order_id) else None
            return self._problem(403, "forbidden", lang, back=back)
        if not ORDER_ID.fullmatch(order_id):
            return self._problem(404, "not_found", lang)
        try:
            await write_unit(self.db, unit(order_id, form), self.after_write)
        except OrderNotFound:  # unknown, or a live order: nothing to do here
            return self._problem(404, "not_found", lang)
        except InvalidOrderState as exc:
            expired = exc.extra.get("status") == "expired"
            return self._back(order_id, "expired" if expired else "not_allowed")
        except ValidationError as exc:
            reason = exc.extra.get("reason")
            if reason in NOTICES:
                return self._back(order_id, str(reason))
            return self._problem(400, "bad_request", lang, back=f"/checkout/{order_id}")
        return self._back(order_id)

    async def card(self, request: Request) -> Response:
        """POST /checkout/{order_id}/card (card_number): test mode, a pending card order."""
        def unit(order_id: str, form: dict[str, str]) -> Callable[[Connection], object]:
            card_number = form.get("card_number", "")
            now = self.ctx.clock.now()
            return lambda conn: payments.pay_by_test_card(
                conn, self.ctx, order_id=order_id, card_number=card_number, now=now)
        return await self._post(request, unit)

    async def simulate(self, request: Request) -> Response:
        """POST /checkout/{order_id}/simulate (outcome=succeeded|failed): test mode, a
        pending order of a method other than card."""
        def unit(order_id: str, form: dict[str, str]) -> Callable[[Connection], object]:
            outcome = form.get("outcome", "")
            now = self.ctx.clock.now()
            return lambda conn: payments.simulate_payment(
                conn, self.ctx, order_id=order_id, outcome=outcome, now=now)
        return await self._post(request, unit)

    async def qr(self, request: Request) -> Response:
        """GET /qr/{order_id}.png: what the payer should open, as a QR code: a live
        upstream's code or link, else this checkout page."""
        view = await self._view(request.path_params["order_id"])
        if view is None:
            return json_response(404, {"error": {"code": "order_not_found",
                                                 "message": "No such order"}})
        try:
            png = qr_png(view.qr_text)
        except QrTooLong:  # an upstream's link too long for a code: the page links to it
            png = qr_png(view.checkout_url)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/checkout/{order_id}", self.page, methods=["GET"]),
            Route("/checkout/{order_id}/status", self.status, methods=["GET"]),
            Route("/checkout/{order_id}/card", self.card, methods=["POST"]),
            Route("/checkout/{order_id}/simulate", self.simulate, methods=["POST"]),
            Route("/qr/{order_id}.png", self.qr, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ]


def _method_label(t: Translator, method: str) -> str:
    key = f"method.{method}"
    return t(key) if key in t.messages else method
