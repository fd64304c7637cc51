"""All SQL about the transaction history (one row per payment, deposit and refund)."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, insert, select, tuple_, update

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


def _page_statement(by_type: bool, by_status: bool, after: bool) -> Prepared:
    stmt = select(th).where(th.c.account_id == bindparam("account_id"),
                            th.c.mode == bindparam("mode"))
    if by_type:
        stmt = stmt.where(th.c.type == bindparam("type"))
    if by_status:
        stmt = stmt.where(th.c.status == bindparam("status"))
    if after:
        stmt = stmt.where(tuple_(th.c.created_at, th.c.transaction_id) < tuple_(
            bindparam("c_at", type_=th.c.created_at.type), bindparam("c_id")))
    return Prepared(stmt.order_by(th.c.created_at.desc(), th.c.transaction_id.desc())
                    .limit(bindparam("n", type_=Integer)))


# One prepared statement per combination of filters (eight in all).
_pages = {key: _page_statement(*key) for key in itertools.product((False, True), repeat=3)}


def page(conn: Connection, *, account_id: str, mode: str, type_: str | None,
         status: str | None, after: tuple[datetime, str] | None, limit: int
         ) -> list[dict[str, Any]]:
    """Up to `limit` rows, newest first, strictly after the cursor position.

    The order (created_at, transaction_id) is unique and never changes for a row, so
    paging neither repeats nor skips a row while new ones arrive (they sort first)."""
    params: dict[str, Any] = {"account_id": account_id, "mode": mode, "type": type_,
                              "status": status, "n": limit}
    if after is not None:
        params["c_at"], params["c_id"] = after
    stmt = _pages[(type_ is not None, status is not None, after is not None)]
    return stmt.all(conn, params)
