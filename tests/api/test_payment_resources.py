"""Seed 004's Payments resource over the payment orders (SPEC §5, §9), over HTTP on both
databases: the entity field for field, one Payment per order, ownership and modes, the
status mapping, retry (a GET that writes), verify, and bad input of every kind."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, insert, update

from kassa.db.tables import orders, upstream_attempts
from kassa.payments import service as payments
from tests.api.test_escrow import query, refunded
from tests.api.test_openapi import schema_check
from tests.support.factories import assert_error, new_task, pay
from tests.support.harness import KassaServer, Merchant

# The seed's Payment entity, in the seed's order.
SEED_FIELDS = ["id", "order", "orderString", "createdAt", "updatedAt", "payer", "subject",
               "description", "totalAmount", "status", "vendorTradeId", "confirmedAt",
               "confirmed", "valid"]
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, ISO_FORMAT)


def new_order(client: httpx.Client, *, amount: int = 5000, currency: str = "CNY",
              **payment: Any) -> dict[str, Any]:
    """A task and its payment order (sandbox alipay unless told otherwise); the order."""
    task_id = new_task(client, amount=amount, currency=currency, title="Seed 004 task")
    r = pay(client, task_id, amount=amount, currency=currency, **payment)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def unpaid_order(client: httpx.Client) -> dict[str, Any]:
    """A card order without a test card: nothing settles it, it stays pending."""
    return new_order(client, payment_method="card", expires_in_seconds=300)


def create(client: httpx.Client, order_id: str, subject: str = "Test Subject",
           **fields: Any) -> httpx.Response:
    return client.post("/api/v1/payments", json={"orderId": order_id, "subject": subject,
                                                 **fields})


def created(client: httpx.Client, order_id: str, **fields: Any) -> dict[str, Any]:
    r = create(client, order_id, **fields)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def get(client: httpx.Client, payment_id: int | str) -> dict[str, Any]:
    r = client.get(f"/api/v1/payments/{payment_id}")
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["data"], r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def wait_payment_status(client: httpx.Client, payment_id: int, status: str,
                        server: KassaServer, order_id: str, order_status: str
                        ) -> dict[str, Any]:
    server.wait_for_status(client, order_id, order_status)
    payment = get(client, payment_id)
    assert payment["status"] == status, payment
    return payment


def expire_now(server: KassaServer, order_id: str) -> None:
    """Time passes for one order: its expiry moves into the past and the sweeper's work is
    done at once (as tests/upstreams does)."""
    def unit(conn: Connection) -> str:
        now = server.ctx.clock.now()
        conn.execute(update(orders).where(orders.c.order_id == order_id).values(
            expires_at=now - timedelta(seconds=1)))
        return payments.expire_order(conn, server.ctx, order_id=order_id, now=now)
    assert server.db.write_sync(unit) == "expired"


# --- create and get -----------------------------------------------------------------------

def test_create_then_get_field_for_field(server: KassaServer, merchant: Merchant) -> None:
    order = unpaid_order(merchant.test)
    r = create(merchant.test, order["order_id"], subject="Test Subject",
               description="Test Description", payer="test_user_customer_username_0")
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert list(r.json()) == ["data"]
    payment = r.json()["data"]
    assert list(payment) == SEED_FIELDS
    assert type(payment["id"]) is int and payment["id"] > 0
    assert payment["order"] == order["order_id"]
    assert payment["orderString"] == order["payment_url"]
    assert payment["orderString"] == f"{server.base_url}/checkout/{order['order_id']}"
    assert (payment["payer"], payment["subject"], payment["description"]) == (
        "test_user_customer_username_0", "Test Subject", "Test Description")
    # totalAmount: a JSON number, written from the exact decimal (never through a float).
    assert type(payment["totalAmount"]) is float
    exact = json.loads(r.content, parse_float=Decimal)["data"]["totalAmount"]
    assert exact == Decimal(order["amount"]) / 100 == Decimal("50.00")
    assert b'"totalAmount":50.00,' in r.content
    assert (payment["status"], payment["vendorTradeId"], payment["confirmedAt"],
            payment["confirmed"], payment["valid"]) == ("PENDING", None, None, False, False)
    created_at = parse_iso(payment["createdAt"])
    assert parse_iso(order["created_at"]) <= created_at
    assert parse_iso(payment["updatedAt"]) >= created_at

    fetched = merchant.test.get(f"/api/v1/payments/{payment['id']}")
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == {"data": payment}
    assert b'"totalAmount":50.00,' in fetched.content
    # Reads take the key alone, as the native API's do.
    with server.client(merchant.test_key) as key_only:
        assert get(key_only, payment["id"]) == payment


def test_optional_fields_are_null_and_ids_count_up(merchant: Merchant) -> None:
    first = created(merchant.test, unpaid_order(merchant.test)["order_id"])
    second = created(merchant.test, unpaid_order(merchant.test)["order_id"])
    assert (first["payer"], first["description"]) == (None, None)
    assert second["id"] > first["id"]


def test_amounts_are_exact_in_the_orders_currency(merchant: Merchant) -> None:
    cases = [(1001, "CNY", "10.01"), (1234, "USD", "12.34"), (5_000_000, "CNY", "50000.00")]
    for amount, currency, text in cases:
        order = new_order(merchant.test, amount=amount, currency=currency,
                          payment_method="card", expires_in_seconds=300)
        r = create(merchant.test, order["order_id"])
        assert r.status_code == 201, r.text
        assert f'"totalAmount":{text},'.encode() in r.content, r.text
        exact = json.loads(r.content, parse_float=Decimal)["data"]["totalAmount"]
        assert exact == Decimal(amount) / 100


def test_second_create_for_the_same_order_returns_the_same_payment(merchant: Merchant) -> None:
    order_id = unpaid_order(merchant.test)["order_id"]
    first = created(merchant.test, order_id, subject="First", payer="alice")
    again = create(merchant.test, order_id, subject="Second", description="other")
    assert again.status_code == 200, again.text
    assert again.json()["data"] == first  # the existing Payment, unchanged
    assert get(merchant.test, first["id"]) == first


def test_concurrent_creates_for_one_order_make_one_payment(server: KassaServer,
                                                           merchant: Merchant) -> None:
    order_id = unpaid_order(merchant.test)["order_id"]
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def post() -> None:
        with server.client(merchant.test_key, merchant.test_secret) as client:
            start.wait()
            r = create(client, order_id)
            with lock:
                answers.append(r)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201], [
        r.text for r in answers]
    assert len({r.json()["data"]["id"] for r in answers}) == 1


# --- ownership and modes ------------------------------------------------------------------

def test_another_merchants_order_and_payment_are_not_found(server: KassaServer,
                                                           merchant: Merchant) -> None:
    other = server.merchant()
    theirs = unpaid_order(other.test)
    error = assert_error(create(merchant.test, theirs["order_id"]), 404, "order_not_found")
    assert error["order_id"] == theirs["order_id"]

    their_payment = created(other.test, theirs["order_id"])
    r = merchant.test.get(f"/api/v1/payments/{their_payment['id']}")
    assert_error(r, 404, "payment_not_found")
    assert_error(merchant.test.get(f"/api/v1/payments/verify/{their_payment['id']}"), 404,
                 "payment_not_found")
    assert_error(merchant.test.get(f"/api/v1/payments/retry/{their_payment['id']}"), 404,
                 "payment_not_found")
    # ... and theirs is still theirs, untouched.
    assert get(other.test, their_payment["id"]) == their_payment
    assert_error(create(merchant.test, "ord_00000000000000000000"), 404, "order_not_found")
    assert_error(merchant.test.get("/api/v1/payments/99999999"), 404, "payment_not_found")


def test_test_and_live_mode_never_see_each_other(merchant: Merchant) -> None:
    order_id = unpaid_order(merchant.test)["order_id"]
    # The live key does not find a test order, before or after it has a Payment.
    assert_error(create(merchant.live, order_id), 404, "order_not_found")
    payment = created(merchant.test, order_id)
    assert_error(create(merchant.live, order_id), 404, "order_not_found")
    for path in ("", "verify/", "retry/"):
        assert_error(merchant.live.get(f"/api/v1/payments/{path}{payment['id']}"), 404,
                     "payment_not_found")
    assert get(merchant.test, payment["id"]) == payment


# --- status mapping -----------------------------------------------------------------------

def test_a_settled_sandbox_order_is_confirmed(server: KassaServer, merchant: Merchant) -> None:
    order = new_order(merchant.test)  # alipay: the sandbox pays it after a moment
    payment = created(merchant.test, order["order_id"])
    assert (payment["status"], payment["confirmed"], payment["valid"]) == (
        "PENDING", False, False)
    settled = server.wait_for_status(merchant.test, order["order_id"], "completed")
    confirmed = get(merchant.test, payment["id"])
    assert (confirmed["status"], confirmed["confirmed"], confirmed["valid"]) == (
        "CONFIRMED", True, True)
    assert confirmed["confirmedAt"] == settled["paid_at"] is not None
    assert parse_iso(confirmed["updatedAt"]) >= parse_iso(confirmed["createdAt"])
    assert confirmed["createdAt"] == payment["createdAt"]
    # Refunded in full, it was still paid: CONFIRMED.
    refunded(merchant.test, order["order_id"], amount=5000, reason="task_cancelled",
             refund_method="balance")
    assert query(merchant.test, order["order_id"])["status"] == "refunded"
    after = get(merchant.test, payment["id"])
    assert (after["status"], after["confirmed"], after["confirmedAt"]) == (
        "CONFIRMED", True, settled["paid_at"])


def test_a_declined_card_is_invalid(server: KassaServer, merchant: Merchant) -> None:
    order = new_order(merchant.test, payment_method="card", test_card="4000000000000002")
    payment = created(merchant.test, order["order_id"])
    failed = wait_payment_status(merchant.test, payment["id"], "INVALID", server,
                                 order["order_id"], "failed")
    assert (failed["confirmed"], failed["valid"], failed["confirmedAt"]) == (False, False, None)


def test_an_expired_order_is_timeout(server: KassaServer, merchant: Merchant) -> None:
    order = unpaid_order(merchant.test)
    payment = created(merchant.test, order["order_id"])
    expire_now(server, order["order_id"])
    timed_out = get(merchant.test, payment["id"])
    assert (timed_out["status"], timed_out["confirmed"], timed_out["valid"]) == (
        "TIMEOUT", False, False)


def test_vendor_trade_id_and_order_string_come_from_the_upstream_attempt(
        server: KassaServer, merchant: Merchant) -> None:
    """An order opened at a live upstream shows that upstream's trade number and link (the
    attempt is written here as the live-upstream path writes it)."""
    order_id = unpaid_order(merchant.test)["order_id"]
    payment = created(merchant.test, order_id)
    reference = "KS" + order_id.removeprefix("ord_").upper() + "02"
    pay_url = "https://pay.example.com/submit?trade=2026120612345"

    def unit(conn: Connection) -> None:
        now = server.ctx.clock.now()
        conn.execute(insert(upstream_attempts).values(
            reference="KS" + order_id.removeprefix("ord_").upper() + "01", order_id=order_id,
            channel="epay", trade_no="2026120600001", pay_url="https://pay.example.com/old",
            qr_code=None, created_at=now))
        conn.execute(insert(upstream_attempts).values(
            reference=reference, order_id=order_id, channel="epay", trade_no="2026120612345",
            pay_url=pay_url, qr_code=None, created_at=now))
        conn.execute(update(orders).where(orders.c.order_id == order_id).values(
            upstream_ref=reference, pay_url=pay_url))
    server.db.write_sync(unit)
    shown = get(merchant.test, payment["id"])
    assert (shown["vendorTradeId"], shown["orderString"]) == ("2026120612345", pay_url)


# --- retry --------------------------------------------------------------------------------

def test_retry_revives_an_expired_payment(server: KassaServer, merchant: Merchant) -> None:
    order = unpaid_order(merchant.test)
    payment = created(merchant.test, order["order_id"])
    expire_now(server, order["order_id"])
    expired_at = parse_iso(query(merchant.test, order["order_id"])["expires_at"])
    assert get(merchant.test, payment["id"])["status"] == "TIMEOUT"

    r = merchant.test.get(f"/api/v1/payments/retry/{payment['id']}")
    assert r.status_code == 200, r.text
    retried = r.json()["data"]
    assert list(retried) == SEED_FIELDS
    assert (retried["id"], retried["order"], retried["status"]) == (
        payment["id"], order["order_id"], "PENDING")
    assert retried["orderString"] == order["payment_url"]
    after = query(merchant.test, order["order_id"])
    assert after["status"] == "pending"
    assert parse_iso(after["expires_at"]) > expired_at
    assert parse_iso(after["expires_at"]) - expired_at >= timedelta(seconds=299)
    assert get(merchant.test, payment["id"]) == retried


def test_retry_of_a_confirmed_or_invalid_payment_is_a_conflict(server: KassaServer,
                                                               merchant: Merchant) -> None:
    paid = new_order(merchant.test)
    declined = new_order(merchant.test, payment_method="card", test_card="4000000000000002")
    server.wait_for_status(merchant.test, paid["order_id"], "completed")
    server.wait_for_status(merchant.test, declined["order_id"], "failed")
    for order, status in ((paid, "completed"), (declined, "failed")):
        payment = created(merchant.test, order["order_id"])
        error = assert_error(merchant.test.get(f"/api/v1/payments/retry/{payment['id']}"),
                             409, "invalid_order_state")
        assert (error["order_id"], error["status"]) == (order["order_id"], status)
        assert query(merchant.test, order["order_id"])["status"] == status  # unchanged


def test_retry_is_a_write_and_needs_the_secret(server: KassaServer,
                                               merchant: Merchant) -> None:
    order = unpaid_order(merchant.test)
    payment = created(merchant.test, order["order_id"])
    expire_now(server, order["order_id"])
    path = f"/api/v1/payments/retry/{payment['id']}"
    with server.client(merchant.test_key) as key_only, \
            server.client(merchant.test_key, "wrong-secret") as wrong, \
            server.client() as anonymous:
        assert_error(key_only.get(path), 401, "invalid_credentials")
        assert_error(wrong.get(path), 401, "invalid_credentials")
        assert_error(anonymous.get(path), 401, "invalid_credentials")
        # Nothing was retried; GET and verify still take the key alone.
        assert get(key_only, payment["id"])["status"] == "TIMEOUT"
        assert key_only.get(f"/api/v1/payments/verify/{payment['id']}").status_code == 200
    assert merchant.test.get(path).status_code == 200
    assert get(merchant.test, payment["id"])["status"] == "PENDING"


# --- verify -------------------------------------------------------------------------------

def test_verify_answers_a_json_boolean(server: KassaServer, merchant: Merchant) -> None:
    pending = created(merchant.test, unpaid_order(merchant.test)["order_id"])
    r = merchant.test.get(f"/api/v1/payments/verify/{pending['id']}")
    assert r.status_code == 200, r.text
    assert r.content == b'{"data":false}'

    order = new_order(merchant.test)
    paid = created(merchant.test, order["order_id"])
    server.wait_for_status(merchant.test, order["order_id"], "completed")
    r = merchant.test.get(f"/api/v1/payments/verify/{paid['id']}")
    assert r.status_code == 200, r.text
    assert r.content == b'{"data":true}'
    assert r.json()["data"] is True


# --- bad input ----------------------------------------------------------------------------

@pytest.fixture
def order_id(merchant: Merchant) -> str:
    return str(unpaid_order(merchant.test)["order_id"])


def _fields(error: dict[str, Any]) -> list[str]:
    return [d["field"] for d in error.get("details", [])]


@pytest.mark.parametrize(("body", "field"), [
    pytest.param({"orderId": "ORDER"}, "subject", id="subject-missing"),
    pytest.param({"subject": "s"}, "orderId", id="orderId-missing"),
    pytest.param({"orderId": 123, "subject": "s"}, "orderId", id="orderId-number"),
    pytest.param({"orderId": ["ORDER"], "subject": "s"}, "orderId", id="orderId-list"),
    pytest.param({"orderId": None, "subject": "s"}, "orderId", id="orderId-null"),
    pytest.param({"orderId": "", "subject": "s"}, "orderId", id="orderId-empty"),
    pytest.param({"orderId": "o" * 10_000, "subject": "s"}, "orderId", id="orderId-huge"),
    pytest.param({"orderId": "ORDER", "subject": 5}, "subject", id="subject-number"),
    pytest.param({"orderId": "ORDER", "subject": ""}, "subject", id="subject-empty"),
    pytest.param({"orderId": "ORDER", "subject": "s" * 256}, "subject", id="subject-256"),
    pytest.param({"orderId": "ORDER", "subject": "s", "description": "d" * 1001},
                 "description", id="description-1001"),
    pytest.param({"orderId": "ORDER", "subject": "s", "description": {"a": 1}},
                 "description", id="description-object"),
    pytest.param({"orderId": "ORDER", "subject": "s", "payer": "p" * 101}, "payer",
                 id="payer-101"),
    pytest.param({"orderId": "ORDER", "subject": "s", "payer": True}, "payer",
                 id="payer-bool"),
    pytest.param({"orderId": "ORDER", "subject": "s", "totalAmount": 1}, "totalAmount",
                 id="unknown-field"),
    pytest.param({"order_id": "ORDER", "subject": "s"}, "orderId", id="snake-case-name"),
])
def test_invalid_bodies_are_validation_errors(merchant: Merchant, order_id: str,
                                              body: dict[str, Any], field: str) -> None:
    if body.get("orderId") == "ORDER":
        body = {**body, "orderId": order_id}
    if body.get("order_id") == "ORDER":
        body = {**body, "order_id": order_id}
    error = assert_error(merchant.test.post("/api/v1/payments", json=body), 400,
                         "validation_error")
    assert field in _fields(error), error
    # Nothing was made: the order's first Payment is still to come.
    assert create(merchant.test, order_id).status_code == 201


@pytest.mark.parametrize("raw", [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="not-json"),
    pytest.param(b"[1, 2]", id="array"),
    pytest.param(b'"ord_x"', id="string"),
    pytest.param(b'{"orderId": "ORDER", "subject": "a\\u0000b"}', id="nul-subject"),
    pytest.param(b'{"orderId": "ORDER\\u0000", "subject": "s"}', id="nul-orderId"),
    pytest.param(b'{"orderId": "ORDER", "subject": "s", "payer": "\\ud800"}',
                 id="lone-surrogate"),
    pytest.param(b'{"orderId": "ORDER", "subject": "s"', id="truncated"),
    pytest.param(b'{"orderId": "ORDER", "subject": 1e999}', id="huge-number"),
])
def test_malformed_bodies_are_clean_400s(merchant: Merchant, order_id: str,
                                         raw: bytes) -> None:
    r = merchant.test.post("/api/v1/payments", content=raw.replace(b"ORDER", order_id.encode()),
                           headers={"Content-Type": "application/json"})
    assert_error(r, 400, "validation_error")
    assert create(merchant.test, order_id).status_code == 201


def test_a_body_over_the_size_limit_is_413(merchant: Merchant, order_id: str) -> None:
    r = create(merchant.test, order_id, description="d" * 100_000)
    assert_error(r, 413, "request_too_large")
    assert create(merchant.test, order_id).status_code == 201


def test_limits_are_inclusive(merchant: Merchant) -> None:
    payment = created(merchant.test, unpaid_order(merchant.test)["order_id"],
                      subject="s" * 255, description="d" * 1000, payer="p" * 100)
    assert (len(payment["subject"]), len(payment["description"]), len(payment["payer"])) == (
        255, 1000, 100)
    unicode = created(merchant.test, unpaid_order(merchant.test)["order_id"],
                      subject="支" * 255, description="付" * 1000)
    assert get(merchant.test, unicode["id"])["subject"] == "支" * 255


@pytest.mark.parametrize("payment_id", [
    "abc", "99999999999999999999", "9223372036854775808", "999999999999999999", "0", "-1",
    "01", "1.0", "+1", "1e3", "%00", "%20", "١", "0x10", "1%2F2", "1 ",
])
def test_ids_that_name_no_payment_are_404(merchant: Merchant, payment_id: str) -> None:
    for path in ("", "verify/", "retry/"):
        r = merchant.test.get(f"/api/v1/payments/{path}{payment_id}")
        assert r.status_code == 404, (path, payment_id, r.text)
        assert r.json()["error"]["code"] in ("payment_not_found", "not_found"), r.text


def test_wrong_methods_and_missing_ids_are_not_500s(merchant: Merchant) -> None:
    assert merchant.test.get("/api/v1/payments").status_code == 405
    assert merchant.test.delete("/api/v1/payments/1").status_code == 405
    assert merchant.test.post("/api/v1/payments/retry/1", json={}).status_code == 405
    r = merchant.test.get("/api/v1/payments/retry/", follow_redirects=True)
    assert r.status_code == 404, r.text


# --- the OpenAPI document -----------------------------------------------------------------

def test_openapi_describes_the_payments_resource(server: KassaServer,
                                                 merchant: Merchant) -> None:
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    paths = document["paths"]
    create_op = paths["/api/v1/payments"]["post"]
    get_op = paths["/api/v1/payments/{payment_id}"]["get"]
    retry_op = paths["/api/v1/payments/retry/{payment_id}"]["get"]
    verify_op = paths["/api/v1/payments/verify/{payment_id}"]["get"]
    ref = {"$ref": "#/components/schemas/PaymentData"}
    assert create_op["responses"]["201"]["content"]["application/json"]["schema"] == ref
    assert create_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreatePaymentResource"}
    for op in (get_op, retry_op):
        assert op["responses"]["200"]["content"]["application/json"]["schema"] == ref
    assert verify_op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PaymentVerification"}
    # The retry is a GET that writes: the secret is required, and it has no body.
    assert retry_op["security"] == [{"apiKey": [], "apiSecret": []}]
    assert "requestBody" not in retry_op
    assert {"apiKey": []} in get_op["security"] and {"apiKey": []} in verify_op["security"]
    assert "409" in retry_op["responses"] and "404" in get_op["responses"]
    assert set(document["components"]["schemas"]["Payment"]["properties"]) == set(SEED_FIELDS)

    order = new_order(merchant.test)
    r = create(merchant.test, order["order_id"], description="d", payer="p")
    schema_check(document, "PaymentData", r.json())
    schema_check(document, "Payment", r.json()["data"])
    server.wait_for_status(merchant.test, order["order_id"], "completed")
    schema_check(document, "Payment", get(merchant.test, r.json()["data"]["id"]))
    verify = merchant.test.get(f"/api/v1/payments/verify/{r.json()['data']['id']}")
    schema_check(document, "PaymentVerification", verify.json())
    bare = created(merchant.test, unpaid_order(merchant.test)["order_id"])
    schema_check(document, "Payment", bare)
