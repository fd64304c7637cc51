"""EasyPay (易支付, seed 003): /submit.php, /mapi.php, /api.php?act=order|refund, and the
notification the merchant's notify_url receives.

Liberal in what it accepts: parameters in the query, a form (urlencoded or multipart) or
JSON; the sign's hex in either case, over the values as sent or trimmed; order queries
authenticated with the plain KEY or signed; money as "1", "1.0" or "1.00". Exact in what
it sends: lowercase signs, money with two decimals, JSON in UTF-8, `code` 1 on success and
the seed's {"code": "error", "msg": ...} otherwise (HTTP 200, as EasyPay clients expect).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kassa.accounts.schemas import Protocol
from kassa.context import ServiceContext
from kassa.core.clock import SHANGHAI
from kassa.core.money import Money, MoneyError, parse_decimal_amount
from kassa.core.signing import epay_sign, epay_sign_matches
from kassa.core.states import OrderStatus
from kassa.errors import KassaError, PayloadTooLarge, RateLimited, UpstreamFailure
from kassa.facades import service as facades
from kassa.facades.edge import BadParameters, FacadeEdge, request_params
from kassa.payments.schemas import render_order
from kassa.upstreams.calls import UpstreamSlot

PROTOCOL = Protocol.EPAY
# EasyPay's payment types and Kassa's payment methods.
TYPES = {"alipay": "alipay", "wxpay": "wechat"}
NAME_MAX_BYTES = 127  # longer names are cut (seed 003: "如超过127个字节会自动截取")
ORDER_NO_MAX = 64
REFUND_NO = re.compile(r"[A-Za-z0-9_\-.]{1,64}")
PARAM_MAX = 1024


class EpayError(Exception):
    """Answered as {"code": "error", "msg": message}; nothing was changed."""


def reply(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json; charset=utf-8")


def error_reply(message: str) -> Response:
    return reply({"code": "error", "msg": message})


def yuan(minor: int) -> str:
    return Money(minor, "CNY").to_decimal_string()


def local_time(moment: datetime | None) -> str | None:
    """The seed's "2016-08-06 22:55:52", in Beijing time."""
    return None if moment is None else moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


# --- authentication ----------------------------------------------------------------------------

def _caller(conn: Connection, ctx: ServiceContext, params: Mapping[str, str]
            ) -> facades.Caller:
    pid = params.get("pid", "").strip()
    if not pid:
        raise EpayError("缺少商户ID(pid)")
    found = facades.caller(conn, ctx, protocol=PROTOCOL, public_id=pid)
    if found is None:
        raise EpayError("商户不存在(pid)")
    return found


def _check_sign(params: Mapping[str, str], key: str) -> None:
    sign = params.get("sign", "")
    if not sign:
        raise EpayError("缺少签名(sign)")
    if params.get("sign_type", "MD5").strip().upper() not in ("MD5", ""):
        raise EpayError("签名类型(sign_type)只支持MD5")
    signed = dict(params)
    # Some clients trim every value before signing (and send them untrimmed).
    if not (epay_sign_matches(signed, key, sign)
            or epay_sign_matches({k: v.strip() for k, v in signed.items()}, key, sign)):
        raise EpayError("签名校验失败")


def _check_key_or_sign(params: Mapping[str, str], key: str) -> None:
    """Order queries and refunds: the plain KEY (as the seed shows) or a signature."""
    given = params.get("key")
    if given is not None:
        if not facades.secrets_match(given.strip(), key):
            raise EpayError("商户密钥(key)错误")
        return
    _check_sign({k: v for k, v in params.items() if k != "key"}, key)


# --- orders ------------------------------------------------------------------------------------

