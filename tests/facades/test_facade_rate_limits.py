"""The protocol facades' rate limit (both databases): counted only once a request's
credentials are checked, on a quota of its own per account and mode. A flood of requests
with a merchant's public EasyPay PID (or crypto-gateway API key) but a wrong sign never uses
up the merchant's quota, and facade traffic never uses up the native API's (nor the other
way round). A request refused for the limit changes nothing.

The server here is a sibling of the session's, on the same database, allowing 5 requests
per 3 seconds per key (the session's allows 100,000); every test has a fresh merchant, so a
fresh quota."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.facades.cryptogw_shop import CREATE, CryptoClient
from tests.facades.epay_shop import credential, signed
from tests.facades.test_epay import api, assert_epay_error, mapi, order_params, query
from tests.support.harness import KassaServer, Merchant, make_settings

# A 3-second window: a loaded CI box sends 22 requests in about 1 s, with room to spare.
WINDOW = 3.0
RATE = f"5 per {WINDOW:g} second"
FLOOD = 20


@pytest.fixture(scope="module")
def limited(server: KassaServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[KassaServer]:
    """A second server on the session server's database, allowing 5 requests per second per
    key; the session server's worker settles what it creates."""
    tmp = tmp_path_factory.mktemp(f"kassa-facade-limits-{server.backend}")
    sibling = KassaServer(make_settings(tmp, server.settings.database_url, rate_limit=RATE),
                          run_worker=False).start()
    yield sibling
    sibling.stop()


@pytest.fixture
def native(limited: KassaServer, merchant: Merchant) -> Iterator[httpx.Client]:
    """The merchant's native API client (test key), on the limited server."""
    client = limited.client(merchant.test_key, merchant.test_secret)
    yield client
    client.close()


def native_ok(client: httpx.Client) -> None:
    r = client.get("/api/v1/payment/balance")
    assert r.status_code == 200, r.text


def native_exhausted(client: httpx.Client) -> None:
    """Native calls until one is refused for the rate limit (at most 6 in the window)."""
    started = time.monotonic()
    for _ in range(6):
        r = client.get("/api/v1/payment/balance")
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limit_exceeded", r.text
            assert time.monotonic() - started < WINDOW - 0.3
            return
        assert r.status_code == 200, r.text
    raise AssertionError("six native calls in the window were all accepted")


