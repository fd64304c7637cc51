"""The escrow lifecycle over HTTP (issue 3, SPEC §2–§6): pay -> approve releases the escrow
minus the platform fee; pay -> fail / cancel refunds it automatically; partial refunds add
up; refunds to the balance pay the next task; task state errors; the events each step
records. Every test ends with the ledger invariant check (tests/conftest.py).

The small helpers here are shared by test_refunds, test_balance_deposits and
test_transactions.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select

from kassa.db.tables import events
from tests.support.factories import RETURN_URL, assert_error, new_task, pay
from tests.support.harness import KassaServer, Merchant

# --- shared helpers -----------------------------------------------------------------------


def dispatch(client: httpx.Client, *, amount: int = 5000, method: str = "alipay",
             **fields: Any) -> tuple[str, str]:
    """POST /api/v1/tasks with dispatch: the task and its payment order; (task_id, order_id)."""
    r = client.post("/api/v1/tasks", json={
        "title": "Escrow task", "amount": amount, "currency": "CNY", "payment_method": method,
        "return_url": RETURN_URL, **fields})
    assert r.status_code == 201, r.text
    body = r.json()
    return str(body["task"]["task_id"]), str(body["payment"]["order_id"])


def paid_tasks(server: KassaServer, client: httpx.Client, *amounts: int,
               method: str = "alipay", **fields: Any) -> list[tuple[str, str]]:
    """Dispatch one task per amount, then wait until every payment is completed (the
    sandbox settles them all in the same ~0.3 s)."""
    made = [dispatch(client, amount=a, method=method, **fields) for a in amounts]
    for _, order_id in made:
        server.wait_for_status(client, order_id, "completed")
    return made


def paid_task(server: KassaServer, client: httpx.Client, amount: int = 5000,
              method: str = "alipay", **fields: Any) -> tuple[str, str]:
    return paid_tasks(server, client, amount, method=method, **fields)[0]


def query(client: httpx.Client, order_id: str) -> dict[str, Any]:
    r = client.get("/api/v1/payment/query", params={"order_id": order_id})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def refund(client: httpx.Client, order_id: str, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"order_id": order_id, "reason": "task_cancelled", **fields}
    return client.post("/api/v1/payment/refund", json=body)


def refunded(client: httpx.Client, order_id: str, **fields: Any) -> dict[str, Any]:
    """A refund that must be accepted (200)."""
    r = refund(client, order_id, **fields)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def balance(client: httpx.Client) -> dict[str, Any]:
    """GET /api/v1/payment/balance, with the *_rmb numbers parsed exactly (Decimal)."""
    r = client.get("/api/v1/payment/balance")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = json.loads(r.text, parse_float=Decimal)
    return body


def worker_balance(client: httpx.Client, worker_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/workers/{worker_id}/balance")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = json.loads(r.text, parse_float=Decimal)
    return body


def transactions(client: httpx.Client, **params: Any) -> dict[str, Any]:
    r = client.get("/api/v1/payment/transactions", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def history_row(client: httpx.Client, *, refund_id: str | None = None,
                order_id: str | None = None, type_: str = "all") -> dict[str, Any]:
    """The transaction-history row of a refund (or of an order's payment/deposit)."""
    for row in transactions(client, type=type_, limit=100)["data"]:
        if refund_id is not None and row["refund_id"] == refund_id:
            return dict(row)
        if refund_id is None and row["order_id"] == order_id and row["refund_id"] is None:
            return dict(row)
    raise AssertionError(f"no history row for refund {refund_id} / order {order_id}")


def wait_refund(client: httpx.Client, refund_id: str, status: str,
                timeout: float = 10.0) -> dict[str, Any]:
    """Poll the refund's history row (GET /api/v1/payment/transactions) until it shows
    `status` (history statuses: pending, completed, failed)."""
    deadline = time.monotonic() + timeout
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        row = history_row(client, refund_id=refund_id, type_="refund")
        if row["status"] == status:
            return row
        time.sleep(0.05)
    raise AssertionError(f"refund {refund_id} stayed {row.get('status')}, wanted {status}")


def account_events(server: KassaServer, account_id: str) -> list[dict[str, Any]]:
    """Every event row of a merchant, oldest first: type, object_id, sequence, payload."""
    stmt = (select(events.c.event_type, events.c.object_id, events.c.sequence,
                   events.c.payload_json, events.c.mode)
            .where(events.c.account_id == account_id)
            .order_by(events.c.created_at, events.c.sequence))
    rows = server.db.write_sync(lambda conn: conn.execute(stmt).all())
    return [{"type": r.event_type, "object_id": r.object_id, "sequence": r.sequence,
             "mode": r.mode, "payload": json.loads(r.payload_json)} for r in rows]


def events_for(server: KassaServer, account_id: str, object_id: str) -> list[dict[str, Any]]:
    return sorted((e for e in account_events(server, account_id)
                   if e["object_id"] == object_id), key=lambda e: e["sequence"])


def assert_event_envelope(event: dict[str, Any]) -> None:
    payload = event["payload"]
    assert set(payload) == {"event_id", "event", "timestamp", "sequence", "data"}, payload
    assert payload["event"] == event["type"]
    assert payload["sequence"] == event["sequence"]
    assert payload["event_id"].startswith("evt_")


def approve(client: httpx.Client, task_id: str, worker_id: str) -> httpx.Response:
    return client.post(f"/api/v1/tasks/{task_id}/approve", json={"worker_id": worker_id})


def get_task(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def escrow(held: int = 0, released: int = 0, refunded: int = 0, payout: int = 0,
           fee: int = 0) -> dict[str, Any]:
    return {"held_cents": held, "released_cents": released, "refunded_cents": refunded,
            "worker_payout_cents": payout, "platform_fee_cents": fee, "currency": "CNY"}


# --- pay -> approve -------------------------------------------------------------------------


def test_pay_then_approve_releases_escrow_minus_the_fee(server: KassaServer,
                                                        merchant: Merchant) -> None:
    client = merchant.test
    (task_id, order_id), (odd_task, odd_order) = paid_tasks(server, client, 5000, 1003)
    assert query(client, order_id)["escrow"] == escrow(held=5000)
    assert balance(client)["escrow_cents"] == 6003

    r = approve(client, task_id, "worker-7")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"task", "payment", "release"}
    task = body["task"]
    assert (task["status"], task["worker_id"], task["order_id"]) == (
        "approved", "worker-7", order_id)
    assert task["closed_at"] is not None
    release = body["release"]
    assert (release["worker_id"], release["total_cents"], release["worker_payout_cents"],
            release["platform_fee_cents"], release["currency"]) == (
        "worker-7", 5000, 4000, 1000, "CNY")
    assert release["transaction_id"].startswith("txn_")
    assert body["payment"]["escrow"] == escrow(released=5000, payout=4000, fee=1000)

    order = query(client, order_id)
    assert order["status"] == "completed"
    assert order["escrow"] == escrow(released=5000, payout=4000, fee=1000)
    assert order["cost_breakdown"] == {"worker_payout_cents": 4000, "platform_fee_cents": 1000,
                                       "total_cents": 5000}
    assert order["refunded_cents"] == 0
    assert get_task(client, task_id)["status"] == "approved"
    assert get_task(client, task_id)["worker_id"] == "worker-7"

    worker = worker_balance(client, "worker-7")
    assert (worker["worker_id"], worker["balance_cents"], worker["currency"]) == (
        "worker-7", 4000, "CNY")
    assert worker["balance_rmb"] == Decimal("40.00")
    merchant_balance = balance(client)
    assert merchant_balance["lifetime_spent_cents"] == 5000
    assert merchant_balance["lifetime_spent_rmb"] == Decimal("50.00")
    assert merchant_balance["escrow_cents"] == 1003
    assert merchant_balance["balance_cents"] == 0

    # An odd amount: fee = round_half_up(1003 * 0.2) = round(200.6) = 201, payout the rest.
    assert query(client, odd_order)["cost_breakdown"] == {
        "worker_payout_cents": 802, "platform_fee_cents": 201, "total_cents": 1003}
    r = approve(client, odd_task, "worker-7")
    assert r.status_code == 200, r.text
    odd_release = r.json()["release"]
    assert (odd_release["total_cents"], odd_release["worker_payout_cents"],
            odd_release["platform_fee_cents"]) == (1003, 802, 201)
    assert query(client, odd_order)["escrow"] == escrow(released=1003, payout=802, fee=201)
    assert worker_balance(client, "worker-7")["balance_cents"] == 4802
    after = balance(client)
    assert (after["escrow_cents"], after["lifetime_spent_cents"], after["balance_cents"]) == (
        0, 6003, 0)

    # The release is recorded as an event with the task in it.
    [approved] = [e for e in events_for(server, merchant.account_id, task_id)
                  if e["type"] == "task.approved"]
    assert_event_envelope(approved)
    assert approved["sequence"] == 1  # the task's first event
    data = approved["payload"]["data"]
    assert data["task"]["task_id"] == task_id
    assert (data["task"]["status"], data["task"]["worker_id"]) == ("approved", "worker-7")
    assert data["release"]["worker_payout_cents"] == 4000
    assert data["release"]["platform_fee_cents"] == 1000


def test_approve_after_a_partial_refund_releases_the_rest(server: KassaServer,
                                                          merchant: Merchant) -> None:
    client = merchant.test
    task_id, order_id = paid_task(server, client)
    part = refunded(client, order_id, amount=1000, reason="quality_issue",
                    refund_method="balance")
    assert part["status"] == "completed"
    r = approve(client, task_id, "w1")
    assert r.status_code == 200, r.text
    release = r.json()["release"]
    # 20% of the 4000 still held: 800; the 1000 refunded is no part of the release.
    assert (release["total_cents"], release["worker_payout_cents"],
            release["platform_fee_cents"]) == (4000, 3200, 800)
    order = query(client, order_id)
    assert order["escrow"] == escrow(released=4000, refunded=1000, payout=3200, fee=800)
    assert order["refunded_cents"] == 1000
    assert order["status"] == "completed"
    assert worker_balance(client, "w1")["balance_cents"] == 3200
    after = balance(client)
    assert (after["balance_cents"], after["escrow_cents"], after["lifetime_spent_cents"]) == (
        1000, 0, 4000)


# --- pay -> fail / cancel -------------------------------------------------------------------


def test_pay_then_fail_refunds_automatically(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    task_id, order_id = paid_task(server, client)

    r = client.post(f"/api/v1/tasks/{task_id}/fail", json={})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"task", "payment", "refund"}
    assert body["task"]["status"] == "failed"
    assert body["task"]["worker_id"] is None
    refund_ = body["refund"]
    assert (refund_["order_id"], refund_["task_id"], refund_["amount"], refund_["currency"]) == (
        order_id, task_id, 5000, "CNY")
    assert (refund_["reason"], refund_["status"], refund_["refund_method"]) == (
        "task_failed", "processing", "alipay")
    assert refund_["completed_at"] is None
    # The money left escrow at once; it is on its way back until the channel confirms.
    assert body["payment"]["status"] == "completed"
    assert body["payment"]["escrow"] == escrow(refunded=5000)
    in_flight = balance(client)
    assert (in_flight["escrow_cents"], in_flight["refunds_in_flight_cents"],
            in_flight["balance_cents"], in_flight["lifetime_spent_cents"]) == (0, 5000, 0, 0)

    order = server.wait_for_status(client, order_id, "refunded")
    assert order["refunded_cents"] == 5000
    assert order["escrow"] == escrow(refunded=5000)
    row = wait_refund(client, refund_["refund_id"], "completed")
    assert (row["type"], row["amount"], row["order_id"]) == ("refund", 5000, order_id)
    done = balance(client)
    assert (done["escrow_cents"], done["refunds_in_flight_cents"], done["balance_cents"]) == (
        0, 0, 0)
    task = get_task(client, task_id)
    assert (task["status"], task["payment_status"]) == ("failed", "refunded")

    refund_events = events_for(server, merchant.account_id, refund_["refund_id"])
    assert [(e["type"], e["sequence"]) for e in refund_events] == [
        ("refund.created", 1), ("refund.completed", 2)]
    for e in refund_events:
        assert_event_envelope(e)
        assert e["payload"]["data"]["refund_id"] == refund_["refund_id"]
    assert refund_events[0]["payload"]["data"]["status"] == "processing"
    assert refund_events[1]["payload"]["data"]["status"] == "completed"
    [failed] = [e for e in events_for(server, merchant.account_id, task_id)
                if e["type"] == "task.failed"]
    assert_event_envelope(failed)
    assert failed["sequence"] == 1
    assert failed["payload"]["data"]["task"]["task_id"] == task_id
    assert failed["payload"]["data"]["task"]["status"] == "failed"
    assert failed["payload"]["data"]["refund"]["refund_id"] == refund_["refund_id"]


def test_pay_then_cancel_with_refund_to_balance_is_instant(server: KassaServer,
                                                           merchant: Merchant) -> None:
    client = merchant.test
    task_id, order_id = paid_task(server, client)

    r = client.post(f"/api/v1/tasks/{task_id}/cancel",
                    json={"refund_method": "balance", "reason_detail": "Client changed plans"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"]["status"] == "cancelled"
    refund_ = body["refund"]
    assert (refund_["reason"], refund_["status"], refund_["refund_method"], refund_["amount"]) == (
        "task_cancelled", "completed", "balance", 5000)
    assert refund_["reason_detail"] == "Client changed plans"
    assert refund_["estimated_arrival"] == refund_["created_at"]
    assert refund_["completed_at"] == refund_["created_at"]
    assert body["payment"]["status"] == "refunded"

    order = query(client, order_id)
    assert order["status"] == "refunded"
    assert order["escrow"] == escrow(refunded=5000)
    after = balance(client)
    assert (after["balance_cents"], after["escrow_cents"], after["refunds_in_flight_cents"],
            after["lifetime_spent_cents"]) == (5000, 0, 0, 0)
    assert after["balance_rmb"] == Decimal("50.00")
    assert history_row(client, refund_id=refund_["refund_id"])["status"] == "completed"

    assert [(e["type"], e["sequence"]) for e in events_for(
        server, merchant.account_id, refund_["refund_id"])] == [
        ("refund.created", 1), ("refund.completed", 2)]
    [cancelled] = [e for e in events_for(server, merchant.account_id, task_id)
                   if e["type"] == "task.cancelled"]
    assert cancelled["payload"]["data"]["task"]["status"] == "cancelled"
    assert cancelled["payload"]["data"]["refund"]["refund_id"] == refund_["refund_id"]


# --- partial refunds ------------------------------------------------------------------------


def test_partial_refunds_add_up_until_the_order_is_refunded(server: KassaServer,
                                                            merchant: Merchant) -> None:
    client = merchant.test
    _, order_id = paid_task(server, client)

    first = refunded(client, order_id, amount=1000, reason="quality_issue")
    assert (first["amount"], first["status"]) == (1000, "processing")
    order = query(client, order_id)
    assert (order["status"], order["refunded_cents"]) == ("completed", 1000)
    assert order["escrow"] == escrow(held=4000, refunded=1000)

    second = refunded(client, order_id, amount=1500, reason="duplicate_payment")
    assert second["amount"] == 1500
    order = query(client, order_id)
    assert (order["status"], order["refunded_cents"]) == ("completed", 2500)
    assert order["escrow"] == escrow(held=2500, refunded=2500)

    # No amount: the last one takes the remainder.
    last = refunded(client, order_id, reason="other", reason_detail="Rest of it")
    assert last["amount"] == 2500
    assert last["status"] == "processing"
    assert len({first["refund_id"], second["refund_id"], last["refund_id"]}) == 3
    assert first["amount"] + second["amount"] + last["amount"] == 5000
    order = query(client, order_id)
    assert order["refunded_cents"] == 5000
    assert order["escrow"] == escrow(refunded=5000)

    # Nothing is left: already_refunded names the first refund, even before confirmations.
    error = assert_error(refund(client, order_id), 400, "already_refunded")
    assert (error["refund_id"], error["refunded_at"]) == (first["refund_id"],
                                                           first["created_at"])

    # refunded only once every refund is confirmed.
    for r in (first, second, last):
        wait_refund(client, r["refund_id"], "completed")
    order = server.wait_for_status(client, order_id, "refunded")
    assert order["refunded_cents"] == 5000
    error = assert_error(refund(client, order_id, amount=100), 400, "already_refunded")
    assert (error["refund_id"], error["refunded_at"]) == (first["refund_id"],
                                                           first["created_at"])
    after = balance(client)
    assert (after["escrow_cents"], after["refunds_in_flight_cents"], after["balance_cents"]) == (
        0, 0, 0)
    refund_rows = transactions(client, type="refund")["data"]
    assert sorted(r["amount"] for r in refund_rows) == [1000, 1500, 2500]
    assert {r["status"] for r in refund_rows} == {"completed"}


# --- refund to balance -> pay from balance; deposit -> pay from balance ---------------------


def test_refund_to_balance_then_pay_another_task_from_balance(server: KassaServer,
                                                              merchant: Merchant) -> None:
    client = merchant.test
    _, order_id = paid_task(server, client)
    back = refunded(client, order_id, reason="duplicate_payment", refund_method="balance")
    assert (back["status"], back["refund_method"], back["amount"]) == (
        "completed", "balance", 5000)
    assert query(client, order_id)["status"] == "refunded"
    assert balance(client)["balance_cents"] == 5000

    task_id, new_order = dispatch(client, method="balance")
    order = query(client, new_order)
    # Paid from the balance at once: no channel, no waiting.
    assert order["status"] == "completed"
    assert order["transaction_id"] == "txn_" + new_order.partition("_")[2]
    assert order["paid_at"] is not None
    assert order["escrow"] == escrow(held=5000)
    mid = balance(client)
    assert (mid["balance_cents"], mid["escrow_cents"]) == (0, 5000)
    assert history_row(client, order_id=new_order, type_="payment")["status"] == "completed"

    r = approve(client, task_id, "w-balance")
    assert r.status_code == 200, r.text
    end = balance(client)
    assert (end["balance_cents"], end["escrow_cents"], end["lifetime_spent_cents"]) == (
        0, 0, 5000)
    assert worker_balance(client, "w-balance")["balance_cents"] == 4000


def test_deposit_then_pay_from_balance(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    r = client.post("/api/v1/payment/deposit", json={
        "amount": 20000, "payment_method": "wechat", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    deposit = r.json()
    assert (deposit["type"], deposit["status"], deposit["task_id"]) == ("deposit", "pending", None)
    server.wait_for_status(client, deposit["order_id"], "completed")
    assert balance(client)["balance_cents"] == 20000

    first_task, first_order = dispatch(client, amount=7000, method="balance")
    # payment/create from the balance, too
    second_task = new_task(client, amount=3000)
    r = pay(client, second_task, amount=3000, payment_method="balance")
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "completed"
    mid = balance(client)
    assert (mid["balance_cents"], mid["escrow_cents"], mid["lifetime_spent_cents"]) == (
        10000, 10000, 0)

    assert approve(client, first_task, "w9").status_code == 200
    end = balance(client)
    assert (end["balance_cents"], end["escrow_cents"], end["lifetime_spent_cents"]) == (
        10000, 3000, 7000)
    assert query(client, first_order)["escrow"] == escrow(released=7000, payout=5600, fee=1400)
    types = sorted(row["type"] for row in transactions(client)["data"])
    assert types == ["deposit", "payment", "payment"]


# --- task state errors ----------------------------------------------------------------------


def test_approve_needs_a_paid_task(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    undispatched = new_task(client)
    error = assert_error(approve(client, undispatched, "w1"), 409, "invalid_task_state")
    assert error["task_id"] == undispatched
    # A card order nobody pays stays pending.
    pending_task, _ = dispatch(client, method="card")
    error = assert_error(approve(client, pending_task, "w1"), 409, "invalid_task_state")
    assert error["payment_status"] == "pending"
    assert get_task(client, pending_task)["status"] == "open"
    r = client.get("/api/v1/workers/w1/balance")
    assert_error(r, 404, "worker_not_found")


def test_a_closed_task_cannot_be_closed_again(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    (approved, approved_order), (cancelled, _), (refunded_task, refunded_order) = paid_tasks(
        server, client, 5000, 5000, 5000)
    assert approve(client, approved, "w1").status_code == 200
    error = assert_error(approve(client, approved, "w2"), 409, "invalid_task_state")
    assert error["task_status"] == "approved"
    assert_error(client.post(f"/api/v1/tasks/{approved}/cancel", json={}), 409,
                 "invalid_task_state")
    assert_error(client.post(f"/api/v1/tasks/{approved}/fail", json={}), 409,
                 "invalid_task_state")
    # Nothing moved: still one release, to the first worker.
    assert query(client, approved_order)["escrow"] == escrow(released=5000, payout=4000,
                                                             fee=1000)
    assert get_task(client, approved)["worker_id"] == "w1"
    assert_error(client.get("/api/v1/workers/w2/balance"), 404, "worker_not_found")

    r = client.post(f"/api/v1/tasks/{cancelled}/cancel", json={"refund_method": "balance"})
    assert r.status_code == 200, r.text
    error = assert_error(approve(client, cancelled, "w1"), 409, "invalid_task_state")
    assert error["task_status"] == "cancelled"
    assert_error(client.post(f"/api/v1/tasks/{cancelled}/fail", json={}), 409,
                 "invalid_task_state")

    # Refunded in full through the refund endpoint: the task is open but nothing is in escrow.
    refunded(client, refunded_order, refund_method="balance")
    assert_error(approve(client, refunded_task, "w1"), 409, "invalid_task_state")
    assert worker_balance(client, "w1")["balance_cents"] == 4000
    assert balance(client)["balance_cents"] == 10000


def test_failing_an_unpaid_task_fails_its_order_without_refund(server: KassaServer,
                                                               merchant: Merchant) -> None:
    client = merchant.test
    task_id, order_id = dispatch(client, method="card")  # stays pending: nobody pays
    # No body at all.
    r = client.post(f"/api/v1/tasks/{task_id}/fail")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refund"] is None
    assert body["task"]["status"] == "failed"
    assert (body["payment"]["status"], body["payment"]["failure_code"]) == (
        "failed", "task_failed")
    order = query(client, order_id)
    assert (order["status"], order["failure_code"], order["refunded_cents"]) == (
        "failed", "task_failed", 0)
    assert order["escrow"] == escrow()
    assert_error(pay(client, task_id), 409, "invalid_task_state")
    assert transactions(client, type="refund")["data"] == []
    assert history_row(client, order_id=order_id)["status"] == "failed"
    kinds = [(e["type"], e["object_id"]) for e in account_events(server, merchant.account_id)]
    assert ("payment.failed", order_id) in kinds
    assert ("task.failed", task_id) in kinds
    assert not [k for k, _ in kinds if k.startswith("refund.")]

    # Cancel with no body, on a task that never had an order.
    undispatched = new_task(client)
    r = client.post(f"/api/v1/tasks/{undispatched}/cancel")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["task"]["status"], body["payment"], body["refund"]) == (
        "cancelled", None, None)
    [event] = [e for e in events_for(server, merchant.account_id, undispatched)]
    assert event["type"] == "task.cancelled"
    assert event["payload"]["data"]["task"]["task_id"] == undispatched
    assert event["payload"]["data"]["refund"] is None


def test_approve_validates_worker_id_and_task(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    task_id = new_task(client)
    url = f"/api/v1/tasks/{task_id}/approve"
    for body in ({}, {"worker_id": ""}, {"worker_id": "has space"}, {"worker_id": "a" * 65},
                 {"worker_id": 42}, {"worker_id": None}, {"worker_id": "-leading"},
                 {"worker_id": "w1", "extra": 1}):
        assert_error(client.post(url, json=body), 400, "validation_error")
    assert_error(client.post(url), 400, "validation_error")  # no body: worker_id is required
    assert get_task(client, task_id)["status"] == "open"

    for path in ("approve", "fail", "cancel"):
        r = client.post(f"/api/v1/tasks/no-such-task/{path}", json={"worker_id": "w1"}
                        if path == "approve" else {})
        assert_error(r, 404, "task_not_found")
    assert_error(client.post("/api/v1/tasks/%20bad/cancel", json={}), 404, "task_not_found")
    assert_error(client.post(f"/api/v1/tasks/{task_id}/cancel",
                             json={"refund_method": "card"}), 400, "validation_error")
    assert_error(client.post(f"/api/v1/tasks/{task_id}/fail",
                             json={"reason_detail": "x" * 501}), 400, "validation_error")
    # Another merchant's task does not exist for you.
    other = server.merchant()
    assert_error(approve(other.test, task_id, "w1"), 404, "task_not_found")
    assert_error(other.test.post(f"/api/v1/tasks/{task_id}/cancel", json={}), 404,
                 "task_not_found")
    assert get_task(client, task_id)["status"] == "open"


def test_worker_balance_belongs_to_the_merchant(server: KassaServer, merchant: Merchant) -> None:
    task_id, _ = paid_task(server, merchant.test)
    assert approve(merchant.test, task_id, "shared-name").status_code == 200
    assert worker_balance(merchant.test, "shared-name")["balance_cents"] == 4000
    # Read with the key alone (a GET).
    with server.client(merchant.test_key) as key_only:
        assert worker_balance(key_only, "shared-name")["balance_cents"] == 4000
    other = server.merchant()
    assert_error(other.test.get("/api/v1/workers/shared-name/balance"), 404, "worker_not_found")
    # Nor in live mode of the same merchant.
    assert_error(merchant.live.get("/api/v1/workers/shared-name/balance"), 404,
                 "worker_not_found")
    assert_error(merchant.test.get("/api/v1/workers/nobody/balance"), 404, "worker_not_found")
    assert_error(merchant.test.get("/api/v1/workers/bad%20id/balance"), 404, "worker_not_found")


def test_task_ids_may_not_borrow_kassa_prefixes(server: KassaServer, merchant: Merchant) -> None:
    """Task events share the event stream with orders and refunds: a task named like an
    order (ord_…) would collide with that order's events, so such ids are refused."""
    client = merchant.test
    _, order_id = dispatch(client)
    for task_id in (order_id, "ref_1", "txn_1", "evt_1", "acc_1"):
        r = client.post("/api/v1/tasks", json={"title": "x", "amount": 5000, "currency": "CNY",
                                               "dispatch": False, "task_id": task_id})
        assert_error(r, 400, "validation_error")
    assert new_task(client, task_id="orders_1") == "orders_1"
