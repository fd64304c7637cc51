"""Bad input of every kind gets a 4xx in the seed's error format and changes nothing.

Every rejected create is followed by a look at the task (still no order), and for
the boundaries the value just inside the limit is shown to be accepted, so each
rejection is about the one thing that was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support.factories import MISSING, assert_error, new_task, pay, pay_body
from tests.support.harness import KassaServer, Merchant


def error_fields(error: dict[str, Any]) -> list[str]:
    return [d["field"] for d in error.get("details", [])]


def metadata_of_size(size: int) -> dict[str, str]:
    """A metadata object whose compact JSON is exactly `size` bytes."""
    value = {"k": "x" * (size - len('{"k":""}'))}
    assert len(json.dumps(value, separators=(",", ":"))) == size
    return value


@pytest.fixture
def task_id(merchant: Merchant) -> str:
    """An unpaid 5000-cent CNY task."""
    return new_task(merchant.test, title="Bad input target")


def assert_unpaid(client: httpx.Client, task_id: str) -> None:
    r = client.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    assert (r.json()["order_id"], r.json()["payment_status"]) == (None, None), r.json()


def assert_pays_normally(client: httpx.Client, task_id: str) -> None:
    """The follow-up valid request: the task is still payable, exactly once."""
    r = pay(client, task_id)
    assert r.status_code == 201, r.text
    r2 = client.get(f"/api/v1/tasks/{task_id}")
    assert r2.json()["order_id"] == r.json()["order_id"]


# --- create: field by field ----------------------------------------------------------------

LONG_URL = "https://merchant.example/" + "a" * 3000

FIELD_CASES = [
    # wrong types
    pytest.param({"amount": "5000"}, "amount", id="amount-string"),
    pytest.param({"amount": 50.5}, "amount", id="amount-float"),
    pytest.param({"amount": 5000.0}, "amount", id="amount-integral-float"),
    pytest.param({"amount": True}, "amount", id="amount-bool"),
    pytest.param({"amount": None}, "amount", id="amount-null"),
    pytest.param({"amount": [5000]}, "amount", id="amount-list"),
    pytest.param({"task_id": 12345}, "task_id", id="task_id-number"),
    pytest.param({"task_id": None}, "task_id", id="task_id-null"),
    pytest.param({"task_id": ""}, "task_id", id="task_id-empty"),
    pytest.param({"metadata": ["a", "b"]}, "metadata", id="metadata-list"),
    pytest.param({"metadata": "{}"}, "metadata", id="metadata-string"),
    pytest.param({"payment_method": 1}, "payment_method", id="payment_method-number"),
    pytest.param({"return_url": 42}, "return_url", id="return_url-number"),
    # missing required fields
    pytest.param({"task_id": MISSING}, "task_id", id="missing-task_id"),
    pytest.param({"amount": MISSING}, "amount", id="missing-amount"),
    pytest.param({"payment_method": MISSING}, "payment_method", id="missing-payment_method"),
    # unknown values
    pytest.param({"payment_method": "paypal"}, "payment_method", id="payment_method-paypal"),
    pytest.param({"payment_method": "ALIPAY"}, "payment_method", id="payment_method-uppercase"),
    pytest.param({"currency": "EUR"}, "currency", id="currency-EUR"),
    pytest.param({"currency": "cny"}, "currency", id="currency-lowercase"),
    # amounts out of range
    pytest.param({"amount": 0}, "amount", id="amount-zero"),
    pytest.param({"amount": -1}, "amount", id="amount-negative"),
    pytest.param({"amount": -5000}, "amount", id="amount-negative-task-cost"),
    pytest.param({"amount": 10**30}, "amount", id="amount-10e30"),
    pytest.param({"amount": 2**64}, "amount", id="amount-beyond-uint64"),
    # URLs
    pytest.param({"return_url": "not a url"}, "return_url", id="return_url-not-a-url"),
    pytest.param({"return_url": "ftp://x"}, "return_url", id="return_url-ftp"),
    pytest.param({"return_url": "javascript:alert(1)"}, "return_url", id="return_url-javascript"),
    pytest.param({"return_url": "https://"}, "return_url", id="return_url-no-host"),
    pytest.param({"return_url": "https://user:pw@merchant.example/"}, "return_url",
                 id="return_url-credentials"),
    pytest.param({"return_url": LONG_URL}, "return_url", id="return_url-3000-chars"),
    pytest.param({"return_url": ""}, "return_url", id="return_url-empty"),
    pytest.param({"callback_url": "not a url"}, "callback_url", id="callback_url-not-a-url"),
    pytest.param({"callback_url": "ftp://x"}, "callback_url", id="callback_url-ftp"),
    pytest.param({"callback_url": "javascript:alert(1)"}, "callback_url",
                 id="callback_url-javascript"),
    pytest.param({"callback_url": LONG_URL}, "callback_url", id="callback_url-3000-chars"),
    # metadata, extra fields, expiry
    pytest.param({"metadata": metadata_of_size(1025)}, "metadata", id="metadata-1025-bytes"),
    pytest.param({"metadata": metadata_of_size(4096)}, "metadata", id="metadata-4-KB"),
    pytest.param({"amout": 5000}, "amout", id="unknown-field-amout"),
    pytest.param({"expires_in_seconds": 299}, "expires_in_seconds", id="expires-299"),
    pytest.param({"expires_in_seconds": 86401}, "expires_in_seconds", id="expires-86401"),
    pytest.param({"expires_in_seconds": 0}, "expires_in_seconds", id="expires-zero"),
    pytest.param({"expires_in_seconds": "900"}, "expires_in_seconds", id="expires-string"),
    # sandbox test card
    pytest.param({"payment_method": "card", "test_card": "4242424242424241"}, "test_card",
                 id="test_card-bad-luhn"),
    pytest.param({"payment_method": "card", "test_card": "4111111111111111"}, "test_card",
                 id="test_card-not-a-sandbox-card"),
]


@pytest.mark.parametrize(("overrides", "field"), FIELD_CASES)
def test_create_rejects_bad_field(server: KassaServer, merchant: Merchant, task_id: str,
                                  overrides: dict[str, Any], field: str) -> None:
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id, **overrides))
    error = assert_error(r, 400, "validation_error")
    assert field in error_fields(error), error
    assert_unpaid(merchant.test, task_id)
    assert_pays_normally(merchant.test, task_id)


@pytest.mark.parametrize("amount", [5_000_001, 2**63, 2**64 - 1])
def test_amount_above_the_maximum_is_a_mismatch_for_a_payable_task(
        server: KassaServer, merchant: Merchant, task_id: str, amount: int) -> None:
    """A huge integer amount is well-formed; on create it is compared with the task's
    cost, which the limits already bounded when the task was created (see
    test_tasks_reject_amounts_out_of_limits): so it is an amount_mismatch, named exactly
    (no float rounding, no database overflow)."""
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id, amount=amount))
    error = assert_error(r, 400, "amount_mismatch")
    assert (error["expected_amount"], error["provided_amount"]) == (5000, amount)
    assert_unpaid(merchant.test, task_id)
    assert_pays_normally(merchant.test, task_id)


@pytest.mark.parametrize("amount", [5_000_001, 2**63, 2**64 - 1])
def test_tasks_reject_amounts_out_of_limits(server: KassaServer, merchant: Merchant,
                                            amount: int) -> None:
    r = merchant.test.post("/api/v1/tasks", json={
        "task_id": "too-big", "title": "Too big", "amount": amount, "currency": "CNY",
        "dispatch": False})
    error = assert_error(r, 400, "limit_exceeded")
    assert error["limit"] == "per_transaction_maximum"
    assert error["limit_cents"] == 5_000_000
    assert_error(merchant.test.get("/api/v1/tasks/too-big"), 404, "task_not_found")


# --- create: the body as a whole -----------------------------------------------------------

@pytest.mark.parametrize("raw", [
    pytest.param(b'{"task_id":', id="truncated-json"),
    pytest.param(b"{'task_id': 'x'}", id="single-quotes"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'"x"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b"5000", id="number"),
    pytest.param(b"", id="empty"),
    pytest.param(b"   \n", id="whitespace"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
])
def test_create_rejects_a_body_that_is_not_a_json_object(server: KassaServer,
                                                         merchant: Merchant, task_id: str,
                                                         raw: bytes) -> None:
    r = merchant.test.post("/api/v1/payment/create", content=raw,
                           headers={"Content-Type": "application/json"})
    assert_error(r, 400, "validation_error")
    assert_unpaid(merchant.test, task_id)
    assert_pays_normally(merchant.test, task_id)


def _megabyte_body(task_id: str) -> bytes:
    body = pay_body(task_id, metadata={"pad": "x" * (1024 * 1024)})
    return json.dumps(body).encode()


def test_create_rejects_a_1_mb_body(server: KassaServer, merchant: Merchant,
                                    task_id: str) -> None:
    r = merchant.test.post("/api/v1/payment/create", content=_megabyte_body(task_id),
                           headers={"Content-Type": "application/json"})
    assert_error(r, 413, "request_too_large")
    assert_unpaid(merchant.test, task_id)
    assert_pays_normally(merchant.test, task_id)


def test_create_rejects_a_1_mb_chunked_body(server: KassaServer, merchant: Merchant,
                                            task_id: str) -> None:
    """No Content-Length to trust: the size is counted while reading."""
    raw = _megabyte_body(task_id)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 64 * 1024):
            yield raw[i:i + 64 * 1024]

    r = merchant.test.post("/api/v1/payment/create", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "request_too_large")
    assert_unpaid(merchant.test, task_id)
    assert_pays_normally(merchant.test, task_id)


# --- boundaries that must be accepted ------------------------------------------------------

def test_metadata_exactly_at_the_limit_is_accepted(server: KassaServer, merchant: Merchant,
                                                   task_id: str) -> None:
    metadata = metadata_of_size(1024)
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id, metadata=metadata))
    assert r.status_code == 201, r.text
    assert r.json()["metadata"] == metadata
    query = merchant.test.get("/api/v1/payment/query", params={"order_id": r.json()["order_id"]})
    assert query.json()["metadata"] == metadata


@pytest.mark.parametrize("seconds", [300, 86_400])
def test_expiry_at_the_bounds_is_accepted(server: KassaServer, merchant: Merchant,
                                          task_id: str, seconds: int) -> None:
    r = merchant.test.post("/api/v1/payment/create",
                           json=pay_body(task_id, expires_in_seconds=seconds))
    assert r.status_code == 201, r.text
    body = r.json()
    created = datetime.fromisoformat(body["created_at"])
    expires = datetime.fromisoformat(body["expires_at"])
    assert (expires - created).total_seconds() == seconds


# --- Idempotency-Key -----------------------------------------------------------------------

def test_overlong_idempotency_key_is_rejected(server: KassaServer, merchant: Merchant,
                                              task_id: str) -> None:
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id),
                           headers={"Idempotency-Key": "k" * 300})
    error = assert_error(r, 400, "validation_error")
    assert "Idempotency-Key" in error["message"]
    assert_unpaid(merchant.test, task_id)  # the valid body was not executed without its key
    # 255 characters is the documented maximum and works.
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id),
                           headers={"Idempotency-Key": "k" * 255})
    assert r.status_code == 201, r.text


# --- query ---------------------------------------------------------------------------------

@pytest.fixture
def pending_order(merchant: Merchant, task_id: str) -> dict[str, Any]:
    """A card order with no test card: it waits for the payer, so it stays pending."""
    r = merchant.test.post("/api/v1/payment/create",
                           json=pay_body(task_id, payment_method="card"))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize(("params", "field"), [
    pytest.param({}, "order_id", id="no-order_id"),
    pytest.param({"order_id": ""}, "order_id", id="empty-order_id"),
    pytest.param({"order_id": "o" * 10_000}, "order_id", id="order_id-10000-chars"),
])
def test_query_rejects_bad_params(server: KassaServer, merchant: Merchant,
                                  pending_order: dict[str, Any], params: dict[str, str],
                                  field: str) -> None:
    r = merchant.test.get("/api/v1/payment/query", params=params)
    error = assert_error(r, 400, "validation_error")
    assert field in error_fields(error)
    after = merchant.test.get("/api/v1/payment/query",
                              params={"order_id": pending_order["order_id"]})
    assert after.status_code == 200
    assert after.json() == pending_order


# --- tasks endpoint ------------------------------------------------------------------------

TASK = {"task_id": "bad-input-task", "title": "A task", "amount": 5000, "currency": "CNY",
        "dispatch": False}


@pytest.mark.parametrize(("overrides", "field"), [
    pytest.param({"title": MISSING}, "title", id="missing-title"),
    pytest.param({"title": ""}, "title", id="empty-title"),
    pytest.param({"title": "t" * 201}, "title", id="title-201-chars"),
    pytest.param({"amount": "5000"}, "amount", id="amount-string"),
    pytest.param({"amount": 50.5}, "amount", id="amount-float"),
    pytest.param({"amount": 0}, "amount", id="amount-zero"),
    pytest.param({"amount": MISSING}, "amount", id="missing-amount"),
    pytest.param({"currency": "EUR"}, "currency", id="currency-EUR"),
    pytest.param({"currency": MISSING}, "currency", id="missing-currency"),
    pytest.param({"dispatch": "false"}, "dispatch", id="dispatch-string"),
    pytest.param({"metadata": [1]}, "metadata", id="metadata-list"),
    pytest.param({"metadata": metadata_of_size(1025)}, "metadata", id="metadata-1025-bytes"),
    pytest.param({"payment_method": "paypal"}, "payment_method", id="payment_method-paypal"),
    pytest.param({"return_url": "javascript:alert(1)"}, "return_url", id="return_url-js"),
    pytest.param({"callback_url": "ftp://x"}, "callback_url", id="callback_url-ftp"),
    pytest.param({"expires_in_seconds": 299}, "expires_in_seconds", id="expires-299"),
    pytest.param({"titel": "typo"}, "titel", id="unknown-field"),
])
def test_create_task_rejects_bad_field(server: KassaServer, merchant: Merchant,
                                       overrides: dict[str, Any], field: str) -> None:
    body = {k: v for k, v in {**TASK, **overrides}.items() if v is not MISSING}
    error = assert_error(merchant.test.post("/api/v1/tasks", json=body), 400,
                         "validation_error")
    assert field in error_fields(error), error
    assert_error(merchant.test.get("/api/v1/tasks/bad-input-task"), 404, "task_not_found")
    # The id is still free.
    assert merchant.test.post("/api/v1/tasks", json=TASK).status_code == 201


@pytest.mark.parametrize("task_ref", ["../etc", "-leading-dash", "has space", "x" * 65, "ü"])
def test_create_task_rejects_a_bad_task_id(server: KassaServer, merchant: Merchant,
                                           task_ref: str) -> None:
    error = assert_error(merchant.test.post("/api/v1/tasks", json={**TASK, "task_id": task_ref}),
                         400, "validation_error")
    assert error_fields(error) == ["task_id"]