def epay_mapi(server: KassaServer, params: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/mapi.php", data=params, timeout=30)


def assert_epay_limited(r: httpx.Response) -> None:
    """429 with the seed's error shape and a Retry-After."""
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert_epay_error(r.json())
    assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1


def transaction_ids(merchant: Merchant) -> list[str]:
    r = merchant.test.get("/api/v1/payment/transactions", params={"limit": 100})
    assert r.status_code == 200, r.text
    return sorted(t["order_id"] for t in r.json()["data"])


# --- EasyPay ----------------------------------------------------------------------------------

def test_epay_wrong_signs_do_not_use_up_the_merchants_quota(
        limited: KassaServer, merchant: Merchant, native: httpx.Client) -> None:
    """5 queries with a wrong KEY and 20 orders with a wrong sign, all with the merchant's
    PID, the last of them well inside a second of what follows: each refused for its
    credentials, never for the limit; then a correctly signed order and a native call both
    go through."""
    cred = credential(merchant)
    for _ in range(5):
        assert_epay_error(api(limited, {"act": "order", "pid": cred.pid, "key": "wrong",
                                        "out_trade_no": "RLW-0"}), "key")
    sent_at = []
    for i in range(FLOOD):
        sent_at.append(time.monotonic())
        bad = signed(order_params(cred, f"RLW-{i}"), cred.key + "x")
        assert_epay_error(mapi(limited, bad), "签名")
    good = mapi(limited, signed(order_params(cred, "RLW-OK"), cred.key))
    window = time.monotonic() - sent_at[-5]
    assert window < WINDOW - 0.3, f"the last wrong signs took {window:.2f}s: too slow"
    assert good["code"] == 1, good
    native_ok(native)
    assert transaction_ids(merchant) == [good["trade_no"]]


def test_epay_quota_is_its_own(server: KassaServer, limited: KassaServer,
                               merchant: Merchant, native: httpx.Client) -> None:
    """20 correctly signed order queries at once: 5 are answered, the rest get 429
    {"code":"error"}; an order and a refund sent then are refused the same way and change
    nothing. The native API still answers meanwhile; and with the native quota used up,
    EasyPay answers again once its own window has moved on."""
    cred = credential(merchant)
    trade_no = mapi(server, signed(order_params(cred, "RLS-0"), cred.key))["trade_no"]
    server.wait_for_status(merchant.test, trade_no, "completed")
    signed_query = signed({"act": "order", "pid": cred.pid, "out_trade_no": "RLS-0"}, cred.key)
    started = time.monotonic()
    replies = [httpx.get(f"{limited.base_url}/api.php", params=signed_query)
               for _ in range(FLOOD)]
    create = epay_mapi(limited, signed(order_params(cred, "RLS-1"), cred.key))
    refund = httpx.post(f"{limited.base_url}/api.php?act=refund", data={
        "pid": cred.pid, "key": cred.key, "out_trade_no": "RLS-0", "money": "1.00"})
    elapsed = time.monotonic() - started
    assert elapsed < WINDOW - 0.3, f"{FLOOD + 2} requests took {elapsed:.2f}s: too slow"
    native_ok(native)  # the native quota is untouched
    assert [r.status_code for r in replies] == [200] * 5 + [429] * (FLOOD - 5), [
        r.text for r in replies]
    assert all(r.json()["trade_no"] == trade_no for r in replies[:5])
    for r in (*replies[5:], create, refund):
        assert_epay_limited(r)
    # What was refused for the limit did nothing (asked of the unlimited server).
    assert_epay_error(query(server, cred, out_trade_no="RLS-1"), "订单号不存在")
    assert query(server, cred, out_trade_no="RLS-0")["refund_money"] == "0.00"
    assert transaction_ids(merchant) == [trade_no]

    time.sleep(WINDOW + 0.1)  # the facade's window moves on
    native_exhausted(native)
    assert query(limited, cred, out_trade_no="RLS-0")["trade_no"] == trade_no
    assert mapi(limited, signed(order_params(cred, "RLS-1"), cred.key))["code"] == 1


# --- the crypto gateway ------------------------------------------------------------------------

def crypto_client(at: KassaServer, merchant: Merchant) -> CryptoClient:
    [c] = [c for c in merchant.account.protocol_credentials
           if c.protocol == "cryptogw" and c.mode == "test"]
    return CryptoClient(at.base_url, c.id, c.secret)


def order_body(order_no: str) -> dict[str, Any]:
    return {"order_no": order_no, "currency": "USD", "amount": "20.00", "chain_type": "bsc",
            "product_name": "Rate limited", "notify_url": "http://127.0.0.1:9/notify"}


def test_crypto_wrong_signatures_do_not_use_up_the_quota(
        limited: KassaServer, merchant: Merchant, native: httpx.Client) -> None:
    gw = crypto_client(limited, merchant)
    try:
        sent_at = []
        for i in range(FLOOD):
            sent_at.append(time.monotonic())
            r = gw.create(order_body(f"RateWrong{i:03d}"), secret="not-the-secret")
            assert r.status_code == 401, r.text
            assert r.json()["code"] == 10001, r.text
        good = gw.create(order_body("RateGood0001"))
        window = time.monotonic() - sent_at[-5]
        assert window < WINDOW - 0.3, f"the last wrong signatures took {window:.2f}s: too slow"
        assert good.status_code == 200, good.text
        assert good.json()["code"] == 10000
        native_ok(native)
        assert transaction_ids(merchant) == [good.json()["data"]["id"]]
    finally:
        gw.close()


def test_crypto_quota_is_its_own_and_a_limited_request_can_be_sent_again(
        server: KassaServer, limited: KassaServer, merchant: Merchant,
        native: httpx.Client) -> None:
    """20 correctly signed queries at once: 5 are answered, the rest get 429 code 10008 with
    a Retry-After; a create sent then is refused the same way and creates nothing, nor uses
    up its nonce: the same bytes and headers go through later. The native API answers
    meanwhile, and using up its quota leaves the gateway's alone."""
    unlimited = crypto_client(server, merchant)
    try:
        first = unlimited.create(order_body("RateSame0000"))
    finally:
        unlimited.close()
    assert first.status_code == 200, first.text
    order_id = first.json()["data"]["id"]
    gw = crypto_client(limited, merchant)
    try:
        started = time.monotonic()
        replies = [gw.query({"id": order_id}) for _ in range(FLOOD)]
        raw = json.dumps(order_body("RateSame0001")).encode()
        headers = gw.headers(raw)
        create = gw.send(CREATE, raw, headers)
        elapsed = time.monotonic() - started
        assert elapsed < WINDOW - 0.3, f"{FLOOD + 1} requests took {elapsed:.2f}s: too slow"
        native_ok(native)
        assert [r.status_code for r in replies] == [200] * 5 + [429] * (FLOOD - 5), [
            r.text for r in replies]
        assert all(r.json()["data"]["id"] == order_id for r in replies[:5])
        for r in (*replies[5:], create):
            assert r.status_code == 429, r.text
            assert r.json()["code"] == 10008, r.text
            assert set(r.json()) == {"code", "message"}
            assert int(r.headers["Retry-After"]) >= 1
        assert transaction_ids(merchant) == [order_id]

        time.sleep(WINDOW + 0.1)
        native_exhausted(native)  # ... which leaves the gateway's quota alone
        again = gw.send(CREATE, raw, headers)  # the same nonce: it was never used
        assert again.status_code == 200, again.text
        assert again.json()["data"]["order_no"] == "RateSame0001"
        assert len(transaction_ids(merchant)) == 2
    finally:
        gw.close()
