"""Every error row of the seed's "Create Payment Order" and "Query Payment Status" tables,
provoked over HTTP and checked in the seed's format {"error": {"code", "message", ...}}.

(429 rate_limit_exceeded has its own tests.) Every rejected write is also checked to
have changed nothing: the task still has no order, or still has the order it had.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.factories import assert_error, new_task, pay_body
from tests.support.harness import KassaServer, Merchant

DECLINED_CARD = "4000000000000002"


def task_order(client: httpx.Client, task_id: str) -> str | None:
    """The task's current order id (None: never paid)."""
    r = client.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    order_id = r.json()["order_id"]
    assert (order_id is None) == (r.json()["payment_status"] is None), r.json()
    return None if order_id is None else str(order_id)


# --- 400 validation_error ------------------------------------------------------------------

def test_validation_error_names_the_missing_field(server: KassaServer,
                                                  merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    body = pay_body(task_id)
    del body["payment_method"]
    error = assert_error(merchant.test.post("/api/v1/payment/create", json=body), 400,
                         "validation_error")
    assert {"field": "payment_method", "message": "Field required"} in error["details"]
    assert task_order(merchant.test, task_id) is None


def test_validation_error_for_a_currency_other_than_the_tasks(server: KassaServer,
                                                              merchant: Merchant) -> None:
    task_id = new_task(merchant.test)  # a CNY task
    error = assert_error(
        merchant.test.post("/api/v1/payment/create", json=pay_body(task_id, currency="USD")),
        400, "validation_error")
    assert [d["field"] for d in error["details"]] == ["currency"]
    assert task_order(merchant.test, task_id) is None


# --- 400 amount_mismatch -------------------------------------------------------------------

@pytest.mark.parametrize("provided", [3000, 4999, 5001, 1_000_000])
def test_amount_mismatch_names_both_amounts(server: KassaServer, merchant: Merchant,
                                            provided: int) -> None:
    task_id = new_task(merchant.test, amount=5000)
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id, amount=provided))
    error = assert_error(r, 400, "amount_mismatch")
    assert error["expected_amount"] == 5000
    assert error["provided_amount"] == provided
    assert str(provided) in error["message"] and "5000" in error["message"]
    assert task_order(merchant.test, task_id) is None
    # The right amount is then accepted: the rejected call left nothing in the way.
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id))
    assert r.status_code == 201, r.text
    assert task_order(merchant.test, task_id) == r.json()["order_id"]


def test_rejected_request_leaves_its_idempotency_key_unused(server: KassaServer,
                                                            merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    key = {"Idempotency-Key": f"pay-{task_id}"}
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id, amount=3000),
                           headers=key)
    assert_error(r, 400, "amount_mismatch")
    # Same key, corrected body: not "idempotency_key_reused", a fresh order.
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id), headers=key)
    assert r.status_code == 201, r.text
    assert task_order(merchant.test, task_id) == r.json()["order_id"]


# --- 401 invalid_credentials ---------------------------------------------------------------

HeaderMaker = Callable[[Merchant, Merchant], dict[str, str]]

# How the headers are built from this merchant and another one.
CREDENTIAL_CASES: list[Any] = [
    pytest.param(lambda m, o: {}, id="no-headers"),
    pytest.param(lambda m, o: {"X-API-Secret": m.test_secret}, id="secret-without-key"),
    pytest.param(lambda m, o: {"Authorization": "Bearer zr_test_not_a_real_key",
                               "X-API-Secret": m.test_secret}, id="wrong-key"),
    pytest.param(lambda m, o: {"Authorization": f"Bearer {m.test_key}",
                               "X-API-Secret": "not-the-secret"}, id="wrong-secret"),
    pytest.param(lambda m, o: {"Authorization": f"Bearer {m.test_key}", "X-API-Secret": ""},
                 id="empty-secret"),
    pytest.param(lambda m, o: {"Authorization": f"Bearer {m.test_key}",
                               "X-API-Secret": m.live_secret}, id="live-secret-with-test-key"),
    pytest.param(lambda m, o: {"Authorization": f"Bearer {m.live_key}",
                               "X-API-Secret": m.test_secret}, id="test-secret-with-live-key"),
    pytest.param(lambda m, o: {"Authorization": f"Bearer {m.test_key}",
                               "X-API-Secret": o.test_secret}, id="other-merchants-secret"),
    pytest.param(lambda m, o: {"Authorization": f"Bearer {m.test_secret}",
                               "X-API-Secret": m.test_secret}, id="secret-as-key"),
    pytest.param(lambda m, o: {"Authorization": "Bearer", "X-API-Secret": m.test_secret},
                 id="bearer-without-key"),
    pytest.param(lambda m, o: {"Authorization": f"Basic {m.test_key}",
                               "X-API-Secret": m.test_secret}, id="basic-scheme"),
    pytest.param(lambda m, o: {"Authorization": m.test_key, "X-API-Secret": m.test_secret},
                 id="key-without-scheme"),
    pytest.param(lambda m, o: {"Authorization": f"Bearer {m.test_key} {m.test_key}",
                               "X-API-Secret": m.test_secret}, id="bearer-two-tokens"),
    pytest.param(lambda m, o: {"Authorization": "Bearer " + "k" * 5000,
                               "X-API-Secret": m.test_secret}, id="oversized-key"),
]