def _required(params: Mapping[str, str], name: str, label: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise EpayError(f"缺少参数{label}({name})")
    return value


def _cut(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode(errors="ignore")


def parse_money(text: str) -> int:
    try:
        cents = parse_decimal_amount(text, "CNY").minor
    except MoneyError as exc:
        raise EpayError("金额(money)格式错误: 最多保留两位小数") from exc
    if cents <= 0:
        raise EpayError("金额(money)必须大于0")
    return cents


def order_request(params: Mapping[str, str], *, live: bool, need_return_url: bool
                  ) -> facades.FacadeOrderRequest:
    pay_type = _required(params, "type", "支付方式").lower()
    if pay_type not in TYPES:
        raise EpayError(f"支付方式(type)不存在: 只支持 {', '.join(TYPES)}")
    out_trade_no = _required(params, "out_trade_no", "商户订单号")
    if len(out_trade_no) > ORDER_NO_MAX or not out_trade_no.isascii() or not (
            out_trade_no.isprintable()) or " " in out_trade_no:
        raise EpayError(f"商户订单号(out_trade_no)最多{ORDER_NO_MAX}位字母数字")
    notify_url = _required(params, "notify_url", "异步通知地址")
    return_url = params.get("return_url", "").strip() or None
    if need_return_url and return_url is None:
        raise EpayError("缺少参数跳转地址(return_url)")
    param = params.get("param") or None
    if param is not None and len(param) > PARAM_MAX:
        raise EpayError(f"业务扩展参数(param)最多{PARAM_MAX}个字符")
    try:
        notify_url = facades.checked_url(notify_url, live=live, field="notify_url")
        if return_url is not None:
            return_url = facades.checked_url(return_url, live=live, field="return_url")
    except KassaError as exc:
        raise EpayError(exc.message) from exc
    for field, url in (("notify_url", notify_url), ("return_url", return_url)):
        # Seed 003: 不支持带参数. The shop signs every parameter it receives: its own would
        # break the sign, and a fragment would swallow ours.
        if url is not None and ("?" in url or "#" in url):
            raise EpayError(f"{field}不支持带参数(不能含 ? 或 #)")
    return facades.FacadeOrderRequest(
        protocol=PROTOCOL, merchant_order_no=out_trade_no,
        amount=parse_money(_required(params, "money", "商品金额")), currency="CNY",
        payment_method=TYPES[pay_type], pay_type=pay_type,
        name=_cut(_required(params, "name", "商品名称"), NAME_MAX_BYTES), param=param,
        notify_url=notify_url, return_url=return_url,
        client_ip=(params.get("clientip") or "")[:64] or None,
        device=(params.get("device") or "")[:20] or None,
        channel_id=(params.get("cid") or "")[:20] or None)


def _open(conn: Connection, ctx: ServiceContext, params: Mapping[str, str],
          need_return_url: bool, slot: UpstreamSlot) -> dict[str, Any]:
    caller = _caller(conn, ctx, params)
    _check_sign(params, caller.secret)
    request = order_request(params, live=caller.principal.live, need_return_url=need_return_url)
    try:
        return facades.open_order(conn, ctx, caller=caller, request=request, slot=slot)
    except facades.DuplicateMerchantOrder as exc:
        raise EpayError("商户订单号(out_trade_no)已存在, 且金额或支付方式不同") from exc
    except KassaError as exc:  # limits, an unavailable method: the core's own words
        raise EpayError(exc.message) from exc


def _links(order: Mapping[str, Any], ctx: ServiceContext) -> dict[str, str]:
    rendered = render_order(order, ctx.public_url)
    return {"payurl": rendered["payment_url"], "qrcode": rendered["payment_url"],
            "img": rendered["qr_code_url"]}


def _status(order: Mapping[str, Any]) -> int:
    """api.php's status: 1 paid, 0 not paid; 2 paid and refunded in full (彩虹易支付's)."""
    return {OrderStatus.COMPLETED: 1, OrderStatus.REFUNDED: 2}.get(order["status"], 0)


def query_reply(order: Mapping[str, Any], pid: str) -> dict[str, Any]:
    paid = order["status"] in (OrderStatus.COMPLETED, OrderStatus.REFUNDED)
    return {
        "code": 1, "msg": "查询订单号成功!", "trade_no": order["order_id"],
        "out_trade_no": order["merchant_order_no"], "type": order["pay_type"],
        "pid": int(pid) if pid.isdigit() else pid,
        "addtime": local_time(order["created_at"]), "endtime": local_time(order["paid_at"]),
        "name": order["name"], "money": yuan(order["amount"]), "status": _status(order),
        # Clients that read trade_status rather than status (epay-sdk) see it too.
        "trade_status": "TRADE_SUCCESS" if paid else "WAIT_BUYER_PAY",
        "param": order["param"] or "", "buyer": "",
        "refund_money": yuan(order["refunded_cents"]),
    }


def notify_params(order: Mapping[str, Any], pid: str, key: str) -> dict[str, str]:
    """What notify_url and return_url receive: every parameter the seed lists, signed."""
    params = {
        "pid": pid, "trade_no": order["order_id"], "out_trade_no": order["merchant_order_no"],
        "type": order["pay_type"], "name": order["name"], "money": yuan(order["amount"]),
        "trade_status": "TRADE_SUCCESS", "param": order["param"] or "",
    }
    return {**params, "sign": epay_sign(params, key), "sign_type": "MD5"}


def with_query(url: str, params: Mapping[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


# --- the endpoints -----------------------------------------------------------------------------

@dataclass
class EpayEndpoints:
    edge: FacadeEdge

    @property
    def ctx(self) -> ServiceContext:
        return self.edge.ctx

    async def _params(self, request: Request) -> dict[str, str]:
        return await request_params(request, self.ctx.settings.max_body_bytes)

    async def _guarded(self, request: Request,
                       answer: Callable[[dict[str, str]], Awaitable[Response]]) -> Response:
        try:
            params = await self._params(request)
            return await answer(params)
        except EpayError as exc:
            return error_reply(str(exc))
        except BadParameters as exc:
            return error_reply(f"参数错误: {exc}")
        except PayloadTooLarge:
            return error_reply("请求过大")
        except RateLimited as exc:
            return Response(orjson.dumps({"code": "error", "msg": exc.message}), status_code=429,
                            media_type="application/json; charset=utf-8",
                            headers={"Retry-After": str(exc.retry_after)})

    async def _authenticated(self, params: Mapping[str, str], *, key_allowed: bool) -> None:
        """Check the credentials, then count the request against the merchant's rate limit
        (a request with a wrong sign must not use up the merchant's quota: PIDs are
        public)."""
        def check(conn: Connection) -> facades.Caller:
            caller = _caller(conn, self.ctx, params)
            (_check_key_or_sign if key_allowed else _check_sign)(params, caller.secret)
            return caller
        await self.edge.hit((await self.edge.read(check)).principal)

    async def _create(self, params: dict[str, str], need_return_url: bool) -> dict[str, Any]:
        await self._authenticated(params, key_allowed=False)
        slot = UpstreamSlot()  # live mode: the upstream's order, opened between two runs
        try:
            return await self.edge.write(lambda conn: _open(conn, self.ctx, params,
                                                            need_return_url, slot))
        except UpstreamFailure as exc:  # nothing was created
            raise EpayError(exc.message) from exc

    async def submit(self, request: Request) -> Response:
        """GET/POST /submit.php: create (or find again) the order, then off to the hosted
        checkout."""
        async def answer(params: dict[str, str]) -> Response:
            order = await self._create(params, need_return_url=True)
            return RedirectResponse(_links(order, self.ctx)["payurl"], status_code=302)
        return await self._guarded(request, answer)

    async def mapi(self, request: Request) -> Response:
        """POST /mapi.php: create (or find again) the order; JSON with where to pay."""
        async def answer(params: dict[str, str]) -> Response:
            order = await self._create(params, need_return_url=False)
            return reply({"code": 1, "msg": "下单成功", "trade_no": order["order_id"],
                          "O_id": order["order_id"], **_links(order, self.ctx)})
        return await self._guarded(request, answer)

    async def api(self, request: Request) -> Response:
        """GET/POST /api.php?act=order (query) | act=refund."""
        async def answer(params: dict[str, str]) -> Response:
            act = params.get("act", "").strip().lower()
            if act not in ("order", "refund"):
                raise EpayError("不支持的操作(act): 只支持 order, refund")
            await self._authenticated(params, key_allowed=True)
            if act == "order":
                return reply(await self.edge.read(lambda conn: self._query(conn, params)))
            return reply(await self.edge.write(lambda conn: self._refund(conn, params)))
        return await self._guarded(request, answer)

    def _find(self, conn: Connection, params: Mapping[str, str], caller: facades.Caller,
              for_update: bool = False) -> dict[str, Any]:
        trade_no = params.get("trade_no", "").strip() or None
        out_trade_no = params.get("out_trade_no", "").strip() or None
        if trade_no is None and out_trade_no is None:
            raise EpayError("缺少参数: trade_no 或 out_trade_no")
        order = facades.find_order(conn, caller=caller, protocol=PROTOCOL, order_id=trade_no,
                                   merchant_order_no=out_trade_no, for_update=for_update)
        if order is None:
            raise EpayError("订单号不存在")
        return order

    def _query(self, conn: Connection, params: Mapping[str, str]) -> dict[str, Any]:
        caller = _caller(conn, self.ctx, params)
        _check_key_or_sign(params, caller.secret)
        return query_reply(self._find(conn, params, caller), params["pid"].strip())

    def _refund(self, conn: Connection, params: Mapping[str, str]) -> dict[str, Any]:
        caller = _caller(conn, self.ctx, params)
        _check_key_or_sign(params, caller.secret)
        amount = parse_money(_required(params, "money", "退款金额"))
        out_refund_no = params.get("out_refund_no", "").strip() or None
        if out_refund_no is not None and not REFUND_NO.fullmatch(out_refund_no):
            raise EpayError(f"退款单号(out_refund_no)最多{ORDER_NO_MAX}位字母、数字或 _ - .")
        order = self._find(conn, params, caller, for_update=True)
        try:
            refund, _ = facades.refund(conn, self.ctx, order=order, amount=amount,
                                       merchant_refund_no=out_refund_no)
        except KassaError as exc:
            raise EpayError(f"退款失败: {exc.message}") from exc
        return {"code": 1, "msg": "退款申请成功, 款项将原路退回", "refund_no": refund["refund_id"],
                "out_refund_no": refund["merchant_refund_no"],
                "trade_no": order["order_id"], "out_trade_no": order["merchant_order_no"],
                "money": yuan(refund["amount"]), "status": refund["status"]}

    async def browser_return(self, request: Request) -> Response:
        """GET /epay/return/{trade_no}: the payer's way back to the shop once paid, to
        return_url with the same signed parameters as the notification."""
        order_id = request.path_params["trade_no"]

        def unit(conn: Connection) -> tuple[str | None, str]:
            found = facades.order_with_secret(conn, self.ctx, protocol=PROTOCOL,
                                              order_id=order_id)
            if found is None:
                raise EpayError("订单号不存在")
            order, pid, key = found
            if order["status"] not in (OrderStatus.COMPLETED, OrderStatus.REFUNDED):
                raise EpayError("订单尚未支付")
            return order["return_url"], with_query(order["return_url"] or "",
                                                   notify_params(order, pid, key))
        try:
            return_url, target = await self.edge.read(unit)
        except EpayError as exc:
            return error_reply(str(exc))
        if return_url is None:
            return error_reply("该订单没有跳转地址(return_url)")
        return RedirectResponse(target, status_code=302)

    def routes(self) -> list[Route]:
        return [Route("/submit.php", self.submit, methods=["GET", "POST"]),
                Route("/mapi.php", self.mapi, methods=["GET", "POST"]),
                Route("/api.php", self.api, methods=["GET", "POST"]),
                Route("/epay/return/{trade_no}", self.browser_return, methods=["GET"])]
