"""The crypto gateway (seed 002, USDT on BSC): POST /v1/payment, POST /v1/payment/query,
and the notification the merchant's notify_url receives.

Every request carries X-API-Key, X-Timestamp (Unix seconds, within 5 minutes of the
server's clock), X-Nonce (never used before with that key) and X-Signature: hex
HMAC-SHA256(secret, timestamp + "\\n" + nonce + "\\n" + raw body). Answers are
{"code": 10000, "message": "OK", "data": {...}} with HTTP 200, or {"code": <error>,
"message": ...} with a non-200 status:

    10001  401  the API key is unknown or the signature is wrong
    10002  401  the timestamp is outside the window, or the nonce was used before
    10003  400  an invalid parameter (as the seed shows: "Invalid parameter `x`: ...")
    10004  404  no such order
    10005  409  the order_no is taken by an order with other terms
    10006  400  no channel takes USDT for this account and mode (live, unconfigured)
    10007  413  the request body is too large
    10008  429  too many requests (Retry-After)

Order `state` (the seed leaves it open): 1 waiting for payment, 2 paid, 3 expired
(cancel_time passed unpaid), 4 failed, 5 refunded in full.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_UP, Decimal, localcontext
from typing import Any

import orjson
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kassa.accounts.schemas import Protocol
from kassa.context import ServiceContext
from kassa.core.money import (
    CURRENCY_EXPONENT,
    EXACT_DIGITS,
    Money,
    MoneyError,
    parse_decimal_amount,
)
from kassa.core.signing import cryptogw_signature, cryptogw_signature_matches
from kassa.core.states import OrderStatus
from kassa.errors import (
    KassaError,
    PayloadTooLarge,
    PaymentMethodUnavailable,
    RateLimited,
    UpstreamFailure,
)
from kassa.facades import repository
from kassa.facades import service as facades
from kassa.facades.edge import FacadeEdge
from kassa.http.api import read_body
from kassa.payments.schemas import render_order
from kassa.upstreams.calls import UpstreamSlot

PROTOCOL = Protocol.CRYPTOGW
PAYMENT_METHOD = "usdt"
CHAINS = {"bsc"}
ORDER_NO = re.compile(r"[A-Za-z0-9]{8,32}")
UNIX_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII digits only (str.isdigit takes "²")
NONCE_MAX = 64
PRODUCT_NAME_MAX = 32
META_MAX = 1024
STATES = {OrderStatus.PENDING: 1, OrderStatus.PROCESSING: 1, OrderStatus.COMPLETED: 2,
          OrderStatus.EXPIRED: 3, OrderStatus.FAILED: 4, OrderStatus.REFUNDED: 5}


class CryptoError(Exception):
    def __init__(self, code: int, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def invalid(field: str, why: str) -> CryptoError:
    return CryptoError(10003, 400, f"Invalid parameter `{field}`: {why}")


def _reply(status: int, body: dict[str, Any], headers: dict[str, str] | None = None
           ) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def ok(data: dict[str, Any]) -> Response:
    return _reply(200, {"code": 10000, "message": "OK", "data": data})


# --- the request's fields ----------------------------------------------------------------------

def _string(body: Mapping[str, Any], field: str, *, required: bool, max_len: int
            ) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise invalid(field, "is required")
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if len(value) > max_len or "\x00" in value:
        raise invalid(field, f"must be at most {max_len} characters")
    return value


def usdt_quote(ctx: ServiceContext, amount: Money) -> str:
    """What to collect in USDT, through the configured rates (CNY per unit), rounded up to
    the cent so the merchant never receives less than the order is worth."""
    if amount.currency == "USDT":
        return amount.to_decimal_string()
    with localcontext(prec=EXACT_DIGITS):  # exact for any amount the request can carry
        value = amount.to_decimal() * ctx.fx_rate(amount.currency) / ctx.fx_rate("USDT")
        return str(value.quantize(Decimal("0.01"), rounding=ROUND_UP))


def order_request(ctx: ServiceContext, body: Mapping[str, Any], *, live: bool
                  ) -> facades.FacadeOrderRequest:
    order_no = _string(body, "order_no", required=True, max_len=32)
    assert order_no is not None
    if not ORDER_NO.fullmatch(order_no):
        raise invalid("order_no", "must be 8 to 32 letters or digits")
    currency_text = _string(body, "currency", required=True, max_len=8)
    assert currency_text is not None
    currency = currency_text.strip().upper()
    try:
        known = currency in CURRENCY_EXPONENT and ctx.fx_rate(currency) > 0
    except KeyError:
        known = False
    if not known:
        raise invalid("currency", "currency does not exist")
    amount_text = _string(body, "amount", required=True, max_len=40)
    assert amount_text is not None
    try:
        amount = parse_decimal_amount(amount_text, currency)
    except MoneyError as exc:
        raise invalid("amount", str(exc)) from exc
    if amount.minor <= 0:
        raise invalid("amount", "must be greater than 0")
    chain = _string(body, "chain_type", required=True, max_len=16)
    assert chain is not None
    if chain.strip().lower() not in CHAINS:
        raise invalid("chain_type", "only bsc is supported")
    name = _string(body, "product_name", required=False, max_len=PRODUCT_NAME_MAX) or ""
    meta = _string(body, "meta", required=False, max_len=META_MAX)
    notify_url = _string(body, "notify_url", required=True, max_len=2048)
    redirect_url = _string(body, "redirect_url", required=False, max_len=2048)
    try:
        assert notify_url is not None
        notify_url = facades.checked_url(notify_url, live=live, field="notify_url")
        if redirect_url is not None:
            redirect_url = facades.checked_url(redirect_url, live=live, field="redirect_url")
    except KassaError as exc:
        raise invalid(str(exc.extra.get("field", "notify_url")), exc.message) from exc
    return facades.FacadeOrderRequest(
        protocol=PROTOCOL, merchant_order_no=order_no, amount=amount.minor, currency=currency,
        payment_method=PAYMENT_METHOD, pay_type=chain.strip().lower(), name=name, param=meta,
        notify_url=notify_url, return_url=redirect_url, amount_text=amount_text,
        quote_amount=usdt_quote(ctx, amount))


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def render(order: Mapping[str, Any], ctx: ServiceContext) -> dict[str, Any]:
    """The seed's data object, and (for queries and notifications) what happened since."""
    return {
        "id": order["order_id"], "order_no": order["merchant_order_no"],
        "currency": order["currency"], "amount": order["amount_text"],
        "order_amount": order["quote_amount"], "cancel_time": _unix(order["expires_at"]),
        "state": STATES[order["status"]],
        "pay_url": render_order(order, ctx.public_url)["payment_url"],
        "chain_type": order["pay_type"], "product_name": order["name"],
        "meta": order["param"], "pay_time": _unix(order["paid_at"]),
    }


