"""Small builders and checks shared by the API tests: tasks, payment bodies, errors."""

from __future__ import annotations

from typing import Any

import httpx

RETURN_URL = "https://merchant.example.com/paid"
MISSING: Any = object()  # as an override in pay_body: leave the field out


def new_task(client: httpx.Client, *, amount: int = 5000, currency: str = "CNY",
             title: str = "Test task", task_id: str | None = None) -> str:
    """An undispatched task (no order yet), created through the API; returns its id."""
    body: dict[str, Any] = {"title": title, "amount": amount, "currency": currency,
                            "dispatch": False}
    if task_id is not None:
        body["task_id"] = task_id
    r = client.post("/api/v1/tasks", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["task"]["task_id"])


def pay_body(task_id: str, /, **overrides: Any) -> dict[str, Any]:
    """A valid payment/create body for a 5000-cent CNY alipay order; overrides win, and an
    override of MISSING removes the field."""
    body = {"task_id": task_id, "amount": 5000, "currency": "CNY", "payment_method": "alipay",
            "return_url": RETURN_URL, **overrides}
    return {k: v for k, v in body.items() if v is not MISSING}


def pay(client: httpx.Client, task_id: str, /, amount: int = 5000, **fields: Any
        ) -> httpx.Response:
    """POST /api/v1/payment/create with pay_body(task_id, amount=amount, **fields)."""
    return client.post("/api/v1/payment/create", json=pay_body(task_id, amount=amount, **fields))


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The seed's error format, as JSON, with exactly one top-level key; returns the error
    object."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"], body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    return error
