"""Durable jobs under real worker processes: each job runs once, even across kill -9.

Every test here gets its own fresh database (PostgreSQL: a new database; SQLite:
a new file) and its own API server *without* an in-process worker, so the only
workers are the `kassa worker` subprocesses the test starts, and job_runs
holds nothing but their work. PostgreSQL variants skip (with the reason) when
none is reachable; SQLite variants always run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from kassa.config import Settings
from kassa.context import build_context
from kassa.db.database import open_database
from kassa.db.migrate import upgrade
from kassa.db.tables import events, job_runs, jobs, ledger_transactions, orders
from kassa.ledger.service import check_invariants
from kassa.payments.service import JOB_EXPIRE, JOB_SETTLE_SANDBOX
from kassa.worker import queue
from kassa.worker.runner import Worker, backoff_seconds
from tests.support.harness import KassaServer, Merchant, make_settings
from tests.support.processes import Reader, WorkerProcess, wait_until, worker_processes

pytestmark = pytest.mark.slow

ORDERS = 300
BATCH = 5  # small batches: both workers get a share, and a worker always holds few leases
LEASE = 2.0


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, database_url, worker_batch_size=BATCH,
                         job_lease_seconds=LEASE)


@pytest.fixture
def api_server(settings: Settings) -> Iterator[KassaServer]:
    """The API alone: jobs pile up until a test starts worker processes."""
    srv = KassaServer(settings, run_worker=False).start()
    yield srv
    srv.stop()


@pytest.fixture
def read(settings: Settings) -> Iterator[Reader]:
    reader = Reader(settings)
    yield reader
    reader.close()


def create_orders(srv: KassaServer, merchant: Merchant, n: int) -> list[str]:
    """n dispatched alipay tasks through the API (sandbox: each settles by a job)."""

    def chunk(indexes: range) -> list[str]:
        ids = []
        with srv.client(merchant.test_key, merchant.test_secret) as client:
            for i in indexes:
                r = client.post("/api/v1/tasks", json={
                    "title": f"Task {i}", "amount": 5000 + i, "currency": "CNY",
                    "payment_method": "alipay", "return_url": "https://example.com/done"})
                assert r.status_code == 201, r.text
                ids.append(r.json()["payment"]["order_id"])
        return ids

    threads = 6
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(chunk, [range(k, n, threads) for k in range(threads)])
        order_ids = [oid for part in parts for oid in part]
    assert len(set(order_ids)) == n
    return order_ids


def completed_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(orders)
                            .where(orders.c.status == "completed")).scalar_one())


def settle_runs(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        select(job_runs).where(job_runs.c.kind == JOB_SETTLE_SANDBOX)).mappings()]


def settle_jobs(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        select(jobs).where(jobs.c.kind == JOB_SETTLE_SANDBOX)).mappings()]


def per_order(conn: Connection, column: Any, *where: Any) -> Counter[str]:
    stmt = select(column, func.count()).where(*where).group_by(column)
    return Counter({str(k): int(n) for k, n in conn.execute(stmt)})


def assert_each_order_paid_once(read: Reader, order_ids: list[str]) -> None:
    """Every order: completed, one payment in the ledger, one payment.completed event;
    the ledger balances; no settle job is left or failed."""
    statuses = read(lambda c: {oid: status for oid, status in c.execute(
        select(orders.c.order_id, orders.c.status))})
    assert {oid: statuses.get(oid) for oid in order_ids} == dict.fromkeys(order_ids, "completed")
    payments = read(lambda c: per_order(c, ledger_transactions.c.order_id,
                                        ledger_transactions.c.kind == "payment"))
    assert payments == Counter(dict.fromkeys(order_ids, 1))
    announced = read(lambda c: per_order(c, events.c.object_id,
                                         events.c.event_type == "payment.completed"))
    assert announced == Counter(dict.fromkeys(order_ids, 1))
    assert read(settle_jobs) == []
    failed = read(lambda c: c.execute(select(jobs.c.job_id, jobs.c.last_error)
                                      .where(jobs.c.last_error.is_not(None))).all())
    assert failed == []
    result = read(check_invariants)
    assert result.ok, result.problems


def assert_one_run_per_settle_job(runs: list[dict[str, Any]], order_ids: list[str]) -> None:
    assert len(runs) == len(order_ids)
    assert sorted(r["ref"] for r in runs) == sorted(order_ids)  # each order's job ran once
    assert len({r["job_id"] for r in runs}) == len(runs)
    assert {r["outcome"] for r in runs} == {"completed"}


def test_two_workers_share_the_jobs_and_never_run_one_twice(
        api_server: KassaServer, settings: Settings, read: Reader, tmp_path: Path) -> None:
    with worker_processes(settings, tmp_path, count=2, worker_batch_size=BATCH) as workers:
        names = {w.wait_started() for w in workers}
        assert len(names) == 2
        # Three waves, so each worker surely takes part (on a loaded box one can drain a
        # whole burst alone): the first alone, then the second alone, then both compete
        # for the last wave's batches.
        first, second = workers
        merchant = api_server.merchant()
        wave = ORDERS // 3
        second.pause()
        order_ids = create_orders(api_server, merchant, wave)
        wait_until(lambda: read(completed_count) == wave, timeout=30, message=first.log_tail)
        first.pause()
        second.resume()
        order_ids += create_orders(api_server, merchant, wave)
        wait_until(lambda: read(completed_count) == 2 * wave, timeout=30,
                   message=second.log_tail)
        first.resume()
        order_ids += create_orders(api_server, merchant, ORDERS - 2 * wave)
        wait_until(lambda: read(completed_count) == ORDERS, timeout=30, message=lambda: (
            f"{read(completed_count)}/{ORDERS} completed\n"
            + "\n".join(w.log_tail() for w in workers)))
        for w in workers:
            assert w.stop() == 0, w.log_tail()  # SIGTERM: a clean stop between jobs
        logs = [w.log() for w in workers]

    runs = read(settle_runs)
    assert_one_run_per_settle_job(runs, order_ids)
    by_worker = Counter(r["worker"] for r in runs)
    assert set(by_worker) == names, by_worker  # both did part of the work, nobody else did
    assert_each_order_paid_once(read, order_ids)
    for log in logs:
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]


def _freeze_holding_leases(worker: WorkerProcess, read: Reader,
                           timeout: float) -> list[dict[str, Any]]:
    """SIGSTOP the worker at a moment when it holds committed leases on settle jobs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.pause()
        time.sleep(0.05)  # let a commit it sent just before the stop land first
        held = [j for j in read(settle_jobs) if worker.owns(j["locked_by"])]
        if held:
            return held
        worker.resume()
        time.sleep(0.003)
    raise AssertionError("the worker was never caught holding a lease\n" + worker.log_tail())


