"""All SQL about the transaction history (one row per payment, deposit and refund)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, tuple_, update

from kassa.db.prepared import Prepared
from kassa.db.tables import transaction_history as th

_insert = Prepared(insert(th))
_set_status = Prepared(
    update(th).where(th.c.transaction_id == bindparam("k_id"))
    .values(status=bindparam("k_status"), updated_at=bindparam("k_now")))
_position = Prepared(select(th.c.created_at).where(
    th.c.transaction_id == bindparam("transaction_id"), th.c.account_id == bindparam("account_id"),
    th.c.mode == bindparam("mode")))


def add(conn: Connection, row: dict[str, Any]) -> None:
    _insert.run(conn, row)


def set_status(conn: Connection, *, transaction_id: str, status: str, now: datetime) -> None:
    _set_status.run(conn, {"k_id": transaction_id, "k_status": status, "k_now": now})


def position(conn: Connection, *, account_id: str, mode: str, transaction_id: str
             ) -> datetime | None:
    """Where a cursor stands: the created_at of the merchant's own row with that id."""
    value = _position.scalar(conn, {"transaction_id": transaction_id, "account_id": account_id,
                                    "mode": mode})
    return value  # type: ignore[no-any-return]


def page(conn: Connection, *, account_id: str, mode: str, type_: str | None,
         status: str | None, after: tuple[datetime, str] | None, limit: int
         ) -> list[dict[str, Any]]:
    """Up to `limit` rows, newest first, strictly after the cursor position.

    The order (created_at, transaction_id) is unique and never changes for a row, so
    paging neither repeats nor skips a row while new ones arrive (they sort first)."""
    stmt = select(th).where(th.c.account_id == account_id, th.c.mode == mode)
    if type_ is not None:
        stmt = stmt.where(th.c.type == type_)
    if status is not None:
        stmt = stmt.where(th.c.status == status)
    if after is not None:
        stmt = stmt.where(tuple_(th.c.created_at, th.c.transaction_id) < tuple_(
            bindparam("c_at", after[0], type_=th.c.created_at.type),
            bindparam("c_id", after[1])))
    stmt = stmt.order_by(th.c.created_at.desc(), th.c.transaction_id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]
