"""All SQL about seed 004's Payments (one row per payment order, see tables.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select

from kassa.db.prepared import Prepared
from kassa.db.tables import payment_resources as pr
from kassa.db.tables import upstream_attempts

_get = Prepared(select(pr).where(pr.c.payment_id == bindparam("payment_id")))
_for_order = Prepared(select(pr).where(pr.c.order_id == bindparam("order_id")))
_trade_no = Prepared(select(upstream_attempts.c.trade_no).where(
    upstream_attempts.c.reference == bindparam("reference")))


def insert_payment(conn: Connection, *, account_id: str, mode: str, order_id: str,
                   payer: str | None, subject: str, description: str | None,
                   now: datetime) -> dict[str, Any]:
    """A new Payment for an order; returns its row, id included. A second one for the same
    order breaks the unique constraint (IntegrityError: the edge runs the request again,
    and it then finds the first)."""
    row = conn.execute(insert(pr).values(
        account_id=account_id, mode=mode, order_id=order_id, payer=payer, subject=subject,
        description=description, created_at=now).returning(*pr.c)).mappings().one()
    return dict(row)


def get_payment(conn: Connection, *, account_id: str, mode: str, payment_id: int
                ) -> dict[str, Any] | None:
    """The merchant's own Payment in that mode, else None (by primary key, ownership
    checked here, as payments.repository.get_order does)."""
    payment = _get.first(conn, {"payment_id": payment_id})
    if payment is None or payment["account_id"] != account_id or payment["mode"] != mode:
        return None
    return payment


def payment_for_order(conn: Connection, *, order_id: str) -> dict[str, Any] | None:
    return _for_order.first(conn, {"order_id": order_id})


def trade_no(conn: Connection, *, reference: str) -> str | None:
    """The upstream's own number for one of Kassa's upstream attempts, if it gave one."""
    value = _trade_no.scalar(conn, {"reference": reference})
    return value  # type: ignore[no-any-return]
