"""POST /api/v1/payment/refund as the seed describes it (SPEC §6), over HTTP: the seed's
example per channel with its business-day estimated_arrival, the errors, and a channel
that refuses a refund (the money goes back into escrow)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kassa.core.clock import add_business_days
from kassa.refunds.schemas import Refund
from tests.api.test_escrow import (
    approve,
    balance,
    dispatch,
    escrow,
    events_for,
    paid_task,
    paid_tasks,
    query,
    refund,
    refunded,
    wait_refund,
)
from tests.support.factories import RETURN_URL, assert_error, new_task
from tests.support.harness import KassaServer, Merchant

SEED_REFUND_FIELDS = {"refund_id", "order_id", "amount", "currency", "status", "refund_method",
                      "estimated_arrival", "created_at"}
REFUND_FIELDS = set(Refund.model_fields)
SHANGHAI = ZoneInfo("Asia/Shanghai")
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# The seed's "Refund Processing Times", upper bounds, in business days.
ARRIVAL_DAYS = {"alipay": 3, "wechat": 3, "card": 10, "bank_transfer": 5}


def business_days_later(moment: datetime, days: int) -> datetime:
    """Independently of kassa: count `days` Monday-to-Friday days on the Asia/Shanghai
    calendar, keeping the local time of day; a weekend moment counts from Monday."""
    local = moment.astimezone(SHANGHAI)
    day = local.date()
    if day.weekday() >= 5:
        day += timedelta(days=7 - day.weekday())  # the Monday after
    counted = 0
    while counted < days:
        day += timedelta(days=1)
        if day.weekday() < 5:
            counted += 1
    return datetime.combine(day, local.timetz()).astimezone(UTC)


def expected_arrival(created_at: str, method: str) -> str:
    created = datetime.strptime(created_at, ISO_FORMAT).replace(tzinfo=UTC)
    return business_days_later(created, ARRIVAL_DAYS[method]).strftime(ISO_FORMAT)


def test_business_day_count_agrees_with_an_independent_count() -> None:
    # Two weeks of moments around the clock, including Shanghai's small hours (UTC evening
    # of the day before) and weekends; 2026-04-03 is a Friday.
    start = datetime(2026, 4, 3, tzinfo=UTC)
    moments = [start + timedelta(hours=h, minutes=7) for h in range(0, 14 * 24, 5)]
    for moment in moments:
        for days in (3, 5, 10):
            assert add_business_days(moment, days) == business_days_later(moment, days), (
                moment, days)
    # Fixed points: Friday 10:00 Shanghai + 3 -> Wednesday; Saturday + 3 -> Thursday.
    friday = datetime.combine(date(2026, 4, 3), time(10, 0), SHANGHAI)
    assert business_days_later(friday, 3) == datetime.combine(date(2026, 4, 8), time(10, 0),
                                                              SHANGHAI)
    saturday = datetime.combine(date(2026, 4, 4), time(1, 30), SHANGHAI)  # Fri 17:30 UTC
    assert add_business_days(saturday, 3) == datetime.combine(date(2026, 4, 9), time(1, 30),
                                                              SHANGHAI)


def test_seed_refund_example_per_channel(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    enterprise = server.merchant(tier="enterprise")
    orders: dict[str, tuple[Any, str]] = {}
    for method in ("alipay", "wechat"):
        orders[method] = (client, dispatch(client, method=method)[1])
    orders["card"] = (client, dispatch(client, method="card", test_card="4242424242424242")[1])
    orders["bank_transfer"] = (enterprise.test, dispatch(enterprise.test, amount=100_000,
                                                         method="bank_transfer")[1])
    for c, order_id in orders.values():
        server.wait_for_status(c, order_id, "completed")

    for method, (c, order_id) in orders.items():
        # The seed's example body, as printed (no amount: a full refund).
        r = c.post("/api/v1/payment/refund", json={
            "order_id": order_id, "reason": "task_cancelled", "refund_method": "original"},
            headers={"Content-Type": "application/json"})
        assert r.status_code == 200, (method, r.text)
        body = r.json()
        assert set(body) >= SEED_REFUND_FIELDS and set(body) == REFUND_FIELDS, body
        assert body["refund_id"].startswith("ref_")
        assert body["transaction_id"] == "txn_" + body["refund_id"].partition("_")[2]
        amount = 100_000 if method == "bank_transfer" else 5000
        assert (body["order_id"], body["amount"], body["currency"], body["status"]) == (
            order_id, amount, "CNY", "processing"), method
        # The seed shows the channel the money goes back through.
        assert body["refund_method"] == method
        assert body["reason"] == "task_cancelled"
        assert body["completed_at"] is None
        assert body["estimated_arrival"] == expected_arrival(body["created_at"], method), (
            method, body)
        assert query(c, order_id)["escrow"]["held_cents"] == 0

    # To the balance: instant, so it arrives when it is created.
    _, order_id = paid_task(server, client)
    body = refunded(client, order_id, refund_method="balance")
    assert (body["status"], body["refund_method"]) == ("completed", "balance")
    assert body["estimated_arrival"] == body["created_at"] == body["completed_at"]


def test_only_a_paid_order_can_be_refunded(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    _, pending = dispatch(client, method="card")  # nobody enters a card: stays pending
    _, expiring = dispatch(client, method="card", expires_in_seconds=300)
    _, declined = dispatch(client, method="card", test_card="4000000000000002")
    r = client.post("/api/v1/payment/deposit", json={
        "amount": 10_000, "payment_method": "alipay", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    deposit = r.json()["order_id"]
    error = assert_error(refund(client, deposit), 400, "refund_not_allowed")
    assert error["order_id"] == deposit

    error = assert_error(refund(client, pending), 400, "refund_not_allowed")
    assert (error["order_id"], error["order_status"]) == (pending, "pending")
    server.wait_for_status(client, declined, "failed")
    error = assert_error(refund(client, declined, amount=1000), 400, "refund_not_allowed")
    assert error["order_status"] == "failed"
    server.ctx.clock.advance(301)
    server.wait_for_status(client, expiring, "expired")
    error = assert_error(refund(client, expiring, refund_method="balance"), 400,
                         "refund_not_allowed")
    assert error["order_status"] == "expired"

    # A completed deposit is in the available balance, not in escrow.
    server.wait_for_status(client, deposit, "completed")
    assert_error(refund(client, deposit), 400, "refund_not_allowed")
    assert_error(refund(client, deposit, refund_method="balance"), 400, "refund_not_allowed")
    after = balance(client)
    assert (after["balance_cents"], after["escrow_cents"]) == (10_000, 0)
    assert all(query(client, o)["refunded_cents"] == 0
               for o in (pending, declined, expiring, deposit))


def test_refund_amount_rules(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    (_, order_id), (approved_task, approved_order) = paid_tasks(server, client, 5000, 5000)

    error = assert_error(refund(client, order_id, amount=5001), 400, "refund_not_allowed")
    assert (error["refundable_amount"], error["requested_amount"]) == (5000, 5001)
    for amount in (0, -1, -5000, 1.5, 1000.0, "1000", True, [1000]):
        assert_error(refund(client, order_id, amount=amount), 400, "validation_error")
    assert query(client, order_id)["refunded_cents"] == 0

    refunded(client, order_id, amount=2000, refund_method="balance")
    error = assert_error(refund(client, order_id, amount=3001), 400, "refund_not_allowed")
    assert (error["refundable_amount"], error["requested_amount"]) == (3000, 3001)
    assert refunded(client, order_id, amount=3000, refund_method="balance")["amount"] == 3000
    assert query(client, order_id)["status"] == "refunded"

    # Released to the worker: nothing is left in escrow to refund.
    assert approve(client, approved_task, "w1").status_code == 200
    for fields in ({}, {"amount": 1000}, {"refund_method": "balance"}):
        error = assert_error(refund(client, approved_order, **fields), 400,
                             "refund_not_allowed")
        assert error["released_cents"] == 5000
    order = query(client, approved_order)
    assert order["escrow"] == escrow(released=5000, payout=4000, fee=1000)
    assert balance(client)["balance_cents"] == 5000


def test_refund_request_validation(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    _, order_id = paid_task(server, client)
    bad: list[dict[str, Any]] = [
        {"reason": "changed_mind"},
        {"reason": "TASK_CANCELLED"},
        {"reason": ""},
        {"reason": None},
        {"reason": "other"},  # other needs reason_detail
        {"reason": "other", "reason_detail": ""},
        {"reason": "other", "reason_detail": None},
        {"reason": "other", "reason_detail": "x" * 501},
        {"reason": "quality_issue", "reason_detail": "y" * 501},
        {"reason": "task_cancelled", "refund_method": "card"},
        {"reason": "task_cancelled", "refund_method": None},
        {"reason": "task_cancelled", "test_outcome": "maybe"},
        {"reason": "task_cancelled", "unknown_field": 1},
    ]
    for fields in bad:
        r = client.post("/api/v1/payment/refund", json={"order_id": order_id, **fields})
        assert_error(r, 400, "validation_error")
    r = client.post("/api/v1/payment/refund", json={"reason": "task_cancelled"})
    assert_error(r, 400, "validation_error")  # no order_id
    r = client.post("/api/v1/payment/refund", json={"order_id": order_id})
    assert_error(r, 400, "validation_error")  # no reason
    assert_error(client.post("/api/v1/payment/refund"), 400, "validation_error")
    assert query(client, order_id)["refunded_cents"] == 0

    detail = "z" * 500
    body = refunded(client, order_id, amount=1000, reason="other", reason_detail=detail)
    assert (body["reason"], body["reason_detail"]) == ("other", detail)
    body = refunded(client, order_id, amount=1000, reason="quality_issue",
                    reason_detail="Photos were blurry")
    assert body["reason_detail"] == "Photos were blurry"
    for reason in ("task_failed", "duplicate_payment"):
        assert refunded(client, order_id, amount=1000, reason=reason)["reason"] == reason
    assert query(client, order_id)["refunded_cents"] == 4000


def test_unknown_foreign_and_live_orders_are_not_found(server: KassaServer,
                                                       merchant: Merchant) -> None:
    client = merchant.test
    _, order_id = paid_task(server, client)
    error = assert_error(refund(client, "ord_doesnotexist"), 404, "order_not_found")
    assert error["order_id"] == "ord_doesnotexist"
    other = server.merchant()
    error = assert_error(refund(other.test, order_id), 404, "order_not_found")
    assert error["order_id"] == order_id
    assert_error(refund(other.test, order_id, refund_method="balance"), 404, "order_not_found")
    # Live and test never mix: the test order does not exist for the live key.
    assert_error(refund(merchant.live, order_id), 404, "order_not_found")
    # Live keys cannot pay at all (no upstream), so no live order can ever be refunded, with
    # or without the sandbox-only test_outcome.
    assert_error(refund(merchant.live, order_id, test_outcome="failed"), 404, "order_not_found")
    # Where a live call does reach the test_outcome check (closing a live task), it is refused.
    live_task = new_task(merchant.live)
    r = merchant.live.post(f"/api/v1/tasks/{live_task}/cancel", json={"test_outcome": "failed"})
    assert_error(r, 400, "validation_error")
    r = merchant.live.post(f"/api/v1/tasks/{live_task}/cancel", json={})
    assert r.status_code == 200, r.text
    assert query(client, order_id)["refunded_cents"] == 0
    assert balance(other.test)["balance_cents"] == 0


def test_failed_channel_refund_goes_back_to_escrow(server: KassaServer,
                                                   merchant: Merchant) -> None:
    client = merchant.test
    _, order_id = paid_task(server, client)
    first = refunded(client, order_id, test_outcome="failed")
    assert (first["status"], first["amount"]) == ("processing", 5000)
    assert query(client, order_id)["escrow"] == escrow(refunded=5000)
    assert balance(client)["refunds_in_flight_cents"] == 5000

    wait_refund(client, first["refund_id"], "failed")
    order = query(client, order_id)
    assert (order["status"], order["refunded_cents"]) == ("completed", 0)
    assert order["escrow"] == escrow(held=5000)
    after = balance(client)
    assert (after["escrow_cents"], after["refunds_in_flight_cents"], after["balance_cents"]) == (
        5000, 0, 0)
    refund_events = events_for(server, merchant.account_id, first["refund_id"])
    assert [(e["type"], e["sequence"]) for e in refund_events] == [
        ("refund.created", 1), ("refund.failed", 2)]
    data = refund_events[1]["payload"]["data"]
    assert (data["status"], data["failure_code"], data["refund_id"]) == (
        "failed", "refund_declined", first["refund_id"])

    # Refundable again, in full.
    second = refunded(client, order_id, reason="task_failed")
    assert (second["status"], second["amount"]) == ("processing", 5000)
    wait_refund(client, second["refund_id"], "completed")
    server.wait_for_status(client, order_id, "refunded")
    # already_refunded names the first refund that did not fail.
    error = assert_error(refund(client, order_id), 400, "already_refunded")
    assert (error["refund_id"], error["refunded_at"]) == (second["refund_id"],
                                                           second["created_at"])
    assert [(e["type"], e["sequence"]) for e in events_for(
        server, merchant.account_id, second["refund_id"])] == [
        ("refund.created", 1), ("refund.completed", 2)]


def _refunds_of(client: Any, order_id: str) -> list[dict[str, Any]]:
    """The order's refunds as the transaction history lists them, oldest first."""
    r = client.get("/api/v1/payment/transactions", params={"type": "refund", "limit": 100})
    assert r.status_code == 200, r.text
    return [t for t in reversed(r.json()["data"]) if t["order_id"] == order_id]


