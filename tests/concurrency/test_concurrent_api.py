"""Races through the real API: 50 clients at once, on SQLite and on PostgreSQL.

Each client has its own connection, opened before a barrier releases them all
together. Whatever the interleaving, the outcome must be one winner, clean
409s (never a 500), and a database that agrees with the responses.
"""

from __future__ import annotations

import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import Connection, Table, select

from kassa.db.tables import daily_volume, orders, tasks
from tests.support.factories import RETURN_URL, new_task, pay_body
from tests.support.harness import KassaServer, Merchant
from tests.support.replies import Reply, statuses

CLIENTS = 50


# Loopback is plain HTTP, but every httpx.Client loads the CA bundle (~90 ms of CPU)
# unless handed a context: 50 clients would spend seconds doing nothing useful.
_SSL = ssl.create_default_context()


def merchant_client(server: KassaServer, merchant: Merchant) -> httpx.Client:
    """A client of its own (own connection), with the merchant's test credentials."""
    return httpx.Client(base_url=server.base_url, timeout=30, verify=_SSL, headers={
        "Authorization": f"Bearer {merchant.test_key}", "X-API-Secret": merchant.test_secret})


def all_at_once(server: KassaServer, merchant: Merchant, n: int,
                send: Callable[[httpx.Client, int], httpx.Response]) -> list[Reply]:
    """n clients, each on its own warmed-up connection, released together by a barrier."""
    barrier = threading.Barrier(n)

    def one(i: int) -> Reply:
        with merchant_client(server, merchant) as client:
            assert client.get("/healthz").status_code == 200  # connect before the start
            barrier.wait(timeout=30)
            r = send(client, i)
            return Reply(r.status_code, r.content)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def new_task_id() -> str:
    return f"race-{uuid.uuid4().hex[:16]}"


def rows_of_task(server: KassaServer, merchant: Merchant, table: Table,
                 task_id: str) -> list[dict[str, Any]]:
    """The merchant's rows of `table` (orders, tasks) with this task_id, read from the database."""
    def unit(conn: Connection) -> list[dict[str, Any]]:
        stmt = select(table).where(table.c.account_id == merchant.account_id,
                                   table.c.task_id == task_id)
        return [dict(r) for r in conn.execute(stmt).mappings()]
    return server.db.write_sync(unit)


def orders_of_task(server: KassaServer, merchant: Merchant, task_id: str) -> list[dict[str, Any]]:
    return rows_of_task(server, merchant, orders, task_id)


def tasks_with_id(server: KassaServer, merchant: Merchant, task_id: str) -> list[dict[str, Any]]:
    return rows_of_task(server, merchant, tasks, task_id)


def test_fifty_creates_for_one_task_make_one_order(server: KassaServer,
                                                   merchant: Merchant) -> None:
    task_id = new_task_id()
    new_task(merchant.test, task_id=task_id, title="Raced task")
    body = pay_body(task_id)

    replies = all_at_once(server, merchant, CLIENTS,
                          lambda c, _: c.post("/api/v1/payment/create", json=body))

    assert statuses(replies) == {(201, None): 1, (409, "duplicate_order"): CLIENTS - 1}
    [winner] = [r.body for r in replies if r.status == 201]
    order_id = winner["order_id"]
    for r in replies:
        if r.status == 409:
            error = r.body["error"]
            assert error["order_id"] == order_id, error  # points at the winner's order
            assert error["status"] in ("pending", "processing", "completed"), error
    [row] = orders_of_task(server, merchant, task_id)
    assert row["order_id"] == order_id and row["amount"] == 5000
    [task] = tasks_with_id(server, merchant, task_id)
    assert task["current_order_id"] == order_id
    # And afterwards the task still refuses a second order, with the same answer.
    late = merchant.test.post("/api/v1/payment/create", json=body)
    assert (late.status_code, late.json()["error"]["code"]) == (409, "duplicate_order")
    assert late.json()["error"]["order_id"] == order_id
    assert len(orders_of_task(server, merchant, task_id)) == 1


