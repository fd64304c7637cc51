"""The crypto-gateway (seed 002) upstream: Kassa collects live USDT (BSC) through a gateway,
as one of its merchants (API key and secret).

- create: POST /v1/payment, signed (X-API-Key, X-Timestamp, X-Nonce, X-Signature = hex
  HMAC-SHA256(secret, timestamp + "\\n" + nonce + "\\n" + raw body));
- query: POST /v1/payment/query {"order_no"}, signed the same way;
- refund: the protocol has none (refund USDT orders to the balance);
- notifications: a signed JSON POST to /notify/cryptogw, checked on the raw body and the
  timestamp window, answered `success`.

The seed leaves `state` open; these are the codes Kassa's own facade documents (README):
1 waiting, 2 paid, 3 expired, 4 failed, 5 refunded in full. Any other is an error.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from kassa.channels.base import (
    InboundNotification,
    NotificationRejected,
    UpstreamError,
    UpstreamOrder,
    UpstreamPayment,
    UpstreamRefundRequest,
    UpstreamRefundResult,
    UpstreamRefused,
    UpstreamState,
    UpstreamStatus,
    VerifiedNotification,
)
from kassa.channels.remote import checked_amount, exchange_json, text_field
from kassa.core.money import Money, MoneyError, parse_decimal_amount
from kassa.core.signing import cryptogw_signature, cryptogw_signature_matches

NAME = "cryptogw"
OK = 10000
NO_SUCH_ORDER = 10004
# Codes that say Kassa itself was not let in (key, signature, clock): the order was not
# looked at, so it is no refusal of the order.
NOT_LET_IN = {10001, 10002}
# Codes that say "not now" (no channel for the moment, too large, too many requests):
# worth trying again later, like an HTTP 5xx.
NOT_NOW = {10006, 10007, 10008}
STATES = {1: UpstreamState.PENDING, 2: UpstreamState.PAID, 3: UpstreamState.CLOSED,
          4: UpstreamState.CLOSED, 5: UpstreamState.REFUNDED}
PRODUCT_NAME_MAX = 32
PROBE_REFERENCE = "KSCHECK00000000000000000"


class NotLetIn(UpstreamError):
    """The gateway refused Kassa's key, signature, clock or quota."""


