"""Limits (SPEC §2): per transaction 1,000 to 5,000,000 cents in CNY, USD converted at
the configured rate, and per-day volume by tier, with failed orders giving theirs back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kassa.tasks import repository as tasks
from tests.support.factories import RETURN_URL, new_task, pay
from tests.support.harness import KassaServer, Merchant

DAILY_LIMIT = {"standard": 10_000_000, "verified": 50_000_000}


def create_task(client: httpx.Client, amount: int, currency: str = "CNY", *,
                dispatch: bool = False, task_id: str | None = None, **fields: Any
                ) -> httpx.Response:
    body: dict[str, Any] = {"title": "Limited task", "amount": amount, "currency": currency,
                            "dispatch": dispatch, **fields}
    if dispatch:
        body.setdefault("payment_method", "alipay")
        body.setdefault("return_url", RETURN_URL)
    if task_id is not None:
        body["task_id"] = task_id
    return client.post("/api/v1/tasks", json=body)


def assert_limit(r: httpx.Response, limit: str) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    error: dict[str, Any] = r.json()["error"]
    assert (error["code"], error["limit"]) == ("limit_exceeded", limit), error
    return error


def assert_no_task(client: httpx.Client, task_id: str) -> None:
    r = client.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "task_not_found"


def assert_no_order(client: httpx.Client, task_id: str) -> None:
    r = client.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    assert (r.json()["order_id"], r.json()["payment_status"]) == (None, None)


def store_task_directly(server: KassaServer, merchant: Merchant, amount: int,
                        currency: str = "CNY") -> str:
    """A task outside today's limits (as one stored before the limits changed would be):
    the API refuses to create one, so it goes in through the repository."""
    task_id = f"legacy-{amount}-{currency}"
    now = server.ctx.clock.now()
    server.db.write_sync(lambda conn: tasks.insert_task(conn, {
        "account_id": merchant.account_id, "mode": "test", "task_id": task_id,
        "title": "Legacy task", "amount": amount, "currency": currency,
        "payment_method": None, "return_url": None, "callback_url": None,
        "metadata_json": None, "status": "open", "current_order_id": None,
        "created_at": now, "updated_at": now}))
    return task_id


# --- per transaction ------------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "limit"), [(999, "per_transaction_minimum"),
                                               (5_000_001, "per_transaction_maximum")])
@pytest.mark.parametrize("dispatch", [False, True])
def test_task_creation_enforces_per_transaction_limits(
        server: KassaServer, merchant: Merchant, amount: int, limit: str,
        dispatch: bool) -> None:
    task_id = f"too-{amount}-{dispatch}"
    error = assert_limit(create_task(merchant.test, amount, dispatch=dispatch,
                                     task_id=task_id), limit)
    assert error["amount_cny_cents"] == amount
    assert error["limit_cents"] == (1_000 if limit.endswith("minimum") else 5_000_000)
    assert_no_task(merchant.test, task_id)


@pytest.mark.parametrize(("amount", "limit"), [(999, "per_transaction_minimum"),
                                               (5_000_001, "per_transaction_maximum")])
def test_payment_create_enforces_per_transaction_limits(
        server: KassaServer, merchant: Merchant, amount: int, limit: str) -> None:
    task_id = store_task_directly(server, merchant, amount)
    assert_limit(pay(merchant.test, task_id, amount), limit)
    assert_no_order(merchant.test, task_id)


@pytest.mark.parametrize("amount", [1_000, 5_000_000])
def test_per_transaction_bounds_are_inclusive(server: KassaServer, merchant: Merchant,
                                              amount: int) -> None:
    r = create_task(merchant.test, amount, dispatch=True)
    assert r.status_code == 201, r.text
    assert r.json()["payment"]["amount_cny"] == amount


# --- USD -----------------------------------------------------------------------------------

def test_usd_order_records_its_cny_amount_and_rate(server: KassaServer,
                                                   merchant: Merchant) -> None:
    task_id = new_task(merchant.test, amount=1_000, currency="USD")
    r = pay(merchant.test, task_id, 1_000, currency="USD")
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["amount"], order["currency"]) == (1_000, "USD")
    assert (order["amount_cny"], order["fx_rate"]) == (7_100, "7.1000")
    done = server.wait_for_status(merchant.test, order["order_id"], "completed")
    # Escrow and ledger are in CNY.
    assert done["escrow"] == {"held_cents": 7_100, "released_cents": 0, "refunded_cents": 0,
                              "worker_payout_cents": 0, "platform_fee_cents": 0,
                              "currency": "CNY"}


def test_usd_limits_apply_to_the_cny_equivalent(server: KassaServer,
                                                merchant: Merchant) -> None:
    # 704,226 USD cents * 7.1 = 5,000,004.6 -> 5,000,005 CNY cents: over the maximum,
    # although the USD amount itself is far below 5,000,000.
    error = assert_limit(create_task(merchant.test, 704_226, "USD", task_id="usd-over"),
                         "per_transaction_maximum")
    assert error["amount_cny_cents"] == 5_000_005
    assert_no_task(merchant.test, "usd-over")
    error = assert_limit(create_task(merchant.test, 704_226, "USD", dispatch=True,
                                     task_id="usd-over-dispatch"), "per_transaction_maximum")
    assert_no_task(merchant.test, "usd-over-dispatch")
    # 704,225 * 7.1 = 4,999,997.5 -> 4,999,998: fits.
    r = create_task(merchant.test, 704_225, "USD", dispatch=True)
    assert r.status_code == 201, r.text
    assert r.json()["payment"]["amount_cny"] == 4_999_998
    # 140 USD cents = 994 CNY cents: under the minimum; 141 = 1,001.1 -> 1,001 fits.
    assert_limit(create_task(merchant.test, 140, "USD"), "per_transaction_minimum")
    assert create_task(merchant.test, 141, "USD").status_code == 201

    legacy = store_task_directly(server, merchant, 704_226, "USD")
    assert_limit(pay(merchant.test, legacy, 704_226, currency="USD"),
                 "per_transaction_maximum")
    assert_no_order(merchant.test, legacy)


# --- per day ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tier", ["standard", "verified"])
def test_daily_limit_by_tier(server: KassaServer, tier: str) -> None:
    merchant = server.merchant(tier=tier)
    limit = DAILY_LIMIT[tier]
    for _ in range(limit // 5_000_000):
        r = create_task(merchant.test, 5_000_000, dispatch=True)
        assert r.status_code == 201, r.text

    # Through task dispatch: refused, and the task is not created either.
    error = assert_limit(create_task(merchant.test, 1_000, dispatch=True,
                                     task_id="one-too-many"), "daily")
    assert (error["limit_cents"], error["used_cents"]) == (limit, limit)
    assert_no_task(merchant.test, "one-too-many")
    # Through payment/create: refused, and the task has no order.
    task_id = new_task(merchant.test, amount=1_000)
    assert_limit(pay(merchant.test, task_id, 1_000), "daily")
    assert_no_order(merchant.test, task_id)


def test_failed_order_gives_its_volume_back(server: KassaServer) -> None:
    standard = server.merchant(tier="standard")
    r = create_task(standard.test, 5_000_000, dispatch=True)
    assert r.status_code == 201, r.text
    r = create_task(standard.test, 5_000_000, dispatch=True, payment_method="card",
                    test_card="4000000000000002")
    assert r.status_code == 201, r.text
    server.wait_for_status(standard.test, r.json()["payment"]["order_id"], "failed")
    # The declined 5,000,000 no longer counts: 5,000,000 + 1,000 fits the day.
    r = create_task(standard.test, 1_000, dispatch=True)
    assert r.status_code == 201, r.text
    # And what counts now is exactly the completed and pending orders.
    r = create_task(standard.test, 4_999_000, dispatch=True, task_id="last-fit")
    assert r.status_code == 201, r.text
    error = assert_limit(create_task(standard.test, 1_000, dispatch=True, task_id="over"),
                         "daily")
    assert error["used_cents"] == 10_000_000
    assert_no_task(standard.test, "over")


def test_enterprise_has_no_daily_limit(server: KassaServer) -> None:
    enterprise = server.merchant(tier="enterprise")
    # 55,000,000 cents in a day: over every other tier's limit.
    for _ in range(11):
        r = create_task(enterprise.test, 5_000_000, dispatch=True)
        assert r.status_code == 201, r.text
    r = create_task(enterprise.test, 1_000, dispatch=True)
    assert r.status_code == 201, r.text
