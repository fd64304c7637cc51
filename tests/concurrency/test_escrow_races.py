"""Races on escrowed money through the real API, on SQLite and on PostgreSQL (issue 3).

Many requests on one order or one task at once: refunds against each other,
approve against cancel, refund against approve, balance payments against one
balance, paging the history while it grows, and sandbox refunds confirmed by
separate `kassa worker` processes. Whatever the interleaving, no money is
created or lost, each order's money is in exactly one place, every refused
request is a clean 4xx, and the responses agree with the database.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, func, select

from kassa.config import Settings
from kassa.core.clock import iso
from kassa.db.tables import events, job_runs, jobs, ledger_transactions, orders, refunds, tasks
from kassa.db.tables import transaction_history as history
from kassa.ledger.service import check_invariants
from kassa.payments.service import JOB_EXPIRE
from kassa.refunds.service import JOB_SETTLE_SANDBOX_REFUND
from tests.support.factories import RETURN_URL
from tests.support.harness import KassaServer, Merchant, make_settings
from tests.support.processes import Reader, wait_until, worker_processes
from tests.support.replies import Reply, statuses

# Loopback is plain HTTP, but every httpx client loads the CA bundle unless handed one.
_SSL = ssl.create_default_context()

FEE_BPS = 2000  # the default platform fee: 20%


Call = tuple[str, str, dict[str, Any] | None]  # (method, path, JSON body)


def storm(server: KassaServer, merchant: Merchant, calls: list[Call], *,
          connections: int = 100) -> list[Reply]:
    """Send `calls` over `connections` keep-alive connections at once: each connection is
    opened first, then all start together and take the next call as soon as they are free.
    The replies come back in the order of `calls`.

    Each connection has a client of its own: httpx's shared async pool spends quadratic
    time juggling many connections and queued requests (1,000 calls took 10x longer).
    The first 5xx stops the storm (the calls not sent yet get no reply), and the test
    fails on it at once instead of hammering a broken server for minutes."""
    headers = {"Authorization": f"Bearer {merchant.test_key}",
               "X-API-Secret": merchant.test_secret}
    replies: list[Reply | None] = [None] * len(calls)
    pending = iter(range(len(calls)))
    width = min(connections, len(calls))

    async def connection(start: asyncio.Barrier) -> None:
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60,
                                     verify=_SSL) as client:
            assert (await client.get("/healthz")).status_code == 200  # connected
            await start.wait()
            for i in pending:
                method, path, body = calls[i]
                r = await client.request(method, path, json=body)
                replies[i] = Reply(r.status_code, r.content)
                if r.status_code >= 500:
                    for _ in pending:  # nobody sends anything more
                        pass

    async def run() -> None:
        start = asyncio.Barrier(width)
        await asyncio.gather(*(connection(start) for _ in range(width)))

    asyncio.run(run())
    errors = [r for r in replies if r is not None and r.status >= 500]
    assert not errors, (
        f"{len(errors)} server error(s), {sum(r is None for r in replies)} of {len(calls)} "
        f"calls left unsent; first: {errors[0].status} {errors[0].content!r}; so far: "
        f"{statuses([r for r in replies if r is not None])}")
    sent = [r for r in replies if r is not None]
    assert len(sent) == len(calls)
    return sent


def fee_of(amount: int) -> int:
    """round_half_up(amount * 20%), worked out here independently of kassa.core.money."""
    return (amount * FEE_BPS + 5000) // 10_000


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def dispatch(server: KassaServer, merchant: Merchant, amounts: list[int], *,
             method: str = "alipay") -> list[tuple[str, str]]:
    """Dispatched tasks (one order each) created at once; [(task_id, order_id)]."""
    task_ids = [uid("esc") for _ in amounts]
    replies = storm(server, merchant, [
        ("POST", "/api/v1/tasks", {"task_id": t, "title": f"Escrow task {i}", "amount": a,
                                   "currency": "CNY", "payment_method": method,
                                   "return_url": RETURN_URL})
        for i, (t, a) in enumerate(zip(task_ids, amounts, strict=True))], connections=20)
    for r in replies:
        assert r.status == 201, r.content
    return [(r.body["task"]["task_id"], r.body["payment"]["order_id"]) for r in replies]


def order_rows(server: KassaServer, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    def unit(conn: Connection) -> dict[str, dict[str, Any]]:
        rows = conn.execute(select(orders).where(orders.c.order_id.in_(order_ids))).mappings()
        return {r["order_id"]: dict(r) for r in rows}
    return server.db.write_sync(unit)


def wait_for_orders(server: KassaServer, order_ids: list[str], status: str,
                    timeout: float = 30.0) -> None:
    def statuses_now() -> dict[str, str]:
        return {oid: row["status"] for oid, row in order_rows(server, order_ids).items()}

    wait_until(lambda: set(statuses_now().values()) == {status}, timeout=timeout,
               message=lambda: f"wanted all {status}: {Counter(statuses_now().values())}")


def paid_orders(server: KassaServer, merchant: Merchant, amounts: list[int]
                ) -> list[tuple[str, str]]:
    pairs = dispatch(server, merchant, amounts)
    wait_for_orders(server, [o for _, o in pairs], "completed")
    return pairs


def refunds_of(server: KassaServer, order_ids: list[str]) -> list[dict[str, Any]]:
    def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(
            select(refunds).where(refunds.c.order_id.in_(order_ids))).mappings()]
    return server.db.write_sync(unit)


def events_of(server: KassaServer, merchant: Merchant, object_ids: list[str]
              ) -> Counter[tuple[str, str]]:
    """(object_id, event_type) -> how many such events the merchant has."""
    def unit(conn: Connection) -> Counter[tuple[str, str]]:
        stmt = select(events.c.object_id, events.c.event_type).where(
            events.c.account_id == merchant.account_id, events.c.object_id.in_(object_ids))
        return Counter((o, t) for o, t in conn.execute(stmt))
    return server.db.write_sync(unit)


def ledger_kinds(server: KassaServer, order_ids: list[str]) -> Counter[tuple[str, str]]:
    """(order_id, ledger transaction kind) -> how many."""
    def unit(conn: Connection) -> Counter[tuple[str, str]]:
        t = ledger_transactions.c
        return Counter((o, k) for o, k in conn.execute(
            select(t.order_id, t.kind).where(t.order_id.in_(order_ids))))
    return server.db.write_sync(unit)


def query_order(merchant: Merchant, order_id: str) -> dict[str, Any]:
    r = merchant.test.get("/api/v1/payment/query", params={"order_id": order_id})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def balance(merchant: Merchant) -> dict[str, Any]:
    r = merchant.test.get("/api/v1/payment/balance")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = json.loads(r.text, parse_float=Decimal)
    for field in ("balance", "escrow", "lifetime_spent"):  # the yuan figures follow the cents
        assert body[f"{field}_rmb"] == Decimal(body[f"{field}_cents"]) / 100, body
    return body


def worker_balance(merchant: Merchant, worker_id: str) -> int | None:
    """The worker's balance in cents, None when nothing was ever paid to them (404)."""
    r = merchant.test.get(f"/api/v1/workers/{worker_id}/balance")
    if r.status_code == 404:
        assert r.json()["error"]["code"] == "worker_not_found", r.text
        return None
    assert r.status_code == 200, r.text
    body = json.loads(r.text, parse_float=Decimal)
    assert body["balance_rmb"] == Decimal(body["balance_cents"]) / 100, body
    return int(body["balance_cents"])


