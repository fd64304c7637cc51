"""Live mode (SPEC §1, §7, §8): no upstream is configured, so live payments are
unavailable; test cards are test-only; live callback URLs are https and never
internal (SSRF); live and test data never mix."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.factories import RETURN_URL, assert_error, new_task, pay
from tests.support.harness import KassaServer, Merchant


def create_task(client: httpx.Client, task_id: str, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"task_id": task_id, "title": "Live task", "amount": 5000,
                            "currency": "CNY", **fields}
    return client.post("/api/v1/tasks", json=body)


def assert_no_task(client: httpx.Client, task_id: str) -> None:
    assert_error(client.get(f"/api/v1/tasks/{task_id}"), 404, "task_not_found")


@pytest.mark.parametrize("method", ["alipay", "wechat", "card", "bank_transfer"])
def test_live_payment_without_upstream_is_unavailable(server: KassaServer,
                                                      merchant: Merchant, method: str) -> None:
    task_id = f"live-{method}"
    r = create_task(merchant.live, task_id, payment_method=method, return_url=RETURN_URL)
    error = assert_error(r, 400, "payment_method_unavailable")
    assert error["payment_method"] == method
    # Task and order went together: nothing was created.
    assert_no_task(merchant.live, task_id)


def test_live_payment_create_without_upstream_is_unavailable(server: KassaServer,
                                                             merchant: Merchant) -> None:
    new_task(merchant.live, task_id="live-unpaid")
    r = pay(merchant.live, "live-unpaid")
    assert_error(r, 400, "payment_method_unavailable")
    task = merchant.live.get("/api/v1/tasks/live-unpaid").json()
    assert (task["order_id"], task["payment_status"]) == (None, None)


def test_test_card_is_refused_with_a_live_key(server: KassaServer, merchant: Merchant) -> None:
    r = create_task(merchant.live, "live-card", payment_method="card", return_url=RETURN_URL,
                    test_card="4242424242424242")
    error = assert_error(r, 400, "validation_error")
    assert [d["field"] for d in error["details"]] == ["test_card"]
    assert "4242424242424242" not in r.text
    assert_no_task(merchant.live, "live-card")

    new_task(merchant.live, task_id="live-card-later")
    r = pay(merchant.live, "live-card-later", payment_method="card",
            test_card="4242424242424242")
    error = assert_error(r, 400, "validation_error")
    assert [d["field"] for d in error["details"]] == ["test_card"]
    assert merchant.live.get("/api/v1/tasks/live-card-later").json()["order_id"] is None


def test_live_callback_url_must_be_https(server: KassaServer, merchant: Merchant) -> None:
    r = create_task(merchant.live, "live-http", dispatch=False,
                    callback_url="http://merchant.example.com/cb")
    error = assert_error(r, 400, "validation_error")
    assert [d["field"] for d in error["details"]] == ["callback_url"]
    assert_no_task(merchant.live, "live-http")
    # The same URL over https is fine: the refusal was about the scheme.
    r = create_task(merchant.live, "live-https", dispatch=False,
                    callback_url="https://merchant.example.com/cb")
    assert r.status_code == 201, r.text
    assert r.json()["task"]["callback_url"] == "https://merchant.example.com/cb"


INTERNAL_URLS = [
    "https://127.0.0.1/",
    "https://[::1]/",
    "https://2130706433/",  # 127.0.0.1 as one decimal number
    "https://0x7f000001/",  # ... in hex
    "https://0177.0.0.1/",  # ... with an octal first part
    "https://127.1/",  # ... short form
    "https://10.0.0.1/",
    "https://192.168.1.1:8443/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:a9fe:a9fe]/",  # 169.254.169.254, IPv4-mapped in hex
    "https://0.0.0.0/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://metadata.google.internal/",
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_live_callback_url_must_not_be_internal(server: KassaServer, merchant: Merchant,
                                                url: str) -> None:
    r = create_task(merchant.live, "live-ssrf", dispatch=False, callback_url=url)
    error = assert_error(r, 400, "validation_error")
    assert [d["field"] for d in error["details"]] == ["callback_url"]
    assert_no_task(merchant.live, "live-ssrf")


def test_test_mode_allows_http_and_loopback_callbacks(server: KassaServer,
                                                      merchant: Merchant) -> None:
    r = create_task(merchant.test, "test-loopback", dispatch=False,
                    callback_url="http://127.0.0.1:9/cb")
    assert r.status_code == 201, r.text
    assert r.json()["task"]["callback_url"] == "http://127.0.0.1:9/cb"
    task = merchant.test.get("/api/v1/tasks/test-loopback").json()
    assert task["callback_url"] == "http://127.0.0.1:9/cb"


def test_live_and_test_data_never_mix(server: KassaServer, merchant: Merchant) -> None:
    r = create_task(merchant.test, "shared-id", payment_method="alipay", return_url=RETURN_URL)
    assert r.status_code == 201, r.text
    order_id = r.json()["payment"]["order_id"]
    assert merchant.test.get("/api/v1/payment/query",
                             params={"order_id": order_id}).status_code == 200
    r = merchant.live.get("/api/v1/payment/query", params={"order_id": order_id})
    error = assert_error(r, 404, "order_not_found")
    assert error["order_id"] == order_id
    assert_no_task(merchant.live, "shared-id")
    # The live side may use the same task id for its own, separate task.
    r = create_task(merchant.live, "shared-id", dispatch=False, title="Live twin")
    assert r.status_code == 201, r.text
    assert merchant.live.get("/api/v1/tasks/shared-id").json()["title"] == "Live twin"
    test_task = merchant.test.get("/api/v1/tasks/shared-id").json()
    assert (test_task["title"], test_task["order_id"]) == ("Live task", order_id)
