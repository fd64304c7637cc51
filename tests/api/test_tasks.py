"""POST /api/v1/tasks and GET /api/v1/tasks/{id} (SPEC §4), over HTTP."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from kassa.payments.schemas import PaymentOrder
from tests.support.factories import RETURN_URL, assert_error, pay
from tests.support.harness import KassaServer, Merchant

CALLBACK_URL = "https://merchant.example/hooks/kassa"
ORDER_FIELDS = set(PaymentOrder.model_fields)


def get_task(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def follow_payment_status(client: httpx.Client, task_id: str, until: str,
                          timeout: float = 10.0) -> list[str]:
    """Poll the task until its payment_status is `until`; every status seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = get_task(client, task_id)["payment_status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == until:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} payment went {seen}, never {until}")


def test_dispatch_creates_task_and_pending_payment(server: KassaServer,
                                                   merchant: Merchant) -> None:
    metadata = {"city": "Hangzhou", "shift": 2}
    r = merchant.test.post("/api/v1/tasks", json={
        "title": "Verify restaurant opening hours", "amount": 5000, "currency": "CNY",
        "payment_method": "wechat", "return_url": RETURN_URL, "callback_url": CALLBACK_URL,
        "metadata": metadata, "expires_in_seconds": 1800})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"task", "payment"}
    task, payment = body["task"], body["payment"]

    # The payment is a full order, exactly as payment/create would return it.
    assert set(payment) == ORDER_FIELDS
    assert payment["status"] == "pending"
    assert payment["order_id"].startswith("ord_")
    assert payment["task_id"] == task["task_id"]
    assert (payment["amount"], payment["currency"], payment["payment_method"]) == (
        5000, "CNY", "wechat")
    assert (payment["return_url"], payment["callback_url"]) == (RETURN_URL, CALLBACK_URL)
    assert payment["metadata"] == metadata
    assert payment["cost_breakdown"] == {"worker_payout_cents": 4000,
                                         "platform_fee_cents": 1000, "total_cents": 5000}
    assert payment["payment_url"] == f"{server.base_url}/checkout/{payment['order_id']}"

    assert task["title"] == "Verify restaurant opening hours"
    assert (task["amount"], task["currency"]) == (5000, "CNY")
    assert (task["order_id"], task["payment_status"]) == (payment["order_id"], "pending")
    assert task["metadata"] == metadata

    # The order is real: query returns it; GET on the task shows it progressing.
    query = merchant.test.get("/api/v1/payment/query", params={"order_id": payment["order_id"]})
    assert query.status_code == 200
    assert query.json()["task_id"] == task["task_id"]
    seen = follow_payment_status(merchant.test, task["task_id"], "completed")
    assert seen in (["pending", "completed"], ["completed"]), seen
    final = get_task(merchant.test, task["task_id"])
    assert final["order_id"] == payment["order_id"]
    assert final["payment_status"] == "completed"
    assert final["created_at"] == task["created_at"]


def test_undispatched_task_is_paid_through_payment_create(server: KassaServer,
                                                          merchant: Merchant) -> None:
    r = merchant.test.post("/api/v1/tasks", json={
        "title": "Photograph storefront", "amount": 8800, "currency": "CNY",
        "dispatch": False})
    assert r.status_code == 201, r.text
    assert r.json()["payment"] is None
    task_id = r.json()["task"]["task_id"]
    task = get_task(merchant.test, task_id)
    assert (task["order_id"], task["payment_status"]) == (None, None)

    r = pay(merchant.test, task_id, amount=8800)
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "pending"
    assert get_task(merchant.test, task_id)["order_id"] == order["order_id"]
    seen = follow_payment_status(merchant.test, task_id, "completed")
    assert seen in (["pending", "completed"], ["completed"]), seen
    assert server.wait_for_status(merchant.test, order["order_id"], "completed")[
        "escrow"]["held_cents"] == 8800