def body_of(call: Call) -> dict[str, Any]:
    assert call[2] is not None
    return call[2]


def refund_call(order_id: str, amount: int | None = None, method: str = "original",
                **extra: Any) -> Call:
    body: dict[str, Any] = {"order_id": order_id, "reason": "quality_issue",
                            "refund_method": method, **extra}
    if amount is not None:
        body["amount"] = amount
    return ("POST", "/api/v1/payment/refund", body)


# --- 1. a thousand refunds on one order ------------------------------------------------------

PAID = 5000
PARTIAL = 7  # 5000 = 714 * 7 + 2: partial refunds alone never empty the escrow
PARTIALS = 1000
FULLS = 20


def test_a_thousand_concurrent_refunds_never_refund_more_than_was_paid(
        server: KassaServer, merchant: Merchant) -> None:
    [(task_id, order_id)] = paid_orders(server, merchant, [PAID])
    rng = random.Random(3)
    calls = [refund_call(order_id, PARTIAL, "balance" if i % 3 == 0 else "original")
             for i in range(PARTIALS)]
    # The full refunds go among the last 15%: by then the partial refunds have been
    # fighting over the last cents of the escrow for a while.
    for i in range(FULLS):
        calls.insert(rng.randrange(PARTIALS * 85 // 100, len(calls) + 1), refund_call(
            order_id, None, "balance" if i % 2 else "original", reason="other",
            reason_detail=f"full refund {i}"))

    replies = storm(server, merchant, calls, connections=100)

    counts = statuses(replies)
    assert set(counts) <= {(200, None), (400, "refund_not_allowed"),
                           (400, "already_refunded")}, counts
    won = [(c, r.body) for c, r in zip(calls, replies, strict=True) if r.status == 200]
    partial_wins = [b for c, b in won if "amount" in body_of(c)]
    full_wins = [b for c, b in won if "amount" not in body_of(c)]
    # 5000 is no multiple of 7, so only a full refund can take the escrow to zero, and the
    # first full refund to run takes all that is left: exactly one full refund wins.
    assert len(full_wins) == 1, counts
    assert all(b["amount"] == PARTIAL for b in partial_wins)
    assert full_wins[0]["amount"] == PAID - PARTIAL * len(partial_wins) > 0
    assert sum(b["amount"] for _, b in won) == PAID
    for call, body in won:
        method = body_of(call)["refund_method"]
        assert body["order_id"] == order_id and body["task_id"] == task_id
        assert body["amount_cny"] == body["amount"]
        assert (body["refund_method"], body["status"]) == (
            ("balance", "completed") if method == "balance" else ("alipay", "processing")), body
    refund_ids = [b["refund_id"] for _, b in won]
    assert len(set(refund_ids)) == len(won)

    rows = refunds_of(server, [order_id])
    assert sorted(r["refund_id"] for r in rows) == sorted(refund_ids)
    assert sum(r["amount"] for r in rows) == PAID
    first = min(rows, key=lambda r: (r["created_at"], r["refund_id"]))
    for call, r in zip(calls, replies, strict=True):
        if r.code == "already_refunded":  # only once everything was refunded
            assert (r.error["refund_id"], r.error["refunded_at"]) == (
                first["refund_id"], iso(first["created_at"])), r.error
        elif r.code == "refund_not_allowed":  # a partial refund bigger than the 2 cents left
            assert "amount" in body_of(call), r.error
            assert len(partial_wins) == PAID // PARTIAL, r.error
            assert (r.error["refundable_amount"], r.error["requested_amount"]) == (
                PAID % PARTIAL, PARTIAL), r.error

    order = query_order(merchant, order_id)
    assert order["refunded_cents"] == PAID
    assert order["escrow"]["refunded_cents"] == PAID and order["escrow"]["held_cents"] == 0
    server.check_ledger()  # original refunds may still be processing here

    # Once the channel has confirmed every original refund the order is refunded.
    server.wait_for_status(merchant.test, order_id, "refunded", timeout=30)
    rows = refunds_of(server, [order_id])
    assert {r["status"] for r in rows} == {"completed"}
    announced = events_of(server, merchant, refund_ids)
    assert announced == Counter({(rid, kind): 1 for rid in refund_ids
                                 for kind in ("refund.created", "refund.completed")})
    to_balance = sum(b["amount"] for c, b in won if body_of(c)["refund_method"] == "balance")
    after = balance(merchant)
    assert (after["balance_cents"], after["escrow_cents"], after["refunds_in_flight_cents"],
            after["lifetime_spent_cents"]) == (to_balance, 0, 0, 0)
    kinds = ledger_kinds(server, [order_id])
    original = [b["refund_id"] for c, b in won if body_of(c)["refund_method"] == "original"]
    assert kinds == Counter({(order_id, "payment"): 1, (order_id, "refund"): len(won),
                             (order_id, "refund_settled"): len(original)})

    def settle_runs(conn: Connection) -> list[tuple[str, str]]:
        return [(r, o) for r, o in conn.execute(select(job_runs.c.ref, job_runs.c.outcome).where(
            job_runs.c.kind == JOB_SETTLE_SANDBOX_REFUND, job_runs.c.ref.in_(refund_ids)))]
    # Each original refund was confirmed by exactly one run of its job.
    assert sorted(server.db.write_sync(settle_runs)) == sorted(
        (rid, "completed") for rid in original)
    server.check_ledger()


