"""Pydantic I/O of the task endpoints (SPEC §4) and their wire rendering."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr, field_validator

from kassa.core.clock import iso
from kassa.payments.schemas import (
    Currency,
    PaymentMethod,
    PaymentOrder,
    StrictModel,
    check_metadata,
)
from kassa.refunds.schemas import Refund

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
# Kassa's own ids (ord_…, ref_…) name objects in the same event stream: a task may not
# borrow their prefixes.
RESERVED_ID_PREFIXES = ("ord_", "ref_", "txn_", "evt_", "acc_")
WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class CreateTaskRequest(StrictModel):
    """POST /api/v1/tasks: the task and, unless dispatch is false, its payment order."""

    title: StrictStr = Field(min_length=1, max_length=200)
    amount: StrictInt = Field(gt=0, description="Task cost in cents")
    currency: Currency
    payment_method: PaymentMethod | None = Field(None, description="Required when dispatching")
    return_url: StrictStr | None = Field(None, max_length=2048,
                                         description="Required when dispatching")
    callback_url: StrictStr | None = Field(None, max_length=2048)
    metadata: dict[str, Any] | None = Field(None, description="Custom metadata (max 1KB JSON)")
    expires_in_seconds: StrictInt | None = Field(None, ge=300, le=86_400)
    dispatch: StrictBool = Field(True, description="Create the payment order now")
    task_id: StrictStr | None = Field(None, pattern=TASK_ID_PATTERN,
                                      description="Your own id for the task (default: a UUID)")
    test_card: StrictStr | None = Field(None, max_length=40,
                                        description="Sandbox only: one of the seed's test cards")

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("task_id")
    @classmethod
    def _not_a_kassa_id(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(RESERVED_ID_PREFIXES):
            raise ValueError(f"task_id may not start with {', '.join(RESERVED_ID_PREFIXES)}")
        return value


class ApproveRequest(StrictModel):
    """POST /api/v1/tasks/{id}/approve: release the escrow to this worker."""

    worker_id: StrictStr = Field(pattern=WORKER_ID_PATTERN,
                                 description="Your id for the worker who did the task")


class Task(BaseModel):
    task_id: str
    title: str
    amount: int
    currency: str
    status: Literal["open", "approved", "failed", "cancelled"]
    worker_id: str | None
    closed_at: str | None
    payment_method: str | None
    return_url: str | None
    callback_url: str | None
    metadata: dict[str, Any] | None
    order_id: str | None
    payment_status: str | None
    created_at: str
    updated_at: str


class TaskCreated(BaseModel):
    task: Task
    payment: PaymentOrder | None


class Release(BaseModel):
    worker_id: str
    total_cents: int
    worker_payout_cents: int
    platform_fee_cents: int
    currency: str
    transaction_id: str
    released_at: str


class TaskApproved(BaseModel):
    task: Task
    payment: PaymentOrder
    release: Release


class TaskClosed(BaseModel):
    """After fail or cancel: the refund of what was in escrow, if anything was."""

    task: Task
    payment: PaymentOrder | None
    refund: Refund | None


def render_task(task: Mapping[Any, Any], payment_status: str | None) -> dict[str, Any]:
    return {
        "task_id": task["task_id"],
        "title": task["title"],
        "amount": task["amount"],
        "currency": task["currency"],
        "status": task["status"],
        "worker_id": task["worker_id"],
        "closed_at": iso(task["closed_at"]),
        "payment_method": task["payment_method"],
        "return_url": task["return_url"],
        "callback_url": task["callback_url"],
        "metadata": orjson.loads(task["metadata_json"]) if task["metadata_json"] else None,
        "order_id": task["current_order_id"],
        "payment_status": payment_status,
        "created_at": iso(task["created_at"]),
        "updated_at": iso(task["updated_at"]),
    }
