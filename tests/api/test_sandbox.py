"""The sandbox channel (SPEC §8): test-mode payments settle by themselves, test cards
pick their outcome, full card numbers are never kept, and every settlement is a
ledger entry with its events."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, MetaData, select

from kassa.db.tables import ledger_balances, ledger_transactions
from kassa.events import repository as events
from kassa.ledger import repository as ledger
from tests.support.factories import RETURN_URL, assert_error, new_task, pay
from tests.support.harness import KassaServer, Merchant

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SUCCESS_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
NO_FUNDS_CARD = "4000000000009995"
FULL_CARD_NUMBERS = (SUCCESS_CARD, DECLINED_CARD, NO_FUNDS_CARD)


def assert_no_order(client: httpx.Client, task_id: str) -> None:
    r = client.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    assert r.json()["order_id"] is None
    assert r.json()["payment_status"] is None


# --- wallets and bank transfer settle by themselves --------------------------------------

@pytest.mark.parametrize("method", ["alipay", "wechat"])
def test_wallet_payments_complete_by_themselves(server: KassaServer, merchant: Merchant,
                                                method: str) -> None:
    task_id = new_task(merchant.test)
    r = pay(merchant.test, task_id, payment_method=method)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "pending"
    assert created["paid_at"] is None and created["transaction_id"] is None
    assert created["payment_method"] == method

    done = server.wait_for_status(merchant.test, created["order_id"], "completed")
    assert ISO.match(done["paid_at"])
    assert done["transaction_id"].startswith("txn_")
    assert done["escrow"]["held_cents"] == 5000
    task = merchant.test.get(f"/api/v1/tasks/{task_id}").json()
    assert (task["order_id"], task["payment_status"]) == (created["order_id"], "completed")


def test_bank_transfer_completes_for_enterprise(server: KassaServer) -> None:
    enterprise = server.merchant(tier="enterprise")
    task_id = new_task(enterprise.test, amount=100_000)
    r = pay(enterprise.test, task_id, amount=100_000, payment_method="bank_transfer")
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"
    done = server.wait_for_status(enterprise.test, r.json()["order_id"], "completed")
    assert done["transaction_id"].startswith("txn_")
    assert ISO.match(done["paid_at"])


def test_bank_transfer_is_for_enterprise_accounts_only(server: KassaServer,
                                                       merchant: Merchant) -> None:
    task_id = new_task(merchant.test, amount=100_000)
    r = pay(merchant.test, task_id, amount=100_000, payment_method="bank_transfer")
    error = assert_error(r, 400, "payment_method_unavailable")
    assert error["payment_method"] == "bank_transfer"
    assert_no_order(merchant.test, task_id)


def test_bank_transfer_minimum_is_100000_cents(server: KassaServer) -> None:
    enterprise = server.merchant(tier="enterprise")
    task_id = new_task(enterprise.test, amount=99_999)
    r = pay(enterprise.test, task_id, amount=99_999, payment_method="bank_transfer")
    error = assert_error(r, 400, "limit_exceeded")
    assert error["limit"] == "bank_transfer_minimum"
    assert_no_order(enterprise.test, task_id)
    # The same task can still be paid by another method.
    assert pay(enterprise.test, task_id, amount=99_999).status_code == 201


# --- cards ---------------------------------------------------------------------------------

def test_success_card_completes_with_brand_and_last4(server: KassaServer,
                                                     merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    r = pay(merchant.test, task_id, payment_method="card", test_card=SUCCESS_CARD)
    assert r.status_code == 201, r.text
    assert r.json()["status"] in ("pending", "processing")
    assert r.json()["card"] == {"brand": "visa", "last4": "4242"}
    done = server.wait_for_status(merchant.test, r.json()["order_id"], "completed")
    assert done["card"] == {"brand": "visa", "last4": "4242"}
    assert done["failure_code"] is None
    assert done["transaction_id"].startswith("txn_")


@pytest.mark.parametrize(("card", "failure_code"), [(DECLINED_CARD, "payment_failed"),
                                                    (NO_FUNDS_CARD, "insufficient_funds")])
def test_failing_cards_fail_with_their_code(server: KassaServer, merchant: Merchant,
                                            card: str, failure_code: str) -> None:
    task_id = new_task(merchant.test)
    r = pay(merchant.test, task_id, payment_method="card", test_card=card)
    assert r.status_code == 201, r.text
    order_id = r.json()["order_id"]
    failed = server.wait_for_status(merchant.test, order_id, "failed")
    assert failed["failure_code"] == failure_code
    assert failed["failure_message"]
    assert failed["paid_at"] is None and failed["transaction_id"] is None
    assert failed["card"] == {"brand": "visa", "last4": card[-4:]}
    assert failed["escrow"]["held_cents"] == 0
    # No money moved, and the event says so.
    postings = server.db.write_sync(lambda conn: ledger.postings_for_order(conn, order_id))
    assert postings == []
    kinds = server.db.write_sync(
        lambda conn: [(e.event_type, e.sequence) for e in events.for_object(conn, order_id)])
    assert kinds == [("payment.created", 1), ("payment.failed", 2)]


def test_card_number_with_spaces_is_accepted(server: KassaServer, merchant: Merchant) -> None:
    r = merchant.test.post("/api/v1/tasks", json={
        "title": "Spaced card", "amount": 5000, "currency": "CNY", "payment_method": "card",
        "return_url": RETURN_URL, "test_card": "4242 4242 4242 4242"})
    assert r.status_code == 201, r.text
    payment = r.json()["payment"]
    assert payment["card"] == {"brand": "visa", "last4": "4242"}
    server.wait_for_status(merchant.test, payment["order_id"], "completed")


@pytest.mark.parametrize("card", [
    "4111111111111111",  # Luhn-valid, but not a sandbox test card
    "4242424242424241",  # fails the Luhn check
    "4242-abcd-4242-4242",  # not digits
])
def test_other_card_numbers_are_rejected(server: KassaServer, merchant: Merchant,
                                         card: str) -> None:
    task_id = new_task(merchant.test)
    r = pay(merchant.test, task_id, payment_method="card", test_card=card)
    error = assert_error(r, 400, "validation_error")
    assert card not in r.text
    assert any(d["field"] == "test_card" for d in error["details"]), error
    assert_no_order(merchant.test, task_id)


def test_test_card_needs_payment_method_card(server: KassaServer, merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    r = pay(merchant.test, task_id, payment_method="alipay", test_card=SUCCESS_CARD)
    error = assert_error(r, 400, "validation_error")
    assert any(d["field"] == "test_card" for d in error["details"]), error
    assert_no_order(merchant.test, task_id)


def _every_stored_value(conn: Connection) -> list[tuple[str, str, str]]:
    """(table, column, value as text) for every non-null cell of every table in the database."""
    found = MetaData()
    found.reflect(bind=conn)
    cells: list[tuple[str, str, str]] = []
    for table in found.sorted_tables:
        for row in conn.execute(select(table)).mappings():
            for column, value in row.items():
                if value is None:
                    continue
                text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                cells.append((table.name, column, text))
    return cells


def test_full_card_numbers_are_never_stored_or_logged(
        server: KassaServer, merchant: Merchant, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    order_ids = []
    for card in FULL_CARD_NUMBERS:
        # Through both doors, and with an Idempotency-Key, whose stored response must not
        # keep the number either.
        task_id = new_task(merchant.test)
        r = merchant.test.post("/api/v1/payment/create", json={
            "task_id": task_id, "amount": 5000, "payment_method": "card",
            "return_url": RETURN_URL, "test_card": card},
            headers={"Idempotency-Key": f"card-{card[-4:]}"})
        assert r.status_code == 201, r.text
        order_ids.append(r.json()["order_id"])
        r = merchant.test.post("/api/v1/tasks", json={
            "title": "Card task", "amount": 5000, "currency": "CNY", "payment_method": "card",
            "return_url": RETURN_URL, "test_card": card,
            "metadata": {"note": "card test"}})
        assert r.status_code == 201, r.text
        order_ids.append(r.json()["payment"]["order_id"])
    # Let every order settle, so the settlement's rows and events are scanned too.
    for order_id in order_ids:
        body = merchant.test.get("/api/v1/payment/query", params={"order_id": order_id}).json()
        final = "completed" if body["card"]["last4"] == "4242" else "failed"
        server.wait_for_status(merchant.test, order_id, final)

    cells = server.db.write_sync(_every_stored_value)
    tables = {table for table, _, _ in cells}
    assert {"orders", "events", "idempotency_keys", "tasks"} <= tables  # the scan saw them
    assert any(column == "card_last4" and value == "4242" for _, column, value in cells)
    leaks = [(table, column) for table, column, value in cells
             if any(number in value for number in FULL_CARD_NUMBERS)]
    assert leaks == []
    logged = [rec.getMessage() for rec in caplog.records]
    assert not [m for m in logged if any(number in m for number in FULL_CARD_NUMBERS)]


# --- ledger and events ----------------------------------------------------------------------

def test_completion_posts_one_ledger_entry_into_escrow(server: KassaServer,
                                                       merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    order_id = pay(merchant.test, task_id).json()["order_id"]
    before = server.db.write_sync(lambda conn: ledger.postings_for_order(conn, order_id))
    assert before == []  # nothing is posted while the order is pending
    done = server.wait_for_status(merchant.test, order_id, "completed")

    def ledger_rows(conn: Connection) -> list[Any]:
        return list(conn.execute(
            select(ledger_transactions.c.transaction_id, ledger_transactions.c.mode,
                   ledger_transactions.c.kind, ledger_transactions.c.account_id)
            .where(ledger_transactions.c.order_id == order_id)).all())

    txns = server.db.write_sync(ledger_rows)
    assert len(txns) == 1
    txn = txns[0]
    assert (txn.mode, txn.account_id) == ("test", merchant.account_id)
    assert txn.transaction_id == done["transaction_id"]
    postings = server.db.write_sync(lambda conn: ledger.postings_for_order(conn, order_id))
    assert sorted(postings) == sorted([("external:alipay", -5000),
                                       (f"customer:{merchant.account_id}:escrow", 5000)])


def test_completion_records_created_then_completed_events(server: KassaServer,
                                                          merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    order_id = pay(merchant.test, task_id, payment_method="wechat").json()["order_id"]
    server.wait_for_status(merchant.test, order_id, "completed")
    rows = server.db.write_sync(lambda conn: events.for_object(conn, order_id))
    assert [(e.event_type, e.sequence) for e in rows] == [("payment.created", 1),
                                                          ("payment.completed", 2)]
    assert all(e.account_id == merchant.account_id and e.mode == "test" for e in rows)
    assert len({e.event_id for e in rows}) == 2



def test_only_merchant_balances_are_cached_system_accounts_come_from_postings(
        server: KassaServer, merchant: Merchant) -> None:
    """external:* is credited by every payment of every merchant: a cached row for it
    would be one hot row all settlements lock. It is derived from the postings instead."""
    order_id = pay(merchant.test, new_task(merchant.test)).json()["order_id"]
    server.wait_for_status(merchant.test, order_id, "completed")
    rows = server.db.write_sync(lambda conn: list(conn.execute(select(
        ledger_balances.c.ledger_account, ledger_balances.c.balance))))
    accounts = {a: b for a, b in rows}
    assert accounts[f"customer:{merchant.account_id}:escrow"] == 5000
    assert not [a for a in accounts if a.startswith(("external:", "platform:"))]
