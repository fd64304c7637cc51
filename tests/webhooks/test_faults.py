"""Webhook delivery under faults, over real HTTP on both databases: a receiver that is down
for a while, one that hangs past the timeout, one that answers 500 first, one that never
answers 2xx (the delivery gives up, then a resend gets it through), an event whose
transaction rolls back (never sent), a slow receiver beside a fast one (it never holds the
fast one up), and the real retry schedule with its 3-day cut-off (unit-level, no server).

Tests that need other settings than the session server's run their own KassaServer on a
database of their own (a fresh SQLite file or PostgreSQL database), so no other worker
delivers their events.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from kassa.config import Settings
from kassa.webhooks.service import AttemptResult, outcome, retry_delay
from tests.api.test_escrow import dispatch, paid_tasks, refunded
from tests.support.factories import assert_error, new_task, pay
from tests.support.harness import KassaServer, fresh_postgres_database, make_settings
from tests.support.processes import wait_until
from tests.support.receivers import Received, Receiver, ok

# --- helpers ---------------------------------------------------------------------------------


def add_endpoint(client: httpx.Client, url: str, events: list[str] | None = None) -> str:
    r = client.post("/api/v1/webhooks/endpoints",
                    json={"url": url, "events": events or ["*"]})
    assert r.status_code == 201, r.text
    return str(r.json()["endpoint_id"])


def list_events(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every event of GET /api/v1/webhooks/events (all pages), newest first."""
    found: list[dict[str, Any]] = []
    query: dict[str, Any] = {"delivery_status": "all", "limit": 100, **params}
    while True:
        r = client.get("/api/v1/webhooks/events", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        found += page["data"]
        if not page["has_more"]:
            return found
        query["starting_after"] = page["next_cursor"]


def get_event(client: httpx.Client, event_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/webhooks/events/{event_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def only_delivery(event: dict[str, Any]) -> dict[str, Any]:
    assert len(event["deliveries"]) == 1, event["deliveries"]
    delivery: dict[str, Any] = event["deliveries"][0]
    return delivery


def settled(event: dict[str, Any]) -> bool:
    """Fanned out, and every delivery finished (succeeded or failed)."""
    return bool(event["deliveries"]) and all(d["status"] != "pending"
                                             for d in event["deliveries"])


def wait_event(client: httpx.Client, event_id: str, predicate: Callable[[dict[str, Any]], bool],
               timeout: float = 10.0) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = get_event(client, event_id)
        return last if predicate(last) else None

    found = wait_until(check, timeout=timeout, message=lambda: f"event log: {last}")
    assert found is not None
    return found


def event_for_order(client: httpx.Client, order_id: str, event_type: str,
                    timeout: float = 10.0) -> dict[str, Any]:
    """The order's event of that type, once it is recorded and fanned out."""

    def find() -> dict[str, Any] | None:
        for e in list_events(client, object_id=order_id, type=event_type):
            if e["deliveries"]:
                return e
        return None

    found = wait_until(find, timeout=timeout,
                       message=f"no fanned-out {event_type} for {order_id}")
    assert found is not None
    return found


def first_arrivals(got: list[Received]) -> list[Received]:
    """The receiver's requests with each event_id kept once (its first arrival)."""
    seen: set[str] = set()
    out = []
    for r in got:
        if r.json["event_id"] not in seen:
            seen.add(r.json["event_id"])
            out.append(r)
    return out


def answer_with(status: int, reply: bytes = b"{}", delay: float = 0.0
                ) -> Callable[[Received, int], tuple[int, bytes, float]]:
    return lambda _r, _n: (status, reply, delay)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Receivers made (and started) by the test; all closed when it ends."""
    made: list[Receiver] = []

    def make(**fields: Any) -> Receiver:
        rcv = Receiver(**fields)
        made.append(rcv)
        return rcv.up()

    try:
        yield make
    finally:
        for rcv in made:
            rcv.down()


@pytest.fixture
def own_server(backend: str, tmp_path: Path) -> Iterator[Callable[..., KassaServer]]:
    """A KassaServer with settings overrides, on a database of its own; stopped (after a
    ledger check) when the test ends."""
    with contextlib.ExitStack() as stack:
        started: list[KassaServer] = []

        def make(**overrides: Any) -> KassaServer:
            assert not started, "one own server per test"
            if backend == "sqlite":
                url = f"sqlite:///{tmp_path / 'own.sqlite3'}"
            else:
                from tests.conftest import require_postgres  # noqa: PLC0415
                require_postgres()
                url = stack.enter_context(fresh_postgres_database())
            srv = KassaServer(make_settings(tmp_path, url, **overrides))
            stack.callback(srv.stop)  # runs before the database is dropped
            started.append(srv.start())
            return srv

        yield make
        for srv in started:
            srv.check_ledger()


# --- a) receiver down for a while, then back --------------------------------------------------


def test_receiver_down_then_back_gets_every_event_in_object_order(
        server: KassaServer, receivers: Callable[..., Receiver]) -> None:
    merchant = server.merchant()
    client = merchant.test
    rcv = receivers()
    add_endpoint(client, rcv.url)
    rcv.down()  # connection refused from now on
    down_at = time.monotonic()

    made = paid_tasks(server, client, 5001, 5002, 5003, 5004, 5005)  # created, then completed
    refund = refunded(client, made[0][1])  # refund.created, then refund.completed (sandbox)
    expected_events = 5 * 2 + 2
    time.sleep(max(0.0, 1.5 - (time.monotonic() - down_at)))

    # While it is down: every delivery is pending, and the tries so far failed to connect.
    logged = list_events(client)
    attempted = [d for e in logged for d in e["deliveries"] if d["attempts"]]
    assert attempted, logged
    for e in logged:
        for d in e["deliveries"]:
            assert d["status"] == "pending", d
            assert d["completed_at"] is None
            for a in d["attempts"]:
                assert a["status_code"] is None, a
                assert a["error"].startswith("ConnectError"), a
    assert max(d["attempt_count"] for d in attempted) >= 2  # it was retried meanwhile
    assert rcv.received() == []

    rcv.up()  # same port again

    def all_through() -> list[dict[str, Any]] | None:
        events = list_events(client)
        if len(events) == expected_events and all(
                settled(e) and {d["status"] for d in e["deliveries"]} == {"succeeded"}
                for e in events):
            return events
        return None

    events = wait_until(all_through, timeout=15, message=lambda: str(
        [(e["event"], [d["status"] for d in e["deliveries"]]) for e in list_events(client)]))
    assert events is not None
    got = rcv.received()
    assert {r.json["event_id"] for r in got} == {e["event_id"] for e in events}
    by_id = {e["event_id"]: e for e in events}
    assert {e["object_id"] for e in events} == {o for _, o in made} | {refund["refund_id"]}

    # Each object's events arrived in sequence order (counting an event's first arrival).
    last_seq: dict[str, int] = {}
    for r in first_arrivals(got):
        event = by_id[r.json["event_id"]]
        assert r.json["sequence"] == event["sequence"]
        previous = last_seq.get(event["object_id"], 0)
        assert event["sequence"] > previous, (event["object_id"], previous, event["sequence"])
        last_seq[event["object_id"]] = event["sequence"]
    assert sorted(last_seq.values()) == [2] * 6


# --- b) a receiver that hangs past the timeout ------------------------------------------------


def test_receiver_hanging_past_the_timeout_is_cut_off_and_retried(
        own_server: Callable[..., KassaServer], receivers: Callable[..., Receiver]) -> None:
    srv = own_server(webhook_timeout_seconds=1, sandbox_settle_seconds=600)
    merchant = srv.merchant()
    client = merchant.test

    def hang_first(_r: Received, n: int) -> tuple[int, bytes, float]:
        return (200, b'{"late":true}', 3.0) if n == 0 else ok(_r, n)

    rcv = receivers(answer=hang_first)
    add_endpoint(client, rcv.url)
    r = pay(client, new_task(client))
    assert r.status_code == 201, r.text
    created = event_for_order(client, r.json()["order_id"], "payment.created")

    event = wait_event(client, created["event_id"], settled, timeout=10)
    d = only_delivery(event)
    assert d["status"] == "succeeded", d
    first, *rest = d["attempts"]
    assert first["error"] == "no reply within 1 s", first
    assert first["status_code"] is None and first["response_excerpt"] is None, first
    assert 900 <= first["latency_ms"] <= 2500, first
    assert rest and rest[-1]["status_code"] == 200 and rest[-1]["error"] is None, d
    assert d["attempt_count"] == len(d["attempts"]) == 2
    assert [a["number"] for a in d["attempts"]] == [1, 2]
    bodies = {x.body for x in rcv.received()}
    assert len(rcv.received()) == 2 and len(bodies) == 1  # the same bytes, sent again


# --- c) 500, then 200 ------------------------------------------------------------------------


def test_receiver_answering_500_then_200(server: KassaServer,
                                         receivers: Callable[..., Receiver]) -> None:
    merchant = server.merchant()
    client = merchant.test
    failed_once: set[str] = set()

    def fail_first_time(got: Received, n: int) -> tuple[int, bytes, float]:
        event_id = got.json["event_id"]
        if event_id not in failed_once:
            failed_once.add(event_id)
            return 500, b'{"error":"database is down"}', 0.0
        return ok(got, n)

    rcv = receivers(answer=fail_first_time)
    add_endpoint(client, rcv.url)
    r = pay(client, new_task(client))
    assert r.status_code == 201, r.text
    created = event_for_order(client, r.json()["order_id"], "payment.created")

    event = wait_event(client, created["event_id"], settled)
    d = only_delivery(event)
    assert d["status"] == "succeeded" and d["completed_at"] is not None, d
    assert d["attempt_count"] == 2
    assert [(a["number"], a["status_code"], a["response_excerpt"], a["error"])
            for a in d["attempts"]] == [
        (1, 500, '{"error":"database is down"}', "HTTP 500"),
        (2, 200, '{"status":"received"}', None)]
    assert d["last_status_code"] == 200 and d["last_error"] is None, d
    assert d["next_attempt_at"] is None
    server.wait_for_status(client, r.json()["order_id"], "completed")


# --- d) gives up, then a resend gets it through ----------------------------------------------


def test_delivery_gives_up_and_a_resend_delivers_the_same_bytes(
        own_server: Callable[..., KassaServer], receivers: Callable[..., Receiver]) -> None:
    srv = own_server(webhook_give_up_seconds=1.5, sandbox_settle_seconds=600)
    merchant = srv.merchant()
    client = merchant.test
    rcv = receivers(answer=answer_with(503, b'{"error":"maintenance"}'))
    endpoint_id = add_endpoint(client, rcv.url)
    r = pay(client, new_task(client))
    assert r.status_code == 201, r.text
    created = event_for_order(client, r.json()["order_id"], "payment.created")
    event_id = created["event_id"]

    event = wait_event(client, event_id, settled, timeout=10)
    d = only_delivery(event)
    assert d["status"] == "failed", d
    assert d["completed_at"] is not None and d["next_attempt_at"] is None, d
    assert d["last_status_code"] == 503 and d["last_error"] == "HTTP 503", d
    # Attempts at ~0, 0.2, 0.4, 0.9 s; the next (1.9 s) would be past the 1.5 s window.
    assert 2 <= d["attempt_count"] <= 5, d
    assert {a["status_code"] for a in d["attempts"]} == {503}
    failed_before = len(rcv.received())
    assert failed_before == d["attempt_count"]
    assert event_id in {e["event_id"] for e in list_events(client, delivery_status="failed")}
    assert event_id not in {e["event_id"]
                            for e in list_events(client, delivery_status="succeeded")}

    time.sleep(0.5)
    assert len(rcv.received()) == failed_before  # given up: nothing more is sent

    rcv.answer = ok
    r = client.post(f"/api/v1/webhooks/events/{event_id}/resend",
                    json={"endpoint_id": endpoint_id})
    assert r.status_code == 200, r.text
    assert r.json()["event_id"] == event_id
    event = wait_event(client, event_id, settled)
    d = only_delivery(event)
    assert d["status"] == "succeeded", d
    assert d["attempts"][-1]["status_code"] == 200
    assert event_id not in {e["event_id"]
                            for e in list_events(client, delivery_status="failed")}

    got = rcv.received()
    assert len(got) == failed_before + 1
    assert {x.json["event_id"] for x in got} == {event_id}
    assert {x.headers["x-event-id"] for x in got} == {event_id}
    assert len({x.body for x in got}) == 1  # the resend is the same bytes


# --- e) an event whose transaction rolls back is never sent ----------------------------------


def test_event_of_a_rolled_back_payment_is_never_sent(
        server: KassaServer, receivers: Callable[..., Receiver]) -> None:
    merchant = server.merchant()
    client = merchant.test
    rcv = receivers()
    add_endpoint(client, rcv.url)
    task_id = new_task(client)
    # From an empty balance: payment.created is recorded before the debit fails, and the
    # whole unit (order, event) rolls back.
    assert_error(pay(client, task_id, payment_method="balance"), 400, "insufficient_funds")
    assert list_events(client) == []

    r = pay(client, task_id)  # the same task, paid through a channel this time
    assert r.status_code == 201, r.text
    order_id = r.json()["order_id"]
    server.wait_for_status(client, order_id, "completed")
    rcv.wait_for_events(2)
    time.sleep(0.3)  # anything else in the queue would have gone out by now

    events = list_events(client)
    assert sorted(e["event"] for e in events) == ["payment.completed", "payment.created"]
    assert {e["object_id"] for e in events} == {order_id}
    got = rcv.events()
    assert {e["event_id"] for e in got} == {e["event_id"] for e in events}
    assert {e["data"]["task_id"] for e in got} == {task_id}
    assert {e["data"]["order_id"] for e in got} == {order_id}
    assert all(e["data"]["payment_method"] == "alipay" for e in got), got


# --- f) a slow receiver never blocks the others ----------------------------------------------


@pytest.mark.parametrize("one_url", [True, False], ids=["one-url", "urls-differing-by-query"])
def test_slow_receiver_does_not_hold_up_another_merchants_fast_one(
        own_server: Callable[..., KassaServer], receivers: Callable[..., Receiver],
        one_url: bool) -> None:
    # Four requests in flight at most, two of them to one receiver: without the per-host
    # cap, the slow receiver would take every slot for the whole 2 s timeout. Callback
    # URLs that differ only in their query string are still one receiver.
    srv = own_server(webhook_timeout_seconds=2, webhook_max_in_flight=4,
                     webhook_max_in_flight_per_host=2, webhook_retry_schedule=[0, 30],
                     sandbox_settle_seconds=600)
    slow_merchant, fast_merchant = srv.merchant(), srv.merchant()
    slow = receivers(answer=answer_with(500), path="/slow")
    fast = receivers(path="/fast")
    if one_url:
        add_endpoint(slow_merchant.test, slow.url)
    add_endpoint(fast_merchant.test, fast.url)

    # Ten payment.created for the slow merchant; each first try fails at once, the next
    # is due 30 s later. Then its receiver starts hanging (5 s, every request), and the
    # clock jumps 30 s: all ten are due together, as after an outage.
    for i in range(10):
        extra = {} if one_url else {"callback_url": f"{slow.url}?n={i}"}
        dispatch(slow_merchant.test, amount=5000 + i, **extra)
    slow.wait_for(lambda got: len(got) >= 10, timeout=10)
    time.sleep(0.2)
    assert len(slow.received()) == 10
    slow.answer = answer_with(200, b"{}", 5.0)
    srv.ctx.clock.advance(30)
    slow.wait_for(lambda got: len(got) >= 11, timeout=5)

    started = time.monotonic()
    _, order_id = dispatch(fast_merchant.test)
    got = fast.wait_for(lambda got: any(r.json["data"]["order_id"] == order_id
                                        and r.json["event"] == "payment.created"
                                        for r in got), timeout=10)
    took = got[0].at - started
    # Until the first requests time out (2 s), the slow URL had at most its 2 requests
    # open: each hangs 5 s, so any other request there would be a third one in flight.
    hanging = slow.received()[10:]
    early = [r for r in hanging if r.at - hanging[0].at < 1.8]
    problems = []
    if len(early) > 2:
        problems.append(f"{len(early)} requests in flight at once to one receiver "
                        "(webhook_max_in_flight_per_host=2)")
    if took >= 1.5:
        problems.append(f"the fast receiver waited {took:.2f} s")
    assert not problems, problems


# --- g) the real retry schedule and the 3-day cut-off (no server) -----------------------------

FAILED = AttemptResult(url="https://merchant.example.com/hook", status_code=503, latency_ms=12,
                       response_excerpt="busy", error="HTTP 503")


def delivery_row(attempts: int, window_started_at: datetime, protocol: str = "webhook"
                 ) -> dict[str, Any]:
    """A delivery's first window: every attempt so far was made in it."""
    return {"attempts": attempts, "window_attempts": attempts,
            "window_started_at": window_started_at, "protocol": protocol}


def test_default_retry_schedule_delays() -> None:
    settings = Settings()
    assert settings.webhook_retry_schedule == [0, 15, 15, 30, 180, 1800, 1800, 1800, 1800,
                                               3600]
    assert settings.webhook_give_up_seconds == 3 * 86400
    delays = [retry_delay(settings, n) for n in range(1, 16)]
    assert delays == [15, 15, 30, 180, 1800, 1800, 1800, 1800, 3600] + [3600] * 6
    assert retry_delay(settings, 500) == 3600


def test_a_failing_delivery_is_retried_for_three_days_then_failed() -> None:
    settings = Settings()
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    now = start
    attempts = 0
    times = []
    while True:
        attempts += 1  # claiming counts the attempt before it is made
        times.append((now - start).total_seconds())
        values = outcome(settings, delivery_row(attempts, start), FAILED, now)
        assert values["last_status_code"] == 503 and values["last_error"] == "HTTP 503"
        if values.get("status") == "failed":
            assert values["completed_at"] == now and values["next_attempt_at"] is None
            break
        assert values["status"] == "pending" and values["completed_at"] is None, values
        assert values["next_attempt_at"] > now
        now = values["next_attempt_at"]
        assert attempts < 1000
    # Independently: attempts at 0, 15, 30, 60, 240, 2040, 3840, 5640, 7440 s, then hourly;
    # the last one is the latest that is not past 72 h; the one after it would be.
    assert times[:10] == [0, 15, 30, 60, 240, 2040, 3840, 5640, 7440, 11040]
    assert all(b - a == 3600 for a, b in itertools.pairwise(times[8:]))
    assert attempts == 78 and times[-1] == 255840
    assert times[-1] <= 3 * 86400 < times[-1] + 3600


def test_the_cut_off_is_exactly_when_the_next_attempt_would_be_past_three_days() -> None:
    settings = Settings()
    now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    window = timedelta(days=3)
    # After the 10th failure the next attempt is an hour away.
    on_the_edge = delivery_row(10, now + timedelta(hours=1) - window)
    values = outcome(settings, on_the_edge, FAILED, now)
    assert values["next_attempt_at"] == now + timedelta(hours=1)  # exactly at the cut-off: ok
    assert values["status"] == "pending" and values["completed_at"] is None
    just_past = delivery_row(10, now + timedelta(hours=1) - window - timedelta(microseconds=1))
    values = outcome(settings, just_past, FAILED, now)
    assert values["status"] == "failed" and values["completed_at"] == now
    # After the 1st failure the next is 15 s away.
    values = outcome(settings, delivery_row(1, now - window + timedelta(seconds=15)), FAILED,
                     now)
    assert values["next_attempt_at"] == now + timedelta(seconds=15)
    values = outcome(settings, delivery_row(1, now - window + timedelta(seconds=14)), FAILED,
                     now)
    assert values["status"] == "failed"
    # A timeout or refused connection counts like a non-2xx answer.
    no_reply = AttemptResult(url=FAILED.url, status_code=None, latency_ms=5000,
                             response_excerpt=None, error="no reply within 5 s")
    assert not no_reply.succeeded
    assert outcome(settings, delivery_row(1, now), no_reply, now)["next_attempt_at"] == (
        now + timedelta(seconds=15))


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_a_2xx_answer_succeeds_even_late_in_the_window(status: int) -> None:
    settings = Settings()
    now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    result = AttemptResult(url=FAILED.url, status_code=status, latency_ms=8,
                           response_excerpt="", error=None)
    assert result.succeeded
    for attempts, started in [(1, now), (78, now - timedelta(days=3))]:
        values = outcome(settings, delivery_row(attempts, started), result, now)
        assert values["status"] == "succeeded", values
        assert values["completed_at"] == now and values["next_attempt_at"] is None
        assert values["last_status_code"] == status and values["last_error"] is None


@pytest.mark.parametrize("status", [None, 199, 301, 400, 404, 500, 503])
def test_anything_but_2xx_is_a_failure(status: int | None) -> None:
    settings = Settings()
    now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    result = AttemptResult(url=FAILED.url, status_code=status, latency_ms=8,
                           response_excerpt=None, error="x")
    assert not result.succeeded
    values = outcome(settings, delivery_row(1, now), result, now)
    assert values.get("status") != "succeeded"
    assert values["next_attempt_at"] == now + timedelta(seconds=15)
