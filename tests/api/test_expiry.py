"""Order expiry (SPEC §5) and the durability of the jobs behind it (DESIGN: worker/).

An unpaid order expires once the clock passes its expires_at; the expiry and
the sandbox settlement are rows in the jobs table, so a server started later on
the same database finishes what an earlier one queued.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, select

from kassa.db.tables import daily_volume, job_runs, jobs
from kassa.events import repository as events
from kassa.ledger import repository as ledger
from kassa.payments.service import JOB_EXPIRE, JOB_SETTLE_SANDBOX
from tests.conftest import require_postgres
from tests.support.factories import new_task, pay
from tests.support.harness import KassaServer, Merchant, fresh_postgres_database, make_settings


def unpaid_card_order(client: httpx.Client, task_id: str, amount: int = 5000) -> dict[str, Any]:
    """A card order without a test card: nobody enters a card, so nothing settles it."""
    r = pay(client, task_id, amount=amount, payment_method="card", expires_in_seconds=300)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == "pending"
    return body


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def status_of(client: httpx.Client, order_id: str) -> str:
    r = client.get("/api/v1/payment/query", params={"order_id": order_id})
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def test_unpaid_order_expires_once_the_clock_passes_expires_at(server: KassaServer,
                                                                merchant: Merchant) -> None:
    task_id = new_task(merchant.test)
    order = unpaid_card_order(merchant.test, task_id)
    order_id = order["order_id"]
    assert parse_iso(order["expires_at"]) - parse_iso(order["created_at"]) == timedelta(
        seconds=300)

    # Well past the sandbox delay and many worker polls: still pending, still the task's order.
    time.sleep(0.5)
    assert status_of(merchant.test, order_id) == "pending"
    r = pay(merchant.test, task_id)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "duplicate_order"
    assert r.json()["error"]["order_id"] == order_id

    server.ctx.clock.advance(301)
    expired = server.wait_for_status(merchant.test, order_id, "expired")
    assert expired["paid_at"] is None and expired["transaction_id"] is None
    assert expired["escrow"]["held_cents"] == 0
    rows = server.db.write_sync(lambda conn: events.for_object(conn, order_id))
    assert [(e.event_type, e.sequence) for e in rows] == [("payment.created", 1),
                                                          ("payment.expired", 2)]
    assert server.db.write_sync(lambda conn: ledger.postings_for_order(conn, order_id)) == []
    task = merchant.test.get(f"/api/v1/tasks/{task_id}").json()
    assert (task["order_id"], task["payment_status"]) == (order_id, "expired")

    # The task can be paid again with a new order.
    r = pay(merchant.test, task_id)
    assert r.status_code == 201, r.text
    new_order_id = r.json()["order_id"]
    assert new_order_id != order_id
    server.wait_for_status(merchant.test, new_order_id, "completed")
    task = merchant.test.get(f"/api/v1/tasks/{task_id}").json()
    assert (task["order_id"], task["payment_status"]) == (new_order_id, "completed")
    assert status_of(merchant.test, order_id) == "expired"


def test_expired_orders_give_their_daily_volume_back(server: KassaServer) -> None:
    standard = server.merchant(tier="standard")  # 10,000,000 cents a day
    first = unpaid_card_order(standard.test, new_task(standard.test, amount=5_000_000),
                              5_000_000)
    second = unpaid_card_order(standard.test, new_task(standard.test, amount=5_000_000),
                               5_000_000)
    extra_task = new_task(standard.test, amount=1_000)
    r = pay(standard.test, extra_task, amount=1_000)
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["limit"]) == ("limit_exceeded", "daily")

    server.ctx.clock.advance(301)
    server.wait_for_status(standard.test, first["order_id"], "expired")
    server.wait_for_status(standard.test, second["order_id"], "expired")

    def used(conn: Connection) -> list[int]:
        return [int(v) for v in conn.execute(select(daily_volume.c.amount_cny).where(
            daily_volume.c.account_id == standard.account_id, daily_volume.c.mode == "test"))
            .scalars()]

    assert sum(server.db.write_sync(used)) == 0
    r = pay(standard.test, extra_task, amount=1_000)
    assert r.status_code == 201, r.text


# --- durability: jobs survive a restart -----------------------------------------------------

@pytest.fixture
def own_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own. Not the session's: the session server's worker would
    otherwise run the jobs this test wants a *restarted* server to run."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'kassa.sqlite3'}"
        return
    require_postgres()
    with fresh_postgres_database() as url:
        yield url


def _jobs_for(conn: Connection, refs: set[str]) -> set[tuple[str, str]]:
    rows = conn.execute(select(jobs.c.kind, jobs.c.ref).where(jobs.c.ref.in_(refs)))
    return {(r.kind, r.ref) for r in rows}


def _runs_for(conn: Connection, refs: set[str]) -> set[tuple[str, str, str]]:
    rows = conn.execute(select(job_runs.c.kind, job_runs.c.ref, job_runs.c.outcome)
                        .where(job_runs.c.ref.in_(refs)))
    return {(r.kind, r.ref, r.outcome) for r in rows}


def test_queued_jobs_survive_a_restart(own_database_url: str, tmp_path: Path) -> None:
    first = KassaServer(make_settings(tmp_path, own_database_url), run_worker=False).start()
    try:
        merchant = first.merchant()
        settling = pay(merchant.test, new_task(merchant.test)).json()
        expiring = unpaid_card_order(merchant.test, new_task(merchant.test))
        a, b = settling["order_id"], expiring["order_id"]
        assert settling["status"] == "pending"
        time.sleep(0.6)  # twice the sandbox delay: with no worker, nothing happens
        assert status_of(merchant.test, a) == "pending"
        assert first.db.write_sync(lambda conn: _jobs_for(conn, {a, b})) == {
            (JOB_SETTLE_SANDBOX, a), (JOB_EXPIRE, a), (JOB_EXPIRE, b)}
        assert first.db.write_sync(lambda conn: _runs_for(conn, {a, b})) == set()
    finally:
        first.stop()

    second = KassaServer(make_settings(tmp_path, own_database_url), run_worker=True).start()
    client = second.client(merchant.test_key, merchant.test_secret)
    try:
        done = second.wait_for_status(client, a, "completed")
        assert done["transaction_id"].startswith("txn_")
        assert status_of(client, b) == "pending"

        second.ctx.clock.advance(301)
        second.wait_for_status(client, b, "expired")
        assert second.db.write_sync(lambda conn: _runs_for(conn, {a, b})) == {
            (JOB_SETTLE_SANDBOX, a, "completed"), (JOB_EXPIRE, b, "expired")}
        # The completed order's expiry job is still queued (due in 900 s); it will find
        # the order completed and leave it alone.
        assert second.db.write_sync(lambda conn: _jobs_for(conn, {a, b})) == {(JOB_EXPIRE, a)}
        rows = second.db.write_sync(lambda conn: events.for_object(conn, a))
        assert [e.event_type for e in rows] == ["payment.created", "payment.completed"]
        second.check_ledger()
    finally:
        client.close()
        second.stop()