def test_failed_automatic_refund_of_a_cancelled_task(server: KassaServer,
                                                     merchant: Merchant) -> None:
    """The channel refuses the refund of a cancelled task: the money comes back from the
    channel, and since a cancelled task can never release it, it goes to the merchant's
    available balance at once, as a second refund (never stuck in escrow)."""
    client = merchant.test
    task_id, order_id = paid_task(server, client)
    r = client.post(f"/api/v1/tasks/{task_id}/cancel", json={"test_outcome": "failed"})
    assert r.status_code == 200, r.text
    auto = r.json()["refund"]
    assert (auto["reason"], auto["status"], auto["amount"]) == ("task_cancelled", "processing",
                                                                5000)
    wait_refund(client, auto["refund_id"], "failed")
    order = query(client, order_id)
    assert (order["status"], order["refunded_cents"]) == ("refunded", 5000)
    assert order["escrow"] == escrow(refunded=5000)
    after = balance(client)
    assert (after["escrow_cents"], after["balance_cents"]) == (0, 5000)
    assert [e["type"] for e in events_for(server, merchant.account_id, auto["refund_id"])] == [
        "refund.created", "refund.failed"]
    rows = _refunds_of(client, order_id)
    assert (rows[0]["refund_id"], rows[0]["status"]) == (auto["refund_id"], "failed")
    assert [(t["amount"], t["status"]) for t in rows[1:]] == [(5000, "completed")]
    second = rows[1]["refund_id"]
    assert [e["type"] for e in events_for(server, merchant.account_id, second)] == [
        "refund.created", "refund.completed"]
    assert_error(approve(client, task_id, "w1"), 409, "invalid_task_state")
    assert_error(refund(client, order_id), 400, "already_refunded")