def test_worker_killed_mid_batch_its_jobs_are_taken_over_once(
        api_server: KassaServer, settings: Settings, read: Reader, tmp_path: Path) -> None:
    order_ids = create_orders(api_server, api_server.merchant(), ORDERS)
    first = WorkerProcess(settings, tmp_path / "first.log", worker_batch_size=BATCH)
    second = WorkerProcess(settings, tmp_path / "second.log", worker_batch_size=BATCH)
    try:
        first.start()
        wait_until(lambda: len(read(settle_runs)) >= 30, timeout=20,
                   message=first.log_tail)
        held = _freeze_holding_leases(first, read, timeout=10)
        first.kill()  # kill -9 while it holds leases (and maybe an open transaction)
        assert first.proc is not None and first.proc.returncode == -9

        done_by_first = read(settle_runs)
        left = read(settle_jobs)
        assert 0 < len(done_by_first) < ORDERS
        assert len(done_by_first) + len(left) == ORDERS  # nothing lost, nothing run twice yet
        assert all(first.owns(r["worker"]) for r in done_by_first)
        held_ids = {j["job_id"] for j in held}
        # The dead worker's leases are still in place: nobody else may run those jobs yet.
        still_leased = {j["job_id"] for j in left if first.owns(j["locked_by"])}
        assert held_ids <= still_leased

        second.start()
        wait_until(lambda: read(completed_count) == ORDERS, timeout=30, message=lambda: (
            f"{read(completed_count)}/{ORDERS} completed\n{second.log_tail()}"))
        assert second.stop() == 0, second.log_tail()
        second_log = second.log()
    finally:
        first.close()
        second.close()

    runs = read(settle_runs)
    assert_one_run_per_settle_job(runs, order_ids)
    by_job = {r["job_id"]: r for r in runs}
    for job_id in still_leased:  # once the lease ran out, the second worker took them over
        assert second.owns(by_job[job_id]["worker"]), by_job[job_id]
    for r in done_by_first:  # what the first worker committed stands, and was not redone
        assert by_job[r["job_id"]]["worker"] == r["worker"]
    assert {r["worker"] for r in runs if not first.owns(r["worker"])} != set()
    assert_each_order_paid_once(read, order_ids)
    assert " ERROR " not in second_log and "Traceback" not in second_log, second_log[-3000:]


# --- the job queue in-process: retries, backoff, dead jobs, job ids ----------------------

def _job_rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(jobs).order_by(jobs.c.job_id)).mappings()]


def _run_rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(job_runs).order_by(job_runs.c.job_id))
            .mappings()]


