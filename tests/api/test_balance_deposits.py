"""Deposits (POST /api/v1/payment/deposit), paying from the balance, and
GET /api/v1/payment/balance (seed 000 "Check Account Balance", SPEC §2, §4), over HTTP."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import httpx

from kassa.balances.schemas import AccountBalance
from tests.api.test_escrow import (
    account_events,
    approve,
    balance,
    dispatch,
    paid_task,
    paid_tasks,
    query,
    refunded,
    transactions,
    wait_refund,
)
from tests.support.factories import RETURN_URL, assert_error, new_task, pay
from tests.support.harness import KassaServer, Merchant

BALANCE_FIELDS = set(AccountBalance.model_fields)
SEED_BALANCE_FIELDS = {"balance_cents", "balance_rmb", "currency", "escrow_cents", "escrow_rmb",
                       "lifetime_spent_cents", "lifetime_spent_rmb", "last_updated"}
RMB = ("balance_rmb", "escrow_rmb", "lifetime_spent_rmb")


def deposit(client: httpx.Client, amount: int, method: str = "alipay", **fields: Any
            ) -> httpx.Response:
    return client.post("/api/v1/payment/deposit", json={
        "amount": amount, "payment_method": method, "return_url": RETURN_URL, **fields})


def deposited(server: KassaServer, client: httpx.Client, *amounts: int) -> list[str]:
    """Deposits that complete (the sandbox settles them); their order ids."""
    ids = []
    for amount in amounts:
        r = deposit(client, amount)
        assert r.status_code == 201, r.text
        ids.append(str(r.json()["order_id"]))
    for order_id in ids:
        server.wait_for_status(client, order_id, "completed")
    return ids


def assert_rmb_exact(client: httpx.Client, cents: dict[str, int]) -> None:
    """Each *_rmb is a JSON number with exactly two decimals, written as such in the raw
    text, equal to the cents / 100 exactly."""
    r = client.get("/api/v1/payment/balance")
    assert r.status_code == 200, r.text
    for field in RMB:
        match = re.search(rf'"{field}":(-?\d+\.\d\d)(?=[,}}])', r.text)
        assert match, (field, r.text)
        expected = Decimal(cents[field.replace("_rmb", "_cents")]) / 100
        assert Decimal(match.group(1)) == expected, (field, match.group(1), expected)
        assert match.group(1) == f"{expected:.2f}"
    parsed = balance(client)
    for field in RMB:
        assert isinstance(parsed[field], Decimal)
        assert parsed[field] == Decimal(parsed[field.replace("_rmb", "_cents")]) / 100


def test_deposit_limits_and_validation(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    for amount in (9999, 1000, 500):
        error = assert_error(deposit(client, amount), 400, "limit_exceeded")
        assert (error["limit"], error["limit_cents"]) == ("deposit_minimum", 10_000)
    # The minimum is in CNY: 1400 USD cents are 9940 CNY cents.
    error = assert_error(deposit(client, 1400, currency="USD"), 400, "limit_exceeded")
    assert (error["limit"], error["amount_cny_cents"]) == ("deposit_minimum", 9940)
    # Paying a deposit from the balance would move nothing.
    assert_error(deposit(client, 20_000, method="balance"), 400, "validation_error")
    for fields in ({"amount": 0}, {"amount": -10_000}, {"amount": 10_000.0},
                   {"amount": "10000"}, {"return_url": None}, {"currency": "EUR"},
                   {"payment_method": "bitcoin"}, {"task_id": "t1"}):
        body = {"amount": 20_000, "payment_method": "alipay", "return_url": RETURN_URL,
                **fields}
        r = client.post("/api/v1/payment/deposit", json=body)
        assert_error(r, 400, "validation_error")
    # Bank transfer: enterprise only.
    assert_error(deposit(client, 100_000, method="bank_transfer"), 400,
                 "payment_method_unavailable")
    assert transactions(client)["data"] == []
    assert balance(client)["balance_cents"] == 0
    assert account_events(server, merchant.account_id) == []


def test_deposits_credit_the_balance_with_exact_rmb(server: KassaServer,
                                                    merchant: Merchant) -> None:
    client = merchant.test
    before = balance(client)
    assert set(before) == BALANCE_FIELDS and set(before) >= SEED_BALANCE_FIELDS
    assert (before["balance_cents"], before["escrow_cents"], before["lifetime_spent_cents"],
            before["currency"]) == (0, 0, 0, "CNY")
    assert_rmb_exact(client, {"balance_cents": 0, "escrow_cents": 0,
                              "lifetime_spent_cents": 0})
    assert '"balance_rmb":0.00' in client.get("/api/v1/payment/balance").text

    r = deposit(client, 20_000, method="wechat")
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["type"], order["status"], order["task_id"], order["amount"]) == (
        "deposit", "pending", None, 20_000)
    assert order["cost_breakdown"] == {"worker_payout_cents": 0, "platform_fee_cents": 0,
                                       "total_cents": 20_000}
    assert balance(client)["balance_cents"] == 0  # not before the channel confirms
    done = server.wait_for_status(client, order["order_id"], "completed")
    assert done["escrow"]["held_cents"] == 0  # a deposit never sits in escrow
    text = client.get("/api/v1/payment/balance").text
    assert '"balance_rmb":200.00' in text, text
    deposited(server, client, 10_005)
    assert_rmb_exact(client, {"balance_cents": 30_005, "escrow_cents": 0,
                              "lifetime_spent_cents": 0})
    assert '"balance_rmb":300.05' in client.get("/api/v1/payment/balance").text

    task_id, _ = dispatch(client, amount=1003, method="balance")
    assert_rmb_exact(client, {"balance_cents": 29_002, "escrow_cents": 1003,
                              "lifetime_spent_cents": 0})
    assert approve(client, task_id, "w1").status_code == 200
    assert_rmb_exact(client, {"balance_cents": 29_002, "escrow_cents": 0,
                              "lifetime_spent_cents": 1003})
    assert '"lifetime_spent_rmb":10.03' in client.get("/api/v1/payment/balance").text

    rows = [e for e in account_events(server, merchant.account_id)
            if e["object_id"] == order["order_id"]]
    assert [(e["type"], e["sequence"]) for e in rows] == [("payment.created", 1),
                                                         ("payment.completed", 2)]
    assert rows[1]["payload"]["data"]["type"] == "deposit"
    deposits = transactions(client, type="deposit")["data"]
    assert sorted((d["amount"], d["status"], d["task_id"]) for d in deposits) == [
        (10_005, "completed", None), (20_000, "completed", None)]


def test_paying_from_a_short_balance_changes_nothing(server: KassaServer,
                                                     merchant: Merchant) -> None:
    client = merchant.test
    # Nothing at all in the balance yet.
    task_id = new_task(client)
    error = assert_error(pay(client, task_id, payment_method="balance"), 400,
                         "insufficient_funds")
    assert (error["balance_cents"], error["required_cents"]) == (0, 5000)

    deposited(server, client, 10_000)
    dispatch(client, amount=5000, method="balance")
    before = balance(client)
    assert (before["balance_cents"], before["escrow_cents"]) == (5000, 5000)
    history_before = transactions(client)["data"]
    events_before = account_events(server, merchant.account_id)

    short = new_task(client, amount=6000)
    error = assert_error(pay(client, short, amount=6000, payment_method="balance"), 400,
                         "insufficient_funds")
    assert (error["balance_cents"], error["required_cents"]) == (5000, 6000)
    # Through POST /api/v1/tasks: neither the task nor its order is created.
    r = client.post("/api/v1/tasks", json={
        "task_id": "short-dispatch", "title": "Too dear", "amount": 5001, "currency": "CNY",
        "payment_method": "balance", "return_url": RETURN_URL})
    error = assert_error(r, 400, "insufficient_funds")
    assert (error["balance_cents"], error["required_cents"]) == (5000, 5001)
    assert_error(client.get("/api/v1/tasks/short-dispatch"), 404, "task_not_found")

    # Nothing changed: no order, no history row, no event, the same balance.
    after = balance(client)
    assert {k: after[k] for k in ("balance_cents", "escrow_cents", "refunds_in_flight_cents",
                                  "lifetime_spent_cents")} == {
        "balance_cents": 5000, "escrow_cents": 5000, "refunds_in_flight_cents": 0,
        "lifetime_spent_cents": 0}
    assert after["last_updated"] == before["last_updated"]
    assert transactions(client)["data"] == history_before
    assert account_events(server, merchant.account_id) == events_before
    task = client.get(f"/api/v1/tasks/{short}").json()
    assert (task["status"], task["order_id"], task["payment_status"]) == ("open", None, None)

    # The task is still payable: exactly the balance, or through a channel.
    r = pay(client, short, amount=6000, payment_method="alipay")
    assert r.status_code == 201, r.text
    exact = new_task(client, amount=5000)
    r = pay(client, exact, amount=5000, payment_method="balance")
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "completed"
    assert balance(client)["balance_cents"] == 0


def test_balance_reads_with_the_key_alone(server: KassaServer, merchant: Merchant) -> None:
    deposited(server, merchant.test, 10_000)
    with server.client(merchant.test_key) as key_only:  # as the seed's example: no secret
        r = key_only.get("/api/v1/payment/balance")
        assert r.status_code == 200, r.text
        assert r.json()["balance_cents"] == 10_000
        # Mutating calls still need the secret.
        assert_error(key_only.post("/api/v1/payment/deposit", json={
            "amount": 10_000, "payment_method": "alipay", "return_url": RETURN_URL}),
            401, "invalid_credentials")
    with server.client() as anonymous:
        assert_error(anonymous.get("/api/v1/payment/balance"), 401, "invalid_credentials")
    with server.client(merchant.test_key, "wrong-secret") as wrong:
        assert_error(wrong.get("/api/v1/payment/balance"), 401, "invalid_credentials")
    # Live and test never mix.
    live = balance(merchant.live)
    assert (live["balance_cents"], live["escrow_cents"], live["lifetime_spent_cents"]) == (
        0, 0, 0)


def test_escrow_is_the_sum_of_what_the_orders_hold(server: KassaServer,
                                                   merchant: Merchant) -> None:
    client = merchant.test
    made = paid_tasks(server, client, 5000, 5000, 3000, 2000, 1234)
    (_, held), (_, partly), (approved, _), (_, in_flight), (_, failing) = made
    _, usd = paid_task(server, client, amount=1000, currency="USD")
    _, pending = dispatch(client, method="card")
    refunded(client, partly, amount=1000, refund_method="balance")
    assert approve(client, approved, "w1").status_code == 200
    small = refunded(client, in_flight, amount=500)
    refused = refunded(client, failing, test_outcome="failed")
    wait_refund(client, small["refund_id"], "completed")
    wait_refund(client, refused["refund_id"], "failed")  # back in escrow

    orders = [held, partly, made[2][1], in_flight, failing, usd, pending]
    held_by_orders = sum(query(client, o)["escrow"]["held_cents"] for o in orders)
    assert held_by_orders == 5000 + 4000 + 0 + 1500 + 1234 + 7100 + 0
    now = balance(client)
    assert now["escrow_cents"] == held_by_orders
    assert now["refunds_in_flight_cents"] == 0
    assert now["balance_cents"] == 1000
    assert now["lifetime_spent_cents"] == 3000