class CryptoGatewayUpstream:
    name = NAME
    remote = True
    supports_refunds = False
    methods = frozenset({"usdt"})

    def __init__(self, *, base_url: str, api_key: str, secret: str,
                 client: httpx.AsyncClient, max_skew_seconds: int = 300,
                 now: Callable[[], float] = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._secret = secret
        self._client = client
        self.max_skew_seconds = max_skew_seconds
        # Wall-clock time: the gateway checks X-Timestamp against its own clock.
        self._now = now

    def __repr__(self) -> str:  # never the key or the secret
        return f"CryptoGatewayUpstream({self.base_url!r})"

    async def _call(self, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One signed request; (code, data). UpstreamError if nothing sensible came back."""
        body = orjson.dumps(payload)
        timestamp, nonce = str(int(self._now())), secrets.token_hex(16)
        headers = {"Content-Type": "application/json", "X-API-Key": self._api_key,
                   "X-Timestamp": timestamp, "X-Nonce": nonce,
                   "X-Signature": cryptogw_signature(self._secret, timestamp, nonce, body)}
        status, reply = await exchange_json(self._client, NAME, self._client.build_request(
            "POST", f"{self.base_url}{path}", content=body, headers=headers))
        if not isinstance(reply, dict) or isinstance(reply.get("code"), bool) or not (
                isinstance(reply.get("code"), int)):
            raise UpstreamError(f"the crypto gateway answered HTTP {status} without a "
                                "numeric code")
        code: int = reply["code"]
        message = str(reply.get("message") or "")[:200]
        if code in NOT_LET_IN:
            raise NotLetIn(f"the crypto gateway did not let Kassa in ({code}: {message})")
        if code in NOT_NOW or status >= 500:
            raise UpstreamError(f"the crypto gateway can't now (HTTP {status}, {code}: "
                                f"{message})")
        data = reply.get("data")
        if code == OK and not isinstance(data, dict):
            raise UpstreamError("the crypto gateway answered 10000 without a data object")
        if code not in (OK, NO_SUCH_ORDER):
            raise UpstreamRefused(f"{code}: {message}" if message else str(code))
        return code, data if isinstance(data, dict) else {}

    async def create_payment(self, order: UpstreamOrder) -> UpstreamPayment:
        payload: dict[str, Any] = {
            "order_no": order.reference, "currency": order.currency,
            "amount": Money(order.amount, order.currency).to_decimal_string(),
            "chain_type": "bsc", "product_name": order.description[:PRODUCT_NAME_MAX],
            "notify_url": order.notify_url}
        if order.return_url:
            payload["redirect_url"] = order.return_url
        code, data = await self._call("/v1/payment", payload)
        if code != OK:
            raise UpstreamRefused(f"{code}: the gateway has no such order")
        pay_url = text_field(data, "pay_url")
        if not pay_url:
            raise UpstreamError("the crypto gateway answered without pay_url")
        return UpstreamPayment(trade_no=text_field(data, "id") or None, pay_url=pay_url,
                               qr_code=pay_url, quote=text_field(data, "order_amount") or None)

    async def query(self, reference: str) -> UpstreamStatus:
        code, data = await self._call("/v1/payment/query", {"order_no": reference})
        if code == NO_SUCH_ORDER:
            return UpstreamStatus(reference=reference, state=UpstreamState.NOT_FOUND)
        return self._status(data, expected=reference)

    async def refund(self, request: UpstreamRefundRequest) -> UpstreamRefundResult:
        raise UpstreamRefused("the crypto gateway has no refund API: refund to the balance")

    async def check(self) -> str:
        try:
            await self.query(PROBE_REFERENCE)
        except NotLetIn as exc:
            raise UpstreamError(f"credentials rejected ({exc})") from exc
        return f"{NAME}  {self.base_url} (usdt): reachable, credentials accepted"

    # --- notifications -------------------------------------------------------------------

    def verify_notification(self, notification: InboundNotification) -> VerifiedNotification:
        headers = notification.headers
        timestamp = headers.get("x-timestamp", "").strip()
        nonce = headers.get("x-nonce", "").strip()
        signature = headers.get("x-signature", "")
        if notification.method != "POST" or not timestamp.isdecimal() or not nonce or not (
                signature):
            raise NotificationRejected("not a signed POST")
        if not cryptogw_signature_matches(self._secret, timestamp, nonce, notification.body,
                                          signature):
            raise NotificationRejected("signature does not match the raw body")
        if abs(self._now() - int(timestamp[:12])) > self.max_skew_seconds:
            raise NotificationRejected("X-Timestamp is outside the accepted window")
        try:
            data = orjson.loads(notification.body)
            if not isinstance(data, dict):
                raise NotificationRejected("the body is not a JSON object")
            status = self._status(data, expected=None)
        except (orjson.JSONDecodeError, UpstreamError) as exc:
            raise NotificationRejected(str(exc)) from exc
        return VerifiedNotification(
            status=status, dedupe_key=f"{NAME}:{status.reference}:{status.trade_no}:"
                                      f"{status.state.value}:{status.amount}")

    def notification_reply(self, accepted: bool) -> tuple[int, bytes]:
        return (200, b"success") if accepted else (400, b"fail")

    # --- wire details ----------------------------------------------------------------------

    @staticmethod
    def _status(data: dict[str, Any], *, expected: str | None) -> UpstreamStatus:
        reference = text_field(data, "order_no")
        if not reference or (expected is not None and reference != expected):
            raise UpstreamError(f"the crypto gateway answered about order {reference!r}")
        raw_state = data.get("state")
        state = None if isinstance(raw_state, bool) or not isinstance(raw_state, int) else (
            STATES.get(raw_state))
        if state is None:
            raise UpstreamError(f"crypto-gateway state {raw_state!r} is unknown")
        currency = text_field(data, "currency").strip().upper()
        try:
            amount = checked_amount(
                parse_decimal_amount(text_field(data, "amount"), currency).minor, NAME)
        except MoneyError as exc:
            raise UpstreamError(f"crypto-gateway amount is not one: {exc}") from exc
        return UpstreamStatus(reference=reference, state=state,
                              trade_no=text_field(data, "id") or None, amount=amount,
                              currency=currency)
