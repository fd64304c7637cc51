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

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from sqlalchemy import Connection
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from kassa.context import ServiceContext
from kassa.db.database import Database
from kassa.errors import InvalidOrderState, OrderNotFound, PayloadTooLarge, ValidationError
from kassa.http.api import json_response, read_body, write_unit
from kassa.payments import service as payments
from kassa.payments.schemas import CheckoutView
from kassa.web import csrf
from kassa.web.i18n import (
    LANG_COOKIE,
    LANG_COOKIE_MAX_AGE,
    LANGUAGES,
    NOTICES,
    Translator,
    format_amount,
    pick_language,
    translator,
)
from kassa.web.qr import QrTooLong, qr_png

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
# An order id as Kassa makes them (ord_ and 20 hex digits), with room to spare; anything
# else is not found without asking the database.
ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
FORM_MAX_BYTES = 4096
FORM_MAX_FIELDS = 16
STATUSES = ("pending", "processing", "completed", "failed", "expired", "refunded")

# The page loads nothing from elsewhere, posts only to Kassa, and is never framed
# (a card form must not be clickjacked).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _asset_version() -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file()):
        digest.update((STATIC_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.globals["asset_version"] = _asset_version()


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


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form, small; the first value of each field. Anything else (another
    content type, too large, broken) reads as an empty form: it has no CSRF token."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        text = (await read_body(request, FORM_MAX_BYTES)).decode()
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=FORM_MAX_FIELDS)
    except (PayloadTooLarge, ClientDisconnect, UnicodeDecodeError, ValueError):
        return {}
    form: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            return {}
        form.setdefault(name, value)
    return form


class CheckoutPages:
    def __init__(self, db: Database, ctx: ServiceContext) -> None:
        self.db = db
        self.ctx = ctx
        # Wakes this process's deliverer after a committed write (as the API does): a
        # simulated payment announces payment.completed / payment.failed.
        self.after_write: Callable[[], None] | None = None

    # --- helpers -------------------------------------------------------------------------

    @property
    def _secure(self) -> bool:
        return self.ctx.public_url.lower().startswith("https://")

    def _language(self, request: Request) -> tuple[str, bool]:
        """The request's language, and whether ?lang chose it (then it is remembered)."""
        query = request.query_params.get("lang")
        lang = pick_language(query, request.cookies.get(LANG_COOKIE),
                             request.headers.get("accept-language"))
        return lang, query in LANGUAGES

    def _remember_language(self, response: Response, lang: str) -> None:
        response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE, path="/",
                            secure=self._secure, httponly=True, samesite="lax")

    async def _view(self, order_id: str) -> CheckoutView | None:
        if not ORDER_ID.fullmatch(order_id):
            return None
        now = self.ctx.clock.now()
        return await self.db.read(
            lambda conn: payments.checkout_view(conn, self.ctx, order_id=order_id, now=now))

    def _page(self, template: str, status: int, lang: str, remember: bool,
              **values: Any) -> HTMLResponse:
        t = translator(lang)
        html = _templates.get_template(template).render(lang=lang, t=t, **values)
        response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
        if remember:
            self._remember_language(response, lang)
        return response

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
