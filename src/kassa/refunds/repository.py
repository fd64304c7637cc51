"""All SQL about refunds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from kassa.db.prepared import Prepared
from kassa.db.tables import refunds

_insert = Prepared(insert(refunds))
_get = Prepared(select(refunds).where(refunds.c.refund_id == bindparam("refund_id")))
_first_for_order = Prepared(
    select(refunds.c.refund_id, refunds.c.created_at)
    .where(refunds.c.order_id == bindparam("order_id"), refunds.c.status != "failed")
    .order_by(refunds.c.created_at, refunds.c.refund_id).limit(1))
_processing = Prepared(
    select(func.count()).select_from(refunds)
    .where(refunds.c.order_id == bindparam("order_id"), refunds.c.status == "processing"))
_settle = Prepared(
    update(refunds)
    .where(refunds.c.refund_id == bindparam("k_refund"), refunds.c.status == "processing")
    .values(status=bindparam("k_status"), failure_code=bindparam("k_failure"),
            completed_at=bindparam("k_completed"), updated_at=bindparam("k_now"),
            event_seq=refunds.c.event_seq + 1)
    .returning(*refunds.c))


def insert_refund(conn: Connection, values: dict[str, Any]) -> None:
    _insert.run(conn, {"upstream_refund_no": None, **values})


def get_refund(conn: Connection, refund_id: str) -> dict[str, Any] | None:
    return _get.first(conn, {"refund_id": refund_id})


_by_merchant_no = Prepared(select(refunds).where(
    refunds.c.order_id == bindparam("order_id"),
    refunds.c.merchant_refund_no == bindparam("merchant_refund_no")))


def by_merchant_refund_no(conn: Connection, *, order_id: str, merchant_refund_no: str
                          ) -> dict[str, Any] | None:
    return _by_merchant_no.first(conn, {"order_id": order_id,
                                        "merchant_refund_no": merchant_refund_no})


def first_refund(conn: Connection, order_id: str) -> dict[str, Any] | None:
    """The order's first refund that did not fail (already_refunded names it)."""
    return _first_for_order.first(conn, {"order_id": order_id})


def processing_count(conn: Connection, order_id: str) -> int:
    return int(_processing.scalar(conn, {"order_id": order_id}) or 0)


def settle(conn: Connection, *, refund_id: str, status: str, failure_code: str | None,
           now: datetime) -> dict[str, Any] | None:
    """processing -> completed/failed, only if still processing; None if someone else won."""
    return _settle.first(conn, {
        "k_refund": refund_id, "k_status": status, "k_failure": failure_code,
        "k_completed": now if status == "completed" else None, "k_now": now})


def set_upstream_refund_no(conn: Connection, *, refund_id: str, upstream_refund_no: str) -> None:
    conn.execute(update(refunds).where(refunds.c.refund_id == refund_id).values(
        upstream_refund_no=upstream_refund_no))


def refunds_of_order(conn: Connection, order_id: str) -> list[dict[str, Any]]:
    """An order's refunds, oldest first (the console's order page)."""
    stmt = (select(refunds).where(refunds.c.order_id == order_id)
            .order_by(refunds.c.created_at, refunds.c.refund_id))
    return [dict(r) for r in conn.execute(stmt).mappings()]
