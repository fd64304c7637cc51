"""All SQL about tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update

from kassa.db.tables import orders, tasks

_insert = insert(tasks)


def insert_task(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(_insert, values)


def _key(account_id: str, mode: str, task_id: str) -> tuple[Any, ...]:
    return (tasks.c.account_id == account_id, tasks.c.mode == mode, tasks.c.task_id == task_id)


def get_task(conn: Connection, *, account_id: str, mode: str, task_id: str,
             for_update: bool = False) -> RowMapping | None:
    stmt = select(tasks).where(*_key(account_id, mode, task_id))
    if for_update:
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def get_task_with_payment_status(conn: Connection, *, account_id: str, mode: str,
                                 task_id: str) -> tuple[RowMapping, str | None] | None:
    stmt = (
        select(tasks, orders.c.status.label("payment_status"))
        .outerjoin(orders, orders.c.order_id == tasks.c.current_order_id)
        .where(*_key(account_id, mode, task_id))
    )
    row = conn.execute(stmt).mappings().first()
    if row is None:
        return None
    return row, row["payment_status"]


def task_exists(conn: Connection, *, account_id: str, mode: str, task_id: str) -> bool:
    stmt = select(tasks.c.task_id).where(*_key(account_id, mode, task_id))
    return conn.execute(stmt).first() is not None


def set_current_order(conn: Connection, *, account_id: str, mode: str, task_id: str,
                      order_id: str, now: datetime) -> None:
    conn.execute(update(tasks).where(*_key(account_id, mode, task_id))
                 .values(current_order_id=order_id, updated_at=now))


def title_of(conn: Connection, *, account_id: str, mode: str, task_id: str) -> str | None:
    stmt = select(tasks.c.title).where(*_key(account_id, mode, task_id))
    value = conn.execute(stmt).scalar()
    return None if value is None else str(value)