def test_failing_job_is_retried_with_backoff_then_kept_dead(database_url: str,
                                                            tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url, job_max_attempts=3)
    upgrade(settings.resolved_database_url)
    db = open_database(settings.resolved_database_url, pool_size=2)
    ctx = build_context(settings)  # its own clock: the test moves it
    worker = Worker(db, ctx, name="retry-test")

    def run_once() -> int:
        return asyncio.run(worker.run_once())

    try:
        start = ctx.clock.now()
        db.write_sync(lambda c: queue.enqueue_many(c, [
            ("test.no_such_kind", "ref-1", start),
            (JOB_SETTLE_SANDBOX, "ord_not_there", start),
        ], start))
        assert run_once() == 2  # one batch: the failing job does not hold up the other

        [bad] = db.write_sync(_job_rows)  # the healthy job ran and is gone
        assert db.write_sync(_run_rows)[0]["outcome"] == "missing"
        assert bad["kind"] == "test.no_such_kind" and bad["attempts"] == 1
        assert bad["dead"] == 0 and bad["locked_by"] is None and bad["lease_token"] is None
        assert bad["last_error"] == "LookupError: no handler for job kind 'test.no_such_kind'"
        assert (bad["run_at"] - start).total_seconds() == pytest.approx(backoff_seconds(1),
                                                                        abs=1.0)

        assert run_once() == 0  # backing off: not due yet
        assert db.write_sync(_job_rows)[0]["attempts"] == 1

        ctx.clock.advance(backoff_seconds(1) + 0.5)
        assert run_once() == 1
        [bad] = db.write_sync(_job_rows)
        assert (bad["attempts"], bad["dead"]) == (2, 0)
        assert (bad["run_at"] - ctx.clock.now()).total_seconds() == pytest.approx(
            backoff_seconds(2), abs=1.0)  # the wait grows

        ctx.clock.advance(backoff_seconds(2) + 0.5)
        assert run_once() == 1  # third and last attempt (job_max_attempts=3)
        [bad] = db.write_sync(_job_rows)
        assert (bad["attempts"], bad["dead"]) == (3, 1)
        assert bad["last_error"].startswith("LookupError")

        ctx.clock.advance(7200)
        assert run_once() == 0  # dead: never claimed again...
        [kept] = db.write_sync(_job_rows)
        assert kept == bad  # ...and not lost either: kept, with its error, for an operator
        assert db.write_sync(queue.pending_count) == 0
        assert [r["ref"] for r in db.write_sync(_run_rows)] == ["ord_not_there"]
    finally:
        db.close()


def test_job_ids_are_never_reused_so_every_run_is_recorded(database_url: str,
                                                           tmp_path: Path) -> None:
    """job_runs is keyed by job_id; a new job must never get the id of one that already
    ran (SQLite reuses the highest rowid after a delete unless the table says
    AUTOINCREMENT), or the new job's run collides with the old record and fails forever.

    The realistic case: an order's settle job (the newest row) runs and is deleted,
    then the next order's expire job is enqueued.
    """
    settings = make_settings(tmp_path, database_url)
    upgrade(settings.resolved_database_url)
    db = open_database(settings.resolved_database_url, pool_size=2)
    ctx = build_context(settings)
    worker = Worker(db, ctx, name="ids-test")
    try:
        now = ctx.clock.now()
        for n in range(3):
            db.write_sync(lambda c, n=n: queue.enqueue(  # type: ignore[misc]
                c, kind=JOB_EXPIRE, ref=f"ord_gone_{n}", run_at=now, now=now))
            assert asyncio.run(worker.run_once()) == 1
        assert db.write_sync(_job_rows) == []  # all three ran; none failed and stayed
        runs = db.write_sync(_run_rows)
        assert [r["ref"] for r in runs] == ["ord_gone_0", "ord_gone_1", "ord_gone_2"]
        assert [r["outcome"] for r in runs] == ["missing"] * 3
        assert len({r["job_id"] for r in runs}) == 3
    finally:
        db.close()


def test_expired_lease_is_claimed_by_another_worker_and_the_first_loses_it(
        database_url: str, tmp_path: Path) -> None:
    """A worker whose lease ran out (too slow, paused) cannot commit the job any more:
    the worker that took it over runs it, once."""
    settings = make_settings(tmp_path, database_url, job_lease_seconds=LEASE)
    upgrade(settings.resolved_database_url)
    db = open_database(settings.resolved_database_url, pool_size=2)
    ctx = build_context(settings)
    slow = Worker(db, ctx, name="slow")
    fast = Worker(db, ctx, name="fast")
    try:
        now = ctx.clock.now()
        db.write_sync(lambda c: queue.enqueue(c, kind=JOB_EXPIRE, ref="ord_x", run_at=now,
                                              now=now))
        [mine] = db.write_sync(lambda c: queue.claim(c, worker="slow", now=ctx.clock.now(),
                                                     limit=5, lease_seconds=LEASE))
        # While the lease holds, nobody else gets the job.
        assert db.write_sync(lambda c: queue.claim(c, worker="fast", now=ctx.clock.now(),
                                                   limit=5, lease_seconds=LEASE)) == []
        ctx.clock.advance(LEASE + 1)
        assert asyncio.run(fast.run_once()) == 1
        asyncio.run(slow.run_job(mine))  # the late worker finds its lease gone
        runs = db.write_sync(_run_rows)
        assert [(r["ref"], r["worker"]) for r in runs] == [("ord_x", "fast")]
        assert db.write_sync(_job_rows) == []
    finally:
        db.close()
