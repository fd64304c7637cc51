"""Kassa speaks EasyPay (易支付, seed 003), over HTTP on both databases: the seed's signing
byte for byte (with the tests' own MD5 signer, tests/facades/epay_shop.py), mapi.php,
submit.php, api.php?act=order|refund, bad input that changes nothing, the signed GET
notification a fake shop verifies with its own code, its retries, the browser's return, and
what the ledger shows (the native API) once an order is paid or refunded."""

from __future__ import annotations

import itertools
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from kassa.accounts import service as accounts
from kassa.config import Settings
from tests.facades.epay_shop import (
    NOTIFY_FIELDS,
    EpayCredential,
    Notification,
    credential,
    md5_sign,
    running_shop,
    signed,
    signing_string,
)
from tests.support.factories import new_task, pay
from tests.support.harness import KassaServer, Merchant

SHANGHAI = ZoneInfo("Asia/Shanghai")
LOCAL_TIME = "%Y-%m-%d %H:%M:%S"
NOTIFY_URL = "http://127.0.0.1:9/notify"  # nothing listens: for orders whose notice no one reads
RETURN_URL = "http://127.0.0.1:9/return"
QUERY_FIELDS = {"code", "msg", "trade_no", "out_trade_no", "type", "pid", "addtime", "endtime",
                "name", "money", "status", "trade_status", "param", "buyer", "refund_money"}
FEE_BPS = {"alipay": 60, "wxpay": 60}  # settings.collection_fee_bps (wxpay is Kassa's wechat)

# The seed's example submit.php URL (接口地址 https://zpayz.cn/submit.php?...), its params.
SEED_EXAMPLE = {
    "name": "iphone xs Max 一台", "money": "0.03", "out_trade_no": "201911914837526544601",
    "notify_url": "http://www.aaa.com/notify_url.php", "pid": "201901151314084206659771",
    "param": "金色 256G", "return_url": "http://www.baidu.com", "type": "alipay",
}
SEED_EXAMPLE_SIGN = "28f9583617d9caf66834292b6ab1cc89"
SEED_NOTIFY_EXAMPLE_SIGN = "ef6e3c5c6ff45018e8c82fd66fb056dc"
SEED_MAPI_EXAMPLE_SIGN = "202cb962ac59075b964b07152d234b70"
SEED_TEST_PID = "20220726190052"  # the seed's 测试商户ID / 测试商户密钥
SEED_TEST_KEY = "vg9ZRZN4FOKtDM06UfqH69GDJoG4gGIJ"


# --- helpers -------------------------------------------------------------------------------

def order_params(cred: EpayCredential, out_trade_no: str, **over: str | None
                 ) -> dict[str, str]:
    """Unsigned params of a valid 10.00-yuan alipay order; an override of None drops it."""
    params: dict[str, str | None] = {
        "pid": cred.pid, "type": "alipay", "out_trade_no": out_trade_no,
        "notify_url": NOTIFY_URL, "return_url": RETURN_URL, "name": "VIP会员",
        "money": "10.00", "clientip": "127.0.0.1", **over}
    return {k: v for k, v in params.items() if v is not None}


