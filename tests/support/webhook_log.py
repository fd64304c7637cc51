"""Reading Kassa's webhook delivery log over the API, for the webhook tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.support.processes import wait_until

EVENTS = "/api/v1/webhooks/events"


def get_event(client: httpx.Client, event_id: str) -> dict[str, Any]:
    r = client.get(f"{EVENTS}/{event_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def delivery_of(client: httpx.Client, event_id: str, endpoint_id: str) -> dict[str, Any]:
    """The event's one delivery to `endpoint_id` (None: its callback_url)."""
    deliveries = get_event(client, event_id)["deliveries"]
    found = [d for d in deliveries if d["endpoint_id"] == endpoint_id]
    assert len(found) == 1, deliveries
    return dict(found[0])


def wait_delivery(client: httpx.Client, event_id: str, endpoint_id: str,
                  done: Callable[[dict[str, Any]], bool], timeout: float = 10.0
                  ) -> dict[str, Any]:
    """Poll the event until its delivery to `endpoint_id` exists and `done` says so."""
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        found = [d for d in get_event(client, event_id)["deliveries"]
                 if d["endpoint_id"] == endpoint_id]
        if not found:
            return None  # not fanned out yet
        last = found[0]
        return last if done(last) else None

    return wait_until(check, timeout=timeout, message=lambda: f"delivery stays {last}")