def test_undispatched_task_keeps_its_payment_defaults(server: KassaServer,
                                                      merchant: Merchant) -> None:
    """return_url and currency given on the task are used when payment/create omits them."""
    r = merchant.test.post("/api/v1/tasks", json={
        "title": "Defaults", "amount": 5000, "currency": "USD", "dispatch": False,
        "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    task_id = r.json()["task"]["task_id"]
    r = merchant.test.post("/api/v1/payment/create", json={
        "task_id": task_id, "amount": 5000, "payment_method": "alipay"})
    assert r.status_code == 201, r.text
    assert (r.json()["currency"], r.json()["return_url"]) == ("USD", RETURN_URL)


def test_own_task_id_and_duplicate_task(server: KassaServer, merchant: Merchant) -> None:
    first = merchant.test.post("/api/v1/tasks", json={
        "task_id": "shop-42:visit.1", "title": "First", "amount": 5000, "currency": "CNY",
        "payment_method": "alipay", "return_url": RETURN_URL})
    assert first.status_code == 201, first.text
    assert first.json()["task"]["task_id"] == "shop-42:visit.1"
    assert first.json()["payment"]["task_id"] == "shop-42:visit.1"
    order_id = first.json()["payment"]["order_id"]

    for dispatch in (False, True):
        r = merchant.test.post("/api/v1/tasks", json={
            "task_id": "shop-42:visit.1", "title": "Second", "amount": 7000, "currency": "CNY",
            "payment_method": "wechat", "return_url": RETURN_URL, "dispatch": dispatch})
        error = assert_error(r, 409, "duplicate_task")
        assert error["task_id"] == "shop-42:visit.1"

    # The first task is untouched: its title, amount and its one order.
    task = get_task(merchant.test, "shop-42:visit.1")
    assert (task["title"], task["amount"], task["order_id"]) == ("First", 5000, order_id)


def test_task_ids_are_per_merchant_and_mode(server: KassaServer, merchant: Merchant) -> None:
    body = {"task_id": "shared-id", "title": "Mine", "amount": 5000, "currency": "CNY",
            "dispatch": False}
    assert merchant.test.post("/api/v1/tasks", json=body).status_code == 201
    other = server.merchant()
    r = other.test.post("/api/v1/tasks", json={**body, "title": "Theirs"})
    assert r.status_code == 201, r.text
    r = merchant.live.post("/api/v1/tasks", json={**body, "title": "Live"})
    assert r.status_code == 201, r.text
    assert get_task(merchant.test, "shared-id")["title"] == "Mine"
    assert get_task(other.test, "shared-id")["title"] == "Theirs"
    assert get_task(merchant.live, "shared-id")["title"] == "Live"


def test_generated_task_id_is_a_uuid(server: KassaServer, merchant: Merchant) -> None:
    ids = []
    for _ in range(2):
        r = merchant.test.post("/api/v1/tasks", json={
            "title": "No id", "amount": 5000, "currency": "CNY", "dispatch": False})
        assert r.status_code == 201, r.text
        task_id = r.json()["task"]["task_id"]
        assert str(uuid.UUID(task_id)) == task_id  # canonical lowercase, hyphenated
        ids.append(task_id)
    assert ids[0] != ids[1]


@pytest.mark.parametrize("missing", [["payment_method"], ["return_url"],
                                     ["payment_method", "return_url"]])
def test_dispatch_needs_payment_method_and_return_url(server: KassaServer, merchant: Merchant,
                                                      missing: list[str]) -> None:
    body = {"task_id": "needs-fields", "title": "Dispatch me", "amount": 5000,
            "currency": "CNY", "payment_method": "alipay", "return_url": RETURN_URL}
    for field in missing:
        del body[field]
    error = assert_error(merchant.test.post("/api/v1/tasks", json=body), 400, "validation_error")
    assert [d["field"] for d in error["details"]] == missing
    assert all(d["message"] for d in error["details"])
    # Nothing was created: the task id is unknown, and still free.
    assert_error(merchant.test.get("/api/v1/tasks/needs-fields"), 404, "task_not_found")
    r = merchant.test.post("/api/v1/tasks", json={**body, "dispatch": False})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("amount", "currency", "limit", "amount_cny"), [
    (999, "CNY", "per_transaction_minimum", 999),
    (1, "CNY", "per_transaction_minimum", 1),
    (140, "USD", "per_transaction_minimum", 994),  # 140 x 7.1: the CNY equivalent counts
    (5_000_001, "CNY", "per_transaction_maximum", 5_000_001),
])
@pytest.mark.parametrize("dispatch", [True, False])
def test_task_amount_outside_the_limits(server: KassaServer, merchant: Merchant, amount: int,
                                        currency: str, limit: str, amount_cny: int,
                                        dispatch: bool) -> None:
    r = merchant.test.post("/api/v1/tasks", json={
        "task_id": "limited", "title": "Limits", "amount": amount, "currency": currency,
        "payment_method": "alipay", "return_url": RETURN_URL, "dispatch": dispatch})
    error = assert_error(r, 400, "limit_exceeded")
    assert error["limit"] == limit
    assert error["amount_cny_cents"] == amount_cny
    assert_error(merchant.test.get("/api/v1/tasks/limited"), 404, "task_not_found")


@pytest.mark.parametrize(("amount", "currency"), [(1000, "CNY"), (141, "USD"),
                                                  (5_000_000, "CNY")])
def test_task_amount_at_the_limits_is_accepted(server: KassaServer, merchant: Merchant,
                                               amount: int, currency: str) -> None:
    r = merchant.test.post("/api/v1/tasks", json={
        "title": "At the limit", "amount": amount, "currency": currency,
        "payment_method": "alipay", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    assert r.json()["payment"]["amount"] == amount


def test_live_dispatch_without_a_channel_creates_nothing(server: KassaServer,
                                                         merchant: Merchant) -> None:
    """The task and its order are one unit of work: when the order cannot be opened,
    the task is not left behind either."""
    r = merchant.live.post("/api/v1/tasks", json={
        "task_id": "live-task", "title": "Live", "amount": 5000, "currency": "CNY",
        "payment_method": "alipay", "return_url": RETURN_URL})
    assert_error(r, 400, "payment_method_unavailable")
    assert_error(merchant.live.get("/api/v1/tasks/live-task"), 404, "task_not_found")


def test_task_isolation_on_get(server: KassaServer, merchant: Merchant) -> None:
    r = merchant.test.post("/api/v1/tasks", json={
        "title": "Private", "amount": 5000, "currency": "CNY", "payment_method": "alipay",
        "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    task_id = r.json()["task"]["task_id"]
    other = server.merchant()
    error = assert_error(other.test.get(f"/api/v1/tasks/{task_id}"), 404, "task_not_found")
    assert error["task_id"] == task_id
    assert "Private" not in other.test.get(f"/api/v1/tasks/{task_id}").text
    assert_error(merchant.live.get(f"/api/v1/tasks/{task_id}"), 404, "task_not_found")
    with server.client(other.test_key) as key_only:
        assert_error(key_only.get(f"/api/v1/tasks/{task_id}"), 404, "task_not_found")
    assert get_task(merchant.test, task_id)["title"] == "Private"


def test_get_unknown_task(server: KassaServer, merchant: Merchant) -> None:
    error = assert_error(merchant.test.get("/api/v1/tasks/no-such-task"), 404, "task_not_found")
    assert error["task_id"] == "no-such-task"
