"""Recording and listing the merchant's transaction history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.core.states import HISTORY_STATUS
from kassa.errors import ValidationError
from kassa.history import repository
from kassa.history.schemas import TransactionsQuery, render_transaction


def record(conn: Connection, *, transaction_id: str, type_: str, account_id: str, mode: str,
           order_id: str, refund_id: str | None, task_id: str | None, amount: int,
           currency: str, status: str, description: str, now: datetime) -> None:
    """A new history row, in the caller's transaction; `status` is the object's own."""
    repository.add(conn, {
        "transaction_id": transaction_id, "account_id": account_id, "mode": mode,
        "type": type_, "order_id": order_id, "refund_id": refund_id, "task_id": task_id,
        "amount": amount, "currency": currency, "status": HISTORY_STATUS[status],
        "description": description[:300], "created_at": now, "updated_at": now,
    })


def update_status(conn: Connection, *, transaction_id: str, status: str, now: datetime
                  ) -> None:
    repository.set_status(conn, transaction_id=transaction_id, status=HISTORY_STATUS[status],
                          now=now)


def list_transactions(conn: Connection, *, principal: Principal, query: TransactionsQuery
                      ) -> dict[str, Any]:
    after = None
    if query.starting_after is not None:
        at = repository.position(conn, account_id=principal.account_id, mode=principal.mode,
                                 transaction_id=query.starting_after)
        if at is None:
            raise ValidationError(
                f"starting_after: no transaction {query.starting_after}",
                details=[{"field": "starting_after", "message": "Unknown transaction_id"}])
        after = (at, query.starting_after)
    rows = repository.page(
        conn, account_id=principal.account_id, mode=principal.mode,
        type_=None if query.type == "all" else query.type,
        status=None if query.status == "all" else query.status,
        after=after, limit=query.limit + 1)
    has_more = len(rows) > query.limit
    rows = rows[:query.limit]
    return {
        "data": [render_transaction(r) for r in rows],
        "has_more": has_more,
        "next_cursor": rows[-1]["transaction_id"] if has_more else None,
    }
