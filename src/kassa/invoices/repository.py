"""All SQL about invoices: the paid order with its merchant's name and its task's worker,
and the channel fee the ledger took when a collection was paid."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, func, select

from kassa.core.ledger import PLATFORM_REVENUE
from kassa.db.tables import accounts, ledger_postings, orders, tasks


def invoice_order(conn: Connection, *, account_id: str, mode: str, order_id: str
                  ) -> dict[str, Any] | None:
    """The merchant's own order in that mode, with `merchant_name` and (a task order that
    was approved) `worker_id`; else None. By primary key, ownership checked here, as
    payments.repository.get_order does."""
    stmt = (
        select(orders, accounts.c.name.label("merchant_name"),
               tasks.c.worker_id.label("worker_id"))
        .join(accounts, accounts.c.account_id == orders.c.account_id)
        .outerjoin(tasks, and_(tasks.c.account_id == orders.c.account_id,
                               tasks.c.mode == orders.c.mode,
                               tasks.c.task_id == orders.c.task_id))
        .where(orders.c.order_id == order_id)
    )
    row = conn.execute(stmt).mappings().first()
    if row is None or row["account_id"] != account_id or row["mode"] != mode:
        return None
    return dict(row)


def fee_posted(conn: Connection, *, transaction_id: str) -> int:
    """What one ledger transaction (a collection's payment) credited to platform revenue:
    the channel fee as it was charged, before any refund gave some of it back."""
    stmt = select(func.coalesce(func.sum(ledger_postings.c.amount), 0)).where(
        ledger_postings.c.transaction_id == transaction_id,
        ledger_postings.c.ledger_account == PLATFORM_REVENUE)
    return int(conn.execute(stmt).scalar_one())