def notification(order: Mapping[str, Any], ctx: ServiceContext) -> bytes:
    return orjson.dumps(render(order, ctx))


def notification_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The notification is signed as requests are: the merchant checks it with the same
    code it signs its own requests with."""
    nonce = secrets.token_hex(16)
    return {"Content-Type": "application/json", "X-Timestamp": str(timestamp),
            "X-Nonce": nonce,
            "X-Signature": cryptogw_signature(secret, str(timestamp), nonce, body)}


# --- the endpoints -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SignedRequest:
    caller: facades.Caller
    timestamp: int
    nonce: str
    body: dict[str, Any]


@dataclass
class CryptoEndpoints:
    edge: FacadeEdge

    @property
    def ctx(self) -> ServiceContext:
        return self.edge.ctx

    async def _authenticate(self, request: Request) -> SignedRequest:
        raw = await read_body(request, self.ctx.settings.max_body_bytes)
        headers = request.headers
        api_key = headers.get("x-api-key", "").strip()
        timestamp = headers.get("x-timestamp", "").strip()
        nonce = headers.get("x-nonce", "").strip()
        signature = headers.get("x-signature", "")
        if not api_key or not signature:
            raise CryptoError(10001, 401, "X-API-Key and X-Signature headers are required")
        caller = await self.edge.read(lambda conn: facades.caller(
            conn, self.ctx, protocol=PROTOCOL, public_id=api_key))
        if caller is None:
            raise CryptoError(10001, 401, "Invalid API key")
        if not UNIX_SECONDS.fullmatch(timestamp):
            raise CryptoError(10002, 401, "X-Timestamp must be Unix time in seconds")
        if not nonce or len(nonce) > NONCE_MAX or not nonce.isascii() or not (
                nonce.isprintable()):
            raise CryptoError(10002, 401, f"X-Nonce must be 1 to {NONCE_MAX} printable "
                                          "ASCII characters")
        if not cryptogw_signature_matches(caller.secret, timestamp, nonce, raw, signature):
            raise CryptoError(10001, 401, "Invalid signature")
        skew = self.ctx.settings.cryptogw_max_skew_seconds
        if abs(time.time() - int(timestamp)) > skew:
            raise CryptoError(10002, 401, f"X-Timestamp is more than {skew} seconds away from "
                                          "the server's time")
        await self.edge.hit(caller.principal)
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise CryptoError(10003, 400, "Invalid parameter: the body is not valid JSON"
                              ) from exc
        if not isinstance(body, dict):
            raise CryptoError(10003, 400, "Invalid parameter: the body must be a JSON object")
        return SignedRequest(caller=caller, timestamp=int(timestamp), nonce=nonce, body=body)

    def _use_nonce(self, conn: Connection, signed: SignedRequest) -> None:
        """Each nonce once per key, remembered while its timestamp would be accepted; in the
        request's own transaction, so a request that changed nothing can be sent again."""
        until = datetime.fromtimestamp(signed.timestamp, UTC) + timedelta(
            seconds=self.ctx.settings.cryptogw_max_skew_seconds + 60)
        if not repository.use_nonce(conn, credential=signed.caller.credential,
                                    nonce=signed.nonce, expires_at=until):
            raise CryptoError(10002, 401, "X-Nonce was used before")

    async def _answer(self, request: Request,
                      work: Callable[[SignedRequest], Awaitable[Response]]) -> Response:
        try:
            signed = await self._authenticate(request)
            return await work(signed)
        except CryptoError as exc:
            return _reply(exc.status, {"code": exc.code, "message": exc.message})
        except PayloadTooLarge as exc:
            return _reply(413, {"code": 10007, "message": exc.message})
        except RateLimited as exc:
            return _reply(429, {"code": 10008, "message": exc.message},
                          {"Retry-After": str(exc.retry_after)})

    async def create(self, request: Request) -> Response:
        """POST /v1/payment: create a pending USDT order (or find the same one again)."""
        async def work(signed: SignedRequest) -> Response:
            order_req = order_request(self.ctx, signed.body, live=signed.caller.principal.live)
            slot = UpstreamSlot()  # live mode: the upstream's order, opened between two runs

            def unit(conn: Connection) -> dict[str, Any]:
                self._use_nonce(conn, signed)
                try:
                    order = facades.open_order(conn, self.ctx, caller=signed.caller,
                                               request=order_req, slot=slot)
                except facades.DuplicateMerchantOrder as exc:
                    raise CryptoError(10005, 409, "order_no already exists with another "
                                                  "amount or currency") from exc
                except PaymentMethodUnavailable as exc:
                    raise CryptoError(10006, 400, exc.message) from exc
                except KassaError as exc:  # the limits: about the amount
                    raise invalid("amount", exc.message) from exc
                return render(order, self.ctx)
            try:
                return ok(await self.edge.write(unit))
            except UpstreamFailure as exc:  # the upstream failed us: nothing was created
                raise CryptoError(10006, exc.http_status, exc.message) from exc
        return await self._answer(request, work)

    async def query(self, request: Request) -> Response:
        """POST /v1/payment/query {"order_no"} or {"id"}: the order as it is now."""
        async def work(signed: SignedRequest) -> Response:
            order_no = _string(signed.body, "order_no", required=False, max_len=32)
            order_id = _string(signed.body, "id", required=False, max_len=40)
            if order_no is None and order_id is None:
                raise invalid("order_no", "order_no or id is required")

            def unit(conn: Connection) -> dict[str, Any]:
                self._use_nonce(conn, signed)
                order = facades.find_order(conn, caller=signed.caller, protocol=PROTOCOL,
                                           order_id=order_id, merchant_order_no=order_no)
                if order is None:
                    raise CryptoError(10004, 404, "Order not found")
                return render(order, self.ctx)
            try:
                return ok(await self.edge.write(unit))
            except UpstreamFailure as exc:  # the upstream failed us: nothing was created
                raise CryptoError(10006, exc.http_status, exc.message) from exc
        return await self._answer(request, work)

    def routes(self) -> list[Route]:
        return [Route("/v1/payment", self.create, methods=["POST"]),
                Route("/v1/payment/query", self.query, methods=["POST"])]
