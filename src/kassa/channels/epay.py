"""The EasyPay (易支付, seed 003) upstream: Kassa collects live Alipay and WeChat Pay money
through an aggregator, as one of its merchants (PID and KEY).

- create: POST mapi.php (JSON with payurl / qrcode), or, for aggregators without mapi, a
  signed submit.php link that the payer opens (nothing is sent until then);
- query: GET api.php?act=order with the PID and KEY, as the seed shows;
- refund: POST api.php?act=refund, with Kassa's refund id as out_refund_no so that a
  repeated request is the same refund;
- notifications: the seed's signed GET (or a POST form) to /notify/epay, verified on the raw
  parameters (MD5 sign with the KEY, our PID, TRADE_SUCCESS), answered `success`.

Wire <-> core translation lives here and nowhere else. Every status is mapped explicitly:
anything this module does not know is an UpstreamError, never a payment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx

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
from kassa.core.signing import epay_sign, epay_sign_matches

NAME = "epay"
# Kassa's payment methods and EasyPay's payment types.
PAY_TYPES = {"alipay": "alipay", "wechat": "wxpay"}
# api.php?act=order's status: 1 paid, 0 not paid (seed 003); 2 paid and refunded in full
# (彩虹易支付's, and Kassa's own facade's).
QUERY_STATES = {"0": UpstreamState.PENDING, "1": UpstreamState.PAID,
                "2": UpstreamState.REFUNDED}
# Only TRADE_SUCCESS is a payment (seed 003); the others are known and mean "not paid".
TRADE_STATES = {"TRADE_SUCCESS": UpstreamState.PAID, "WAIT_BUYER_PAY": UpstreamState.PENDING,
                "TRADE_CLOSED": UpstreamState.CLOSED}
NAME_MAX = 100  # seed 003: 商品名称不超过100字
# What probes the credentials: an order number no one uses.
PROBE_REFERENCE = "KSCHECK00000000000000000"


def yuan(amount: int) -> str:
    return Money(amount, "CNY").to_decimal_string()


def _not_found(message: str) -> bool:
    """EasyPay answers an unknown order with a message, not a code: "订单号不存在". A
    merchant that does not exist ("商户不存在") is a credentials problem, not that."""
    lowered = message.lower()
    about_merchant = "商户" in message or "merchant" in lowered or "pid" in lowered
    return not about_merchant and ("不存在" in message or "not exist" in lowered
                                   or "not found" in lowered)


def _credentials_refused(message: str) -> bool:
    return any(word in message for word in ("商户", "密钥", "签名", "key", "sign", "pid"))


class EpayUpstream:
    name = NAME
    remote = True
    supports_refunds = True

    def __init__(self, *, base_url: str, pid: str, key: str, methods: frozenset[str],
                 use_mapi: bool, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.pid = pid
        self._key = key
        self.methods = methods
        self.use_mapi = use_mapi
        self._client = client

    def __repr__(self) -> str:  # never the KEY
        return f"EpayUpstream({self.base_url!r}, pid={self.pid!r})"

    # --- orders ----------------------------------------------------------------------------

    def _order_params(self, order: UpstreamOrder) -> dict[str, str]:
        if order.currency != "CNY":
            raise UpstreamRefused(f"EasyPay collects CNY only, not {order.currency}")
        pay_type = PAY_TYPES.get(order.payment_method)
        if pay_type is None:
            raise UpstreamRefused(f"EasyPay takes alipay and wechat, not {order.payment_method}")
        params = {
            "pid": self.pid, "type": pay_type,
            "out_trade_no": order.reference, "notify_url": order.notify_url,
            "name": order.description[:NAME_MAX] or order.reference,
            "money": yuan(order.amount),
        }
        # Seed 003: the URLs may not carry parameters; a return_url that does is left out
        # (mapi.php does not need one), as the payer is better sent nowhere than astray.
        if order.return_url and "?" not in order.return_url and "#" not in order.return_url:
            params["return_url"] = order.return_url
        return params

    def _signed(self, params: dict[str, str]) -> dict[str, str]:
        return {**params, "sign": epay_sign(params, self._key), "sign_type": "MD5"}

    async def create_payment(self, order: UpstreamOrder) -> UpstreamPayment:
        params = self._order_params(order)
        if not self.use_mapi:
            # The payer opens the signed link; the aggregator makes its order then.
            # submit.php needs a return_url: without a usable one, Kassa's own address.
            params.setdefault("return_url", order.notify_url.rsplit("/notify/", 1)[0] + "/")
            link = f"{self.base_url}/submit.php?{urlencode(self._signed(params))}"
            return UpstreamPayment(trade_no=None, pay_url=link, qr_code=link)
        params["clientip"] = order.client_ip or "127.0.0.1"
        status, body = await exchange_json(self._client, NAME, self._client.build_request(
            "POST", f"{self.base_url}/mapi.php", data=self._signed(params)))
        reply = self._object(body, status)
        if text_field(reply, "code") != "1":
            raise UpstreamRefused(self._message(reply))
        pay_url = text_field(reply, "payurl") or text_field(reply, "qrcode")
        if not pay_url:
            raise UpstreamError("EasyPay answered code 1 without payurl or qrcode")
        return UpstreamPayment(trade_no=text_field(reply, "trade_no") or None, pay_url=pay_url,
                               qr_code=text_field(reply, "qrcode") or pay_url)

    async def query(self, reference: str) -> UpstreamStatus:
        status, body = await exchange_json(self._client, NAME, self._client.build_request(
            "GET", f"{self.base_url}/api.php", params={
                "act": "order", "pid": self.pid, "key": self._key,
                "out_trade_no": reference}))
        reply = self._object(body, status)
        if text_field(reply, "code") != "1":
            message = self._message(reply)
            if _not_found(message):
                return UpstreamStatus(reference=reference, state=UpstreamState.NOT_FOUND)
            raise UpstreamRefused(message)
        if text_field(reply, "out_trade_no") not in ("", reference):
            raise UpstreamError(f"EasyPay answered about order "
                                f"{text_field(reply, 'out_trade_no')!r}, not {reference}")
        state = QUERY_STATES.get(text_field(reply, "status"))
        if state is None:
            raise UpstreamError(f"EasyPay order status {reply.get('status')!r} is unknown")
        return UpstreamStatus(reference=reference, state=state,
                              trade_no=text_field(reply, "trade_no") or None,
                              amount=self._amount(text_field(reply, "money")), currency="CNY")

    async def refund(self, request: UpstreamRefundRequest) -> UpstreamRefundResult:
        if request.currency != "CNY":
            raise UpstreamRefused(f"EasyPay refunds CNY only, not {request.currency}")
        form = {"pid": self.pid, "key": self._key, "out_trade_no": request.reference,
                "money": yuan(request.amount), "out_refund_no": request.refund_id}
        if request.trade_no:
            form["trade_no"] = request.trade_no
        status, body = await exchange_json(self._client, NAME, self._client.build_request(
            "POST", f"{self.base_url}/api.php", params={"act": "refund"}, data=form))
        reply = self._object(body, status)
        if text_field(reply, "code") != "1":
            raise UpstreamRefused(self._message(reply))
        return UpstreamRefundResult(upstream_refund_no=text_field(reply, "refund_no") or None)

    async def check(self) -> str:
        try:
            await self.query(PROBE_REFERENCE)
        except UpstreamRefused as exc:
            if _credentials_refused(str(exc)):
                raise UpstreamError(f"credentials rejected ({exc})") from exc
            raise
        methods = ", ".join(sorted(self.methods))
        how = "mapi.php" if self.use_mapi else "submit.php links"
        return (f"{NAME}  {self.base_url} pid {self.pid} ({methods}; {how}): reachable, "
                "credentials accepted")

    # --- notifications -------------------------------------------------------------------

    def verify_notification(self, notification: InboundNotification) -> VerifiedNotification:
        raw = notification.query if notification.method == "GET" else notification.body
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError) as exc:
            raise NotificationRejected("parameters are not UTF-8 form data") from exc
        params = dict(pairs)
        if len(params) != len(pairs):
            raise NotificationRejected("a parameter is repeated")
        if params.get("pid", "").strip() != self.pid:
            raise NotificationRejected("pid is not Kassa's")
        sign = params.get("sign", "")
        if not sign or not epay_sign_matches(params, self._key, sign):
            raise NotificationRejected("sign does not match")
        trade_status = params.get("trade_status", "")
        state = TRADE_STATES.get(trade_status)
        if state is None:
            raise NotificationRejected(f"trade_status {trade_status[:40]!r} is unknown")
        reference = params.get("out_trade_no", "")
        if not reference:
            raise NotificationRejected("out_trade_no is missing")
        try:
            amount = self._amount(params.get("money", ""))
        except UpstreamError as exc:
            raise NotificationRejected(str(exc)) from exc
        trade_no = params.get("trade_no") or None
        return VerifiedNotification(
            status=UpstreamStatus(reference=reference, state=state, trade_no=trade_no,
                                  amount=amount, currency="CNY"),
            dedupe_key=f"{NAME}:{reference}:{trade_no}:{trade_status}:{amount}")

    def notification_reply(self, accepted: bool) -> tuple[int, bytes]:
        """Seed 003: the plain text `success`; anything else and the aggregator sends it
        again."""
        return (200, b"success") if accepted else (400, b"fail")

    # --- wire details ----------------------------------------------------------------------

    @staticmethod
    def _object(body: Any, status: int) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise UpstreamError(f"EasyPay answered HTTP {status} with JSON that is not an "
                                "object")
        return body

    @staticmethod
    def _message(reply: dict[str, Any]) -> str:
        message = reply.get("msg")
        return str(message)[:200] if message else "refused without a message"

    @staticmethod
    def _amount(text: str) -> int:
        try:
            return checked_amount(parse_decimal_amount(text, "CNY").minor, NAME)
        except MoneyError as exc:
            raise UpstreamError(f"EasyPay money {text[:20]!r} is not an amount in yuan"
                                ) from exc
