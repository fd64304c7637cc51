"""The webhook endpoint API and the delivery log (SPEC §7), over HTTP, on both databases:
create/list/get/update/delete, validation, isolation between accounts and modes, the
event log and its paging and filters, every attempt with its reply, resends, event type
filtering, what a delivery looks like, and which calls need X-API-Secret."""

from __future__ import annotations

import contextlib
import re
import string
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kassa.webhooks import service as webhooks
from tests.conftest import require_postgres
from tests.support.factories import assert_error, new_task, pay
from tests.support.harness import KassaServer, Merchant, fresh_postgres_database, make_settings
from tests.support.processes import wait_until
from tests.support.receivers import Received, Receiver
from tests.support.webhook_log import delivery_of, get_event, wait_delivery

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ENDPOINTS = "/api/v1/webhooks/endpoints"
EVENTS = "/api/v1/webhooks/events"
QUIET = 0.4  # how long "nothing more arrives" is watched (retries here are 0.2 s apart)
ENDPOINT_FIELDS = {"endpoint_id", "url", "events", "description", "status", "created_at",
                   "updated_at"}


def create(client: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    r = client.post(ENDPOINTS, json={"url": url, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def delete(client: httpx.Client, endpoint_id: str) -> None:
    r = client.delete(f"{ENDPOINTS}/{endpoint_id}")
    assert r.status_code == 200, r.text


def listed(client: httpx.Client) -> list[dict[str, Any]]:
    r = client.get(ENDPOINTS)
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["data"]
    return list(r.json()["data"])




def list_events(client: httpx.Client, **params: Any) -> dict[str, Any]:
    r = client.get(EVENTS, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def paid(server: KassaServer, client: httpx.Client) -> tuple[str, list[dict[str, Any]]]:
    """A completed sandbox payment: its order_id and events (payment.created, .completed)."""
    r = pay(client, new_task(client))
    assert r.status_code == 201, r.text
    order_id = str(r.json()["order_id"])
    server.wait_for_status(client, order_id, "completed")
    events = sorted(list_events(client, object_id=order_id)["data"], key=lambda e: e["sequence"])
    assert [e["event"] for e in events] == ["payment.created", "payment.completed"]
    return order_id, events






def finished(d: dict[str, Any]) -> bool:
    return bool(d["status"] != "pending")


def of_event(receiver: Receiver, event_id: str) -> list[Received]:
    return [r for r in receiver.received() if r.json["event_id"] == event_id]


# --- CRUD ---------------------------------------------------------------------------------------

def test_create_list_get_update_delete(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    assert listed(client) == []
    made = create(client, "http://127.0.0.1:9/a")
    assert set(made) == ENDPOINT_FIELDS
    assert made["endpoint_id"].startswith("we_")
    assert (made["url"], made["events"], made["description"], made["status"]) == (
        "http://127.0.0.1:9/a", ["*"], None, "enabled")
    assert ISO.match(made["created_at"]) and made["updated_at"] == made["created_at"]
    endpoint_id = made["endpoint_id"]

    other = create(client, "http://127.0.0.1:9/b", description="refunds only",
                   events=["refund.completed", "payment.created", "refund.completed"],
                   status="disabled")
    # Event types come back once each, in the documented order; "*" swallows the rest.
    assert (other["events"], other["description"], other["status"]) == (
        ["payment.created", "refund.completed"], "refunds only", "disabled")
    assert create(client, "http://127.0.0.1:9/c", events=["payment.failed", "*"])["events"] == [
        "*"]
    everything = listed(client)
    assert len(everything) == 3 and made in everything and other in everything
    assert client.get(f"{ENDPOINTS}/{endpoint_id}").json() == made

    time.sleep(1.0)  # so updated_at moves on (timestamps are in seconds)
    r = client.patch(f"{ENDPOINTS}/{endpoint_id}", json={
        "url": "http://127.0.0.1:9/new", "events": ["payment.completed"],
        "description": "main"})
    assert r.status_code == 200, r.text
    updated = r.json()
    assert (updated["url"], updated["events"], updated["description"], updated["status"]) == (
        "http://127.0.0.1:9/new", ["payment.completed"], "main", "enabled")
    assert updated["created_at"] == made["created_at"] < updated["updated_at"]
    assert client.get(f"{ENDPOINTS}/{endpoint_id}").json() == updated
    # Fields left out are kept; a null description clears it.
    r = client.patch(f"{ENDPOINTS}/{endpoint_id}", json={"status": "disabled"})
    assert (r.json()["status"], r.json()["description"], r.json()["url"]) == (
        "disabled", "main", "http://127.0.0.1:9/new")
    r = client.patch(f"{ENDPOINTS}/{endpoint_id}", json={"description": None,
                                                         "status": "enabled"})
    assert (r.json()["status"], r.json()["description"]) == ("enabled", None)

    r = client.delete(f"{ENDPOINTS}/{endpoint_id}")
    assert r.status_code == 200, r.text
    assert r.json() == {"endpoint_id": endpoint_id, "deleted": True}
    assert endpoint_id not in [e["endpoint_id"] for e in listed(client)]
    for r in (client.get(f"{ENDPOINTS}/{endpoint_id}"),
              client.patch(f"{ENDPOINTS}/{endpoint_id}", json={"description": "x"}),
              client.delete(f"{ENDPOINTS}/{endpoint_id}"),
              client.get(f"{ENDPOINTS}/{endpoint_id}/deliveries")):
        assert assert_error(r, 404, "endpoint_not_found")["endpoint_id"] == endpoint_id
    assert_error(client.get(f"{ENDPOINTS}/we_doesnotexist0000000"), 404, "endpoint_not_found")


def test_a_disabled_endpoint_gets_no_new_deliveries(server: KassaServer,
                                                    merchant: Merchant) -> None:
    client = merchant.test
    on, off = Receiver().up(), Receiver().up()
    on_id = create(client, on.url)["endpoint_id"]
    off_id = create(client, off.url)["endpoint_id"]
    try:
        r = client.patch(f"{ENDPOINTS}/{off_id}", json={"status": "disabled"})
        assert r.status_code == 200 and r.json()["status"] == "disabled", r.text
        _, events = paid(server, client)
        on.wait_for_events(2)
        for e in events:
            assert [d["endpoint_id"] for d in get_event(client, e["event_id"])["deliveries"]
                    ] == [on_id]
        time.sleep(QUIET)
        assert off.received() == []
        r = client.get(f"{ENDPOINTS}/{off_id}/deliveries")
        assert r.json() == {"data": [], "has_more": False, "next_cursor": None}

        # Enabled again: it gets the events from then on (not the ones it missed).
        client.patch(f"{ENDPOINTS}/{off_id}", json={"status": "enabled"})
        _, later = paid(server, client)
        got = off.wait_for_events(2)
        assert [r.json["event_id"] for r in got] == [e["event_id"] for e in later]
    finally:
        delete(client, on_id)
        delete(client, off_id)
        on.down()
        off.down()


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    ({"url": "http://127.0.0.1:9/", "events": ["payment.refunded"]}, "events"),
    ({"url": "http://127.0.0.1:9/", "events": []}, "events"),
    ({"url": "http://127.0.0.1:9/", "events": "payment.created"}, "events"),
    ({"url": "http://127.0.0.1:9/", "secret": "mine"}, "secret"),
    ({"url": "http://127.0.0.1:9/" + "a" * 2048}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "ftp://127.0.0.1/hook"}, "url"),
    ({"url": "http://user:pw@127.0.0.1:9/"}, "url"),
    ({"url": ""}, "url"),
    ({}, "url"),
    ({"url": "http://127.0.0.1:9/", "status": "paused"}, "status"),
    ({"url": "http://127.0.0.1:9/", "description": "d" * 201}, "description"),
])
def test_create_validation(server: KassaServer, merchant: Merchant, body: dict[str, Any],
                           field: str) -> None:
    error = assert_error(merchant.test.post(ENDPOINTS, json=body), 400, "validation_error")
    fields = [d["field"] for d in error.get("details", [])]
    assert any(f == field or f.startswith(f"{field}.") or f.startswith(f"{field}[")
               for f in fields), error
    assert listed(merchant.test) == []


def test_update_validation(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    made = create(client, "http://127.0.0.1:9/")
    path = f"{ENDPOINTS}/{made['endpoint_id']}"
    for body in ({"events": []}, {"events": ["nope"]}, {"url": "gopher://x/"},
                 {"url": "http://127.0.0.1:9/" + "a" * 2048}, {"endpoint_id": "we_x"},
                 {"status": "deleted"}, {"url": None, "unknown": 1}):
        assert_error(client.patch(path, json=body), 400, "validation_error")
    assert client.get(path).json() == made


def test_at_most_twenty_endpoints(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    made = [create(client, f"http://127.0.0.1:9/{n}")["endpoint_id"] for n in range(20)]
    assert_error(client.post(ENDPOINTS, json={"url": "http://127.0.0.1:9/21"}), 400,
                 "validation_error")
    assert len(listed(client)) == 20
    # A deleted one frees a place.
    delete(client, made[0])
    create(client, "http://127.0.0.1:9/21")
    assert len(listed(client)) == 20


# --- isolation ------------------------------------------------------------------------------------

def test_another_accounts_or_modes_ids_are_never_visible(server: KassaServer,
                                                         merchant: Merchant) -> None:
    client = merchant.test
    receiver = Receiver().up()
    endpoint_id = create(client, receiver.url)["endpoint_id"]
    try:
        _, events = paid(server, client)
        receiver.wait_for_events(2)
        event_id = events[0]["event_id"]
        stranger = server.merchant()
        for c in (stranger.test, stranger.live, merchant.live):
            for r in (c.get(f"{ENDPOINTS}/{endpoint_id}"),
                      c.patch(f"{ENDPOINTS}/{endpoint_id}", json={"status": "disabled"}),
                      c.delete(f"{ENDPOINTS}/{endpoint_id}"),
                      c.get(f"{ENDPOINTS}/{endpoint_id}/deliveries")):
                assert_error(r, 404, "endpoint_not_found")
            for r in (c.get(f"{EVENTS}/{event_id}"),
                      c.post(f"{EVENTS}/{event_id}/resend", json={})):
                assert_error(r, 404, "event_not_found")
            assert listed(c) == []
            assert list_events(c)["data"] == []
            assert_error(c.get(EVENTS, params={"starting_after": event_id}), 400,
                         "validation_error")
        # Its own event, to someone else's endpoint: no such endpoint.
        theirs = create(stranger.test, "http://127.0.0.1:9/")["endpoint_id"]
        r = client.post(f"{EVENTS}/{event_id}/resend", json={"endpoint_id": theirs})
        assert_error(r, 404, "endpoint_not_found")
        # Nothing of that was changed or sent.
        assert client.get(f"{ENDPOINTS}/{endpoint_id}").json()["status"] == "enabled"
        assert len(receiver.received()) == 2
        assert stranger.test.get(f"{ENDPOINTS}/{theirs}/deliveries").json()["data"] == []
    finally:
        delete(client, endpoint_id)
        receiver.down()


# --- the event log --------------------------------------------------------------------------------

def test_events_paging(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    orders = [paid(server, client)[0] for _ in range(3)]
    everything = list_events(client, limit=100)
    assert everything["has_more"] is False and everything["next_cursor"] is None
    all_ids = [e["event_id"] for e in everything["data"]]
    assert len(all_ids) == len(set(all_ids)) == 6
    stamps = [e["timestamp"] for e in everything["data"]]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    assert {e["object_id"] for e in everything["data"]} == set(orders)
    for e in everything["data"]:
        assert e["deliveries"] == []  # no endpoint, no callback_url: nowhere to send

    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor is not None:
            params["starting_after"] = cursor
        page = list_events(client, **params)
        pages.append([e["event_id"] for e in page["data"]])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        assert page["next_cursor"] == pages[-1][-1]
        cursor = page["next_cursor"]
    assert [len(p) for p in pages] == [4, 2]
    assert [i for p in pages for i in p] == all_ids

    page = list_events(client, limit=6)
    assert (len(page["data"]), page["has_more"], page["next_cursor"]) == (6, False, None)
    completed = list_events(client, type="payment.completed")["data"]
    assert sorted(e["object_id"] for e in completed) == sorted(orders)
    assert {e["event"] for e in completed} == {"payment.completed"}
    one = list_events(client, object_id=orders[1])["data"]
    assert [(e["event"], e["sequence"]) for e in one] == [("payment.completed", 2),
                                                          ("payment.created", 1)]
    assert get_event(client, one[0]["event_id"]) == one[0]
    for params in ({"limit": 0}, {"limit": 101}, {"delivery_status": "lost"},
                   {"starting_after": "evt_unknown"}, {"bogus": "1"}):
        assert_error(client.get(EVENTS, params=params), 400, "validation_error")
    assert_error(client.get(f"{EVENTS}/evt_unknown"), 404, "event_not_found")


def test_delivery_status_filter(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    good = Receiver().up()
    bad = Receiver(answer=lambda _, __: (500, b"down", 0.0)).up()
    good_id = create(client, good.url)["endpoint_id"]
    bad_id = create(client, bad.url)["endpoint_id"]
    try:
        _, events = paid(server, client)
        ids = sorted(e["event_id"] for e in events)
        good.wait_for_events(2)
        for event_id in ids:
            wait_delivery(client, event_id, good_id, finished)
        wait_delivery(client, events[0]["event_id"], bad_id, lambda d: d["attempt_count"] >= 1)

        def by_status(status: str) -> list[str]:
            return sorted(e["event_id"] for e in list_events(client,
                                                             delivery_status=status)["data"])

        assert by_status("succeeded") == ids
        assert by_status("pending") == ids  # the failing receiver's are still being retried
        assert by_status("failed") == []
        assert by_status("all") == ids

        # Disabled, the failing endpoint's deliveries end as failed.
        client.patch(f"{ENDPOINTS}/{bad_id}", json={"status": "disabled"})
        wait_until(lambda: by_status("failed") == ids, timeout=10,
                   message=lambda: f"failed: {by_status('failed')}")
        assert by_status("pending") == []
        for e in events:
            d = delivery_of(client, e["event_id"], bad_id)
            assert (d["status"], d["last_error"]) == (
                "failed", "the endpoint was disabled or deleted"), d
            assert d["next_attempt_at"] is None and ISO.match(d["completed_at"])
        log = client.get(f"{ENDPOINTS}/{bad_id}/deliveries", params={"status": "failed"}).json()
        assert sorted(d["event_id"] for d in log["data"]) == ids
        assert client.get(f"{ENDPOINTS}/{bad_id}/deliveries",
                          params={"status": "succeeded"}).json()["data"] == []
        assert client.get(f"{ENDPOINTS}/{bad_id}/deliveries",
                          params={"status": "pending"}).json()["data"] == []
    finally:
        delete(client, good_id)
        delete(client, bad_id)
        good.down()
        bad.down()


BIG_REPLY = (string.ascii_letters * 40)[:2000].encode()


def test_endpoint_delivery_log_keeps_every_attempt(server: KassaServer,
                                                   merchant: Merchant) -> None:
    client = merchant.test

    def answer(_: Received, n: int) -> tuple[int, bytes, float]:
        return (503, b'{"busy":true}', 0.0) if n == 0 else (200, BIG_REPLY, 0.0)

    receiver = Receiver(answer=answer).up()
    endpoint_id = create(client, receiver.url)["endpoint_id"]
    try:
        _, events = paid(server, client)
        for e in events:
            wait_delivery(client, e["event_id"], endpoint_id, finished)
        page = client.get(f"{ENDPOINTS}/{endpoint_id}/deliveries").json()
        assert (page["has_more"], page["next_cursor"]) == (False, None)
        by_event = {d["event"]: d for d in page["data"]}
        assert set(by_event) == {"payment.created", "payment.completed"}

        first = by_event["payment.created"]  # the one the 503 went to
        assert (first["status"], first["attempt_count"], first["last_status_code"],
                first["last_error"]) == ("succeeded", 2, 200, None)
        assert first["endpoint_id"] == endpoint_id and first["url"] == receiver.url
        assert first["delivery_id"].startswith("wd_")
        assert ISO.match(first["created_at"]) and ISO.match(first["completed_at"])
        assert first["next_attempt_at"] is None
        a1, a2 = first["attempts"]
        assert (a1["number"], a1["status_code"], a1["error"], a1["response_excerpt"]) == (
            1, 503, "HTTP 503", '{"busy":true}')
        assert (a2["number"], a2["status_code"], a2["error"]) == (2, 200, None)
        # The first bytes of the reply, cut at 512 bytes.
        assert a2["response_excerpt"] == BIG_REPLY[:512].decode()
        second = by_event["payment.completed"]
        assert [a["status_code"] for a in second["attempts"]] == [200]
        assert second["attempts"][0]["response_excerpt"] == BIG_REPLY[:512].decode()
        for a in (a1, a2, *second["attempts"]):
            assert type(a["latency_ms"]) is int and a["latency_ms"] >= 0
            assert ISO.match(a["attempted_at"]) and a["url"] == receiver.url
        # The same entries as in the event's own log.
        assert delivery_of(client, events[0]["event_id"], endpoint_id) == first

        # Paging the endpoint's log.
        p1 = client.get(f"{ENDPOINTS}/{endpoint_id}/deliveries", params={"limit": 1}).json()
        assert p1["has_more"] is True and p1["next_cursor"] == p1["data"][0]["delivery_id"]
        p2 = client.get(f"{ENDPOINTS}/{endpoint_id}/deliveries",
                        params={"limit": 1, "starting_after": p1["next_cursor"]}).json()
        assert (p2["has_more"], p2["next_cursor"]) == (False, None)
        assert [p1["data"][0], p2["data"][0]] == page["data"]
        for params in ({"limit": 0}, {"limit": 101}, {"status": "lost"},
                       {"starting_after": "wd_unknown"}):
            r = client.get(f"{ENDPOINTS}/{endpoint_id}/deliveries", params=params)
            assert_error(r, 400, "validation_error")
    finally:
        delete(client, endpoint_id)
        receiver.down()


# --- resend ---------------------------------------------------------------------------------------

def test_resend_sends_the_same_bytes_again(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    receiver = Receiver().up()
    endpoint_id = create(client, receiver.url)["endpoint_id"]
    try:
        _, events = paid(server, client)
        event_id = events[0]["event_id"]
        receiver.wait_for_events(2)
        before = wait_delivery(client, event_id, endpoint_id, finished)
        assert before["status"] == "succeeded"

        for n in (2, 3):
            r = client.post(f"{EVENTS}/{event_id}/resend", json={})
            assert r.status_code == 200, r.text
            assert r.json()["event_id"] == event_id
            assert [(d["delivery_id"], d["status"]) for d in r.json()["deliveries"]] == [
                (before["delivery_id"], "pending")]
            got = receiver.wait_for(lambda _, n=n: len(of_event(receiver, event_id)) == n)
            d = wait_delivery(client, event_id, endpoint_id, finished)
            assert (d["status"], d["attempt_count"], len(d["attempts"])) == ("succeeded", n, n)
            assert [a["number"] for a in d["attempts"]] == list(range(1, n + 1))
        copies = of_event(receiver, event_id)
        assert len({c.body for c in copies}) == 1  # byte for byte
        assert {c.headers["x-event-id"] for c in copies} == {event_id}
        assert {c.headers["x-delivery-id"] for c in copies} == {before["delivery_id"]}
        assert [c.headers["x-delivery-attempt"] for c in copies] == ["1", "2", "3"]
        assert len({c.headers["x-signature"] for c in copies}) == 1
        assert len(got) == 4  # and nothing else was sent again
    finally:
        delete(client, endpoint_id)
        receiver.down()


def test_resend_to_one_endpoint_and_to_one_made_later(server: KassaServer,
                                                      merchant: Merchant) -> None:
    client = merchant.test
    a, b, late = Receiver().up(), Receiver().up(), Receiver().up()
    a_id = create(client, a.url)["endpoint_id"]
    b_id = create(client, b.url)["endpoint_id"]
    made = [a_id, b_id]
    try:
        _, events = paid(server, client)
        event_id = events[1]["event_id"]
        a.wait_for_events(2)
        b.wait_for_events(2)
        wait_delivery(client, event_id, a_id, finished)
        wait_delivery(client, event_id, b_id, finished)

        r = client.post(f"{EVENTS}/{event_id}/resend", json={"endpoint_id": a_id})
        assert r.status_code == 200, r.text
        assert [d["endpoint_id"] for d in r.json()["deliveries"]] == [a_id]
        a.wait_for(lambda _: len(of_event(a, event_id)) == 2)
        time.sleep(QUIET)
        assert len(of_event(b, event_id)) == 1

        # An endpoint made after the event didn't get it ...
        late_id = create(client, late.url)["endpoint_id"]
        made.append(late_id)
        time.sleep(QUIET)
        assert late.received() == []
        assert late_id not in [d["endpoint_id"] for d in get_event(client, event_id)
                               ["deliveries"]]
        # ... until it is resent to it: a new delivery, the same bytes.
        r = client.post(f"{EVENTS}/{event_id}/resend", json={"endpoint_id": late_id})
        assert r.status_code == 200, r.text
        (new,) = r.json()["deliveries"]
        assert (new["endpoint_id"], new["status"], new["attempt_count"]) == (late_id, "pending",
                                                                             0)
        (got,) = late.wait_for(lambda rs: len(rs) == 1)
        assert got.body == of_event(a, event_id)[0].body
        assert got.headers["x-delivery-id"] == new["delivery_id"]
        d = wait_delivery(client, event_id, late_id, finished)
        assert (d["status"], d["attempt_count"]) == ("succeeded", 1)
        assert {d["endpoint_id"] for d in get_event(client, event_id)["deliveries"]} == {
            a_id, b_id, late_id}

        # A disabled endpoint can't be resent to.
        client.patch(f"{ENDPOINTS}/{b_id}", json={"status": "disabled"})
        assert_error(client.post(f"{EVENTS}/{event_id}/resend", json={"endpoint_id": b_id}),
                     400, "validation_error")
        assert_error(client.post(f"{EVENTS}/{event_id}/resend",
                                 json={"endpoint_id": "we_doesnotexist0000000"}),
                     404, "endpoint_not_found")
        assert_error(client.post(f"{EVENTS}/{event_id}/resend", json={"to": a_id}), 400,
                     "validation_error")
    finally:
        for endpoint_id in made:
            delete(client, endpoint_id)
        for receiver in (a, b, late):
            receiver.down()


def test_resend_with_nowhere_to_send_is_refused(server: KassaServer,
                                               merchant: Merchant) -> None:
    client = merchant.test
    _, events = paid(server, client)
    r = client.post(f"{EVENTS}/{events[0]['event_id']}/resend", json={})
    assert_error(r, 400, "validation_error")
    assert get_event(client, events[0]["event_id"])["deliveries"] == []


def test_resend_to_every_target_leaves_out_deleted_endpoints(server: KassaServer,
                                                              merchant: Merchant) -> None:
    """A plain resend goes to the targets that still exist: a deleted endpoint's delivery
    keeps its outcome (it is not reopened and then failed)."""
    client = merchant.test
    kept, gone = Receiver().up(), Receiver().up()
    kept_id = create(client, kept.url)["endpoint_id"]
    gone_id = create(client, gone.url)["endpoint_id"]
    try:
        _, events = paid(server, client)
        event_id = events[0]["event_id"]
        before = wait_delivery(client, event_id, gone_id, finished)
        wait_delivery(client, event_id, kept_id, finished)
        delete(client, gone_id)

        r = client.post(f"{EVENTS}/{event_id}/resend", json={})
        assert r.status_code == 200, r.text
        assert [d["endpoint_id"] for d in r.json()["deliveries"]] == [kept_id]
        kept.wait_for(lambda _: len(of_event(kept, event_id)) == 2)
        time.sleep(QUIET)
        assert len(of_event(gone, event_id)) == 1
        after = delivery_of(client, event_id, gone_id)
        assert (after["status"], after["attempt_count"], after["last_status_code"]) == (
            "succeeded", 1, 200) == (before["status"], before["attempt_count"],
                                     before["last_status_code"])
    finally:
        delete(client, kept_id)
        kept.down()
        gone.down()


def test_pending_deliveries_follow_an_endpoints_new_url(server: KassaServer,
                                                       merchant: Merchant) -> None:
    """PATCHing the URL of an endpoint whose receiver is down moves its pending deliveries
    to the new URL: they arrive there, and nothing more goes to the old one."""
    client = merchant.test
    old, new = Receiver().up(), Receiver().up()
    old.down()
    endpoint_id = create(client, old.url)["endpoint_id"]
    try:
        _, events = paid(server, client)
        first = wait_delivery(client, events[0]["event_id"], endpoint_id,
                              lambda d: d["attempt_count"] >= 1)
        assert first["status"] == "pending" and first["url"] == old.url

        r = client.patch(f"{ENDPOINTS}/{endpoint_id}", json={"url": new.url})
        assert r.status_code == 200, r.text
        got = new.wait_for_events(2)
        assert [g.json["sequence"] for g in got] == [1, 2]
        for event in events:
            d = wait_delivery(client, event["event_id"], endpoint_id, finished)
            assert (d["status"], d["url"]) == ("succeeded", new.url)
            assert d["attempts"][-1]["url"] == new.url
    finally:
        delete(client, endpoint_id)
        new.down()


def test_test_mode_registers_names_without_resolving_them(server: KassaServer,
                                                          merchant: Merchant) -> None:
    """Test mode takes any http(s) URL (the tests' resolver knows no names, like a box
    without DNS); live mode must resolve the name to a public address first."""
    url = "https://your-app.com/webhooks/payment"
    endpoint_id = create(merchant.test, url)["endpoint_id"]
    delete(merchant.test, endpoint_id)
    assert_error(merchant.live.post(ENDPOINTS, json={"url": url}), 400, "validation_error")


def test_ids_in_the_path_that_kassa_never_made_are_404s(server: KassaServer,
                                                       merchant: Merchant) -> None:
    """NUL bytes, huge or odd ids in the path: a clean 404 (never a database error), with
    the id cut short in the answer."""
    client = merchant.test
    for bad in ("%00", "we_%00", "we_" + "0" * 19 + "%00", "x" * 5000, "WE_ABC", "we_../x"):
        for r in (client.get(f"{ENDPOINTS}/{bad}"),
                  client.patch(f"{ENDPOINTS}/{bad}", json={"status": "disabled"}),
                  client.delete(f"{ENDPOINTS}/{bad}"),
                  client.get(f"{ENDPOINTS}/{bad}/deliveries")):
            if r.status_code == 404 and r.json()["error"]["code"] == "not_found":
                continue  # no route matched at all ("/" in the id): also a 404
            error = assert_error(r, 404, "endpoint_not_found")
            assert len(error["endpoint_id"]) <= 40
        for r in (client.get(f"{EVENTS}/{bad}"),
                  client.post(f"{EVENTS}/{bad}/resend", json={})):
            if r.status_code == 404 and r.json()["error"]["code"] == "not_found":
                continue
            error = assert_error(r, 404, "event_not_found")
            assert len(error["event_id"]) <= 40


def test_a_resend_to_one_endpoint_leaves_the_fan_out_to_the_others(backend: str,
                                                                   tmp_path: Path) -> None:
    """Resending an event the worker has not fanned out yet, to one endpoint, must not
    stop its callback_url and other endpoints from getting it."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'k.sqlite3'}"
        else:  # its own database: the session's servers run workers that would fan out
            require_postgres()
            url = stack.enter_context(fresh_postgres_database())
        srv = KassaServer(make_settings(tmp_path, url), run_worker=False).start()
        stack.callback(srv.stop)
        _resend_to_one_before_the_fan_out(srv)


def _resend_to_one_before_the_fan_out(srv: KassaServer) -> None:
    merchant = srv.merchant()
    client = merchant.test
    one = create(client, "http://127.0.0.1:9/one")["endpoint_id"]
    other = create(client, "http://127.0.0.1:9/other")["endpoint_id"]
    r = pay(client, new_task(client), callback_url="http://127.0.0.1:9/callback")
    assert r.status_code == 201, r.text
    (event,) = list_events(client, object_id=r.json()["order_id"])["data"]
    assert event["deliveries"] == []  # no worker: not fanned out yet

    r = client.post(f"{EVENTS}/{event['event_id']}/resend", json={"endpoint_id": one})
    assert r.status_code == 200, r.text
    assert [d["endpoint_id"] for d in r.json()["deliveries"]] == [one]
    # The fan-out (what the worker runs) still makes the other targets' deliveries.
    made = srv.db.write_sync(lambda conn: webhooks.fan_out(
        conn, now=srv.ctx.clock.now(), limit=100))
    assert made == 1
    targets = {d["endpoint_id"] for d in get_event(client, event["event_id"])["deliveries"]}
    assert targets == {one, other, None}


# --- what is sent where ---------------------------------------------------------------------------

def test_endpoints_receive_only_the_event_types_they_want(server: KassaServer,
                                                          merchant: Merchant) -> None:
    client = merchant.test
    everything, refunds = Receiver().up(), Receiver().up()
    all_id = create(client, everything.url)["endpoint_id"]
    refunds_id = create(client, refunds.url, events=["refund.completed"])["endpoint_id"]
    try:
        order_id, _ = paid(server, client)
        r = client.post("/api/v1/payment/refund", json={
            "order_id": order_id, "reason": "task_cancelled", "refund_method": "balance"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"
        got = everything.wait_for_events(4)
        # In order per object (the order's, the refund's); objects don't wait for each other.
        by_object: dict[str, list[str]] = {}
        for g in got:
            by_object.setdefault(g.json["event"].split(".")[0], []).append(g.json["event"])
        assert by_object == {"payment": ["payment.created", "payment.completed"],
                             "refund": ["refund.created", "refund.completed"]}
        (only,) = refunds.wait_for(lambda rs: len(rs) >= 1)
        time.sleep(QUIET)
        assert [r.json["event"] for r in refunds.received()] == ["refund.completed"]
        (completed,) = [g for g in got if g.json["event"] == "refund.completed"]
        assert only.body == completed.body
        log = client.get(f"{ENDPOINTS}/{refunds_id}/deliveries").json()["data"]
        assert [d["event"] for d in log] == ["refund.completed"]
    finally:
        delete(client, all_id)
        delete(client, refunds_id)
        everything.down()
        refunds.down()


def test_what_a_delivery_looks_like(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    receiver = Receiver().up()
    endpoint_id = create(client, receiver.url)["endpoint_id"]
    try:
        order_id, events = paid(server, client)
        got = receiver.wait_for_events(2)
        for delivery, event in zip(got, events, strict=True):
            payload = delivery.json
            assert set(payload) == {"event_id", "event", "timestamp", "sequence", "data"}
            assert delivery.headers["x-event-id"] == payload["event_id"] == event["event_id"]
            assert delivery.headers["x-event-type"] == payload["event"] == event["event"]
            assert delivery.headers["content-type"] == "application/json"
            assert (payload["sequence"], payload["timestamp"], payload["data"]) == (
                event["sequence"], event["timestamp"], event["data"])
            assert payload["data"]["order_id"] == order_id
            assert ISO.match(payload["timestamp"])
            d = wait_delivery(client, event["event_id"], endpoint_id, finished)
            assert delivery.headers["x-delivery-id"] == d["delivery_id"]
            assert delivery.headers["x-delivery-attempt"] == "1"
            assert re.fullmatch(r"sha256=[0-9a-f]{64}", delivery.headers["x-signature"])
            assert delivery.path == "/webhooks/payment"
    finally:
        delete(client, endpoint_id)
        receiver.down()


# --- credentials ----------------------------------------------------------------------------------

def test_reads_need_the_key_and_writes_the_secret_too(server: KassaServer,
                                                      merchant: Merchant) -> None:
    made = create(merchant.test, "http://127.0.0.1:9/", status="disabled")  # sends nothing
    endpoint_id = made["endpoint_id"]
    _, events = paid(server, merchant.test)
    event_id = events[0]["event_id"]
    with server.client(merchant.test_key) as key_only, server.client() as nobody, \
            server.client(merchant.test_key, "wrong-secret") as wrong_secret:
        reads = [ENDPOINTS, f"{ENDPOINTS}/{endpoint_id}", f"{ENDPOINTS}/{endpoint_id}/deliveries",
                 EVENTS, f"{EVENTS}/{event_id}"]
        for path in reads:
            assert key_only.get(path).status_code == 200, path
            assert_error(nobody.get(path), 401, "invalid_credentials")

        writes: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", ENDPOINTS, {"url": "http://127.0.0.1:9/x"}),
            ("PATCH", f"{ENDPOINTS}/{endpoint_id}", {"status": "disabled"}),
            ("DELETE", f"{ENDPOINTS}/{endpoint_id}", None),
            ("POST", f"{EVENTS}/{event_id}/resend", {}),
            ("POST", "/api/v1/webhooks/secret/rotate", {}),
        ]
        for c in (key_only, nobody, wrong_secret):
            for method, path, body in writes:
                r = c.request(method, path, json=body)
                assert_error(r, 401, "invalid_credentials")
            assert_error(c.get("/api/v1/webhooks/secret"), 401, "invalid_credentials")
    # Nothing was changed.
    assert listed(merchant.test) == [made]
    assert get_event(merchant.test, event_id)["deliveries"] == []
    r = merchant.live.get("/api/v1/webhooks/secret")
    assert r.status_code == 200 and r.json()["webhook_secret"] == merchant.account.webhook_secret
    assert_error(merchant.test.get("/api/v1/webhooks/secret"), 403, "live_key_required")
    delete(merchant.test, endpoint_id)