def test_refund_failing_after_approval_goes_to_the_balance(server: KassaServer,
                                                          merchant: Merchant) -> None:
    """A partial refund still in flight when the task is approved: the release takes only
    what is in escrow; if the channel then refuses the refund, the money comes back (SPEC
    §6) and, the task being approved, goes to the available balance: never released twice,
    never stuck."""
    client = merchant.test
    task_id, order_id = paid_task(server, client)
    part = refunded(client, order_id, amount=1000, test_outcome="failed")
    r = approve(client, task_id, "w1")
    assert r.status_code == 200, r.text
    assert r.json()["release"]["total_cents"] == 4000
    wait_refund(client, part["refund_id"], "failed")
    order = query(client, order_id)
    assert order["escrow"] == escrow(released=4000, refunded=1000, payout=3200, fee=800)
    assert order["status"] == "completed"  # 4000 of it went to the worker
    after = balance(client)
    assert (after["escrow_cents"], after["balance_cents"], after["lifetime_spent_cents"]) == (
        0, 1000, 4000)
    rows = _refunds_of(client, order_id)
    assert [(t["amount"], t["status"]) for t in rows] == [(1000, "failed"), (1000, "completed")]
    assert_error(refund(client, order_id), 400, "refund_not_allowed")


def test_usd_refund_failing_after_approval_is_refunded_in_usd(server: KassaServer,
                                                             merchant: Merchant) -> None:
    """The same with a USD order (1000 USD cents at 7.1 = 7100 CNY cents): what comes back
    is 100 USD cents (710 CNY cents), refunded to the balance exactly."""
    client = merchant.test
    task_id, order_id = paid_task(server, client, amount=1000, currency="USD")
    part = refunded(client, order_id, amount=100, test_outcome="failed")
    assert (part["amount"], part["currency"], part["amount_cny"]) == (100, "USD", 710)
    r = approve(client, task_id, "w1")
    assert r.status_code == 200, r.text
    assert r.json()["release"]["total_cents"] == 6390
    wait_refund(client, part["refund_id"], "failed")
    order = query(client, order_id)
    assert order["escrow"]["held_cents"] == 0
    assert order["refunded_cents"] == 100  # USD cents
    assert balance(client)["balance_cents"] == 710
    rows = _refunds_of(client, order_id)
    assert [(t["amount"], t["currency"], t["status"]) for t in rows] == [
        (100, "USD", "failed"), (100, "USD", "completed")]
    assert_error(refund(client, order_id, amount=1), 400, "refund_not_allowed")