def mapi(server: KassaServer, params: dict[str, str]) -> dict[str, Any]:
    r = httpx.post(f"{server.base_url}/mapi.php", data=params, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body: dict[str, Any] = r.json()
    return body


def created(server: KassaServer, cred: EpayCredential, out_trade_no: str, **over: str | None
            ) -> dict[str, Any]:
    body = mapi(server, signed(order_params(cred, out_trade_no, **over), cred.key))
    assert body["code"] == 1, body
    return body


def api(server: KassaServer, params: dict[str, str], method: str = "GET") -> dict[str, Any]:
    if method == "GET":
        r = httpx.get(f"{server.base_url}/api.php", params=params, timeout=30)
    else:
        r = httpx.post(f"{server.base_url}/api.php", data=params, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body: dict[str, Any] = r.json()
    return body


def query(server: KassaServer, cred: EpayCredential, **by: str) -> dict[str, Any]:
    return api(server, {"act": "order", "pid": cred.pid, "key": cred.key, **by})


def refund(server: KassaServer, cred: EpayCredential, money: str, **by: str
           ) -> dict[str, Any]:
    r = httpx.post(f"{server.base_url}/api.php?act=refund",
                   data={"pid": cred.pid, "key": cred.key, "money": money, **by}, timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def assert_epay_error(body: dict[str, Any], fragment: str = "") -> str:
    """The seed's {"code":"error","msg":"具体的错误信息"}, and nothing else."""
    assert set(body) == {"code", "msg"}, body
    assert body["code"] == "error", body
    msg = body["msg"]
    assert isinstance(msg, str) and msg.strip(), body
    assert fragment in msg, body
    return msg


def assert_no_order(server: KassaServer, cred: EpayCredential, out_trade_no: str) -> None:
    assert_epay_error(query(server, cred, out_trade_no=out_trade_no), "订单号不存在")


def native_state(client: httpx.Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The merchant's balance (but its timestamp) and transaction history in one mode."""
    r = client.get("/api/v1/payment/balance")
    assert r.status_code == 200, r.text
    balance = {k: v for k, v in r.json().items() if k != "last_updated"}
    r = client.get("/api/v1/payment/transactions", params={"limit": 100})
    assert r.status_code == 200, r.text
    return balance, r.json()["data"]


def available(merchant: Merchant) -> int:
    r = merchant.test.get("/api/v1/payment/balance")
    assert r.status_code == 200, r.text
    return int(r.json()["balance_cents"])


def settled(merchant: Merchant, timeout: float = 10.0) -> dict[str, Any]:
    """The balance once no refund is in flight any more."""
    deadline = time.monotonic() + timeout
    while True:
        r = merchant.test.get("/api/v1/payment/balance")
        assert r.status_code == 200, r.text
        balance: dict[str, Any] = r.json()
        if balance["refunds_in_flight_cents"] == 0:
            return balance
        assert time.monotonic() < deadline, balance
        time.sleep(0.05)


def fee(cents: int, pay_type: str = "alipay") -> int:
    """The channel fee: bps of the amount, rounded half up to a cent."""
    return int((Decimal(cents) * FEE_BPS[pay_type] / 10000).quantize(Decimal(1), ROUND_HALF_UP))


def native_order(merchant: Merchant, trade_no: str) -> dict[str, Any]:
    r = merchant.test.get("/api/v1/payment/query", params={"order_id": trade_no})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def fee_kept(merchant: Merchant, trade_no: str) -> int:
    """The channel fee the platform still keeps of an order (less what refunds gave back)."""
    return int(native_order(merchant, trade_no)["escrow"]["platform_fee_cents"])


def fee_returns(total: int, parts: list[int]) -> list[int]:
    """The fee each refund of `parts` (in turn) gives back: its share of the fee, rounded half
    up, never more than is left; the refund that takes the rest of the order takes the rest
    of the fee."""
    left, refunded, returned = fee(total), 0, []
    for part in parts:
        refunded += part
        back = left if refunded == total else min(fee(part), left)
        returned.append(back)
        left -= back
    return returned


def transactions(merchant: Merchant, **params: str) -> list[dict[str, Any]]:
    r = merchant.test.get("/api/v1/payment/transactions", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["data"]
    return rows


def epay_delivery(merchant: Merchant, trade_no: str) -> dict[str, Any] | None:
    r = merchant.test.get("/api/v1/webhooks/events", params={"object_id": trade_no})
    assert r.status_code == 200, r.text
    found = [d for e in r.json()["data"] for d in e["deliveries"] if d["protocol"] == "epay"]
    assert len(found) <= 1, found
    return found[0] if found else None


def wait_delivery(merchant: Merchant, trade_no: str, status: str, timeout: float = 10.0
                  ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    delivery = None
    while time.monotonic() < deadline:
        delivery = epay_delivery(merchant, trade_no)
        if delivery is not None and delivery["status"] == status:
            return delivery
        time.sleep(0.05)
    raise AssertionError(f"the epay delivery of {trade_no} is {delivery}, wanted {status}")


def paid(server: KassaServer, merchant: Merchant, trade_no: str) -> dict[str, Any]:
    return server.wait_for_status(merchant.test, trade_no, "completed")


def beijing(iso_utc: str) -> str:
    moment = datetime.strptime(iso_utc, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return moment.astimezone(SHANGHAI).strftime(LOCAL_TIME)


# --- 1. signing, byte for byte ---------------------------------------------------------------

def test_signing_string_of_the_seed_example() -> None:
    """The seed's algorithm on its own example submit URL: sorted by name, sign and
    sign_type and empty values left out, values not URL-encoded (the spaces and Chinese
    stay as they are), then md5(string + KEY) in lowercase hex.

    The seed's example signs cannot be reproduced: 28f95836... (the submit URL) and
    ef6e3c5c... (the notification) were made with a merchant KEY the seed does not publish
    (its example PID 201901151314084206659771 is not the published test PID), and
    202cb962... (mapi.php) is md5("123"), a placeholder. What can be checked is the string
    and that the published test KEY does not give those values either."""
    with_sign = {**SEED_EXAMPLE, "sign": SEED_EXAMPLE_SIGN, "sign_type": "MD5", "cid": ""}
    expected = ("money=0.03&name=iphone xs Max 一台&notify_url=http://www.aaa.com/notify_url.php"
                "&out_trade_no=201911914837526544601&param=金色 256G"
                "&pid=201901151314084206659771&return_url=http://www.baidu.com&type=alipay")
    assert signing_string(with_sign) == expected
    assert signing_string(SEED_EXAMPLE) == expected
    sign = md5_sign(with_sign, SEED_TEST_KEY)
    assert re.fullmatch(r"[0-9a-f]{32}", sign)
    assert sign == "bd396135b550e4744a9b91a720a22833"
    assert sign not in (SEED_EXAMPLE_SIGN, SEED_NOTIFY_EXAMPLE_SIGN)
    assert md5_sign({}, "123") == SEED_MAPI_EXAMPLE_SIGN  # md5("123"): the seed's placeholder
    # Sorting is by parameter name in ASCII order: upper case before lower, "_" after both.
    assert signing_string({"b": "1", "B": "2", "a_b": "3", "ab": "4", "a": "5"}) == (
        "B=2&a=5&a_b=3&ab=4&b=1")


def test_seed_example_signed_by_the_independent_signer(server: KassaServer,
                                                       merchant: Merchant) -> None:
    """The seed's example params, the merchant's test PID, signed by the tests' own signer:
    the sign is accepted (what stops the order is its 0.03 yuan, below the minimum); the same
    string URL-encoded before signing is not the seed's algorithm and is refused; at 10.03
    yuan it goes through submit.php to the hosted checkout."""
    cred = credential(merchant)
    example = {**SEED_EXAMPLE, "pid": cred.pid}
    r = httpx.get(f"{server.base_url}/submit.php", params=signed(example, cred.key))
    assert r.status_code == 200
    assert_epay_error(r.json(), "minimum")
    url_encoded_sign = md5_sign({k: quote_plus(v) for k, v in example.items()}, cred.key)
    r = httpx.get(f"{server.base_url}/submit.php",
                  params={**example, "sign": url_encoded_sign, "sign_type": "MD5"})
    assert_epay_error(r.json(), "签名")
    priced = {**example, "money": "10.03"}
    r = httpx.get(f"{server.base_url}/submit.php", params=signed(priced, cred.key))
    assert r.status_code == 302, r.text
    order = query(server, cred, out_trade_no=SEED_EXAMPLE["out_trade_no"])
    assert r.headers["location"] == f"{server.base_url}/checkout/{order['trade_no']}"
    assert (order["name"], order["param"], order["money"]) == ("iphone xs Max 一台", "金色 256G",
                                                               "10.03")


def test_the_seed_notification_schedule_is_the_default() -> None:
    """0/15/15/30/180/1800/1800/1800/1800/3600 s (通知频率); tests run a shorter one."""
    assert Settings.model_fields["notify_retry_schedule"].default == [
        0, 15, 15, 30, 180, 1800, 1800, 1800, 1800, 3600]


def test_seed_published_test_credential(server: KassaServer) -> None:
    """The demo account (kassa serve --demo) answers to the seed's published test PID and
    KEY: the plain KEY and a sign made with it both authenticate an order query."""
    server.db.write_sync(lambda conn: accounts.ensure_demo_account(conn, server.ctx))
    demo = EpayCredential(pid=SEED_TEST_PID, key=SEED_TEST_KEY)
    assert_epay_error(query(server, demo, out_trade_no="no-such-order"), "订单号不存在")
    signed_query = signed({"act": "order", "pid": demo.pid, "out_trade_no": "no-such-order"},
                          demo.key)
    assert_epay_error(api(server, signed_query), "订单号不存在")
    wrong = EpayCredential(pid=SEED_TEST_PID, key=SEED_TEST_KEY.lower())
    assert_epay_error(query(server, wrong, out_trade_no="no-such-order"), "key")


# --- 2. creating orders ------------------------------------------------------------------------

@pytest.mark.parametrize(("money", "shown"), [("10.5", "10.50"), ("10", "10.00"),
                                              ("10.50", "10.50")])
def test_mapi_creates_an_order(server: KassaServer, merchant: Merchant, money: str,
                               shown: str) -> None:
    cred = credential(merchant)
    body = created(server, cred, "M-1", money=money, param="金色 256G")
    assert set(body) == {"code", "msg", "trade_no", "O_id", "payurl", "qrcode", "img"}
    assert body["code"] == 1 and body["msg"] == "下单成功"
    trade_no = body["trade_no"]
    assert re.fullmatch(r"ord_[0-9a-f]{20}", trade_no)
    assert body["O_id"] == trade_no
    assert body["payurl"] == f"{server.base_url}/checkout/{trade_no}"
    assert body["qrcode"] == body["payurl"]
    assert body["img"] == f"{server.base_url}/qr/{trade_no}.png"
    order = query(server, cred, out_trade_no="M-1")
    assert (order["trade_no"], order["money"], order["param"]) == (trade_no, shown, "金色 256G")
    native = native_order(merchant, trade_no)
    assert (native["type"], native["amount"], native["currency"], native["payment_method"]) == (
        "collection", int(Decimal(money) * 100), "CNY", "alipay")
    assert native["status"] in ("pending", "completed")


def test_submit_get_and_post_redirect_to_the_checkout(server: KassaServer,
                                                      merchant: Merchant) -> None:
    """submit.php, GET and POST, answers 302 to the payment_url; the same request again is
    the same order (mapi.php too), and there is one transaction."""
    cred = credential(merchant)
    params = signed(order_params(cred, "S-1", type="wxpay"), cred.key)
    r = httpx.get(f"{server.base_url}/submit.php", params=params)
    assert r.status_code == 302, r.text
    order = query(server, cred, out_trade_no="S-1")
    payment_url = native_order(merchant, order["trade_no"])["payment_url"]
    assert r.headers["location"] == payment_url
    assert order["type"] == "wxpay"
    assert native_order(merchant, order["trade_no"])["payment_method"] == "wechat"
    r = httpx.post(f"{server.base_url}/submit.php", data=params)
    assert r.status_code == 302, r.text
    assert r.headers["location"] == payment_url
    again = mapi(server, params)
    assert again["code"] == 1 and again["trade_no"] == order["trade_no"]
    # "10" is the same amount as "10.00": still the same order.
    same = mapi(server, signed(order_params(cred, "S-1", type="wxpay", money="10"), cred.key))
    assert same["trade_no"] == order["trade_no"]
    _, history = native_state(merchant.test)
    assert [t["order_id"] for t in history] == [order["trade_no"]]


def _multipart(params: dict[str, str]) -> dict[str, Any]:
    return {"files": {k: (None, v) for k, v in params.items()}}


def _json_numbers(params: dict[str, str]) -> dict[str, Any]:
    """JSON with the PID as a number (some clients send it so), signed over its digits."""
    return {"json": {**params, "pid": int(params["pid"])}}


ENCODINGS = {
    "query": lambda p: {"params": p},
    "urlencoded": lambda p: {"data": p},
    "multipart": _multipart,
    "json": lambda p: {"json": p},
    "json with a numeric pid": _json_numbers,
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_params_however_the_client_sends_them(server: KassaServer, merchant: Merchant,
                                              encoding: str) -> None:
    cred = credential(merchant)
    no = f"E-{list(ENCODINGS).index(encoding)}"
    params = signed(order_params(cred, no, name="iphone xs Max 一台",
                                 param="金色 256G&x=1"), cred.key)
    r = httpx.post(f"{server.base_url}/mapi.php", **ENCODINGS[encoding](params))
    assert r.status_code == 200, r.text
    assert r.json()["code"] == 1, r.text
    order = query(server, cred, out_trade_no=no)
    assert (order["name"], order["param"], order["money"]) == ("iphone xs Max 一台",
                                                               "金色 256G&x=1", "10.00")
    # ... and a wrong sign sent the same way is refused.
    bad = {**params, "out_trade_no": f"F{no}"}
    r = httpx.post(f"{server.base_url}/mapi.php", **ENCODINGS[encoding](bad))
    assert_epay_error(r.json(), "签名")
    assert_no_order(server, cred, f"F{no}")


def test_uppercase_sign_and_sign_over_trimmed_values(server: KassaServer,
                                                     merchant: Merchant) -> None:
    cred = credential(merchant)
    params = signed(order_params(cred, "U-1"), cred.key)
    body = mapi(server, {**params, "sign": params["sign"].upper()})
    assert body["code"] == 1, body
    # A client that trims every value before signing, and sends them untrimmed.
    untrimmed = order_params(cred, "U-2", name="  VIP会员 ", money=" 10.00")
    trimmed_sign = md5_sign({k: v.strip() for k, v in untrimmed.items()}, cred.key)
    assert trimmed_sign != md5_sign(untrimmed, cred.key)
    body = mapi(server, {**untrimmed, "sign": trimmed_sign, "sign_type": "MD5"})
    assert body["code"] == 1, body
    order = query(server, cred, out_trade_no="U-2")
    assert (order["name"], order["money"]) == ("VIP会员", "10.00")
    # ... and one that signs them as sent.
    body = mapi(server, signed(order_params(cred, "U-3", name=" VIP "), cred.key))
    assert body["code"] == 1, body
    # sign_type may be left out (MD5 is the default) or written in lower case.
    body = mapi(server, {**params, "sign_type": "md5"})
    assert body["code"] == 1 and body["trade_no"] == query(server, cred,
                                                           out_trade_no="U-1")["trade_no"]
    no_type = {k: v for k, v in signed(order_params(cred, "U-4"), cred.key).items()
               if k != "sign_type"}
    assert mapi(server, no_type)["code"] == 1


# --- 3. bad input changes nothing ---------------------------------------------------------------

def _tampered_money(t: EpayCredential, no: str) -> dict[str, str]:
    return {**signed(order_params(t, no), t.key), "money": "20.00"}


def _unsigned(t: EpayCredential, no: str) -> dict[str, str]:
    return order_params(t, no)


BAD_INPUT: dict[str, tuple[Any, str]] = {
    # case: (params of (test credential, live credential, out_trade_no), msg fragment)
    "wrong sign": (lambda t, lv, no: signed(order_params(t, no), t.key + "x"), "签名"),
    "sign of another amount": (lambda t, lv, no: _tampered_money(t, no), "签名"),
    "no sign": (lambda t, lv, no: _unsigned(t, no), "sign"),
    "the live key for the test pid": (lambda t, lv, no: signed(order_params(t, no), lv.key),
                                      "签名"),
    "unknown pid": (lambda t, lv, no: signed(order_params(t, no, pid="1" + t.pid), t.key),
                    "pid"),
    "missing pid": (lambda t, lv, no: signed(order_params(t, no, pid=None), t.key), "pid"),
    "money 3 decimals": (lambda t, lv, no: signed(order_params(t, no, money="1.001"), t.key),
                         "money"),
    "money 10.001": (lambda t, lv, no: signed(order_params(t, no, money="10.001"), t.key),
                     "money"),
    "money 0": (lambda t, lv, no: signed(order_params(t, no, money="0"), t.key), "money"),
    "money 0.00": (lambda t, lv, no: signed(order_params(t, no, money="0.00"), t.key),
                   "money"),
    "money -1": (lambda t, lv, no: signed(order_params(t, no, money="-1"), t.key), "money"),
    "money -10.00": (lambda t, lv, no: signed(order_params(t, no, money="-10.00"), t.key),
                     "money"),
    "money abc": (lambda t, lv, no: signed(order_params(t, no, money="abc"), t.key), "money"),
    "money 1e3": (lambda t, lv, no: signed(order_params(t, no, money="1e3"), t.key), "money"),
    "money NaN": (lambda t, lv, no: signed(order_params(t, no, money="NaN"), t.key), "money"),
    "money 1,000": (lambda t, lv, no: signed(order_params(t, no, money="1,000"), t.key),
                    "money"),
    "no money": (lambda t, lv, no: signed(order_params(t, no, money=None), t.key), "money"),
    "unknown type": (lambda t, lv, no: signed(order_params(t, no, type="qqpay"), t.key),
                     "type"),
    "no type": (lambda t, lv, no: signed(order_params(t, no, type=None), t.key), "type"),
    "no notify_url": (lambda t, lv, no: signed(order_params(t, no, notify_url=None), t.key),
                      "notify_url"),
    "ftp notify_url": (lambda t, lv, no: signed(
        order_params(t, no, notify_url="ftp://127.0.0.1/notify"), t.key), "notify_url"),
    "relative notify_url": (lambda t, lv, no: signed(
        order_params(t, no, notify_url="/notify.php"), t.key), "notify_url"),
    "no name": (lambda t, lv, no: signed(order_params(t, no, name=None), t.key), "name"),
    "sign_type SHA256": (lambda t, lv, no: {**signed(order_params(t, no), t.key),
                                            "sign_type": "SHA256"}, "MD5"),
    "below the minimum": (lambda t, lv, no: signed(order_params(t, no, money="9.99"), t.key),
                          "minimum"),
    "above the maximum": (lambda t, lv, no: signed(order_params(t, no, money="50000.01"),
                                                   t.key), "maximum"),
    "live, http notify_url": (lambda t, lv, no: signed(order_params(lv, no), lv.key),
                              "https"),
    "live, internal notify_url": (lambda t, lv, no: signed(order_params(
        lv, no, notify_url="https://127.0.0.1/notify", return_url="https://shop.example/r"),
        lv.key), "internal"),
    # Well-formed, but no live channel is configured in tests.
    "live, no live channel": (lambda t, lv, no: signed(order_params(
        lv, no, notify_url="https://shop.example/notify", return_url="https://shop.example/r"),
        lv.key), "not available"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_and_changes_nothing(server: KassaServer, merchant: Merchant,
                                                  case: str) -> None:
    test_cred, live_cred = credential(merchant, "test"), credential(merchant, "live")
    before = native_state(merchant.test), native_state(merchant.live)
    build, fragment = BAD_INPUT[case]
    no = "BAD-1"
    params = build(test_cred, live_cred, no)
    assert_epay_error(mapi(server, params), fragment)
    r = httpx.get(f"{server.base_url}/submit.php", params=params)
    assert r.status_code == 200, r.headers  # an error page, not a redirect
    assert_epay_error(r.json(), fragment)
    r = httpx.post(f"{server.base_url}/submit.php", data=params)
    assert_epay_error(r.json(), fragment)
    assert_no_order(server, test_cred, no)
    assert_no_order(server, live_cred, no)
    assert (native_state(merchant.test), native_state(merchant.live)) == before


def test_submit_needs_a_return_url(server: KassaServer, merchant: Merchant) -> None:
    cred = credential(merchant)
    before = native_state(merchant.test)
    params = signed(order_params(cred, "NR-1", return_url=None), cred.key)
    r = httpx.get(f"{server.base_url}/submit.php", params=params)
    assert_epay_error(r.json(), "return_url")
    r = httpx.post(f"{server.base_url}/submit.php", data=params)
    assert_epay_error(r.json(), "return_url")
    assert_no_order(server, cred, "NR-1")
    assert native_state(merchant.test) == before
    # mapi.php does not need one (the seed lists no return_url there).
    assert mapi(server, params)["code"] == 1


@pytest.mark.parametrize("other", [{"money": "11.00"}, {"money": "10.01"}, {"type": "wxpay"}])
def test_same_out_trade_no_with_other_terms(server: KassaServer, merchant: Merchant,
                                            other: dict[str, str]) -> None:
    cred = credential(merchant)
    first = created(server, cred, "DUP-1")
    before = native_state(merchant.test)
    assert_epay_error(mapi(server, signed(order_params(cred, "DUP-1", **other), cred.key)),
                      "out_trade_no")
    r = httpx.get(f"{server.base_url}/submit.php",
                  params=signed(order_params(cred, "DUP-1", **other), cred.key))
    assert_epay_error(r.json(), "out_trade_no")
    order = query(server, cred, out_trade_no="DUP-1")
    assert (order["trade_no"], order["money"], order["type"]) == (first["trade_no"], "10.00",
                                                                  "alipay")
    assert native_state(merchant.test) == before


def test_the_same_order_sent_at_once(server: KassaServer, merchant: Merchant) -> None:
    """A client sending its request several times at once (a retry storm): one order."""
    cred = credential(merchant)
    params = signed(order_params(cred, "RACE-1"), cred.key)
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: mapi(server, params), range(8)))
    assert all(r["code"] == 1 for r in replies), replies
    assert len({r["trade_no"] for r in replies}) == 1
    _, history = native_state(merchant.test)
    assert [t["order_id"] for t in history] == [replies[0]["trade_no"]]


def test_long_names_are_cut_at_127_bytes(server: KassaServer, merchant: Merchant) -> None:
    """The seed: a name over 127 bytes is cut (如超过127个字节会自动截取), here on a
    character boundary; the sign is over the name as sent."""
    cred = credential(merchant)
    created(server, cred, "NAME-1", name="金" * 50)  # 150 bytes of UTF-8
    assert query(server, cred, out_trade_no="NAME-1")["name"] == "金" * 42  # 126 bytes
    created(server, cred, "NAME-2", name="x" * 200)
    assert query(server, cred, out_trade_no="NAME-2")["name"] == "x" * 127


URL_PARAMETERS = ["?shop=1", "?", "?a=1#b", "#top", "#"]


@pytest.mark.parametrize("field", ["notify_url", "return_url"])
def test_urls_with_parameters_are_refused(server: KassaServer, merchant: Merchant,
                                          field: str) -> None:
    """The seed: notify_url and return_url take no parameters (不支持带参数). A "?" or a
    "#" in either is refused with the seed's words, through mapi.php and submit.php (GET and
    POST), test and live, and nothing is created: the shop's verifier signs every parameter
    it receives (its own would break the sign), and a fragment would swallow Kassa's."""
    test_cred, live_cred = credential(merchant), credential(merchant, "live")
    before = native_state(merchant.test), native_state(merchant.live)
    for i, suffix in enumerate(URL_PARAMETERS):
        no = f"QS-{i}"
        params = signed(order_params(test_cred, no, **{field: f"http://127.0.0.1:9/{field}"
                                                               f"{suffix}"}), test_cred.key)
        assert field in assert_epay_error(mapi(server, params), "不支持带参数")
        r = httpx.get(f"{server.base_url}/submit.php", params=params)
        assert r.status_code == 200, r.headers  # an error, not a redirect
        assert field in assert_epay_error(r.json(), "不支持带参数")
        r = httpx.post(f"{server.base_url}/submit.php", data=params)
        assert field in assert_epay_error(r.json(), "不支持带参数")
        assert_no_order(server, test_cred, no)
    # Live: a public https URL with a query is refused for its query (not for the channel).
    live_urls = {"notify_url": "https://shop.example/notify",
                 "return_url": "https://shop.example/return"}
    live_urls[field] += "?shop=1"
    params = signed(order_params(live_cred, "QS-L", **live_urls), live_cred.key)
    assert field in assert_epay_error(mapi(server, params), "不支持带参数")
    assert_no_order(server, live_cred, "QS-L")
    assert (native_state(merchant.test), native_state(merchant.live)) == before
    # Without them, the same order goes through.
    created(server, test_cred, "QS-0", **{field: f"http://127.0.0.1:9/{field}"})


# --- 4. order queries ----------------------------------------------------------------------------

def test_order_query_reply_before_and_after_payment(server: KassaServer,
                                                    merchant: Merchant) -> None:
    cred = credential(merchant)
    trade_no = created(server, cred, "Q-1", money="10.5", param="金色 256G",
                       name="iphone xs Max 一台")["trade_no"]
    before = query(server, cred, out_trade_no="Q-1")
    if before["status"] == 1:  # the sandbox was quicker than this query: a slow machine
        pytest.fail("the order was paid before it could be queried unpaid (0.3 s)")
    assert set(before) == QUERY_FIELDS
    assert before == {**before, "code": 1, "msg": "查询订单号成功!", "trade_no": trade_no,
                      "out_trade_no": "Q-1", "type": "alipay", "pid": int(cred.pid),
                      "endtime": None, "name": "iphone xs Max 一台", "money": "10.50",
                      "status": 0, "trade_status": "WAIT_BUYER_PAY", "param": "金色 256G",
                      "buyer": "", "refund_money": "0.00"}
    assert isinstance(before["pid"], int)
    native = paid(server, merchant, trade_no)
    after = query(server, cred, trade_no=trade_no)
    assert set(after) == QUERY_FIELDS
    assert after == {**before, "status": 1, "trade_status": "TRADE_SUCCESS",
                     "endtime": after["endtime"]}
    # Beijing time, as the seed shows it: the native API's UTC times, 8 hours on.
    assert before["addtime"] == beijing(native["created_at"])
    assert after["endtime"] == beijing(native["paid_at"])
    # The server's clock (other tests of the session move it on), in Beijing time.
    now = server.ctx.clock.now().astimezone(SHANGHAI).replace(tzinfo=None)
    added = datetime.strptime(after["addtime"], LOCAL_TIME)
    ended = datetime.strptime(after["endtime"], LOCAL_TIME)
    assert added <= ended <= now + timedelta(seconds=2)
    assert now - added < timedelta(minutes=2)


def test_order_query_authentication(server: KassaServer, merchant: Merchant) -> None:
    cred = credential(merchant)
    trade_no = created(server, cred, "QA-1")["trade_no"]
    # The plain KEY, by out_trade_no, by trade_no, by both; GET or POST.
    for by in ({"out_trade_no": "QA-1"}, {"trade_no": trade_no},
               {"trade_no": trade_no, "out_trade_no": "QA-1"}):
        assert query(server, cred, **by)["trade_no"] == trade_no
        assert api(server, {"act": "order", "pid": cred.pid, "key": cred.key, **by},
                   "POST")["trade_no"] == trade_no
    # A sign over every other param, act included (no key sent).
    for by in ({"out_trade_no": "QA-1"}, {"trade_no": trade_no}):
        params = signed({"act": "order", "pid": cred.pid, **by}, cred.key)
        assert api(server, params)["trade_no"] == trade_no
        assert api(server, {**params, "sign": params["sign"].upper()})["trade_no"] == trade_no
        # A sign that leaves act out is not over every param: refused.
        without_act = md5_sign({"pid": cred.pid, **by}, cred.key)
        assert_epay_error(api(server, {**params, "sign": without_act}), "签名")
        assert_epay_error(api(server, signed({"act": "order", "pid": cred.pid, **by},
                                             cred.key + "x")), "签名")
    # Wrong or missing credentials.
    assert_epay_error(query(server, EpayCredential(cred.pid, cred.key + "x"),
                            out_trade_no="QA-1"), "key")
    assert_epay_error(query(server, EpayCredential(cred.pid, ""), out_trade_no="QA-1"))
    assert_epay_error(api(server, {"act": "order", "pid": cred.pid, "out_trade_no": "QA-1"}),
                      "sign")
    assert_epay_error(api(server, {"act": "order", "key": cred.key, "out_trade_no": "QA-1"}),
                      "pid")
    assert_epay_error(query(server, EpayCredential("1" + cred.pid, cred.key),
                            out_trade_no="QA-1"), "pid")
    # No order named, an unknown one, or both names but of different orders.
    assert_epay_error(query(server, cred), "trade_no")
    assert_epay_error(query(server, cred, out_trade_no="QA-404"), "订单号不存在")
    assert_epay_error(query(server, cred, trade_no="ord_00000000000000000000"), "订单号不存在")
    other = created(server, cred, "QA-2")["trade_no"]
    assert_epay_error(query(server, cred, trade_no=other, out_trade_no="QA-1"), "订单号不存在")
    # Unknown act.
    assert_epay_error(api(server, {"act": "orders", "pid": cred.pid, "key": cred.key,
                                   "out_trade_no": "QA-1"}), "act")


def test_order_query_isolation(server: KassaServer, merchant: Merchant) -> None:
    """Another merchant's PID and KEY, or this merchant's live ones, can't see the order."""
    cred = credential(merchant)
    trade_no = created(server, cred, "ISO-1")["trade_no"]
    someone = credential(server.merchant(name="Someone Else"))
    live = credential(merchant, "live")
    for who in (someone, live):
        assert_epay_error(query(server, who, out_trade_no="ISO-1"), "订单号不存在")
        assert_epay_error(query(server, who, trade_no=trade_no), "订单号不存在")
        signed_query = signed({"act": "order", "pid": who.pid, "trade_no": trade_no}, who.key)
        assert_epay_error(api(server, signed_query), "订单号不存在")
    # Their PID with this merchant's KEY, or the other way round: not authenticated.
    assert_epay_error(query(server, EpayCredential(someone.pid, cred.key), trade_no=trade_no),
                      "key")
    assert_epay_error(query(server, EpayCredential(cred.pid, someone.key), trade_no=trade_no),
                      "key")
    # A native (non-EasyPay) order of this very merchant is not an EasyPay order.
    native_id = pay(merchant.test, new_task(merchant.test)).json()["order_id"]
    paid(server, merchant, native_id)
    assert_epay_error(query(server, cred, trade_no=native_id), "订单号不存在")
    assert_epay_error(refund(server, cred, "10.00", trade_no=native_id), "订单号不存在")
    assert_epay_error(httpx.get(f"{server.base_url}/epay/return/{native_id}").json())
    # The same out_trade_no is the other merchant's own (unique per merchant, not global).
    theirs = created(server, someone, "ISO-1")["trade_no"]
    assert theirs != trade_no
    assert query(server, cred, out_trade_no="ISO-1")["trade_no"] == trade_no


# --- 5. end to end: the shop, the notification, the ledger -------------------------------------

@pytest.mark.parametrize(("money", "cents", "param"), [
    ("10.50", 1050, "金色 256G"), ("12.5", 1250, "a+b&c=d 100%#x")])
def test_end_to_end_shop_notification_and_ledger(server: KassaServer, merchant: Merchant,
                                                 money: str, cents: int, param: str) -> None:
    """12.50 yuan: the fee is 7.5 cents, rounded half up to 8; param is echoed exactly, URL
    metacharacters and all."""
    cred = credential(merchant)
    start = available(merchant)
    with running_shop(server.base_url, cred) as shop:
        reply = shop.create("E2E-1", money, name="iphone xs Max 一台", param=param)
        trade_no = reply["trade_no"]
        notice = shop.wait_for(1)[0]
        assert notice.ok, notice.problems
        assert notice.path == "/notify"
        assert set(notice.params) == NOTIFY_FIELDS
        assert notice.params == {**notice.params, "pid": cred.pid, "trade_no": trade_no,
                                 "out_trade_no": "E2E-1", "type": "alipay",
                                 "name": "iphone xs Max 一台",
                                 "money": f"{Decimal(cents) / 100:.2f}",
                                 "trade_status": "TRADE_SUCCESS", "param": param,
                                 "sign_type": "MD5"}
        assert re.fullmatch(r"[0-9a-f]{32}", notice.params["sign"])
        delivery = wait_delivery(merchant, trade_no, "succeeded")
        assert delivery["attempt_count"] == 1
        assert delivery["url"] == shop.notify_url
        time.sleep(0.5)
        assert len(shop.received()) == 1
    native = native_order(merchant, trade_no)
    assert (native["status"], native["type"], native["amount"], native["currency"]) == (
        "completed", "collection", cents, "CNY")
    assert native["cost_breakdown"]["platform_fee_cents"] == fee(cents)
    assert available(merchant) == start + cents - fee(cents)
    _, history = native_state(merchant.test)
    assert [(t["type"], t["order_id"], t["amount"], t["status"]) for t in history] == [
        ("collection", trade_no, cents, "completed")]
    # The shop sending its order again after payment: the same order, no second credit.
    again = shop.create("E2E-1", money, name="iphone xs Max 一台", param=param)
    assert again["trade_no"] == trade_no
    assert available(merchant) == start + cents - fee(cents)


def _fail_twice(n: Notification, count: int) -> tuple[int, bytes]:
    return (200, b"fail") if count < 2 else (200, b"success")


def test_notification_retried_until_success(server: KassaServer, merchant: Merchant) -> None:
    cred = credential(merchant)
    with running_shop(server.base_url, cred, answer=_fail_twice) as shop:
        trade_no = shop.create("RT-1", "20.00")["trade_no"]
        got = shop.wait_for(3)
        delivery = wait_delivery(merchant, trade_no, "succeeded")
        time.sleep(1.2)  # longer than the rest of the schedule: nothing more comes
        got = shop.received()
    assert len(got) == 3
    assert all(n.ok for n in got), [n.problems for n in got]
    assert got[0].params == got[1].params == got[2].params  # signed identically each time
    assert got[0].query == got[1].query == got[2].query
    assert delivery["attempt_count"] == 3
    assert [a["response_excerpt"] for a in delivery["attempts"]] == ["fail", "fail", "success"]
    assert available(merchant) == 2000 - fee(2000)  # credited once


def _always_ok(n: Notification, count: int) -> tuple[int, bytes]:
    return 200, b"ok"


def test_notification_given_up_after_the_schedule(server: KassaServer,
                                                  merchant: Merchant) -> None:
    """A shop answering HTTP 200 `ok` (not `success`) gets 5 attempts (the test schedule),
    then the delivery is failed; the order was credited exactly once."""
    cred = credential(merchant)
    with running_shop(server.base_url, cred, answer=_always_ok) as shop:
        trade_no = shop.create("RT-2", "30.00")["trade_no"]
        delivery = wait_delivery(merchant, trade_no, "failed", timeout=15)
        time.sleep(0.5)
        got = shop.received()
    assert len(got) == 5
    assert all(n.ok for n in got) and len({n.query for n in got}) == 1
    assert delivery["protocol"] == "epay"
    assert delivery["attempt_count"] == 5
    assert len(delivery["attempts"]) == 5
    assert all(a["status_code"] == 200 and a["error"] for a in delivery["attempts"])
    # The schedule's gaps (0.2, 0.2, 0.5, 1.0 s): at least those, give or take a poll.
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(g >= want - 0.05 for g, want in zip(gaps, [0.2, 0.2, 0.5, 1.0], strict=True)
               ), gaps
    assert available(merchant) == 3000 - fee(3000)
    assert native_order(merchant, trade_no)["status"] == "completed"


@pytest.mark.parametrize("word", [b"success", b"success\r\n", b" success ", b"\tsuccess\n",
                                  b"\xef\xbb\xbfsuccess", b"\xef\xbb\xbf success\r\n"])
def test_success_reply_tolerances(server: KassaServer, merchant: Merchant,
                                  word: bytes) -> None:
    """`success` exactly, give or take surrounding whitespace and a UTF-8 BOM."""
    cred = credential(merchant)
    with running_shop(server.base_url, cred, answer=lambda n, c: (200, word)) as shop:
        trade_no = shop.create("W-1", "10.00")["trade_no"]
        delivery = wait_delivery(merchant, trade_no, "succeeded")
        time.sleep(0.4)
        assert len(shop.received()) == 1
    assert delivery["attempt_count"] == 1


@pytest.mark.parametrize(("status", "word"), [(500, b"success"), (200, b"successful"),
                                              (200, b"fail"), (204, b""),
                                              (200, b"<html>success</html>"),
                                              (200, b"SUCCESS"), (200, b" Success "),
                                              (200, b"Success"), (200, b"succ ess")])
def test_anything_but_success_is_retried(server: KassaServer, merchant: Merchant,
                                         status: int, word: bytes) -> None:
    """Anything but `success` (exactly: seed 003's 纯字符串success, case and all) is a
    failure, retried on the schedule; the order is credited once."""
    cred = credential(merchant)

    def answer(n: Notification, count: int) -> tuple[int, bytes]:
        return (status, word) if count == 0 else (200, b"success")

    with running_shop(server.base_url, cred, answer=answer) as shop:
        trade_no = shop.create("W-2", "10.00")["trade_no"]
        delivery = wait_delivery(merchant, trade_no, "succeeded")
        assert len(shop.received()) == 2
    assert delivery["attempt_count"] == 2
    assert [bool(a["error"]) for a in delivery["attempts"]] == [True, False], delivery
    assert available(merchant) == 1000 - fee(1000)


# --- 7. refunds -----------------------------------------------------------------------------------

REFUND_FIELDS = {"code", "msg", "refund_no", "out_refund_no", "trade_no", "out_trade_no",
                 "money", "status"}


def test_refunds(server: KassaServer, merchant: Merchant) -> None:
    cred = credential(merchant)
    with running_shop(server.base_url, cred) as shop:
        a = shop.create("RF-A", "20.00")["trade_no"]
        b = shop.create("RF-B", "30.00")["trade_no"]
        paid(server, merchant, a)
        paid(server, merchant, b)
        shop.wait_for(2)
        net = 2000 - fee(2000) + 3000 - fee(3000)
        assert available(merchant) == net
        assert (fee_kept(merchant, a), fee_kept(merchant, b)) == (fee(2000), fee(3000)) == (
            12, 18)

        # Part of A, with the plain KEY: 5.00 goes back to the payer, its share of the
        # channel fee (0.6% of 5.00 = 3 cents) from the platform, the rest (4.97) from the
        # available balance.
        reply = refund(server, cred, "5", trade_no=a)
        assert reply["code"] == 1, reply
        assert set(reply) == REFUND_FIELDS, reply
        assert re.fullmatch(r"ref_[0-9a-f]{20}", reply["refund_no"]), reply
        assert reply["out_refund_no"] is None
        assert reply["status"] == "processing"
        assert (reply["trade_no"], reply["out_trade_no"], reply["money"]) == (a, "RF-A", "5.00")
        assert available(merchant) == net - (500 - fee(500)) == net - 497
        settled(merchant)  # the sandbox channel confirms it (0.3 s)
        assert native_order(merchant, a)["refunded_cents"] == 500
        assert fee_kept(merchant, a) == fee(2000) - fee(500) == 9
        shown = query(server, cred, trade_no=a)
        assert (shown["status"], shown["refund_money"], shown["money"]) == (1, "5.00", "20.00")
        assert available(merchant) == net - 497

        # More than is left: refused, nothing changes.
        before = native_state(merchant.test)
        assert_epay_error(refund(server, cred, "15.01", out_trade_no="RF-A"))
        assert_epay_error(refund(server, cred, "20.00", trade_no=a))
        # Bad money, a wrong key, a wrong sign, an unknown order: refused.
        for money in ("0", "-1", "1.001", "abc"):
            assert_epay_error(refund(server, cred, money, trade_no=a), "money")
        assert_epay_error(refund(server, EpayCredential(cred.pid, cred.key + "x"), "1",
                                 trade_no=a), "key")
        bad_sign = signed({"act": "refund", "pid": cred.pid, "trade_no": a, "money": "1"},
                          cred.key + "x")
        assert_epay_error(api(server, bad_sign, "POST"), "签名")
        assert_epay_error(refund(server, cred, "1", out_trade_no="RF-404"), "订单号不存在")
        someone = credential(server.merchant(name="Someone Else"))
        assert_epay_error(refund(server, someone, "1", trade_no=a), "订单号不存在")
        time.sleep(0.4)
        assert native_state(merchant.test) == before
        assert query(server, cred, trade_no=a)["refund_money"] == "5.00"
        assert fee_kept(merchant, a) == 9

        # The rest of A, signed instead of the KEY (act in the query string and signed): all
        # the fee still kept (9 cents) comes back with it, so A in the end took from the
        # balance exactly what it brought in.
        params = signed({"act": "refund", "pid": cred.pid, "out_trade_no": "RF-A",
                         "money": "15.00"}, cred.key)
        r = httpx.post(f"{server.base_url}/api.php?act=refund",
                       data={k: v for k, v in params.items() if k != "act"})
        assert r.json()["code"] == 1, r.text
        server.wait_for_status(merchant.test, a, "refunded")
        shown = query(server, cred, out_trade_no="RF-A")
        assert (shown["status"], shown["refund_money"], shown["trade_status"]) == (
            2, "20.00", "TRADE_SUCCESS")
        assert fee_kept(merchant, a) == 0
        assert settled(merchant)["balance_cents"] == net - (2000 - fee(2000)) == 3000 - fee(3000)
        assert_epay_error(refund(server, cred, "0.01", trade_no=a))

        # An order not paid yet (asked before the sandbox's 0.3 s are up).
        c = shop.create("RF-C", "10.00")["trade_no"]
        assert_epay_error(refund(server, cred, "10.00", trade_no=c))
        paid(server, merchant, c)
        shop.wait_for(3)
        time.sleep(0.3)
        # Refunds notify nothing: one notification per paid order.
        assert sorted((n.method, n.params.get("out_trade_no")) for n in shop.received()) == [
            ("GET", "RF-A"), ("GET", "RF-B"), ("GET", "RF-C")]
    assert native_order(merchant, b)["refunded_cents"] == 0
    assert fee_kept(merchant, b) == fee(3000)


def test_refunds_at_once_never_exceed_the_order(server: KassaServer,
                                                merchant: Merchant) -> None:
    """Six refunds of 15.00 on a 20.00 order at once: one goes through (and gives back its
    share of the fee, once)."""
    cred = credential(merchant)
    a = created(server, cred, "RC-A", money="20.00")["trade_no"]
    b = created(server, cred, "RC-B", money="30.00")["trade_no"]
    paid(server, merchant, a)
    paid(server, merchant, b)
    net = 2000 - fee(2000) + 3000 - fee(3000)
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: refund(server, cred, "15.00", trade_no=a), range(6)))
    assert sorted(str(r["code"]) for r in replies) == ["1"] + ["error"] * 5, replies
    settled(merchant)
    assert native_order(merchant, a)["refunded_cents"] == 1500
    assert query(server, cred, trade_no=a)["refund_money"] == "15.00"
    assert fee_kept(merchant, a) == fee(2000) - fee(1500) == 12 - 9
    assert available(merchant) == net - (1500 - fee(1500))


@pytest.mark.parametrize(("money", "parts", "returned"), [
    # 12.50 yuan: the fee is 7.5 cents, rounded half up to 8. 7.50 of it: 4.5 -> 5 (half
    # up, not to even); the rest takes the 3 left.
    ("12.50", ["7.50", "5.00"], [5, 3]),
    # 10.00 (fee 6): 0.01 gives back round(0.006) = 0; the rest, all 6.
    ("10.00", ["0.01", "9.99"], [0, 6]),
    # 12.40 (fee 7.44 -> 7): 10.84 takes 6.504 -> 7, all of it; 1.00 would take 0.6 -> 1,
    # but nothing is left (capped at 0); the rest, 0.
    ("12.40", ["10.84", "1.00", "0.56"], [7, 0, 0]),
])
def test_partial_refunds_give_the_fee_back_in_proportion(
        server: KassaServer, merchant: Merchant, money: str, parts: list[str],
        returned: list[int]) -> None:
    """Each refund of R takes R - fb from the available balance and fb from the platform,
    fb = min(round_half_up(R * 60 / 10000), the fee left); the one that takes the rest of
    the order takes the rest of the fee. Refunds that sum to the whole order give the whole
    fee back: the balance is where it was before the order (the ledger's invariants are
    checked after the test)."""
    cred = credential(merchant)
    total = int(Decimal(money) * 100)
    cents = [int(Decimal(p) * 100) for p in parts]
    assert sum(cents) == total
    assert fee_returns(total, cents) == returned  # the rule, independently, on these numbers
    assert sum(returned) == fee(total)
    trade_no = created(server, cred, "PR-1", money=money)["trade_no"]
    paid(server, merchant, trade_no)
    balance = total - fee(total)
    assert available(merchant) == balance
    kept = fee(total)
    refund_nos = []
    for part, cents_back, fee_back in zip(parts, cents, returned, strict=True):
        reply = refund(server, cred, part, trade_no=trade_no)
        assert reply["code"] == 1, reply
        assert reply["money"] == part
        refund_nos.append(reply["refund_no"])
        balance -= cents_back - fee_back
        kept -= fee_back
        assert available(merchant) == balance  # debited when the refund is asked for
        assert fee_kept(merchant, trade_no) == kept
    assert balance == 0 and kept == 0
    final = settled(merchant)
    assert (final["balance_cents"], final["refunds_in_flight_cents"]) == (0, 0)
    server.wait_for_status(merchant.test, trade_no, "refunded")
    shown = query(server, cred, trade_no=trade_no)
    assert (shown["status"], shown["refund_money"]) == (2, money)
    assert fee_kept(merchant, trade_no) == 0
    rows = transactions(merchant, type="refund")
    assert sorted((t["refund_id"], t["amount"], t["order_id"]) for t in rows) == sorted(
        zip(refund_nos, cents, [trade_no] * len(parts), strict=True))


def test_a_lone_order_is_refunded_in_full(server: KassaServer, merchant: Merchant) -> None:
    """The balance holds the order's amount less its fee; a full refund takes exactly that
    and the fee comes back from the platform: the balance is back where it was, nothing of
    the fee is kept, and the order is refunded (status 2)."""
    cred = credential(merchant)
    trade_no = created(server, cred, "RB-1", money="10.00")["trade_no"]
    paid(server, merchant, trade_no)
    assert available(merchant) == 1000 - fee(1000) == 994
    reply = refund(server, cred, "10.00", trade_no=trade_no)
    assert reply["code"] == 1, reply
    assert available(merchant) == 0
    assert fee_kept(merchant, trade_no) == 0
    final = settled(merchant)
    assert (final["balance_cents"], final["refunds_in_flight_cents"]) == (0, 0)
    server.wait_for_status(merchant.test, trade_no, "refunded")
    shown = query(server, cred, trade_no=trade_no)
    assert (shown["status"], shown["refund_money"]) == (2, "10.00")
    assert_epay_error(refund(server, cred, "0.01", trade_no=trade_no))


def test_refund_needs_the_balance(server: KassaServer, merchant: Merchant) -> None:
    """A refund is paid from the available balance (less the fee it gives back): once the
    merchant has spent the money, a refund it can't cover is refused and changes nothing;
    one it can cover to the cent still goes through."""
    cred = credential(merchant)
    trade_no = created(server, cred, "RB-2", money="20.00")["trade_no"]
    paid(server, merchant, trade_no)
    assert available(merchant) == 2000 - fee(2000) == 1988
    # Spent meanwhile: a task paid from the balance (native API).
    r = pay(merchant.test, new_task(merchant.test, amount=1000), amount=1000,
            payment_method="balance")
    assert r.status_code == 201, r.text
    assert available(merchant) == 988
    before = native_state(merchant.test)
    # The whole order needs 19.88; 10.00 needs 10.00 - 0.06 = 9.94: both more than 9.88.
    assert_epay_error(refund(server, cred, "20.00", trade_no=trade_no), "退款失败")
    assert_epay_error(refund(server, cred, "10.00", trade_no=trade_no), "退款失败")
    time.sleep(0.4)
    assert native_state(merchant.test) == before
    assert fee_kept(merchant, trade_no) == fee(2000)
    assert query(server, cred, trade_no=trade_no)["refund_money"] == "0.00"
    # 9.94 needs 9.94 - 0.06 (round_half_up(5.964) = 6) = 9.88: exactly the balance.
    assert refund(server, cred, "9.94", trade_no=trade_no)["code"] == 1
    assert available(merchant) == 0
    assert fee_kept(merchant, trade_no) == fee(2000) - fee(994) == 6
    settled(merchant)
    assert query(server, cred, trade_no=trade_no)["refund_money"] == "9.94"


def test_a_refund_the_channel_refuses_gives_the_fee_back_to_the_platform(
        server: KassaServer, merchant: Merchant) -> None:
    """A refund the channel refuses (the sandbox's test_outcome failed, through the native
    API: EasyPay can't ask for it) is reversed, its fee share included: the balance, the fee
    kept and the amount refunded are as before it, and the whole order can still be
    refunded through EasyPay."""
    cred = credential(merchant)
    trade_no = created(server, cred, "RX-1", money="20.00")["trade_no"]
    paid(server, merchant, trade_no)
    net = 2000 - fee(2000)
    r = merchant.test.post("/api/v1/payment/refund", json={
        "order_id": trade_no, "amount": 500, "reason": "duplicate_payment",
        "test_outcome": "failed"})
    assert r.status_code == 200, r.text
    assert available(merchant) == net - (500 - fee(500))
    assert fee_kept(merchant, trade_no) == fee(2000) - fee(500)
    final = settled(merchant)  # the channel's refusal (0.3 s) reverses it
    assert (final["balance_cents"], final["refunds_in_flight_cents"]) == (net, 0)
    assert fee_kept(merchant, trade_no) == fee(2000)
    assert native_order(merchant, trade_no)["refunded_cents"] == 0
    shown = query(server, cred, trade_no=trade_no)
    assert (shown["status"], shown["refund_money"]) == (1, "0.00")
    assert refund(server, cred, "20.00", trade_no=trade_no)["code"] == 1
    assert settled(merchant)["balance_cents"] == 0
    assert fee_kept(merchant, trade_no) == 0


def _refund_signed(server: KassaServer, cred: EpayCredential, **params: str) -> dict[str, Any]:
    return api(server, signed({"act": "refund", "pid": cred.pid, **params}, cred.key), "POST")


def test_out_refund_no_makes_a_refund_idempotent(server: KassaServer,
                                                 merchant: Merchant) -> None:
    """With out_refund_no, the same number and money again is the same refund (same
    refund_no, the balance debited once), with the KEY or signed, even once the order is
    refunded in full; the number with other money is an error that changes nothing.
    Without one, every request is a new refund."""
    cred = credential(merchant)
    trade_no = created(server, cred, "OR-1", money="20.00")["trade_no"]
    paid(server, merchant, trade_no)
    net = 2000 - fee(2000)
    first = refund(server, cred, "5.00", trade_no=trade_no, out_refund_no="R-1")
    assert first["code"] == 1, first
    assert set(first) == REFUND_FIELDS
    assert (first["out_refund_no"], first["money"], first["trade_no"]) == ("R-1", "5.00",
                                                                          trade_no)
    after_first = net - (500 - fee(500))
    assert available(merchant) == after_first
    settled(merchant)
    for again in (refund(server, cred, "5.00", trade_no=trade_no, out_refund_no="R-1"),
                  refund(server, cred, "5", out_trade_no="OR-1", out_refund_no="R-1"),
                  _refund_signed(server, cred, trade_no=trade_no, money="5.00",
                                 out_refund_no="R-1")):
        assert again["code"] == 1, again
        assert (again["refund_no"], again["out_refund_no"], again["money"]) == (
            first["refund_no"], "R-1", "5.00")
    assert available(merchant) == after_first
    assert query(server, cred, trade_no=trade_no)["refund_money"] == "5.00"
    assert [t["refund_id"] for t in transactions(merchant, type="refund")] == [
        first["refund_no"]]
    # The same number for other money: an error, and nothing changes.
    before = native_state(merchant.test)
    for money in ("6.00", "4.99", "15.00"):
        assert_epay_error(refund(server, cred, money, trade_no=trade_no, out_refund_no="R-1"))
    # A number longer than 64 characters, not ASCII, or with a space: refused.
    assert_epay_error(refund(server, cred, "1.00", trade_no=trade_no,
                             out_refund_no="R" * 65), "out_refund_no")
    assert_epay_error(refund(server, cred, "1.00", trade_no=trade_no,
                             out_refund_no="退款-1"), "out_refund_no")
    assert_epay_error(refund(server, cred, "1.00", trade_no=trade_no,
                             out_refund_no="R 1"), "out_refund_no")
    time.sleep(0.4)
    assert native_state(merchant.test) == before
    # Another number (64 characters: the longest) is another refund.
    second = refund(server, cred, "5.00", trade_no=trade_no, out_refund_no="R" * 64)
    assert second["code"] == 1, second
    assert second["refund_no"] != first["refund_no"]
    assert second["out_refund_no"] == "R" * 64
    # Without a number, the same request twice is two refunds (the rest of the order).
    plain = [refund(server, cred, "5.00", trade_no=trade_no) for _ in range(2)]
    assert [p["code"] for p in plain] == [1, 1], plain
    assert plain[0]["out_refund_no"] is None
    assert len({first["refund_no"], second["refund_no"], *(p["refund_no"] for p in plain)}) == 4
    server.wait_for_status(merchant.test, trade_no, "refunded")
    assert settled(merchant)["balance_cents"] == 0  # the whole order, its whole fee back
    # The first number again, once the order is refunded in full: still the same refund.
    again = refund(server, cred, "5.00", trade_no=trade_no, out_refund_no="R-1")
    assert (again["code"], again["refund_no"]) == (1, first["refund_no"]), again
    assert available(merchant) == 0
    assert query(server, cred, trade_no=trade_no)["refund_money"] == "20.00"
    assert len(transactions(merchant, type="refund")) == 4


def test_the_same_out_refund_no_sent_at_once_is_one_refund(server: KassaServer,
                                                           merchant: Merchant) -> None:
    """A client retrying its refund several times at once, with its refund number: every
    reply is the same refund, and the balance is debited once."""
    cred = credential(merchant)
    trade_no = created(server, cred, "OR-2", money="20.00")["trade_no"]
    paid(server, merchant, trade_no)
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: refund(server, cred, "15.00", trade_no=trade_no,
                                                 out_refund_no="RACE-1"), range(6)))
    assert all(r["code"] == 1 for r in replies), replies
    assert len({r["refund_no"] for r in replies}) == 1, replies
    settled(merchant)
    assert available(merchant) == 2000 - fee(2000) - (1500 - fee(1500))
    assert query(server, cred, trade_no=trade_no)["refund_money"] == "15.00"
    assert [t["refund_id"] for t in transactions(merchant, type="refund")] == [
        replies[0]["refund_no"]]


def test_transactions_of_type_collection(server: KassaServer, merchant: Merchant) -> None:
    """GET /api/v1/payment/transactions?type=collection lists the EasyPay orders' rows, and
    only them: their refunds are type refund, a native order type payment."""
    cred = credential(merchant)
    a = created(server, cred, "TX-A", money="20.00")["trade_no"]
    b = created(server, cred, "TX-B", money="10.00", type="wxpay")["trade_no"]
    native_id = pay(merchant.test, new_task(merchant.test)).json()["order_id"]
    for order_id in (a, b, native_id):
        paid(server, merchant, order_id)
    refund_no = refund(server, cred, "5.00", trade_no=a)["refund_no"]
    collections = transactions(merchant, type="collection")
    assert sorted((t["type"], t["order_id"], t["refund_id"], t["amount"], t["currency"],
                   t["status"]) for t in collections) == sorted([
        ("collection", a, None, 2000, "CNY", "completed"),
        ("collection", b, None, 1000, "CNY", "completed")])
    assert [(t["type"], t["order_id"], t["refund_id"], t["amount"])
            for t in transactions(merchant, type="refund")] == [("refund", a, refund_no, 500)]
    assert [(t["type"], t["order_id"]) for t in transactions(merchant, type="payment")] == [
        ("payment", native_id)]
    everything = transactions(merchant)
    assert len(everything) == 4
    assert {t["transaction_id"] for t in collections} <= {t["transaction_id"]
                                                          for t in everything}
    # With a status too, and paged.
    assert len(transactions(merchant, type="collection", status="completed")) == 2
    assert transactions(merchant, type="collection", status="failed") == []
    r = merchant.test.get("/api/v1/payment/transactions", params={"type": "collection",
                                                                  "limit": 1})
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["data"]) == 1 and page["has_more"] is True
    r = merchant.test.get("/api/v1/payment/transactions", params={
        "type": "collection", "limit": 1, "starting_after": page["next_cursor"]})
    assert r.status_code == 200, r.text
    assert [t["order_id"] for t in page["data"] + r.json()["data"]] == [
        t["order_id"] for t in collections]
    # An unknown type is still refused.
    r = merchant.test.get("/api/v1/payment/transactions", params={"type": "collections"})
    assert r.status_code == 400, r.text


# --- 8. the browser's return ---------------------------------------------------------------------

def test_browser_return(server: KassaServer, merchant: Merchant) -> None:
    cred = credential(merchant)
    with running_shop(server.base_url, cred) as shop:
        trade_no = shop.create("RET-1", "10.00", param="金色 256G",
                               return_url=shop.return_url)["trade_no"]
        r = httpx.get(f"{server.base_url}/epay/return/{trade_no}")
        assert r.status_code == 200
        assert_epay_error(r.json())
        paid(server, merchant, trade_no)
        r = httpx.get(f"{server.base_url}/epay/return/{trade_no}")
        assert r.status_code == 302, r.text
        target = urlsplit(r.headers["location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == shop.return_url
        params = dict(parse_qsl(target.query, keep_blank_values=True))
        assert set(params) == NOTIFY_FIELDS
        assert shop.problems(params) == []
        assert (params["trade_no"], params["money"], params["param"]) == (trade_no, "10.00",
                                                                          "金色 256G")
        # Unknown orders, and a paid order that gave no return_url.
        assert_epay_error(httpx.get(f"{server.base_url}/epay/return/ord_00000000000000000000"
                                    ).json())
        no_return = shop.create("RET-2", "10.00")["trade_no"]
        paid(server, merchant, no_return)
        r = httpx.get(f"{server.base_url}/epay/return/{no_return}")
        assert r.status_code == 200
        assert_epay_error(r.json(), "return_url")