@pytest.mark.parametrize("make_headers", CREDENTIAL_CASES)
def test_bad_credentials_on_create_and_query(server: KassaServer, merchant: Merchant,
                                            make_headers: HeaderMaker) -> None:
    task_id = new_task(merchant.test)
    headers = make_headers(merchant, server.merchant())
    with server.client() as anonymous:
        r = anonymous.post("/api/v1/payment/create", json=pay_body(task_id), headers=headers)
        assert_error(r, 401, "invalid_credentials")
        assert task_order(merchant.test, task_id) is None

        order_id = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id)).json()[
            "order_id"]
        r = anonymous.get("/api/v1/payment/query", params={"order_id": order_id},
                          headers=headers)
        assert_error(r, 401, "invalid_credentials")
        assert order_id not in r.text  # nothing about the order leaks
    # A key alone is enough for a read (SPEC §1): the 401 above was about the credentials.
    with server.client(merchant.test_key) as key_only:
        ok = key_only.get("/api/v1/payment/query", params={"order_id": order_id})
    assert ok.status_code == 200 and ok.json()["order_id"] == order_id


def test_create_with_key_but_no_secret(server: KassaServer, merchant: Merchant) -> None:
    """Mutating calls need both headers (SPEC §1), even with a valid key."""
    task_id = new_task(merchant.test)
    with server.client(merchant.test_key) as key_only:
        r = key_only.post("/api/v1/payment/create", json=pay_body(task_id))
    assert_error(r, 401, "invalid_credentials")
    assert task_order(merchant.test, task_id) is None


# --- 404 task_not_found --------------------------------------------------------------------

def test_task_not_found_for_an_unknown_task(server: KassaServer, merchant: Merchant) -> None:
    r = merchant.test.post("/api/v1/payment/create",
                           json=pay_body("550e8400-e29b-41d4-a716-000000000000"))
    error = assert_error(r, 404, "task_not_found")
    assert error["task_id"] == "550e8400-e29b-41d4-a716-000000000000"
    assert_error(merchant.test.get("/api/v1/tasks/550e8400-e29b-41d4-a716-000000000000"),
                 404, "task_not_found")


def test_task_not_found_for_another_merchants_task(server: KassaServer,
                                                   merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    other = server.merchant()
    r = other.test.post("/api/v1/payment/create", json=pay_body(task_id))
    assert_error(r, 404, "task_not_found")
    assert_error(other.test.get(f"/api/v1/tasks/{task_id}"), 404, "task_not_found")
    # A's task is untouched and A can still pay for it.
    assert task_order(merchant.test, task_id) is None
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id))
    assert r.status_code == 201, r.text


def test_task_not_found_across_modes(server: KassaServer, merchant: Merchant) -> None:
    """Live and test data never mix: the live key cannot see the test task."""
    task_id = new_task(merchant.test)
    assert_error(merchant.live.post("/api/v1/payment/create", json=pay_body(task_id)), 404,
                 "task_not_found")
    assert_error(merchant.live.get(f"/api/v1/tasks/{task_id}"), 404, "task_not_found")
    assert task_order(merchant.test, task_id) is None


# --- 409 duplicate_order -------------------------------------------------------------------

def test_duplicate_order_while_pending(server: KassaServer, merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    # A card order without a test card waits for the payer: it stays pending.
    first = merchant.test.post("/api/v1/payment/create",
                               json=pay_body(task_id, payment_method="card"))
    assert first.status_code == 201, first.text
    order_id = first.json()["order_id"]
    for method in ("card", "alipay", "wechat"):
        r = merchant.test.post("/api/v1/payment/create",
                               json=pay_body(task_id, payment_method=method))
        error = assert_error(r, 409, "duplicate_order")
        assert error["order_id"] == order_id
    assert task_order(merchant.test, task_id) == order_id
    assert merchant.test.get("/api/v1/payment/query", params={"order_id": order_id}
                             ).json()["status"] == "pending"


def test_duplicate_order_after_completion(server: KassaServer, merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    order_id = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id)).json()[
        "order_id"]
    server.wait_for_status(merchant.test, order_id, "completed")
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id))
    error = assert_error(r, 409, "duplicate_order")
    assert error["order_id"] == order_id
    assert task_order(merchant.test, task_id) == order_id
    again = server.wait_for_status(merchant.test, order_id, "completed")
    assert again["escrow"]["held_cents"] == 5000  # paid once, not twice


