"""Webhook delivery by real `kassa worker` processes: two workers share the deliveries and
never send one twice; a worker killed (SIGKILL) in the middle of a request leaves its
lease to run out, and another worker sends the same event again, byte for byte.

Each test has a database of its own (a fresh SQLite file or PostgreSQL database) and an
API server *without* its in-process worker, so the worker processes started here are the
only ones delivering. PostgreSQL variants skip (with the reason) when none is reachable.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select

from kassa.config import Settings
from kassa.db.tables import events, webhook_attempts, webhook_deliveries
from tests.api.test_escrow import dispatch
from tests.support.harness import KassaServer, make_settings
from tests.support.processes import Reader, WorkerProcess, wait_until, worker_processes
from tests.support.receivers import Received, Receiver, ok

pytestmark = pytest.mark.slow

LEASE = 2.0


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # webhook_lease_seconds reaches the worker processes through subprocess_env.
    return make_settings(tmp_path, database_url, webhook_lease_seconds=LEASE)


@pytest.fixture
def api_server(settings: Settings) -> Iterator[KassaServer]:
    """The API alone: events pile up until a test starts worker processes."""
    srv = KassaServer(settings, run_worker=False).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def read(settings: Settings) -> Iterator[Reader]:
    reader = Reader(settings)
    try:
        yield reader
    finally:
        reader.close()


def add_endpoint(srv: KassaServer, key: str, secret: str, url: str) -> str:
    with srv.client(key, secret) as client:
        r = client.post("/api/v1/webhooks/endpoints", json={"url": url, "events": ["*"]})
        assert r.status_code == 201, r.text
        return str(r.json()["endpoint_id"])


def account_events(conn: Connection, account_id: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(events.c.event_id, events.c.event_type, events.c.object_id,
                               events.c.sequence, events.c.payload_json)
                        .where(events.c.account_id == account_id)).mappings()
    return {r["event_id"]: dict(r) for r in rows}


def deliveries(conn: Connection, account_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        select(webhook_deliveries).where(webhook_deliveries.c.account_id == account_id)
    ).mappings()]


def attempts(conn: Connection, account_id: str) -> list[dict[str, Any]]:
    d = webhook_deliveries.c
    stmt = (select(webhook_attempts, d.event_id, d.target)
            .join(webhook_deliveries, webhook_attempts.c.delivery_id == d.delivery_id)
            .where(d.account_id == account_id)
            .order_by(webhook_attempts.c.attempt_id))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def assert_clean_log(worker: WorkerProcess) -> None:
    log = worker.log()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]


# --- two workers: every event delivered once per target --------------------------------------

TASKS = 25  # payment.created + payment.completed each: 50 events, 100 deliveries


def test_two_workers_deliver_every_event_once_per_target(
        api_server: KassaServer, settings: Settings, read: Reader, tmp_path: Path) -> None:
    merchant = api_server.merchant()

    def slightly_slow(got: Received, n: int) -> tuple[int, bytes, float]:
        status, body, _ = ok(got, n)
        return status, body, 0.03  # so no single worker can take everything at once

    rcv = Receiver(answer=slightly_slow).up()
    callback = f"http://127.0.0.1:{rcv.port}/callback"
    try:
        add_endpoint(api_server, merchant.test_key, merchant.test_secret, rcv.url)
        with worker_processes(settings, tmp_path, count=2, webhook_max_in_flight=5) as workers:
            names = {w.wait_started() for w in workers}
            assert len(names) == 2
            order_ids = [dispatch(merchant.test, amount=5000 + i, callback_url=callback)[1]
                         for i in range(TASKS)]

            def all_done() -> bool:
                rows = read(lambda c: deliveries(c, merchant.account_id))
                return (len(rows) == 4 * TASKS
                        and all(r["status"] == "succeeded" for r in rows))

            def progress() -> str:
                rows = read(lambda c: deliveries(c, merchant.account_id))
                return (f"{Counter(r['status'] for r in rows)}, receiver has "
                        f"{len(rcv.received())}\n" + "\n".join(w.log_tail() for w in workers))

            wait_until(all_done, timeout=40, message=progress)
            time.sleep(0.3)  # a second copy of anything would arrive by now
            for w in workers:
                assert w.stop() == 0, w.log_tail()
                assert_clean_log(w)
    finally:
        rcv.down()

    recorded = read(lambda c: account_events(c, merchant.account_id))
    assert len(recorded) == 2 * TASKS
    assert {e["object_id"] for e in recorded.values()} == set(order_ids)
    got = rcv.received()
    per_target = Counter((r.json["event_id"], r.path) for r in got)
    assert set(per_target) == {(e, p) for e in recorded for p in (rcv.path, "/callback")}
    assert set(per_target.values()) == {1}, [k for k, n in per_target.items() if n > 1]
    for r in got:  # the exact recorded bytes
        assert r.body == recorded[r.json["event_id"]]["payload_json"].encode()

    rows = read(lambda c: deliveries(c, merchant.account_id))
    assert len(rows) == 4 * TASKS
    assert {r["attempts"] for r in rows} == {1}
    tried = read(lambda c: attempts(c, merchant.account_id))
    per_delivery = Counter(a["delivery_id"] for a in tried)
    assert per_delivery == Counter({r["delivery_id"]: 1 for r in rows})
    assert {(a["number"], a["status_code"], a["error"]) for a in tried} == {(1, 200, None)}
    by_worker = Counter(a["worker"] for a in tried)
    assert set(by_worker) == names, by_worker  # both took part, and nobody else


# --- SIGKILL in the middle of a request ------------------------------------------------------


def test_worker_killed_mid_request_the_event_is_sent_again_after_the_lease(
        api_server: KassaServer, settings: Settings, read: Reader, tmp_path: Path) -> None:
    merchant = api_server.merchant()

    def hold_first(got: Received, n: int) -> tuple[int, bytes, float]:
        status, body, _ = ok(got, n)
        return status, body, 3.0 if n == 0 else 0.0

    rcv = Receiver(answer=hold_first).up()
    first = WorkerProcess(settings, tmp_path / "first.log")
    second = WorkerProcess(settings, tmp_path / "second.log")
    try:
        add_endpoint(api_server, merchant.test_key, merchant.test_secret, rcv.url)
        _, held_order = dispatch(merchant.test)
        first.start()
        [held] = rcv.wait_for(lambda got: len(got) >= 1, timeout=20)
        first.kill()  # kill -9 while the receiver holds its request
        assert first.proc is not None and first.proc.returncode == -9
        held_event = held.json["event_id"]
        assert held.json["event"] == "payment.created"
        assert held.json["data"]["order_id"] == held_order

        # The dead worker's lease is still on the delivery, and no attempt was recorded.
        [d] = [r for r in read(lambda c: deliveries(c, merchant.account_id))
               if r["event_id"] == held_event]
        assert d["status"] == "pending" and d["attempts"] == 1 and d["lease_token"], d
        assert read(lambda c: attempts(c, merchant.account_id)) == []

        more = [dispatch(merchant.test, amount=5001 + i)[1] for i in range(2)]
        second.start()

        def everything_delivered() -> bool:
            recorded = read(lambda c: account_events(c, merchant.account_id))
            rows = read(lambda c: deliveries(c, merchant.account_id))
            return (len(recorded) == 6 and len(rows) == 6
                    and all(r["status"] == "succeeded" for r in rows))

        wait_until(everything_delivered, timeout=30, message=lambda: (
            f"receiver has {[r.json['event'] for r in rcv.received()]}\n"
            + second.log_tail()))
        time.sleep(0.3)
        assert second.stop() == 0, second.log_tail()
        assert_clean_log(second)
    finally:
        first.close()
        second.close()
        rcv.down()

    recorded = read(lambda c: account_events(c, merchant.account_id))
    assert {e["object_id"] for e in recorded.values()} == {held_order, *more}
    got = rcv.received()
    counts = Counter(r.json["event_id"] for r in got)
    assert set(counts) == set(recorded)  # nothing lost
    assert counts == Counter({**dict.fromkeys(recorded, 1), held_event: 2})  # one duplicate

    copies = [r for r in got if r.json["event_id"] == held_event]
    assert copies[0].body == copies[1].body == recorded[held_event]["payload_json"].encode()
    assert [c.headers["x-event-id"] for c in copies] == [held_event, held_event]
    assert [c.headers["x-delivery-attempt"] for c in copies] == ["1", "2"]
    assert copies[0].headers["x-delivery-id"] == copies[1].headers["x-delivery-id"]
    assert copies[1].at - copies[0].at >= LEASE - 0.5  # not before the lease ran out

    [d] = [r for r in read(lambda c: deliveries(c, merchant.account_id))
           if r["event_id"] == held_event]
    assert d["status"] == "succeeded" and d["attempts"] == 2, d
    tried = read(lambda c: attempts(c, merchant.account_id))
    [retry] = [a for a in tried if a["event_id"] == held_event]
    assert (retry["number"], retry["status_code"]) == (2, 200)
    assert second.owns(retry["worker"]), retry
    assert not any(first.owns(a["worker"]) for a in tried)
    assert Counter(a["delivery_id"] for a in tried) == Counter(
        {r["delivery_id"]: 1 for r in read(lambda c: deliveries(c, merchant.account_id))})