def test_usd_partial_refunds_spread_the_rounding(server: KassaServer,
                                                 merchant: Merchant) -> None:
    """Partial refunds of a USD order are converted cumulatively: 141 USD cents = 1001 CNY
    cents; 1-cent refunds credit 7 or 8 fen so that after n of them round(n * 7.1) fen are
    refunded, and the last takes exactly what is left."""
    client = merchant.test
    _, order_id = paid_task(server, client, amount=141, currency="USD")
    credited = []
    for _ in range(20):
        credited.append(refunded(client, order_id, amount=1, refund_method="balance")[
            "amount_cny"])
    assert [sum(credited[:n]) for n in range(1, 21)] == [
        int((Decimal(n) * Decimal("7.1")).quantize(Decimal(1), ROUND_HALF_UP))
        for n in range(1, 21)]
    last = refunded(client, order_id, refund_method="balance")
    assert last["amount"] == 121
    assert sum(credited) + last["amount_cny"] == 1001
    assert query(client, order_id)["status"] == "refunded"


def test_refund_of_an_order_paid_from_balance_is_instant(server: KassaServer,
                                                         merchant: Merchant) -> None:
    client = merchant.test
    r = client.post("/api/v1/payment/deposit", json={
        "amount": 10_000, "payment_method": "alipay", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    server.wait_for_status(client, r.json()["order_id"], "completed")
    _, order_id = dispatch(client, method="balance")
    assert balance(client)["balance_cents"] == 5000
    body = refunded(client, order_id, amount=2000)  # refund_method original (the default)
    assert (body["status"], body["refund_method"]) == ("completed", "balance")
    assert body["estimated_arrival"] == body["created_at"]
    assert balance(client)["balance_cents"] == 7000
    body = refunded(client, order_id)
    assert (body["amount"], body["status"]) == (3000, "completed")
    assert query(client, order_id)["status"] == "refunded"
    assert balance(client)["balance_cents"] == 10_000


@pytest.mark.parametrize("refund_method", ["original", "balance"])
def test_refund_events_per_refund(server: KassaServer, merchant: Merchant,
                                  refund_method: str) -> None:
    client = merchant.test
    _, order_id = paid_task(server, client)
    made = [refunded(client, order_id, amount=a, refund_method=refund_method)
            for a in (1000, 4000)]
    for r in made:
        wait_refund(client, r["refund_id"], "completed")
    for r in made:
        rows = events_for(server, merchant.account_id, r["refund_id"])
        assert [(e["type"], e["sequence"], e["mode"]) for e in rows] == [
            ("refund.created", 1, "test"), ("refund.completed", 2, "test")]
        assert all(e["payload"]["data"]["amount"] == r["amount"] for e in rows)
        assert rows[1]["payload"]["data"]["completed_at"] is not None


def test_nul_characters_are_refused_not_stored(server: KassaServer, merchant: Merchant) -> None:
    """PostgreSQL text refuses NUL: the API says so in its own format (never a 500)."""
    client = merchant.test
    _, order_id = paid_task(server, client)
    for body in ({"order_id": order_id, "reason": "other", "reason_detail": "a\u0000b"},
                 {"order_id": "ord_\u0000x", "reason": "task_cancelled"}):
        assert_error(client.post("/api/v1/payment/refund", json=body), 400, "validation_error")
    r = client.get("/api/v1/payment/transactions", params={"starting_after": "txn_\x00"})
    assert_error(r, 400, "validation_error")
    assert_error(client.get("/api/v1/payment/query", params={"order_id": "ord_\x00"}), 400,
                 "validation_error")
    assert query(client, order_id)["refunded_cents"] == 0


def test_test_outcome_is_refused_where_no_channel_answers(server: KassaServer,
                                                         merchant: Merchant) -> None:
    """A refund to the balance completes at once: there is no channel to refuse it, so a
    test_outcome would be silently meaningless; it is a validation error instead."""
    client = merchant.test
    _, order_id = paid_task(server, client)
    r = refund(client, order_id, refund_method="balance", test_outcome="failed")
    assert_error(r, 400, "validation_error")
    assert query(client, order_id)["refunded_cents"] == 0
