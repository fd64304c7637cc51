"""Idempotency-Key (SPEC §5): the same key and body replay the first response byte for
byte; another body is refused; keys belong to one merchant and mode; a request that
failed leaves no key behind."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from sqlalchemy import func, select

from kassa.db.tables import orders
from kassa.db.tables import tasks as tasks_table
from tests.support.factories import RETURN_URL, assert_error, new_task, pay_body
from tests.support.harness import KassaServer, Merchant


def post(client: httpx.Client, path: str, body: dict[str, Any], key: str | None
         ) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(path, content=orjson.dumps(body), headers=headers)


def task_body(title: str = "Keyed task", dispatch: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"title": title, "amount": 5000, "currency": "CNY",
                            "dispatch": dispatch}
    if dispatch:
        body.update(payment_method="alipay", return_url=RETURN_URL)
    return body


def orders_of(server: KassaServer, merchant: Merchant, task_id: str | None = None) -> int:
    stmt = select(func.count()).select_from(orders).where(
        orders.c.account_id == merchant.account_id)
    if task_id is not None:
        stmt = stmt.where(orders.c.task_id == task_id)
    return int(server.db.write_sync(lambda conn: conn.execute(stmt).scalar()) or 0)


def tasks_of(server: KassaServer, merchant: Merchant, mode: str = "test") -> int:
    stmt = select(func.count()).select_from(tasks_table).where(
        tasks_table.c.account_id == merchant.account_id, tasks_table.c.mode == mode)
    return int(server.db.write_sync(lambda conn: conn.execute(stmt).scalar()) or 0)


def test_same_key_and_body_replays_the_first_response(server: KassaServer,
                                                      merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    first = post(merchant.test, "/api/v1/payment/create", pay_body(task_id), "pay-1")
    assert first.status_code == 201, first.text
    second = post(merchant.test, "/api/v1/payment/create", pay_body(task_id), "pay-1")
    assert second.status_code == 201
    assert second.content == first.content
    assert orders_of(server, merchant, task_id) == 1
    # Without the key, the same body is a second attempt at the same task: refused.
    third = post(merchant.test, "/api/v1/payment/create", pay_body(task_id), None)
    error = assert_error(third, 409, "duplicate_order")
    assert error["order_id"] == first.json()["order_id"]

    # A replay is the first response, even after the order moved on.
    server.wait_for_status(merchant.test, first.json()["order_id"], "completed")
    later = post(merchant.test, "/api/v1/payment/create", pay_body(task_id), "pay-1")
    assert (later.status_code, later.content) == (201, first.content)
    assert later.json()["status"] == "pending"
    assert orders_of(server, merchant, task_id) == 1


def test_same_key_with_another_body_is_refused(server: KassaServer, merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    other_task = new_task(merchant.test)
    first = post(merchant.test, "/api/v1/payment/create", pay_body(task_id), "pay-2")
    assert first.status_code == 201, first.text
    r = post(merchant.test, "/api/v1/payment/create", pay_body(other_task), "pay-2")
    error = assert_error(r, 400, "idempotency_key_reused")
    assert error["idempotency_key"] == "pay-2"
    assert orders_of(server, merchant, other_task) == 0
    assert merchant.test.get(f"/api/v1/tasks/{other_task}").json()["order_id"] is None
    # The same key on another endpoint is another request too.
    r = post(merchant.test, "/api/v1/tasks", task_body(), "pay-2")
    assert_error(r, 400, "idempotency_key_reused")
    assert tasks_of(server, merchant) == 2
    # And the original still replays.
    again = post(merchant.test, "/api/v1/payment/create", pay_body(task_id), "pay-2")
    assert again.content == first.content


def test_different_keys_give_different_results(server: KassaServer, merchant: Merchant) -> None:
    body = task_body(dispatch=False)
    a = post(merchant.test, "/api/v1/tasks", body, "task-a")
    b = post(merchant.test, "/api/v1/tasks", body, "task-b")
    assert (a.status_code, b.status_code) == (201, 201), (a.text, b.text)
    assert a.json()["task"]["task_id"] != b.json()["task"]["task_id"]
    assert tasks_of(server, merchant) == 2
    # Each key replays its own result.
    assert post(merchant.test, "/api/v1/tasks", body, "task-a").content == a.content
    assert post(merchant.test, "/api/v1/tasks", body, "task-b").content == b.content
    assert tasks_of(server, merchant) == 2


def test_keys_belong_to_one_merchant_and_mode(server: KassaServer) -> None:
    alice, bob = server.merchant(name="Alice"), server.merchant(name="Bob")
    body = task_body(dispatch=False)
    a = post(alice.test, "/api/v1/tasks", body, "shared-key")
    b = post(bob.test, "/api/v1/tasks", body, "shared-key")
    assert (a.status_code, b.status_code) == (201, 201), (a.text, b.text)
    a_task, b_task = a.json()["task"]["task_id"], b.json()["task"]["task_id"]
    assert a_task != b_task
    assert bob.test.get(f"/api/v1/tasks/{b_task}").status_code == 200
    assert bob.test.get(f"/api/v1/tasks/{a_task}").status_code == 404
    # Bob can use the key with a body Alice never sent, too.
    c = post(bob.test, "/api/v1/tasks", task_body(title="Bob's", dispatch=False), "alice-key")
    a2 = post(alice.test, "/api/v1/tasks", task_body(title="Alice's", dispatch=False),
              "alice-key")
    assert (c.status_code, a2.status_code) == (201, 201)
    # The same merchant's live mode has its own keys as well.
    live = post(alice.live, "/api/v1/tasks", body, "shared-key")
    assert live.status_code == 201, live.text
    assert live.json()["task"]["task_id"] != a_task
    assert tasks_of(server, alice, "test") == 2 and tasks_of(server, alice, "live") == 1


def test_a_failed_request_leaves_no_key_behind(server: KassaServer, merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    wrong = post(merchant.test, "/api/v1/payment/create", pay_body(task_id, amount=3000), "fix-me")
    assert_error(wrong, 400, "amount_mismatch")
    assert orders_of(server, merchant, task_id) == 0
    # Had the error been stored, a corrected body under the same key would be
    # idempotency_key_reused; it is a fresh request instead.
    fixed = post(merchant.test, "/api/v1/payment/create", pay_body(task_id), "fix-me")
    assert fixed.status_code == 201, fixed.text
    assert orders_of(server, merchant, task_id) == 1
    # From now on the key is taken by the successful request.
    assert post(merchant.test, "/api/v1/payment/create", pay_body(task_id),
                "fix-me").content == fixed.content
    assert_error(post(merchant.test, "/api/v1/payment/create", pay_body(task_id, amount=3000),
                      "fix-me"), 400, "idempotency_key_reused")


def test_task_creation_with_a_key(server: KassaServer, merchant: Merchant) -> None:
    body = task_body()
    first = post(merchant.test, "/api/v1/tasks", body, "task-with-payment")
    assert first.status_code == 201, first.text
    assert first.json()["payment"]["status"] == "pending"
    second = post(merchant.test, "/api/v1/tasks", body, "task-with-payment")
    assert (second.status_code, second.content) == (201, first.content)
    assert tasks_of(server, merchant) == 1
    assert orders_of(server, merchant) == 1
    r = post(merchant.test, "/api/v1/tasks", {**body, "amount": 6000}, "task-with-payment")
    assert_error(r, 400, "idempotency_key_reused")
    assert tasks_of(server, merchant) == 1


def test_an_unusable_key_is_refused(server: KassaServer, merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    r = post(merchant.test, "/api/v1/payment/create", pay_body(task_id), "k" * 256)
    assert_error(r, 400, "validation_error")
    assert orders_of(server, merchant, task_id) == 0
