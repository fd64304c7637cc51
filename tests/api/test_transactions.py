"""GET /api/v1/payment/transactions (seed 000 "Get Transaction History"), over HTTP: the
seed's fields, the type and status filters, limit, and cursor paging that neither repeats
nor skips a row while new ones arrive."""

from __future__ import annotations

import re
from typing import Any

from kassa.history.schemas import Transaction
from tests.api.test_escrow import (
    dispatch,
    history_row,
    paid_task,
    query,
    refunded,
    transactions,
    wait_refund,
)
from tests.support.factories import RETURN_URL, assert_error
from tests.support.harness import KassaServer, Merchant

SEED_FIELDS = {"transaction_id", "type", "order_id", "task_id", "amount", "currency", "status",
               "description", "created_at"}
FIELDS = set(Transaction.model_fields)
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def ids(page: dict[str, Any]) -> list[str]:
    return [row["transaction_id"] for row in page["data"]]


def assert_row_shape(row: dict[str, Any]) -> None:
    assert set(row) == FIELDS and set(row) >= SEED_FIELDS, row
    assert row["transaction_id"].startswith("txn_")
    assert row["order_id"].startswith("ord_")
    assert row["type"] in ("payment", "refund", "deposit")
    assert row["status"] in ("completed", "pending", "failed")
    assert isinstance(row["amount"], int) and row["amount"] > 0
    assert row["currency"] == "CNY"
    assert isinstance(row["description"], str) and row["description"]
    assert ISO.match(row["created_at"]), row


