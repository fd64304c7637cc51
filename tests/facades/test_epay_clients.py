"""The EasyPay client libraries published on PyPI, used as real third-party clients against
Kassa on loopback (both databases):

- zpay 0.1.1 (async, aiohttp; github.com/h053698/z-pay-python): mapi.php, the submit.php
  URL, api.php?act=order with the plain KEY, api.php?act=refund, and its notification check
  (a case-sensitive compare of the lowercase sign, over every parameter received).
- epay-sdk 0.4.1 (sync, requests): the submit.php URL, the SIGNED api.php?act=order (act
  inside the sign) read by its parse_query_result (paid only from trade_status), its
  verify_callback (sign, sign_type, required fields, pid), and its CallbackProcessor, which
  reconciles each notification with a signed query before answering `success`.

Imported plainly: a missing library fails these tests, it does not skip them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from epay_sdk import (
    CallbackProcessor,
    CreateOrderRequest,
    EPayClient,
    EPayConfig,
    EPaySignError,
    OrderRecord,
    QueryOrderRequest,
)
from zpay import ZPayAPIError, ZPayClient, ZPaySignatureError

from tests.facades.epay_shop import EpayCredential, Notification, credential, running_shop
from tests.facades.test_epay import (
    available,
    fee,
    fee_kept,
    native_order,
    paid,
    query,
    settled,
    wait_delivery,
)
from tests.support.harness import KassaServer, Merchant

T = TypeVar("T")


def zpay(server: KassaServer, cred: EpayCredential,
         call: Callable[[ZPayClient], Awaitable[T]]) -> T:
    """One call through a fresh zpay client (it is async only)."""
    async def run() -> T:
        async with ZPayClient(pid=cred.pid, key=cred.key, base_url=server.base_url) as client:
            return await call(client)
    return asyncio.run(run())


def test_zpay(server: KassaServer, merchant: Merchant) -> None:
    cred = credential(merchant)
    with running_shop(server.base_url, cred) as shop:
        shop.expect("ZP-1", "10.50", param="金色 256G")
        created = zpay(server, cred, lambda z: z.create_payment(
            name="VIP会员", money="10.50", out_trade_no="ZP-1", notify_url=shop.notify_url,
            clientip="127.0.0.1", type="alipay", param="金色 256G"))
        trade_no = created.trade_no
        assert trade_no.startswith("ord_") and created.O_id == trade_no
        assert created.payurl == f"{server.base_url}/checkout/{trade_no}"
        assert created.qrcode and created.img.endswith(".png")

        unpaid = zpay(server, cred, lambda z: z.query_order(out_trade_no="ZP-1"))
        assert (unpaid.trade_no, unpaid.out_trade_no, unpaid.money, unpaid.status) == (
            trade_no, "ZP-1", "10.50", 0)
        assert (unpaid.type, unpaid.name, unpaid.param, unpaid.pid) == (
            "alipay", "VIP会员", "金色 256G", int(cred.pid))

        # The submit.php URL it builds: a browser following it lands on the checkout.
        shop.expect("ZP-2", "10.00", type="wxpay")
        url = asyncio.run(_payment_url(server, cred, shop.notify_url, shop.return_url))
        r = httpx.get(url, follow_redirects=False)
        assert r.status_code == 302, r.text
        second = zpay(server, cred, lambda z: z.query_order(out_trade_no="ZP-2"))
        assert r.headers["location"] == f"{server.base_url}/checkout/{second.trade_no}"
        assert (second.type, second.money) == ("wxpay", "10.00")

        # The notification, checked by zpay's own verify (and a tampered one refused).
        notices = {n.params["out_trade_no"]: n for n in shop.wait_for(2)}
        assert all(n.ok for n in notices.values()), [n.problems for n in notices.values()]
        client = ZPayClient(pid=cred.pid, key=cred.key, base_url=server.base_url)
        payload = client.verify_notification(notices["ZP-1"].params)
        assert payload.is_paid
        assert (payload.trade_no, payload.out_trade_no, payload.money, payload.param,
                payload.pid) == (trade_no, "ZP-1", "10.50", "金色 256G", cred.pid)
        with pytest.raises(ZPaySignatureError):
            client.verify_notification({**notices["ZP-1"].params, "money": "1050.00"})
        assert client.verify_notification(notices["ZP-2"].params).is_paid

        done = zpay(server, cred, lambda z: z.query_order(trade_no=trade_no))
        assert (done.status, done.money) == (1, "10.50")
        assert done.endtime and done.addtime <= done.endtime

        # Refunds (the plain KEY; act both in the query string and the form).
        paid(server, merchant, second.trade_no)
        net = 1050 - fee(1050) + 1000 - fee(1000)
        assert available(merchant) == net
        refunded = zpay(server, cred, lambda z: z.refund(out_trade_no="ZP-1", money="5.00"))
        assert refunded.msg
        settled(merchant)
        assert query(server, cred, out_trade_no="ZP-1")["refund_money"] == "5.00"
        assert native_order(merchant, trade_no)["refunded_cents"] == 500
        # 5.00 back to the payer: 0.03 of it (its share of the 0.06 fee) from the platform.
        assert available(merchant) == net - (500 - fee(500)) == net - 497
        assert fee_kept(merchant, trade_no) == fee(1050) - fee(500) == 3
        with pytest.raises(ZPayAPIError) as refused:
            zpay(server, cred, lambda z: z.refund(trade_no=trade_no, money="5.51"))
        assert refused.value.code == "error"
        with pytest.raises(ZPayAPIError):
            zpay(server, cred, lambda z: z.query_order(out_trade_no="ZP-404"))
        wrong = EpayCredential(cred.pid, cred.key + "x")
        with pytest.raises(ZPayAPIError):
            zpay(server, wrong, lambda z: z.query_order(out_trade_no="ZP-1"))
        with pytest.raises(ZPayAPIError):
            zpay(server, wrong, lambda z: z.create_payment(
                name="VIP", money="10.00", out_trade_no="ZP-3", notify_url=shop.notify_url,
                clientip="127.0.0.1", type="alipay"))
        settled(merchant)
        assert available(merchant) == net - 497


async def _payment_url(server: KassaServer, cred: EpayCredential, notify_url: str,
                       return_url: str) -> str:
    async with ZPayClient(pid=cred.pid, key=cred.key, base_url=server.base_url) as z:
        return z.create_payment_url(name="VIP会员", money="10.00", out_trade_no="ZP-2",
                                    notify_url=notify_url, return_url=return_url,
                                    type="wxpay")


class Book:
    """epay-sdk's OrderRepository, in memory: the shop's orders as its processor sees them."""

    def __init__(self) -> None:
        self.orders: dict[str, OrderRecord] = {}
        self.attempts: list[tuple[str, bool, str | None, str]] = []

    def get_order(self, order_no: str) -> OrderRecord | None:
        return self.orders.get(order_no)

    def mark_paid_if_unpaid(self, order_no: str, gateway_trade_no: str, raw_payload: str
                            ) -> bool:
        order = self.orders[order_no]
        if order.status == "PAID":
            return False
        order.status, order.gateway_trade_no = "PAID", gateway_trade_no
        return True

    def record_callback_attempt(self, order_no: str, accepted: bool, reason: str | None,
                                raw_payload: str, *, stage: str) -> None:
        self.attempts.append((order_no, accepted, reason, stage))


def test_epay_sdk(server: KassaServer, merchant: Merchant) -> None:
    cred = credential(merchant)
    client = EPayClient(EPayConfig(pid=cred.pid, key=cred.key, base_url=server.base_url,
                                   environment="sandbox"))
    book = Book()
    processor = CallbackProcessor(client, book, verify_with_query=True)
    results: list[Any] = []

    def answer(n: Notification, _: int) -> tuple[int, bytes]:
        """The shop's notify_url, answered by epay-sdk: verify, reconcile with a signed
        query, mark paid once."""
        result = processor.process(client.verify_callback(n.params))
        results.append(result)
        return 200, result.response_text.encode()

    with running_shop(server.base_url, cred, answer=answer) as shop:
        book.orders["ES-1"] = OrderRecord(order_no="ES-1", amount="10.5", status="UNPAID")
        shop.expect("ES-1", "10.50", param="金色 256G")
        url = client.create_order_url(CreateOrderRequest(
            out_trade_no="ES-1", name="VIP会员", money="10.5", notify_url=shop.notify_url,
            return_url=shop.return_url, pay_type="alipay", param="金色 256G",
            clientip="127.0.0.1", device="pc", sitename="Test Shop"))
        assert "money=10.50" in url  # epay-sdk sends two decimals
        r = httpx.get(url, follow_redirects=False)
        assert r.status_code == 302, r.text

        before = client.parse_query_result(client.query_order(
            QueryOrderRequest(out_trade_no="ES-1")))
        assert before.query_ok and not before.paid
        assert (before.order_no, before.amount) == ("ES-1", "10.50")
        trade_no = before.gateway_trade_no
        assert trade_no is not None
        assert r.headers["location"] == f"{server.base_url}/checkout/{trade_no}"

        notice = shop.wait_for(1)[0]
        delivery = wait_delivery(merchant, trade_no, "succeeded")
        assert delivery["attempt_count"] == 1
        assert notice.ok, notice.problems
        assert [(r.accepted, r.response_text, r.reconciled, r.first_success)
                for r in results] == [(True, "success", True, True)]
        assert book.orders["ES-1"].status == "PAID"
        assert book.orders["ES-1"].gateway_trade_no == trade_no

        callback = client.verify_callback(notice.params)
        assert (callback.pid, callback.trade_no, callback.out_trade_no, callback.pay_type,
                callback.money, callback.trade_status, callback.attach) == (
            cred.pid, trade_no, "ES-1", "alipay", "10.50", "TRADE_SUCCESS", "金色 256G")
        # The same notification again: already paid, still `success`, nothing twice.
        again = processor.process(callback)
        assert (again.accepted, again.response_text, again.first_success) == (
            True, "success", False)
        with pytest.raises(EPaySignError):
            client.verify_callback({**notice.params, "money": "105.00"})

        after = client.parse_query_result(client.query_order(QueryOrderRequest(
            trade_no=trade_no)))
        assert after.query_ok and after.paid and after.amount == "10.50"
        assert available(merchant) == 1050 - fee(1050)

        # Another merchant's client can't see it; a wrong key can't query at all.
        someone = credential(server.merchant(name="Someone Else"))
        theirs = EPayClient(EPayConfig(pid=someone.pid, key=someone.key,
                                       base_url=server.base_url, environment="sandbox"))
        seen = theirs.parse_query_result(theirs.query_order(QueryOrderRequest(
            trade_no=trade_no)))
        assert not seen.query_ok and not seen.paid
        bad = EPayClient(EPayConfig(pid=cred.pid, key=cred.key + "x", base_url=server.base_url,
                                    environment="sandbox"))
        denied = bad.query_order(QueryOrderRequest(out_trade_no="ES-1"))
        assert denied["code"] == "error"
        assert not bad.parse_query_result(denied).query_ok
