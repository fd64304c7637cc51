"""The HTTP edge: the fast route table in front of Starlette, and clients that hang up."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from tests.support.factories import new_task
from tests.support.harness import KassaServer, Merchant


def test_client_hanging_up_mid_body_is_not_an_error(server: KassaServer, merchant: Merchant,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    head = (f"POST /api/v1/payment/create HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {merchant.test_key}\r\nX-API-Secret: {merchant.test_secret}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + b'{"task_id": "')
        time.sleep(0.2)
    time.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    new_task(merchant.test, title="After")


def test_routes_outside_the_fast_table_still_answer(server: KassaServer, merchant: Merchant
                                                    ) -> None:
    # Wrong method on an API path falls through to Starlette: 405 with Allow.
    r = merchant.test.get("/api/v1/payment/create")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in r.headers["allow"]
    # Path parameters are matched by the fast table too.
    r = merchant.test.get("/api/v1/tasks/no-such-task")
    assert r.status_code == 404 and r.json()["error"]["code"] == "task_not_found"
    r = merchant.test.get("/api/v1/tasks/a/b")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert merchant.test.get("/healthz").json() == {"status": "ok"}
