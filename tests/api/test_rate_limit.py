"""Rate limits per API key (SPEC §11): 429 rate_limit_exceeded with Retry-After, in
memory by default and shared through Redis when configured."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.support.harness import KassaServer, make_settings

REDIS_URL = "redis://127.0.0.1:6379"
RATE = "5/second"


def redis_unavailable_reason() -> str | None:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="module", params=["memory", "redis"])
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[KassaServer]:
    """A server of its own allowing 5 requests per second per key."""
    overrides: dict[str, Any] = {"rate_limit": RATE}
    if request.param == "redis":
        reason = redis_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        overrides["redis_url"] = REDIS_URL
    tmp = tmp_path_factory.mktemp(f"kassa-ratelimit-{request.param}")
    srv = KassaServer(make_settings(tmp, f"sqlite:///{tmp / 'kassa.sqlite3'}",
                                    **overrides)).start()
    yield srv
    srv.stop()


def task_body(task_id: str) -> dict[str, Any]:
    return {"task_id": task_id, "title": "Rate limited", "amount": 5000, "currency": "CNY",
            "dispatch": False}


def exhaust(client: httpx.Client) -> httpx.Response:
    """Five allowed requests and a sixth, all well inside one second; returns the sixth."""
    started = time.monotonic()
    for _ in range(5):
        r = client.get("/api/v1/payment/query", params={"order_id": "ord_missing"})
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "order_not_found"
    sixth = client.get("/api/v1/payment/query", params={"order_id": "ord_missing"})
    elapsed = time.monotonic() - started
    assert elapsed < 0.9, f"six requests took {elapsed:.2f}s: too slow to test a 1 s window"
    return sixth


def retry_after(r: httpx.Response) -> int:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    value = r.headers["Retry-After"]
    assert value.isdigit() and int(value) >= 1, value
    return int(value)


def test_sixth_request_in_a_second_is_refused_until_retry_after(limited: KassaServer) -> None:
    merchant = limited.merchant()
    started = time.monotonic()
    assert merchant.test.post("/api/v1/tasks", json=task_body("first")).status_code == 201
    for _ in range(4):
        assert merchant.test.get("/api/v1/tasks/first").status_code == 200
    refused = merchant.test.post("/api/v1/tasks", json=task_body("sixth"))
    assert time.monotonic() - started < 0.9
    wait = retry_after(refused)
    assert wait <= 1  # a 1-second window never asks for more than a second

    time.sleep(wait)
    # The refused request changed nothing, and requests pass again.
    r = merchant.test.get("/api/v1/tasks/sixth")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "task_not_found"
    r = merchant.test.post("/api/v1/tasks", json=task_body("sixth"))
    assert r.status_code == 201, r.text


def test_limits_are_per_api_key(limited: KassaServer) -> None:
    noisy, quiet = limited.merchant(), limited.merchant()
    retry_after(exhaust(noisy.test))
    # Another merchant, and the same merchant's live key, are unaffected.
    r = quiet.test.get("/api/v1/payment/query", params={"order_id": "ord_missing"})
    assert r.status_code == 404, r.text
    r = noisy.live.get("/api/v1/payment/query", params={"order_id": "ord_missing"})
    assert r.status_code == 404, r.text
    # While the noisy test key stays limited.
    retry_after(noisy.test.get("/api/v1/payment/query", params={"order_id": "ord_missing"}))


@pytest.mark.parametrize("limited", ["redis"], indirect=True)
def test_redis_limit_is_shared_by_every_server(limited: KassaServer) -> None:
    """Two servers on one database and one Redis count one key's requests together."""
    assert limited.settings.redis_url == REDIS_URL
    sibling = KassaServer(make_settings(limited.settings.data_dir, limited.settings.database_url,
                                        rate_limit=RATE, redis_url=REDIS_URL),
                          run_worker=False).start()
    try:
        merchant = limited.merchant()
        other = sibling.client(merchant.test_key, merchant.test_secret)
        try:
            started = time.monotonic()
            for client in (merchant.test, merchant.test, merchant.test, other, other):
                r = client.get("/api/v1/payment/query", params={"order_id": "ord_missing"})
                assert r.status_code == 404, r.text
            sixth = other.get("/api/v1/payment/query", params={"order_id": "ord_missing"})
            assert time.monotonic() - started < 0.9
            retry_after(sixth)
            stored = redis.Redis.from_url(REDIS_URL).keys(f"*{merchant.account_id}*")
            assert stored, "the limiter kept nothing in Redis"
        finally:
            other.close()
    finally:
        sibling.stop()