def test_rows_and_filters(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    r = client.post("/api/v1/payment/deposit", json={
        "amount": 10_000, "payment_method": "alipay", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    deposit = r.json()["order_id"]
    paid_task_id, paid = dispatch(client, method="wechat")
    _, pending = dispatch(client, method="card")  # nobody pays: stays pending
    _, declined = dispatch(client, method="card", test_card="4000000000000002")
    for order_id, status in ((deposit, "completed"), (paid, "completed"),
                             (declined, "failed")):
        server.wait_for_status(client, order_id, status)
    done = refunded(client, paid, amount=1000, refund_method="balance")
    refused = refunded(client, paid, amount=1500, reason="quality_issue",
                       test_outcome="failed")
    wait_refund(client, refused["refund_id"], "failed")

    everything = transactions(client)
    assert (everything["has_more"], everything["next_cursor"]) == (False, None)
    rows = everything["data"]
    assert len(rows) == 6
    for row in rows:
        assert_row_shape(row)
    by_key = {(row["order_id"], row["refund_id"]): row for row in rows}
    # Newest first: the order they were created in, reversed.
    assert ids(everything) == [
        by_key[k]["transaction_id"] for k in ((paid, refused["refund_id"]),
                                              (paid, done["refund_id"]), (declined, None),
                                              (pending, None), (paid, None), (deposit, None))]

    dep = by_key[(deposit, None)]
    assert (dep["type"], dep["status"], dep["amount"], dep["task_id"]) == (
        "deposit", "completed", 10_000, None)
    pay_row = by_key[(paid, None)]
    assert (pay_row["type"], pay_row["status"], pay_row["amount"], pay_row["task_id"]) == (
        "payment", "completed", 5000, paid_task_id)
    assert pay_row["description"] == "Payment for task: Escrow task"
    assert pay_row["transaction_id"] == query(client, paid)["transaction_id"]
    assert by_key[(pending, None)]["status"] == "pending"
    assert by_key[(declined, None)]["status"] == "failed"
    ok = by_key[(paid, done["refund_id"])]
    assert (ok["type"], ok["status"], ok["amount"], ok["task_id"]) == (
        "refund", "completed", 1000, paid_task_id)
    assert ok["transaction_id"] == done["transaction_id"]
    assert ok["description"] == "Refund for cancelled task"  # as the seed's example
    bad = by_key[(paid, refused["refund_id"])]
    assert (bad["type"], bad["status"], bad["amount"]) == ("refund", "failed", 1500)
    assert bad["description"] == "Refund for quality issue"

    def keys(**params: Any) -> set[tuple[str, str | None]]:
        page = transactions(client, **params)
        assert page["has_more"] is False
        return {(row["order_id"], row["refund_id"]) for row in page["data"]}

    refund_keys = {(paid, done["refund_id"]), (paid, refused["refund_id"])}
    assert keys(type="payment") == {(paid, None), (pending, None), (declined, None)}
    assert keys(type="refund") == refund_keys
    assert keys(type="deposit") == {(deposit, None)}
    assert keys(type="all") == set(by_key)
    assert keys(status="completed") == {(deposit, None), (paid, None),
                                        (paid, done["refund_id"])}
    assert keys(status="pending") == {(pending, None)}
    assert keys(status="failed") == {(declined, None), (paid, refused["refund_id"])}
    assert keys(status="all") == set(by_key)
    assert keys(type="refund", status="failed") == {(paid, refused["refund_id"])}
    assert keys(type="payment", status="completed") == {(paid, None)}
    assert keys(type="deposit", status="pending") == set()

    for params in ({"type": "withdrawal"}, {"type": "payments"}, {"status": "refunded"},
                   {"status": "processing"}, {"type": ""}, {"unknown": "1"}):
        r = client.get("/api/v1/payment/transactions", params=params)
        assert_error(r, 400, "validation_error")

    # Nobody else's rows: another merchant, and this merchant's live mode.
    assert transactions(server.merchant().test)["data"] == []
    assert transactions(merchant.live)["data"] == []
    # A GET: the key alone reads it.
    with server.client(merchant.test_key) as key_only:
        assert ids(transactions(key_only)) == ids(everything)


def test_limit_and_paging(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    # 45 payments (card orders nobody pays: pending, nothing settles).
    created = [dispatch(client, method="card")[1] for _ in range(45)]
    newest_first = [history_row(client, order_id=o)["transaction_id"] for o in created][::-1]

    page = transactions(client)
    assert len(page["data"]) == 20  # the default limit
    assert page["has_more"] is True and page["next_cursor"] == page["data"][-1][
        "transaction_id"]
    assert ids(page) == newest_first[:20]
    page = transactions(client, limit=100)
    assert ids(page) == newest_first
    assert (page["has_more"], page["next_cursor"]) == (False, None)
    page = transactions(client, limit=45)
    assert (len(page["data"]), page["has_more"], page["next_cursor"]) == (45, False, None)
    page = transactions(client, limit=44)
    assert (page["has_more"], page["next_cursor"]) == (True, newest_first[43])
    for limit in ("101", "0", "-1", "abc", "10.5", ""):
        r = client.get("/api/v1/payment/transactions", params={"limit": limit})
        assert_error(r, 400, "validation_error")

    # Page through with limit 10; a new payment arrives in the middle and must neither
    # appear on the later pages nor shift them.
    seen: list[str] = []
    pages: list[tuple[int, bool, str | None]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor is not None:
            params["starting_after"] = cursor
        page = transactions(client, **params)
        seen.extend(ids(page))
        pages.append((len(page["data"]), page["has_more"], page["next_cursor"]))
        if len(pages) == 2:
            late = dispatch(client, method="card")[1]
        if not page["has_more"]:
            break
        assert page["next_cursor"] == page["data"][-1]["transaction_id"]
        cursor = page["next_cursor"]
    assert seen == newest_first  # each exactly once, newest first
    assert [(n, more) for n, more, _ in pages] == [(10, True)] * 4 + [(5, False)]
    assert pages[-1][2] is None
    # The late one is first on a fresh first page.
    assert transactions(client, limit=1)["data"][0]["order_id"] == late

    # Paging a filter.
    first = transactions(client, type="payment", status="pending", limit=30)
    rest = transactions(client, type="payment", status="pending", limit=30,
                        starting_after=first["next_cursor"])
    assert len(first["data"]) + len(rest["data"]) == 46
    assert rest["has_more"] is False

    # A cursor must be one of this merchant's own transactions.
    for cursor_value in ("txn_doesnotexist", "", "x" * 41):
        r = client.get("/api/v1/payment/transactions", params={"starting_after": cursor_value})
        assert_error(r, 400, "validation_error")
    other = server.merchant()
    other_row = dispatch(other.test, method="card")[1]
    other_txn = history_row(other.test, order_id=other_row)["transaction_id"]
    r = client.get("/api/v1/payment/transactions", params={"starting_after": other_txn})
    assert_error(r, 400, "validation_error")
    r = other.test.get("/api/v1/payment/transactions",
                       params={"starting_after": newest_first[0]})
    assert_error(r, 400, "validation_error")
    r = merchant.live.get("/api/v1/payment/transactions",
                          params={"starting_after": newest_first[0]})
    assert_error(r, 400, "validation_error")


def test_pending_rows_become_completed(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    _, order_id = dispatch(client)  # alipay: the sandbox confirms it after ~0.3 s
    row = history_row(client, order_id=order_id)
    assert (row["type"], row["status"]) == ("payment", "pending")
    server.wait_for_status(client, order_id, "completed")
    after = history_row(client, order_id=order_id)
    assert after["status"] == "completed"
    assert (after["transaction_id"], after["created_at"]) == (row["transaction_id"],
                                                              row["created_at"])

    back = refunded(client, order_id, amount=2000)  # through the channel: confirmed later
    row = history_row(client, refund_id=back["refund_id"])
    assert (row["type"], row["status"], row["amount"]) == ("refund", "pending", 2000)
    wait_refund(client, back["refund_id"], "completed")


def test_a_failed_refund_shows_failed(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    _, order_id = paid_task(server, client)
    back = refunded(client, order_id, test_outcome="failed")
    row = wait_refund(client, back["refund_id"], "failed")
    assert (row["type"], row["amount"], row["order_id"]) == ("refund", 5000, order_id)
    # The payment itself stays completed: the money is back in escrow.
    assert history_row(client, order_id=order_id, type_="payment")["status"] == "completed"
    failed = transactions(client, status="failed")["data"]
    assert [r["refund_id"] for r in failed] == [back["refund_id"]]