# --- 2. approve racing cancel ----------------------------------------------------------------

TRIALS = 30


def test_approve_racing_cancel_ends_in_exactly_one_outcome(server: KassaServer,
                                                           merchant: Merchant) -> None:
    amounts = [5000 + 37 * i for i in range(TRIALS)]  # fees that round down and up
    pairs = paid_orders(server, merchant, amounts)
    workers = [uid("w") for _ in pairs]
    methods = ["balance" if i % 3 == 0 else "original" for i in range(TRIALS)]
    calls: list[Call] = []
    for i, (task_id, _) in enumerate(pairs):
        approve: Call = ("POST", f"/api/v1/tasks/{task_id}/approve", {"worker_id": workers[i]})
        cancel: Call = ("POST", f"/api/v1/tasks/{task_id}/cancel",
                        {"refund_method": methods[i]})
        calls += [approve, cancel] if i % 2 else [cancel, approve]

    replies = storm(server, merchant, calls, connections=2 * TRIALS)

    approved: list[int] = []
    cancelled: list[int] = []
    for i, (task_id, order_id) in enumerate(pairs):
        pair = {c[1].rsplit("/", 1)[1]: r for c, r in zip(calls[2 * i:2 * i + 2],
                                                          replies[2 * i:2 * i + 2], strict=True)}
        outcome = {k: (r.status, r.code) for k, r in pair.items()}
        assert sorted(outcome.values()) == [(200, None), (409, "invalid_task_state")], outcome
        winner = "approve" if pair["approve"].status == 200 else "cancel"
        loser = pair["cancel" if winner == "approve" else "approve"]
        won = pair[winner].body
        state = "approved" if winner == "approve" else "cancelled"
        assert (loser.error["task_id"], loser.error["task_status"]) == (task_id, state)
        assert won["task"]["task_id"] == task_id and won["task"]["status"] == state
        amount, fee = amounts[i], fee_of(amounts[i])
        if winner == "approve":
            approved.append(i)
            assert won["task"]["worker_id"] == workers[i]
            release = won["release"]
            assert (release["worker_id"], release["total_cents"],
                    release["worker_payout_cents"], release["platform_fee_cents"]) == (
                workers[i], amount, amount - fee, fee), release
            assert won["payment"]["escrow"] == {
                "held_cents": 0, "released_cents": amount, "refunded_cents": 0,
                "worker_payout_cents": amount - fee, "platform_fee_cents": fee,
                "currency": "CNY"}
        else:
            cancelled.append(i)
            refund = won["refund"]
            assert (refund["order_id"], refund["amount"], refund["reason"]) == (
                order_id, amount, "task_cancelled"), refund
            assert refund["status"] == ("completed" if methods[i] == "balance"
                                        else "processing"), refund
            assert won["payment"]["escrow"]["held_cents"] == 0
            assert won["payment"]["escrow"]["released_cents"] == 0
    assert len(approved) + len(cancelled) == TRIALS

    order_ids = [o for _, o in pairs]
    # The cancelled orders become refunded once the channel confirms; approved stay completed.
    wanted = {o: "completed" if i in approved else "refunded" for i, o in enumerate(order_ids)}
    wait_until(lambda: {o: r["status"] for o, r in order_rows(server, order_ids).items()}
               == wanted, timeout=30, message="the cancelled orders never all became refunded")
    for i, (task_id, order_id) in enumerate(pairs):
        amount, fee = amounts[i], fee_of(amounts[i])
        escrow = query_order(merchant, order_id)["escrow"]
        paid_worker = worker_balance(merchant, workers[i])
        task = merchant.test.get(f"/api/v1/tasks/{task_id}").json()
        if i in approved:  # all of it with the worker and the platform, nothing refunded
            assert (escrow["released_cents"], escrow["refunded_cents"]) == (amount, 0)
            assert paid_worker == amount - fee
            assert task["status"] == "approved" and task["worker_id"] == workers[i]
        else:  # all of it refunded, the worker never paid
            assert (escrow["released_cents"], escrow["refunded_cents"]) == (0, amount)
            assert paid_worker is None
            assert task["status"] == "cancelled" and task["worker_id"] is None
        assert escrow["held_cents"] == 0
    kinds = ledger_kinds(server, order_ids)
    expected: Counter[tuple[str, str]] = Counter()
    for i, (_, order_id) in enumerate(pairs):
        expected[(order_id, "payment")] = 1
        if i in approved:
            expected[(order_id, "release")] = 1
        else:
            expected[(order_id, "refund")] = 1
            if methods[i] == "original":
                expected[(order_id, "refund_settled")] = 1
    assert kinds == expected
    announced = events_of(server, merchant, [t for t, _ in pairs])
    assert announced == Counter({
        (task_id, "task.approved" if i in approved else "task.cancelled"): 1
        for i, (task_id, _) in enumerate(pairs)})
    account = balance(merchant)
    assert (account["balance_cents"], account["escrow_cents"],
            account["refunds_in_flight_cents"], account["lifetime_spent_cents"]) == (
        sum(amounts[i] for i in cancelled if methods[i] == "balance"), 0, 0,
        sum(amounts[i] for i in approved))
    server.check_ledger()


