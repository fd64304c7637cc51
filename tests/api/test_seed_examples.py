"""The seed's own create and query examples, run against a real Kassa on loopback."""

from __future__ import annotations

import re

import httpx

from kassa.accounts import service as accounts
from tests.support.factories import new_task
from tests.support.harness import KassaServer, Merchant

SEED_TASK = "550e8400-e29b-41d4-a716-446655440000"
SEED_CREATE_BODY = {
    "task_id": SEED_TASK,
    "amount": 5000,
    "currency": "CNY",
    "payment_method": "alipay",
    "return_url": "https://your-app.com/payment/success",
    "callback_url": "https://your-app.com/webhooks/payment",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _seed_task(client: httpx.Client) -> None:
    new_task(client, task_id=SEED_TASK, title="Verify restaurant opening hours")


def test_seed_create_example_as_printed(server: KassaServer, merchant: Merchant) -> None:
    _seed_task(merchant.test)
    # The curl example: JSON body with the seed's headers.
    r = merchant.test.post("/api/v1/payment/create", json=SEED_CREATE_BODY,
                           headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    body = r.json()
    for field in ("order_id", "task_id", "payment_url", "qr_code_url", "amount", "currency",
                  "payment_method", "status", "expires_at", "created_at"):
        assert field in body, field
    assert body["order_id"].startswith("ord_")
    assert body["task_id"] == SEED_TASK
    assert body["payment_url"] == f"{server.base_url}/checkout/{body['order_id']}"
    assert body["qr_code_url"] == f"{server.base_url}/qr/{body['order_id']}.png"
    assert (body["amount"], body["currency"], body["payment_method"]) == (5000, "CNY", "alipay")
    assert body["status"] == "pending"
    assert ISO.match(body["expires_at"]) and ISO.match(body["created_at"])
    assert body["cost_breakdown"] == {"worker_payout_cents": 4000, "platform_fee_cents": 1000,
                                      "total_cents": 5000}


def test_seed_create_with_the_sandbox_credentials(server: KassaServer) -> None:
    """SPEC §1: the demo account answers to the seed's sandbox key and secret."""
    server.db.write_sync(lambda conn: accounts.ensure_demo_account(conn, server.ctx))
    with server.client(accounts.DEMO_TEST_KEY, accounts.DEMO_TEST_SECRET) as client:
        task_id = new_task(client, title="Sandbox task")
        r = client.post("/api/v1/payment/create", json={**SEED_CREATE_BODY, "task_id": task_id})
        assert r.status_code == 201, r.text
        # "All test payments automatically succeed after 5 seconds" (here: the test's delay)
        done = server.wait_for_status(client, r.json()["order_id"], "completed")
        assert done["transaction_id"].startswith("txn_")


def test_seed_query_example_and_fields(server: KassaServer, merchant: Merchant) -> None:
    _seed_task(merchant.test)
    order_id = merchant.test.post("/api/v1/payment/create", json=SEED_CREATE_BODY).json()[
        "order_id"]
    # The curl example: key and secret as headers, order_id as a query parameter.
    r = merchant.test.get(f"/api/v1/payment/query?order_id={order_id}")
    assert r.status_code == 200
    assert r.json()["status"] == "pending"
    body = server.wait_for_status(merchant.test, order_id, "completed")
    for field in ("order_id", "task_id", "amount", "currency", "payment_method", "status",
                  "transaction_id", "paid_at", "created_at", "cost_breakdown"):
        assert field in body, field
    assert body["cost_breakdown"] == {"worker_payout_cents": 4000, "platform_fee_cents": 1000,
                                      "total_cents": 5000}
    assert ISO.match(body["paid_at"])
    assert body["escrow"] == {"held_cents": 5000, "released_cents": 0, "refunded_cents": 0,
                              "worker_payout_cents": 0, "platform_fee_cents": 0,
                              "currency": "CNY"}
    # Read-only GETs accept the key alone (SPEC §1).
    with server.client(merchant.test_key) as key_only:
        assert key_only.get("/api/v1/payment/query", params={"order_id": order_id}
                            ).status_code == 200


def test_seed_amount_mismatch_example(server: KassaServer, merchant: Merchant) -> None:
    _seed_task(merchant.test)
    r = merchant.test.post("/api/v1/payment/create", json={**SEED_CREATE_BODY, "amount": 3000})
    assert r.status_code == 400
    assert r.json() == {"error": {
        "code": "amount_mismatch",
        "message": "Payment amount (3000 cents) doesn't match task cost (5000 cents)",
        "expected_amount": 5000,
        "provided_amount": 3000,
    }}
