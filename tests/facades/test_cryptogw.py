"""The crypto gateway (seed 002) as a merchant's integration speaks it, byte for byte: every
request signed by the tests' own HMAC code (tests/facades/cryptogw_shop.py), on SQLite and
PostgreSQL. Ledger effects are confirmed through the native API."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Any

import httpx
import pytest

from kassa.accounts.schemas import ProtocolCredential
from tests.facades.cryptogw_shop import (
    CREATE,
    QUERY,
    CryptoClient,
    FakeShop,
    new_nonce,
    replies,
    signature,
    unix_now,
)
from tests.support.harness import KassaServer, Merchant

# The seed's "Request Body Example (JSON)", exactly as printed.
SEED_BODY = """{
  "order_no": "Pay1678886400000",
  "currency": "EUR",
  "amount": "0.1",
  "chain_type": "BSC",
  "product_name": "Test product name",
  "notify_url": "http://your.domain/notify",
  "redirect_url": "http://your.domain/redirect",
  "meta": "id:123"
}"""
# The keys of the seed's "Successful Response Example" data, with their types.
SEED_DATA_TYPES = {"id": str, "order_no": str, "currency": str, "amount": str,
                   "order_amount": str, "cancel_time": int, "state": int, "pay_url": str}
USDT_FEE_BPS = 100  # settings.collection_fee_bps["usdt"]
RATES = {"CNY": Decimal(1), "USD": Decimal("7.1"), "EUR": Decimal("7.7"),
         "USDT": Decimal("7.1")}


def credential(merchant: Merchant, mode: str = "test") -> ProtocolCredential:
    [found] = [c for c in merchant.account.protocol_credentials
               if c.protocol == "cryptogw" and c.mode == mode]
    return found


def client_of(server: KassaServer, merchant: Merchant, mode: str = "test") -> CryptoClient:
    c = credential(merchant, mode)
    return CryptoClient(server.base_url, c.id, c.secret)


@pytest.fixture
def gw(server: KassaServer, merchant: Merchant) -> Iterator[CryptoClient]:
    client = client_of(server, merchant)
    yield client
    client.close()


@pytest.fixture
def shop_factory(gw: CryptoClient) -> Iterator[Callable[..., FakeShop]]:
    shops: list[FakeShop] = []

    def make(**kw: Any) -> FakeShop:
        shop = FakeShop(gw, **kw).start()
        shops.append(shop)
        return shop

    yield make
    for s in shops:
        s.stop()


def body(**changes: Any) -> dict[str, Any]:
    """The seed's example body, with an amount above the 10 CNY minimum, and changes (None
    removes a field)."""
    data: dict[str, Any] = {**json.loads(SEED_BODY), "amount": "10"}
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def usdt_quote(amount: str, currency: str) -> str:
    value = Decimal(amount) * RATES[currency] / RATES["USDT"]
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_UP))


def channel_fee(amount_cny: int) -> int:
    return int((Decimal(amount_cny) * USDT_FEE_BPS / 10000).quantize(Decimal(1), ROUND_HALF_UP))


def assert_error(r: httpx.Response, code: int, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    envelope: dict[str, Any] = r.json()
    assert set(envelope) == {"code", "message"}, envelope
    assert envelope["code"] == code, envelope
    assert isinstance(envelope["message"], str) and envelope["message"], envelope
    return envelope


def assert_ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    envelope = r.json()
    assert (envelope["code"], envelope["message"]) == (10000, "OK"), envelope
    data: dict[str, Any] = envelope["data"]
    for key, kind in SEED_DATA_TYPES.items():
        assert isinstance(data[key], kind), (key, data)
    return data


def balance(merchant: Merchant) -> int:
    r = merchant.test.get("/api/v1/payment/balance")
    assert r.status_code == 200, r.text
    return int(r.json()["balance_cents"])


def transactions(merchant: Merchant) -> list[dict[str, Any]]:
    r = merchant.test.get("/api/v1/payment/transactions")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["data"]
    return rows


def query_state(gw: CryptoClient, order_id: str, state: int, timeout: float = 10.0
                ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = assert_ok(gw.query({"id": order_id}))
        if data["state"] == state:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} stayed in state {data['state']}")
        time.sleep(0.05)


def deliveries(merchant: Merchant, order_id: str) -> list[dict[str, Any]]:
    r = merchant.test.get("/api/v1/webhooks/events", params={"object_id": order_id})
    assert r.status_code == 200, r.text
    return [d for e in r.json()["data"] for d in e["deliveries"]]


def wait_for_delivery(merchant: Merchant, order_id: str, status: str, timeout: float = 10.0
                      ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = deliveries(merchant, order_id)
        if len(found) == 1 and found[0]["status"] == status:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of {order_id}: {found}")
        time.sleep(0.05)


# --- 1. the seed's example, byte for byte ---------------------------------------------------------

def test_seed_example_body_is_refused_for_its_amount_then_accepted_with_ten(
        server: KassaServer, gw: CryptoClient, merchant: Merchant) -> None:
    raw = SEED_BODY.encode()
    refused = assert_error(gw.create(raw), 10003, 400)
    # 0.1 EUR is 0.77 CNY, below the 10 CNY minimum: refused about the amount, nothing else.
    assert refused["message"].startswith("Invalid parameter `amount`: "), refused
    assert_error(gw.query({"order_no": "Pay1678886400000"}), 10004, 404)
    assert transactions(merchant) == []

    before = server.ctx.clock.now().timestamp()  # the server's clock: tests move it on
    ten = raw.replace(b'"amount": "0.1"', b'"amount": "10"')
    assert ten != raw
    r = gw.create(ten)
    data = assert_ok(r)
    assert r.headers["content-type"].startswith("application/json")
    assert data["order_no"] == "Pay1678886400000"
    assert data["currency"] == "EUR"
    assert data["amount"] == "10"  # exactly as sent
    assert data["order_amount"] == usdt_quote("10", "EUR") == "10.85"  # 10*7.7/7.1 up
    assert before + 900 - 5 <= data["cancel_time"] <= (
        server.ctx.clock.now().timestamp() + 900 + 5)
    assert data["state"] == 1
    assert data["pay_url"].startswith("http") and data["id"] in data["pay_url"]
    assert data["id"]
    [row] = transactions(merchant)
    assert (row["order_id"], row["type"], row["amount"], row["currency"]) == (
        data["id"], "collection", 1000, "EUR")


def test_signature_in_upper_case_hex_is_accepted(gw: CryptoClient) -> None:
    data = assert_ok(gw.create(body(order_no="UpperCase0001"), upper=True))
    assert data["order_no"] == "UpperCase0001"
    again = assert_ok(gw.query({"id": data["id"]}, upper=True))
    assert again["id"] == data["id"]


def test_amount_is_echoed_as_sent_and_the_quote_rounds_up(gw: CryptoClient) -> None:
    for order_no, currency, amount, quote in (("Echo00000001", "EUR", "10.5", "11.39"),
                                              ("Echo00000000", "USDT ", "0.1", None),
                                              ("Echo00000002", "usd ", "20.00", "20.00"),
                                              ("Echo00000003", "CNY", "71.01", "10.01"),
                                              ("Echo00000004", "USDT", "3", "3.00")):
        r = gw.create(body(order_no=order_no, currency=currency, amount=amount))
        if quote is None:  # the seed's field-table example ("USDT ", "0.1"): 0.71 CNY
            assert assert_error(r, 10003, 400)["message"].startswith(
                "Invalid parameter `amount`: ")
            continue
        data = assert_ok(r)
        assert (data["currency"], data["amount"], data["order_amount"]) == (
            currency.strip().upper(), amount, quote), data
        assert data["order_amount"] == usdt_quote(amount, currency.strip().upper())


# --- 2. validation ---------------------------------------------------------------------------

INVALID: dict[str, tuple[str | None, bytes]] = {
    "order_no_7_chars": ("order_no", json.dumps(body(order_no="Pay1234")).encode()),
    "order_no_33_chars": ("order_no", json.dumps(body(order_no="P" * 33)).encode()),
    "order_no_with_dash": ("order_no", json.dumps(body(order_no="Pay-1678886400")).encode()),
    "currency_unknown": ("currency", json.dumps(body(currency="XYZ")).encode()),
    "amount_a_number": ("amount", json.dumps(body(amount=0.1)).encode()),
    "amount_3_places": ("amount", json.dumps(body(amount="1.001")).encode()),
    "amount_zero": ("amount", json.dumps(body(amount="0")).encode()),
    "amount_above_maximum": ("amount", json.dumps(body(currency="CNY", amount="50000.01")
                                                  ).encode()),
    # Far above the maximum, with more digits than Decimal's default 28-digit context.
    "amount_huge_eur": ("amount", json.dumps(body(amount="9" * 38)).encode()),
    "amount_huge_usdt": ("amount", json.dumps(body(currency="USDT", amount="9" * 38)).encode()),
    "chain_eth": ("chain_type", json.dumps(body(chain_type="eth")).encode()),
    "notify_url_missing": ("notify_url", json.dumps(body(notify_url=None)).encode()),
    "notify_url_ftp": ("notify_url", json.dumps(body(notify_url="ftp://x")).encode()),
    "product_name_33": ("product_name", json.dumps(body(product_name="n" * 33)).encode()),
    "body_not_json": (None, b'{"order_no": "Pay1678886400000", "amount": "10"'),
    "body_an_array": (None, json.dumps([body()]).encode()),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_request_gets_10003_and_changes_nothing(case: str, gw: CryptoClient,
                                                        merchant: Merchant) -> None:
    field, raw = INVALID[case]
    before = balance(merchant)
    envelope = assert_error(gw.create(raw), 10003, 400)
    if field is None:
        assert envelope["message"].startswith("Invalid parameter"), envelope
    else:
        assert envelope["message"].startswith(f"Invalid parameter `{field}`: "), envelope
    if case == "currency_unknown":
        assert envelope["message"] == "Invalid parameter `currency`: currency does not exist"
    order_no = body()["order_no"] if field is None else json.loads(raw)["order_no"]
    if len(order_no) <= 32:  # (a longer one is refused by the query itself)
        assert_error(gw.query({"order_no": order_no}), 10004, 404)
    assert transactions(merchant) == []
    assert balance(merchant) == before


def test_boundaries_of_the_fields_are_accepted(gw: CryptoClient) -> None:
    for changes in ({"order_no": "A1234567"}, {"order_no": "Z" * 31 + "9"},
                    {"order_no": "Name00000001", "product_name": "n" * 32},
                    {"order_no": "Chain0000001", "chain_type": "Bsc"},
                    {"order_no": "Meta00000001", "meta": None, "product_name": None,
                     "redirect_url": None},
                    {"order_no": "Extra0000001", "unknown_field": {"nested": [1, 2]}},
                    {"order_no": "Cny000000001", "currency": "CNY", "amount": "10.00"},
                    {"order_no": "Max000000001", "currency": "CNY", "amount": "50000.00"}):
        data = assert_ok(gw.create(body(**changes)))
        assert data["order_no"] == changes["order_no"]


def test_live_key_needs_https_public_notify_url_and_an_upstream(
        server: KassaServer, merchant: Merchant) -> None:
    live = client_of(server, merchant, "live")
    try:
        for url in ("http://shop.example.com/notify", "https://127.0.0.1/notify"):
            envelope = assert_error(live.create(body(notify_url=url, redirect_url=None)),
                                    10003, 400)
            assert envelope["message"].startswith("Invalid parameter `notify_url`: ")
        # Well-formed, but no upstream takes USDT live on this installation.
        assert_error(live.create(body(notify_url="https://shop.example.com/notify",
                                      redirect_url="https://shop.example.com/back")),
                     10006, 400)
    finally:
        live.close()
    r = merchant.live.get("/api/v1/payment/transactions")
    assert r.status_code == 200 and r.json()["data"] == [], r.text


def test_body_too_large_gets_10007(gw: CryptoClient, merchant: Merchant) -> None:
    big = json.dumps(body(meta="m" * 100_000)).encode()
    assert_error(gw.create(big), 10007, 413)
    assert transactions(merchant) == []


# --- 3. authentication -------------------------------------------------------------------------

def test_unknown_key_and_wrong_signatures_get_10001(gw: CryptoClient,
                                                    merchant: Merchant) -> None:
    raw = json.dumps(body()).encode()
    unknown = assert_error(gw.create(raw, api_key="cgk_test_" + "0" * 32), 10001, 401)
    assert "key" in unknown["message"].lower()
    assert_error(gw.create(raw, secret="not-the-secret"), 10001, 401)
    # Signed over other bytes than those sent: a changed amount, a re-serialised body.
    headers = gw.headers(raw)
    assert_error(gw.send(CREATE, raw.replace(b'"10"', b'"11"'), headers), 10001, 401)
    assert_error(gw.send(CREATE, json.dumps(body(), indent=1).encode(), headers), 10001, 401)
    # A signature over the timestamp and nonce joined otherwise than with "\n".
    ts, nonce = str(unix_now()), new_nonce()
    assert_error(gw.send(CREATE, raw, {
        **headers, "X-Timestamp": ts, "X-Nonce": nonce,
        "X-Signature": signature(gw.secret, ts + nonce, "", raw)}), 10001, 401)
    # The epay or live secret of the same account is not this key's secret.
    for other in (credential(merchant, "live").secret,
                  next(c.secret for c in merchant.account.protocol_credentials
                       if c.protocol == "epay" and c.mode == "test")):
        assert_error(gw.create(raw, secret=other), 10001, 401)
    # The live key's id with the test key's secret.
    live = credential(merchant, "live")
    assert_error(gw.create(raw, api_key=live.id), 10001, 401)
    assert transactions(merchant) == []


def test_nonce_is_1_to_64_printable_ascii(gw: CryptoClient, merchant: Merchant) -> None:
    assert_ok(gw.create(body(order_no="Nonce64chars"), nonce="n" * 64))
    assert_ok(gw.create(body(order_no="Nonce1char00"), nonce="x"))
    for nonce in ("n" * 65, "tab\there"):
        assert_error(gw.create(body(order_no="NonceBad0001"), nonce=nonce), 10002, 401)
    assert len(transactions(merchant)) == 2


@pytest.mark.parametrize("missing", ["all", "X-API-Key", "X-Signature", "X-Timestamp",
                                     "X-Nonce"])
def test_missing_headers_are_refused(missing: str, gw: CryptoClient,
                                     merchant: Merchant) -> None:
    raw = json.dumps(body()).encode()
    headers = gw.headers(raw)
    if missing == "all":
        headers = {"Content-Type": "application/json"}
    else:
        del headers[missing]
    r = gw.send(CREATE, raw, headers)
    # No key or no signature: not authenticated (10001). No timestamp or nonce: the
    # replay protection's code (10002), naming the header.
    expected = 10002 if missing in ("X-Timestamp", "X-Nonce") else 10001
    envelope = assert_error(r, expected, 401)
    if expected == 10002:
        assert missing in envelope["message"], envelope
    assert transactions(merchant) == []


def test_timestamp_window_is_five_minutes(gw: CryptoClient, merchant: Merchant) -> None:
    for offset in (-301, 301, -3600, 3600):
        r = gw.create(body(order_no=f"Skew{abs(offset)}{'p' if offset > 0 else 'm'}"),
                      timestamp=unix_now(offset))
        assert_error(r, 10002, 401)
    assert_error(gw.create(body(), timestamp="abc"), 10002, 401)
    # Milliseconds are not seconds.
    assert_error(gw.create(body(), timestamp=int(time.time() * 1000)), 10002, 401)
    assert transactions(merchant) == []
    assert_ok(gw.create(body(order_no="SkewPast299"), timestamp=unix_now(-299)))
    assert_ok(gw.create(body(order_no="SkewFuture299"), timestamp=unix_now(299)))
    assert len(transactions(merchant)) == 2


def test_timestamp_with_a_non_ascii_digit_gets_10002_not_a_500(gw: CryptoClient,
                                                               merchant: Merchant) -> None:
    """'²' (latin-1 0xB2) is a digit to str.isdigit() but not to int(): correctly signed
    (over the header's UTF-8), such a timestamp must still get the protocol's 10002."""
    raw = json.dumps(body(order_no="Superscript1")).encode()
    now = str(unix_now())
    ts = now[:-2] + "\u00b2" + now[-1]
    nonce = new_nonce()
    sig = hmac.new(gw.secret.encode(), ts.encode() + b"\n" + nonce.encode() + b"\n" + raw,
                   hashlib.sha256).hexdigest()
    r = gw.http.post(CREATE, content=raw, headers=[
        (b"Content-Type", b"application/json"), (b"X-API-Key", gw.api_key.encode()),
        (b"X-Timestamp", ts.encode("latin-1")), (b"X-Nonce", nonce.encode()),
        (b"X-Signature", sig.encode())])
    assert_error(r, 10002, 401)
    assert transactions(merchant) == []


def test_reused_nonce_is_refused_and_creates_nothing(gw: CryptoClient,
                                                     merchant: Merchant) -> None:
    raw = json.dumps(body(order_no="Replay000001")).encode()
    headers = gw.headers(raw)
    first = assert_ok(gw.send(CREATE, raw, headers))
    # The same request again, byte for byte: a replay.
    assert_error(gw.send(CREATE, raw, headers), 10002, 401)
    # The same nonce with another (correctly signed) body: still a used nonce.
    other = json.dumps(body(order_no="Replay000002")).encode()
    assert_error(gw.create(other, nonce=headers["X-Nonce"]), 10002, 401)
    # ... and on the query endpoint too.
    assert_error(gw.query({"id": first["id"]}, nonce=headers["X-Nonce"]), 10002, 401)
    assert_error(gw.query({"order_no": "Replay000002"}), 10004, 404)
    assert [t["order_id"] for t in transactions(merchant)] == [first["id"]]
    # A query's nonce is used up as well.
    q = {"id": first["id"]}
    q_raw = json.dumps(q).encode()
    q_headers = gw.headers(q_raw)
    assert_ok(gw.send(QUERY, q_raw, q_headers))
    assert_error(gw.send(QUERY, q_raw, q_headers), 10002, 401)


def test_a_refused_request_does_not_use_up_its_nonce(gw: CryptoClient,
                                                     merchant: Merchant) -> None:
    nonce = new_nonce()
    assert_error(gw.create(body(order_no="Nonce0000001", chain_type="eth"), nonce=nonce),
                 10003, 400)
    # Refused by the limits (in the write itself): still not used up.
    assert_error(gw.create(body(order_no="Nonce0000001", amount="0.1"), nonce=nonce),
                 10003, 400)
    # Refused for its signature: not used up either.
    assert_error(gw.create(body(order_no="Nonce0000001"), nonce=nonce, secret="wrong"),
                 10001, 401)
    data = assert_ok(gw.create(body(order_no="Nonce0000001"), nonce=nonce))
    assert [t["order_id"] for t in transactions(merchant)] == [data["id"]]
    assert_error(gw.create(body(order_no="Nonce0000002"), nonce=nonce), 10002, 401)


def test_another_merchants_key_cannot_see_the_order(server: KassaServer, gw: CryptoClient,
                                                    merchant: Merchant) -> None:
    nonce = new_nonce()
    data = assert_ok(gw.create(body(order_no="Mine00000001"), nonce=nonce))
    other = client_of(server, server.merchant())
    live = client_of(server, merchant, "live")
    try:
        for stranger in (other, live):
            assert_error(stranger.query({"order_no": "Mine00000001"}), 10004, 404)
            assert_error(stranger.query({"id": data["id"]}), 10004, 404)
            assert_error(stranger.query({"id": data["id"], "order_no": "Mine00000001"}),
                         10004, 404)
        # Nor an order of the same merchant made through the native API.
        task = merchant.test.post("/api/v1/tasks", json={
            "title": "Native", "amount": 5000, "currency": "CNY", "payment_method": "alipay",
            "return_url": "https://shop.example.com/done"})
        assert task.status_code == 201, task.text
        assert_error(gw.query({"id": task.json()["payment"]["order_id"]}), 10004, 404)
        # The other merchant may use the same order_no for an order of its own.
        # ... even with the nonce this merchant's key already used: nonces are per key.
        theirs = assert_ok(other.create(body(order_no="Mine00000001"), nonce=nonce))
        assert theirs["id"] != data["id"]
    finally:
        other.close()
        live.close()
    assert assert_ok(gw.query({"order_no": "Mine00000001"}))["id"] == data["id"]


# --- 4. the same order_no again ----------------------------------------------------------------

def test_same_order_no_same_terms_is_the_same_order_other_terms_409(
        gw: CryptoClient, merchant: Merchant) -> None:
    first = assert_ok(gw.create(body(order_no="Dup000000001")))
    again = assert_ok(gw.create(body(order_no="Dup000000001")))
    assert again["id"] == first["id"]
    assert again["order_amount"] == first["order_amount"]
    for changes in ({"amount": "11"}, {"currency": "USD"}):
        envelope = assert_error(gw.create(body(order_no="Dup000000001", **changes)),
                                10005, 409)
        assert "order_no" in envelope["message"], envelope
    assert [t["order_id"] for t in transactions(merchant)] == [first["id"]]
    assert assert_ok(gw.query({"order_no": "Dup000000001"}))["amount"] == "10"


def test_concurrent_creates_of_one_order_no_make_one_order(server: KassaServer,
                                                           merchant: Merchant) -> None:
    clients = [client_of(server, merchant) for _ in range(8)]
    try:
        for c in clients:  # connected before the race starts
            assert_error(c.query({"order_no": "NotThere0001"}), 10004, 404)
        with ThreadPoolExecutor(len(clients)) as pool:
            replies_ = list(pool.map(lambda c: c.create(body(order_no="Race00000001")),
                                     clients))
    finally:
        for c in clients:
            c.close()
    ids = {assert_ok(r)["id"] for r in replies_}
    assert len(ids) == 1
    assert [t["order_id"] for t in transactions(merchant)] == list(ids)


# --- 5. the query ----------------------------------------------------------------------------

def test_query_by_order_no_and_by_id_until_paid(server: KassaServer, gw: CryptoClient
                                                ) -> None:
    created = assert_ok(gw.create(body(order_no="Query0000001")))
    by_no = assert_ok(gw.query({"order_no": "Query0000001"}))
    by_id = assert_ok(gw.query({"id": created["id"]}))
    assert by_no == by_id
    assert by_id["state"] == 1 and by_id.get("pay_time") is None
    for key in SEED_DATA_TYPES:
        if key != "state":
            assert by_id[key] == created[key], key
    paid = query_state(gw, created["id"], 2)
    assert isinstance(paid["pay_time"], int)
    assert abs(paid["pay_time"] - server.ctx.clock.now().timestamp()) < 60
    assert assert_ok(gw.query({"order_no": "Query0000001"})) == paid
    assert (paid["chain_type"], paid["product_name"], paid["meta"]) == (
        "bsc", "Test product name", "id:123")
    # Both given: both must match. Neither given: invalid.
    assert_error(gw.query({"id": created["id"], "order_no": "Query0000002"}), 10004, 404)
    assert_error(gw.query({"id": "ord_nothing"}), 10004, 404)
    assert_error(gw.query({}), 10003, 400)


# --- 6. end to end: a shop --------------------------------------------------------------------

def test_shop_end_to_end_notification_and_ledger(gw: CryptoClient, merchant: Merchant,
                                                 shop_factory: Callable[..., FakeShop]
                                                 ) -> None:
    shop = shop_factory()
    before = balance(merchant)
    r = shop.create_order("Shop00000001", "USD", "20.00", product_name="Book",
                          meta="cart:42", redirect_url="http://127.0.0.1:1/back")
    data = assert_ok(r)
    assert (data["amount"], data["order_amount"]) == ("20.00", "20.00")
    order_id = data["id"]

    [note] = shop.wait_for(1)
    assert note.verified, note.problems
    assert note.headers["content-type"].startswith("application/json")
    sent = note.data
    assert (sent["id"], sent["order_no"], sent["currency"], sent["amount"],
            sent["order_amount"], sent["state"]) == (
        order_id, "Shop00000001", "USD", "20.00", "20.00", 2)
    assert (sent["product_name"], sent["meta"], sent["chain_type"]) == ("Book", "cart:42", "bsc")
    assert isinstance(sent["pay_time"], int) and sent["cancel_time"] == data["cancel_time"]
    assert sent == assert_ok(gw.query({"id": order_id}))  # the same data a query returns
    delivery = wait_for_delivery(merchant, order_id, "succeeded")
    assert (delivery["protocol"], delivery["attempt_count"], delivery["url"]) == (
        "cryptogw", 1, shop.url)
    assert shop.book["Shop00000001"].paid == 1

    amount_cny = 2000 * 71 // 10  # 20.00 USD at 7.1
    assert amount_cny == 14200
    assert balance(merchant) - before == amount_cny - channel_fee(amount_cny) == 14058
    native = merchant.test.get("/api/v1/payment/query", params={"order_id": order_id}).json()
    assert (native["status"], native["type"], native["task_id"]) == (
        "completed", "collection", None)
    assert (native["amount"], native["currency"], native["amount_cny"],
            native["payment_method"]) == (2000, "USD", 14200, "usdt")
    assert native["escrow"]["platform_fee_cents"] == channel_fee(14200) == 142
    assert native["cost_breakdown"]["platform_fee_cents"] == 20  # 1% in the order's currency
    [txn] = transactions(merchant)
    assert (txn["order_id"], txn["type"], txn["status"]) == (order_id, "collection",
                                                             "completed")
    # No second credit later on.
    time.sleep(0.5)
    assert balance(merchant) - before == 14058
    assert len(shop.notifications()) == 1


def test_native_query_of_a_paid_collection_shows_no_negative_worker_payout(
        gw: CryptoClient, merchant: Merchant, shop_factory: Callable[..., FakeShop]) -> None:
    """A collection pays no worker: its escrow view must not show -fee as a payout."""
    shop = shop_factory()
    order_id = assert_ok(shop.create_order("Escrow000001", "CNY", "100.00"))["id"]
    shop.wait_for(1)
    native = merchant.test.get("/api/v1/payment/query", params={"order_id": order_id}).json()
    assert native["status"] == "completed"
    assert native["escrow"]["worker_payout_cents"] >= 0, native["escrow"]


def native_order(merchant: Merchant, order_id: str) -> dict[str, Any]:
    r = merchant.test.get("/api/v1/payment/query", params={"order_id": order_id})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def native_refund(merchant: Merchant, order_id: str, **fields: Any) -> dict[str, Any]:
    r = merchant.test.post("/api/v1/payment/refund",
                           json={"order_id": order_id, "reason": "duplicate_payment", **fields})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def settled_balance(merchant: Merchant, timeout: float = 10.0) -> int:
    """The available balance once no refund is in flight any more."""
    deadline = time.monotonic() + timeout
    while True:
        r = merchant.test.get("/api/v1/payment/balance")
        assert r.status_code == 200, r.text
        if r.json()["refunds_in_flight_cents"] == 0:
            return int(r.json()["balance_cents"])
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.05)


def test_full_refund_through_the_native_api_is_state_5_and_not_notified(
        gw: CryptoClient, merchant: Merchant, shop_factory: Callable[..., FakeShop]) -> None:
    """A full refund takes from the balance exactly what the order brought in (142.00 CNY
    less the 1.42 fee); the fee comes back from the platform. The other order is untouched."""
    shop = shop_factory()
    ids = [assert_ok(shop.create_order(f"Refund00000{i}", "USD", "20.00"))["id"]
           for i in range(2)]
    shop.wait_for(2)
    for order_id in ids:
        wait_for_delivery(merchant, order_id, "succeeded")
    assert balance(merchant) == 2 * 14058
    made = native_refund(merchant, ids[0])
    assert (made["amount"], made["amount_cny"]) == (2000, 14200)
    assert balance(merchant) == 14058  # 14200 - 142: what the order brought in
    refunded = query_state(gw, ids[0], 5)
    assert (refunded["amount"], refunded["order_amount"]) == ("20.00", "20.00")
    assert assert_ok(gw.query({"id": ids[1]}))["state"] == 2
    time.sleep(0.5)
    assert len(shop.notifications()) == 2  # the notify_url hears of payments only
    assert settled_balance(merchant) == 14058  # the other order's net: the whole fee back
    assert native_order(merchant, ids[0])["escrow"]["platform_fee_cents"] == 0
    assert native_order(merchant, ids[1])["escrow"]["platform_fee_cents"] == 142
    # The history: the two orders are collections, the refund a refund.
    r = merchant.test.get("/api/v1/payment/transactions", params={"type": "collection"})
    assert r.status_code == 200, r.text
    assert sorted(t["order_id"] for t in r.json()["data"]) == sorted(ids)
    r = merchant.test.get("/api/v1/payment/transactions", params={"type": "refund"})
    assert [(t["order_id"], t["refund_id"]) for t in r.json()["data"]] == [
        (ids[0], made["refund_id"])]


def test_partial_refunds_give_the_channel_fee_back_in_proportion(
        gw: CryptoClient, merchant: Merchant, shop_factory: Callable[..., FakeShop]) -> None:
    """20.00 USD = 142.00 CNY, fee 1% = 142 cents. Refunding 5.00 USD (35.50 CNY) gives back
    round_half_up(35.5) = 36 cents of it (half up, not to even), so 35.14 CNY comes out of
    the balance; the rest (15.00 USD = 106.50 CNY) takes the 106 cents left. In all the
    balance gives back exactly what the order brought in."""
    shop = shop_factory()
    order_id = assert_ok(shop.create_order("Partial00001", "USD", "20.00"))["id"]
    shop.wait_for(1)
    wait_for_delivery(merchant, order_id, "succeeded")
    assert balance(merchant) == 14058
    first = native_refund(merchant, order_id, amount=500)
    assert (first["amount"], first["amount_cny"]) == (500, 3550)
    assert channel_fee(3550) == 36
    assert balance(merchant) == 14058 - (3550 - 36)
    assert native_order(merchant, order_id)["escrow"]["platform_fee_cents"] == 142 - 36
    assert settled_balance(merchant) == 14058 - 3514
    assert assert_ok(gw.query({"id": order_id}))["state"] == 2  # paid, partly refunded
    rest = native_refund(merchant, order_id)
    assert (rest["amount"], rest["amount_cny"]) == (1500, 10650)
    assert balance(merchant) == 0
    assert native_order(merchant, order_id)["escrow"]["platform_fee_cents"] == 0
    query_state(gw, order_id, 5)
    assert settled_balance(merchant) == 0


# --- 7. retries ------------------------------------------------------------------------------

def test_notification_retried_until_the_reply_is_success(
        gw: CryptoClient, merchant: Merchant, shop_factory: Callable[..., FakeShop]) -> None:
    shop = shop_factory(answer=replies((200, b"nope"), (200, b"nope"), (200, b"success")))
    before = balance(merchant)
    order_id = assert_ok(shop.create_order("Retry0000001", "USD", "20.00"))["id"]
    got = shop.wait_for(3)
    assert all(n.verified for n in got), [n.problems for n in got]
    assert len({n.body for n in got}) == 1  # the same bytes each time
    nonces = [n.headers["x-nonce"] for n in got]
    assert len(set(nonces)) == 3  # each attempt its own nonce, its own signature
    assert len({n.headers["x-signature"] for n in got}) == 3
    delivery = wait_for_delivery(merchant, order_id, "succeeded")
    assert (delivery["protocol"], delivery["attempt_count"]) == ("cryptogw", 3)
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    time.sleep(1.5)  # longer than the rest of the schedule: nothing more comes
    assert len(shop.notifications()) == 3
    assert shop.book["Retry0000001"].paid == 1
    assert balance(merchant) - before == 14058  # credited once


def test_success_in_another_case_is_not_success(
        gw: CryptoClient, merchant: Merchant, shop_factory: Callable[..., FakeShop]) -> None:
    """Only `success` itself (give or take whitespace and a BOM) ends the retries:
    `SUCCESS` and ` Success ` are failures."""
    shop = shop_factory(answer=replies((200, b"SUCCESS"), (200, b" Success "),
                                       (200, b"\xef\xbb\xbf success\r\n")))
    order_id = assert_ok(shop.create_order("Case00000001", "USD", "20.00"))["id"]
    delivery = wait_for_delivery(merchant, order_id, "succeeded")
    assert delivery["attempt_count"] == 3
    assert [bool(a["error"]) for a in delivery["attempts"]] == [True, True, False]
    time.sleep(0.8)  # longer than the next gap of the schedule (0.5 s): nothing more comes
    got = shop.notifications()
    assert len(got) == 3 and all(n.verified for n in got), [n.problems for n in got]


def test_notification_answered_500_is_tried_five_times_then_failed(
        gw: CryptoClient, merchant: Merchant, shop_factory: Callable[..., FakeShop]) -> None:
    shop = shop_factory(answer=replies((500, b"success")))
    before = balance(merchant)
    order_id = assert_ok(shop.create_order("Fail00000001", "USD", "20.00"))["id"]
    delivery = wait_for_delivery(merchant, order_id, "failed", timeout=15)
    assert (delivery["protocol"], delivery["attempt_count"]) == ("cryptogw", 5)
    assert [a["status_code"] for a in delivery["attempts"]] == [500] * 5
    got = shop.notifications()
    assert len(got) == 5 and all(n.verified for n in got), [n.problems for n in got]
    assert len({n.body for n in got}) == 1
    assert len({n.headers["x-nonce"] for n in got}) == 5
    # On the test schedule (0, 0.2, 0.2, 0.5, 1.0 s), give or take a poll.
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(g >= want - 0.05 for g, want in zip(gaps, [0.2, 0.2, 0.5, 1.0], strict=True)
               ), gaps
    time.sleep(1.5)
    assert len(shop.notifications()) == 5
    assert wait_for_delivery(merchant, order_id, "failed")["attempt_count"] == 5
    # The payment itself stands, credited once; the order is paid for a query.
    assert balance(merchant) - before == 14058
    assert assert_ok(gw.query({"id": order_id}))["state"] == 2