def test_fifty_requests_with_one_idempotency_key_execute_once(server: KassaServer,
                                                              merchant: Merchant) -> None:
    task_id = new_task_id()
    new_task(merchant.test, task_id=task_id, title="Raced task")
    key = f"idem-{uuid.uuid4()}"
    body = pay_body(task_id)

    replies = all_at_once(server, merchant, CLIENTS, lambda c, _: c.post(
        "/api/v1/payment/create", json=body, headers={"Idempotency-Key": key}))

    counts = statuses(replies)
    assert set(counts) <= {(201, None), (409, "request_in_progress")}, counts
    created = [r for r in replies if r.status == 201]
    assert created, counts  # the first request itself always answers 201
    assert len({r.content for r in created}) == 1  # replays are byte-for-byte the original
    order_id = created[0].body["order_id"]
    for r in replies:
        if r.status == 409:
            assert r.body["error"]["idempotency_key"] == key
    [row] = orders_of_task(server, merchant, task_id)
    assert row["order_id"] == order_id
    # Once the storm is over the key replays the same response, still without a new order.
    again = merchant.test.post("/api/v1/payment/create", json=body,
                               headers={"Idempotency-Key": key})
    assert again.status_code == 201 and again.content == created[0].content
    assert len(orders_of_task(server, merchant, task_id)) == 1


def test_fifty_dispatches_of_one_task_id_make_one_task_and_one_order(
        server: KassaServer, merchant: Merchant) -> None:
    task_id = new_task_id()
    body = {"task_id": task_id, "title": "Raced dispatch", "amount": 7000, "currency": "CNY",
            "payment_method": "wechat", "return_url": RETURN_URL}

    replies = all_at_once(server, merchant, CLIENTS,
                          lambda c, _: c.post("/api/v1/tasks", json=body))

    assert statuses(replies) == {(201, None): 1, (409, "duplicate_task"): CLIENTS - 1}
    [winner] = [r.body for r in replies if r.status == 201]
    assert winner["task"]["task_id"] == task_id
    for r in replies:
        if r.status == 409:
            assert r.body["error"]["task_id"] == task_id
    [task] = tasks_with_id(server, merchant, task_id)
    [order] = orders_of_task(server, merchant, task_id)
    assert order["order_id"] == winner["payment"]["order_id"] == task["current_order_id"]
    assert (task["amount"], order["amount"], order["payment_method"]) == (7000, 7000, "wechat")


def test_daily_limit_holds_under_concurrent_dispatches(server: KassaServer) -> None:
    """standard tier: 10,000,000 cents a day; 30 x 500,000 at once -> exactly 20 fit."""
    merchant = server.merchant(tier="standard")
    limit, amount, n = 10_000_000, 500_000, 30
    task_ids = [new_task_id() for _ in range(n)]

    replies = all_at_once(server, merchant, n, lambda c, i: c.post("/api/v1/tasks", json={
        "task_id": task_ids[i], "title": f"Big task {i}", "amount": amount, "currency": "CNY",
        "payment_method": "alipay", "return_url": RETURN_URL}))

    assert statuses(replies) == {(201, None): limit // amount,
                                 (400, "limit_exceeded"): n - limit // amount}
    for r in replies:
        if r.status == 400:
            error = r.body["error"]
            assert (error["limit"], error["limit_cents"], error["amount_cny_cents"]) == (
                "daily", limit, amount), error
            assert error["used_cents"] + amount > limit, error
    accepted = {r.body["task"]["task_id"] for r in replies if r.status == 201}
    for i, r in enumerate(replies):  # a refused dispatch leaves no task behind
        if r.status == 400:
            assert task_ids[i] not in accepted
            gone = merchant.test.get(f"/api/v1/tasks/{task_ids[i]}")
            assert (gone.status_code, gone.json()["error"]["code"]) == (404, "task_not_found")

    def volume(conn: Connection) -> tuple[list[tuple[str, int]], list[dict[str, Any]]]:
        days = [(d, int(v)) for d, v in conn.execute(
            select(daily_volume.c.day, daily_volume.c.amount_cny).where(
                daily_volume.c.account_id == merchant.account_id,
                daily_volume.c.mode == "test"))]
        made = [dict(o) for o in conn.execute(select(orders).where(
            orders.c.account_id == merchant.account_id)).mappings()]
        return days, made

    days, made = server.db.write_sync(volume)
    assert {o["task_id"] for o in made} == accepted
    assert all(o["status"] not in ("failed", "expired") for o in made)
    counted: Counter[str] = Counter()
    for o in made:
        counted[o["limit_day"]] += o["amount_cny"]
    assert dict(days) == dict(counted)  # the counter agrees with the orders it counts
    assert all(v <= limit for _, v in days), days
    assert sum(v for _, v in days) == limit
