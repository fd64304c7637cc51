"""Pydantic I/O of GET /api/v1/payment/transactions (seed 000) and its wire rendering."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kassa.core.clock import iso

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class TransactionsQuery(BaseModel):
    # Query strings are text: "limit=10" is parsed as an integer (lax), "10.5" is refused.
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["payment", "refund", "deposit", "collection", "all"] = "all"
    status: Literal["completed", "pending", "failed", "all"] = "all"
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Results per page")
    starting_after: str | None = Field(None, min_length=1, max_length=40,
                                       description="Cursor: a transaction_id from a page")


class Transaction(BaseModel):
    transaction_id: str
    type: Literal["payment", "refund", "deposit", "collection"]
    order_id: str
    refund_id: str | None
    task_id: str | None
    amount: int
    currency: str
    status: Literal["completed", "pending", "failed"]
    description: str
    created_at: str


class TransactionPage(BaseModel):
    data: list[Transaction]
    has_more: bool
    next_cursor: str | None


def render_transaction(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "transaction_id": row["transaction_id"],
        "type": row["type"],
        "order_id": row["order_id"],
        "refund_id": row["refund_id"],
        "task_id": row["task_id"],
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "description": row["description"],
        "created_at": iso(row["created_at"]),
    }