# --- 3. refund racing approve ----------------------------------------------------------------

PARTIAL_REFUND = 1500


def test_refund_racing_approve_never_pays_out_the_same_money_twice(
        server: KassaServer, merchant: Merchant) -> None:
    amounts = [5000 + 37 * i for i in range(TRIALS)]
    pairs = paid_orders(server, merchant, amounts)
    workers = [uid("w") for _ in pairs]
    partial = [i % 2 == 0 for i in range(TRIALS)]
    methods = ["balance" if (i // 2) % 2 else "original" for i in range(TRIALS)]
    calls: list[Call] = []
    for i, (task_id, order_id) in enumerate(pairs):
        approve: Call = ("POST", f"/api/v1/tasks/{task_id}/approve", {"worker_id": workers[i]})
        refund = refund_call(order_id, PARTIAL_REFUND if partial[i] else None, methods[i])
        calls += [approve, refund] if (i // 4) % 2 else [refund, approve]

    replies = storm(server, merchant, calls, connections=2 * TRIALS)

    refunded: dict[int, int] = {}  # trial -> cents refunded
    released: dict[int, int] = {}  # trial -> cents released to the worker and the platform
    for i, (_, order_id) in enumerate(pairs):
        pair = dict(zip(["approve" if c[1].endswith("/approve") else "refund"
                         for c in calls[2 * i:2 * i + 2]], replies[2 * i:2 * i + 2],
                        strict=True))
        r_refund, r_approve = pair["refund"], pair["approve"]
        outcome = ((r_refund.status, r_refund.code), (r_approve.status, r_approve.code))
        amount = amounts[i]
        if outcome == ((200, None), (200, None)):
            # The refund ran first and the approval released what it left: only possible
            # for a partial refund.
            assert partial[i], (i, r_refund.body, r_approve.body)
            refunded[i] = r_refund.body["amount"]
            released[i] = r_approve.body["release"]["total_cents"]
            assert (refunded[i], released[i]) == (PARTIAL_REFUND, amount - PARTIAL_REFUND)
        elif outcome == ((400, "refund_not_allowed"), (200, None)):
            # The approval ran first and released everything: nothing left to refund.
            released[i] = r_approve.body["release"]["total_cents"]
            assert released[i] == amount
            assert (r_refund.error["order_id"], r_refund.error["released_cents"]) == (
                order_id, amount), r_refund.error
        elif outcome == ((200, None), (409, "invalid_task_state")):
            # A full refund ran first: nothing was left in escrow to release.
            assert not partial[i], (i, r_refund.body, r_approve.error)
            refunded[i] = r_refund.body["amount"]
            assert refunded[i] == amount
            assert r_approve.error["task_status"] == "open", r_approve.error
        else:
            raise AssertionError(f"trial {i}: {outcome}")
        if i in released:
            fee = fee_of(released[i])
            assert r_approve.body["release"]["platform_fee_cents"] == fee
            assert worker_balance(merchant, workers[i]) == released[i] - fee
        else:
            assert worker_balance(merchant, workers[i]) is None
        assert refunded.get(i, 0) + released.get(i, 0) == amount  # all of it, only once

    order_ids = [o for _, o in pairs]
    # Fully refunded orders become refunded once the channel confirms; the others stay
    # completed (a partial refund and a release, or only a release).
    wanted = {o: "refunded" if refunded.get(i) == amounts[i] else "completed"
              for i, o in enumerate(order_ids)}
    wait_until(lambda: {o: r["status"] for o, r in order_rows(server, order_ids).items()}
               == wanted, timeout=30, message="orders never reached their final status")
    wait_until(lambda: {r["status"] for r in refunds_of(server, order_ids)} <= {"completed"},
               timeout=30, message="refunds never all confirmed")
    rows = order_rows(server, order_ids)
    for i, order_id in enumerate(order_ids):
        row = rows[order_id]
        assert (row["refunded_cents"], row["released_cents"]) == (
            refunded.get(i, 0), released.get(i, 0)), row
        assert row["platform_fee_cny"] == (fee_of(released[i]) if i in released else 0)
    account = balance(merchant)
    assert (account["balance_cents"], account["escrow_cents"],
            account["refunds_in_flight_cents"], account["lifetime_spent_cents"]) == (
        sum(v for i, v in refunded.items() if methods[i] == "balance"), 0, 0,
        sum(released.values()))
    server.check_ledger()


# --- 4. payments from one balance ------------------------------------------------------------

def deposit(server: KassaServer, merchant: Merchant, amount: int) -> str:
    r = merchant.test.post("/api/v1/payment/deposit", json={
        "amount": amount, "currency": "CNY", "payment_method": "alipay",
        "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    order_id: str = r.json()["order_id"]
    server.wait_for_status(merchant.test, order_id, "completed")
    return order_id


FUNDS = 20_000


def test_concurrent_balance_payments_spend_only_what_is_there(server: KassaServer,
                                                              merchant: Merchant) -> None:
    deposit(server, merchant, FUNDS)
    price, m = 1900, 40
    n = FUNDS // price  # 10 fit, 1,000 cents stay
    left = FUNDS - n * price
    task_ids = [uid("bal") for _ in range(m)]
    calls: list[Call] = []
    for i, task_id in enumerate(task_ids):
        calls.append(("POST", "/api/v1/tasks", {
            "task_id": task_id, "title": f"Paid from balance {i}", "amount": price,
            "currency": "CNY", "payment_method": "balance", "return_url": RETURN_URL}))
        # Balance reads next to every payment: never negative, never half of a payment.
        calls += [("GET", "/api/v1/payment/balance", None)] * 2

    replies = storm(server, merchant, calls, connections=60)

    paid, refused = [], []
    torn = []  # balance reads that mixed two moments
    for call, r in zip(calls, replies, strict=True):
        if call[0] == "GET":
            assert r.status == 200, r.content
            seen = json.loads(r.content, parse_float=Decimal)
            assert seen["balance_cents"] in {FUNDS - k * price for k in range(n + 1)}, seen
            # Payments only move money from the available balance into escrow: at any one
            # moment all the funds are in those two places.
            if seen["balance_cents"] + seen["escrow_cents"] != FUNDS:
                torn.append((seen["balance_cents"], seen["escrow_cents"]))
            continue
        task_id = body_of(call)["task_id"]
        if r.status == 201:
            paid.append(task_id)
            assert r.body["payment"]["status"] == "completed", r.body
            assert r.body["payment"]["payment_method"] == "balance"
        else:
            refused.append(task_id)
            assert (r.status, r.code) == (400, "insufficient_funds"), r.content
            assert (r.error["balance_cents"], r.error["required_cents"]) == (left, price)
    assert (len(paid), len(refused)) == (n, m - n)
    for task_id in refused:  # a refused payment leaves nothing behind, not even its task
        gone = merchant.test.get(f"/api/v1/tasks/{task_id}")
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "task_not_found")

    def made(conn: Connection) -> tuple[list[dict[str, Any]], list[str], Counter[str]]:
        o = [dict(r) for r in conn.execute(select(orders).where(
            orders.c.account_id == merchant.account_id,
            orders.c.purpose == "payment")).mappings()]
        t = [r for (r,) in conn.execute(select(tasks.c.task_id).where(
            tasks.c.account_id == merchant.account_id))]
        h = Counter(r for (r,) in conn.execute(select(history.c.type).where(
            history.c.account_id == merchant.account_id)))
        return o, t, h

    made_orders, made_tasks, made_history = server.db.write_sync(made)
    assert sorted(o["task_id"] for o in made_orders) == sorted(paid) == sorted(made_tasks)
    assert {(o["status"], o["payment_method"], o["amount"]) for o in made_orders} == {
        ("completed", "balance", price)}
    assert made_history == Counter({"deposit": 1, "payment": n})
    account = balance(merchant)
    assert (account["balance_cents"], account["escrow_cents"]) == (left, n * price)
    # And what is left is still spendable, exactly.
    late = merchant.test.post("/api/v1/tasks", json={
        "title": "The last of it", "amount": left, "currency": "CNY",
        "payment_method": "balance", "return_url": RETURN_URL})
    assert late.status_code == 201, late.text
    assert balance(merchant)["balance_cents"] == 0
    server.check_ledger()
    assert not torn, (
        f"{len(torn)} of {2 * m} balance reads are no one moment's balances: (balance_cents, "
        f"escrow_cents) = {torn}, which never summed to anything but {FUNDS} cents")


# --- 5. paging while the history grows -------------------------------------------------------

PAGE = 7


def history_keys(server: KassaServer, merchant: Merchant) -> dict[str, tuple[Any, str]]:
    """Every history row of the merchant: transaction_id -> its (created_at, id) sort key."""
    def unit(conn: Connection) -> dict[str, tuple[Any, str]]:
        return {t: (at, t) for t, at in conn.execute(
            select(history.c.transaction_id, history.c.created_at).where(
                history.c.account_id == merchant.account_id, history.c.mode == "test"))}
    return server.db.write_sync(unit)


def test_paging_sees_every_earlier_transaction_once_while_new_ones_arrive(
        server: KassaServer, merchant: Merchant) -> None:
    deposit(server, merchant, 200_000)
    # A history to page through: balance payments (completed at once), channel payments
    # (pending, then completed) and refunds of some of the balance payments.
    paid = storm(server, merchant, [("POST", "/api/v1/tasks", {
        "title": f"Task {i}", "amount": 1000 + i, "currency": "CNY",
        "payment_method": "balance" if i % 3 else "wechat", "return_url": RETURN_URL})
        for i in range(70)], connections=20)
    assert {r.status for r in paid} == {201}
    from_balance = [r.body["payment"]["order_id"] for r in paid
                    if r.body["payment"]["payment_method"] == "balance"]
    refunded = storm(server, merchant, [refund_call(o, 100, "balance")
                                        for o in from_balance[:25]], connections=20)
    assert {r.status for r in refunded} == {200}
    before = history_keys(server, merchant)
    assert len(before) == 1 + 70 + 25

    stop = threading.Event()
    written: list[int] = []  # one entry per transaction the writer created
    failures: list[str] = []

    def writer() -> None:
        with server.client(merchant.test_key, merchant.test_secret) as client:
            i = 0
            while not stop.is_set():
                i += 1
                if i % 3 == 0:
                    r = client.post("/api/v1/payment/refund", json={
                        "order_id": from_balance[25 + i % 20], "amount": 10,
                        "reason": "quality_issue", "refund_method": "balance"})
                    ok = r.status_code == 200
                else:
                    r = client.post("/api/v1/tasks", json={
                        "title": f"Late task {i}", "amount": 1000, "currency": "CNY",
                        "payment_method": "balance" if i % 2 else "alipay",
                        "return_url": RETURN_URL})
                    ok = r.status_code == 201
                if not ok:
                    failures.append(f"{r.status_code} {r.text}")
                    return
                written.append(i)

    def grew_since(count: int) -> Callable[[], bool]:
        return lambda: len(written) > count or bool(failures)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    try:
        while True:
            # Something new arrives between any two pages.
            wait_until(grew_since(len(written)), timeout=10, message="the writer stalled")
            params: dict[str, Any] = {"limit": PAGE}
            if cursor is not None:
                params["starting_after"] = cursor
            r = merchant.test.get("/api/v1/payment/transactions", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            pages += 1
            ids = [t["transaction_id"] for t in page["data"]]
            seen += ids
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            assert len(ids) == PAGE and page["next_cursor"] == ids[-1], page
            cursor = page["next_cursor"]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures

    duplicates = [t for t, k in Counter(seen).items() if k > 1]
    assert not duplicates, duplicates
    missing = set(before) - set(seen)
    assert not missing, f"{len(missing)} earlier transactions never listed: {sorted(missing)}"
    assert pages >= len(before) // PAGE
    assert len(written) >= pages  # the history really grew while it was paged
    after = history_keys(server, merchant)
    assert set(seen) <= set(after)
    keys = [after[t] for t in seen]  # the pages, joined, are one strictly descending list
    assert all(a > b for a, b in itertools.pairwise(keys)), "pages out of order"
    server.check_ledger()


# --- 6. sandbox refunds confirmed by separate worker processes -------------------------------

@pytest.fixture
def worker_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, database_url, worker_batch_size=4, job_lease_seconds=5.0)


@pytest.fixture
def api_server(worker_settings: Settings) -> Iterator[KassaServer]:
    """The API alone, without an in-process worker: only worker processes run jobs."""
    srv = KassaServer(worker_settings, run_worker=False).start()
    yield srv
    srv.check_ledger()
    srv.stop()


@pytest.mark.slow
def test_refunds_are_confirmed_once_by_worker_processes(
        api_server: KassaServer, worker_settings: Settings, tmp_path: Path) -> None:
    read = Reader(worker_settings)
    merchant = api_server.merchant()
    with worker_processes(worker_settings, tmp_path, count=2, worker_batch_size=4,
                          sandbox_refund_seconds=0.3) as procs:
        names = {p.wait_started() for p in procs}
        assert len(names) == 2
        pairs = dispatch(api_server, merchant, [6000] * 12)
        task_ids, order_ids = [t for t, _ in pairs], [o for _, o in pairs]
        wait_for_orders(api_server, order_ids, "completed")  # settled by the processes

        # Round 1, all at once: partial refunds that add up (0-3), a refund the channel
        # refuses next to one it takes (4-5), cancelled tasks (6-8), and failed tasks whose
        # automatic refund the channel refuses (9-11).
        first: list[Call] = []
        for o in order_ids[:4]:
            first += [refund_call(o, 1000), refund_call(o, 2000), refund_call(o, 500)]
        for o in order_ids[4:6]:
            first += [refund_call(o, 2500, test_outcome="failed"), refund_call(o, 1500)]
        first += [("POST", f"/api/v1/tasks/{t}/cancel", {}) for t in task_ids[6:9]]
        first += [("POST", f"/api/v1/tasks/{t}/fail", {"test_outcome": "failed"})
                  for t in task_ids[9:12]]
        assert {r.status for r in storm(api_server, merchant, first, connections=30)} == {200}

        def processing() -> int:
            return int(read(lambda c: c.execute(select(func.count()).select_from(refunds).where(
                refunds.c.status == "processing")).scalar_one()))

        def log_tails() -> str:
            return "\n".join(p.log_tail() for p in procs)

        wait_until(lambda: processing() == 0, timeout=30, message=log_tails)
        # Round 2: refund whatever is left (the failed refunds put their money back). The
        # failed tasks' refused refunds went to the balance by themselves (a closed task
        # can never release that money): nothing is left to refund there.
        second = [refund_call(o) for o in order_ids[:6]]
        assert {r.status for r in storm(api_server, merchant, second, connections=30)} == {200}
        done = [refund_call(o) for o in order_ids[9:]]
        assert {r.status for r in storm(api_server, merchant, done, connections=3)} == {400}
        wait_until(lambda: processing() == 0, timeout=30, message=log_tails)
        wait_for_orders(api_server, order_ids, "refunded")
        for p in procs:
            assert p.stop() == 0, p.log_tail()
        logs = [p.log() for p in procs]

    try:
        rows = read(lambda c: [dict(r) for r in c.execute(select(refunds)).mappings()])
        runs = read(lambda c: [dict(r) for r in c.execute(select(job_runs).where(
            job_runs.c.kind == JOB_SETTLE_SANDBOX_REFUND)).mappings()])
        left = read(lambda c: c.execute(select(jobs.c.job_id, jobs.c.kind, jobs.c.last_error)
                                        .where(jobs.c.kind != JOB_EXPIRE)).all())
        announced = read(lambda c: Counter(c.execute(
            select(events.c.object_id, events.c.event_type).where(
                events.c.event_type.like("refund.%"))).all()))
        result = read(check_invariants)
    finally:
        read.close()

    failed = {r["refund_id"] for r in rows if r["status"] == "failed"}
    assert len(failed) == 2 + 3  # 4-5's refused refunds and 9-11's automatic refunds
    assert {r["status"] for r in rows} == {"completed", "failed"}
    assert len(rows) == 4 * 3 + 2 * 2 + 3 + 3 + 4 * 1 + 2 * 1 + 3 * 1
    to_balance = [r for r in rows if r["refund_method"] == "balance"]
    assert sorted((r["order_id"], r["amount"], r["status"]) for r in to_balance) == sorted(
        (o, 6000, "completed") for o in order_ids[9:])
    # Each channel refund's job ran exactly once, by one of the two processes, with its
    # outcome (refunds to the balance complete at once, without a job).
    rows_original = [r for r in rows if r["refund_method"] == "original"]
    assert sorted(r["ref"] for r in runs) == sorted(r["refund_id"] for r in rows_original)
    assert len({r["job_id"] for r in runs}) == len(runs)
    assert {r["ref"]: r["outcome"] for r in runs} == {
        r["refund_id"]: "failed" if r["refund_id"] in failed else "completed"
        for r in rows_original}
    assert {r["worker"] for r in runs} <= names
    assert left == []  # only the orders' expiry jobs (due in 15 minutes) are left
    assert announced == Counter({
        (r["refund_id"], kind): 1 for r in rows
        for kind in ("refund.created", "refund.failed" if r["refund_id"] in failed
                     else "refund.completed")})
    assert result.ok, result.problems
    for log in logs:
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
