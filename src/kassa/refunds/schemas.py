"""Pydantic I/O of POST /api/v1/payment/refund (seed 000) and its wire rendering."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt, StrictStr, model_validator

from kassa.core import ids
from kassa.core.clock import iso
from kassa.payments.schemas import StrictModel

RefundReason = Literal["task_cancelled", "quality_issue", "task_failed", "duplicate_payment",
                       "other"]
RefundMethod = Literal["original", "balance"]
DETAIL_MAX = 500

DESCRIPTIONS = {
    "task_cancelled": "Refund for cancelled task",
    "task_failed": "Refund for failed task",
    "quality_issue": "Refund for quality issue",
    "duplicate_payment": "Refund for duplicate payment",
    "other": "Refund",
}


class RefundRequest(StrictModel):
    """Full refund unless `amount` is given; `other` needs a `reason_detail`."""

    order_id: StrictStr = Field(min_length=1, max_length=64)
    amount: StrictInt | None = Field(None, gt=0,
                                     description="Partial refund in cents (default: full)")
    reason: RefundReason
    reason_detail: StrictStr | None = Field(None, min_length=1, max_length=DETAIL_MAX,
                                            description="Details (required for reason other)")
    refund_method: RefundMethod = "original"
    test_outcome: Literal["succeeded", "failed"] | None = Field(
        None, description="Sandbox only: how the channel will answer an original refund")

    @model_validator(mode="after")
    def _detail_for_other(self) -> RefundRequest:
        if self.reason == "other" and self.reason_detail is None:
            raise ValueError("reason_detail is required when reason is other")
        return self


class TaskCloseRequest(StrictModel):
    """POST /api/v1/tasks/{id}/fail and /cancel: how to refund what is still in escrow."""

    refund_method: RefundMethod | None = Field(
        None, description="Default: original where the payment's channel takes refunds, "
                          "else balance (live USDT and bank transfers)")
    reason_detail: StrictStr | None = Field(None, min_length=1, max_length=DETAIL_MAX)
    test_outcome: Literal["succeeded", "failed"] | None = Field(
        None, description="Sandbox only: how the channel will answer the refund")


class Refund(BaseModel):
    refund_id: str
    order_id: str
    task_id: str | None
    transaction_id: str
    amount: int
    currency: str
    amount_cny: int
    status: Literal["processing", "completed", "failed"]
    refund_method: str
    reason: str
    reason_detail: str | None
    estimated_arrival: str
    created_at: str
    completed_at: str | None
    failure_code: str | None


def render_refund(refund: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "refund_id": refund["refund_id"],
        "order_id": refund["order_id"],
        "task_id": refund["task_id"],
        "transaction_id": ids.derived_transaction_id(refund["refund_id"]),
        "amount": refund["amount"],
        "currency": refund["currency"],
        "amount_cny": refund["amount_cny"],
        "status": refund["status"],
        # The seed shows the method the money goes back through ("alipay"), or "balance".
        "refund_method": (refund["payment_method"] if refund["refund_method"] == "original"
                          else "balance"),
        "reason": refund["reason"],
        "reason_detail": refund["reason_detail"],
        "estimated_arrival": iso(refund["estimated_arrival"]),
        "created_at": iso(refund["created_at"]),
        "completed_at": iso(refund["completed_at"]),
        "failure_code": refund["failure_code"],
    }