def test_new_order_allowed_after_a_failed_one(server: KassaServer, merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    r = merchant.test.post("/api/v1/payment/create",
                           json=pay_body(task_id, payment_method="card", test_card=DECLINED_CARD))
    assert r.status_code == 201, r.text
    failed_id = r.json()["order_id"]
    failed = server.wait_for_status(merchant.test, failed_id, "failed")
    assert failed["failure_code"] == "payment_failed"

    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id))
    assert r.status_code == 201, r.text
    retry_id = r.json()["order_id"]
    assert retry_id != failed_id
    assert task_order(merchant.test, task_id) == retry_id
    # The new order is now the task's live order: a third create is a duplicate of *it*.
    error = assert_error(merchant.test.post("/api/v1/payment/create", json=pay_body(task_id)),
                         409, "duplicate_order")
    assert error["order_id"] == retry_id
    # The failed order is still there, unchanged.
    assert merchant.test.get("/api/v1/payment/query", params={"order_id": failed_id}
                             ).json()["status"] == "failed"


def test_new_order_allowed_after_an_expired_one(server: KassaServer, merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    r = merchant.test.post("/api/v1/payment/create",
                           json=pay_body(task_id, payment_method="card", expires_in_seconds=300))
    assert r.status_code == 201, r.text
    expired_id = r.json()["order_id"]
    server.ctx.clock.advance(301)
    server.wait_for_status(merchant.test, expired_id, "expired")
    r = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id))
    assert r.status_code == 201, r.text
    assert task_order(merchant.test, task_id) == r.json()["order_id"] != expired_id


# --- 404 order_not_found -------------------------------------------------------------------

@pytest.mark.parametrize("order_id", ["ord_doesnotexist000000", "x", "550e8400"])
def test_order_not_found_for_an_unknown_order(server: KassaServer, merchant: Merchant,
                                              order_id: str) -> None:
    error = assert_error(merchant.test.get("/api/v1/payment/query", params={"order_id": order_id}),
                         404, "order_not_found")
    assert error["order_id"] == order_id


def test_order_not_found_for_another_merchants_order(server: KassaServer,
                                                     merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    order_id = merchant.test.post("/api/v1/payment/create", json=pay_body(task_id)).json()[
        "order_id"]
    other = server.merchant()
    assert_error(other.test.get("/api/v1/payment/query", params={"order_id": order_id}), 404,
                 "order_not_found")
    with server.client(other.test_key) as key_only:  # the key-only read path too
        assert_error(key_only.get("/api/v1/payment/query", params={"order_id": order_id}), 404,
                     "order_not_found")
    # The same merchant's live key: modes never mix.
    assert_error(merchant.live.get("/api/v1/payment/query", params={"order_id": order_id}), 404,
                 "order_not_found")
    # The owner still sees it.
    r = merchant.test.get("/api/v1/payment/query", params={"order_id": order_id})
    assert r.status_code == 200 and r.json()["task_id"] == task_id


# --- routes --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v1/payment/cancel",
                                  "/api/v2/payment/create"])
def test_unknown_route_is_a_json_404(server: KassaServer, merchant: Merchant, path: str) -> None:
    assert_error(merchant.test.get(path), 404, "not_found")
    assert_error(merchant.test.post(path, json={}), 404, "not_found")


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/api/v1/payment/create", "POST"),
    ("PUT", "/api/v1/payment/create", "POST"),
    ("POST", "/api/v1/payment/query", "GET"),
    ("DELETE", "/api/v1/payment/query", "GET"),
    ("DELETE", "/api/v1/tasks/some-task", "GET"),
    ("GET", "/api/v1/tasks", "POST"),
])
def test_wrong_method_is_a_json_405(server: KassaServer, merchant: Merchant, method: str,
                                    path: str, allowed: str) -> None:
    r = merchant.test.request(method, path)
    assert_error(r, 405, "method_not_allowed")
    assert allowed in [m.strip() for m in r.headers["allow"].split(",")]
