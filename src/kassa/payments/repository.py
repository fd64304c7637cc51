"""All SQL about payment orders and the daily volume counted against limits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kassa.db.tables import daily_volume, orders

_insert = insert(orders)


def insert_order(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(_insert, values)


def get_order(conn: Connection, *, account_id: str, mode: str, order_id: str
              ) -> RowMapping | None:
    stmt = select(orders).where(orders.c.order_id == order_id, orders.c.account_id == account_id,
                                orders.c.mode == mode)
    return conn.execute(stmt).mappings().first()


def get_order_by_id(conn: Connection, order_id: str) -> RowMapping | None:
    return conn.execute(select(orders).where(orders.c.order_id == order_id)).mappings().first()


def live_order_status(conn: Connection, order_id: str) -> str | None:
    value = conn.execute(select(orders.c.status).where(orders.c.order_id == order_id)).scalar()
    return None if value is None else str(value)


def transition(conn: Connection, *, order_id: str, sources: Iterable[str], target: str,
               now: datetime, **values: Any) -> RowMapping | None:
    """Move an order to `target` only if it is in one of `sources`; None if someone else won.

    Bumps the order's event sequence in the same statement.
    """
    stmt = (
        update(orders)
        .where(orders.c.order_id == order_id, orders.c.status.in_(list(sources)))
        .values(status=target, updated_at=now, event_seq=orders.c.event_seq + 1, **values)
        .returning(*orders.c)
    )
    return conn.execute(stmt).mappings().first()


def reserve_daily_volume(conn: Connection, *, account_id: str, mode: str, day: str,
                         amount_cny: int, limit: int) -> bool:
    """Count `amount_cny` against the day's limit in one statement; False if it would exceed."""
    if amount_cny > limit:
        return False
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    ins = mod.insert(daily_volume).values(account_id=account_id, mode=mode, day=day,
                                          amount_cny=amount_cny)
    stmt = ins.on_conflict_do_update(
        index_elements=[daily_volume.c.account_id, daily_volume.c.mode, daily_volume.c.day],
        set_={"amount_cny": daily_volume.c.amount_cny + ins.excluded.amount_cny},
        where=(daily_volume.c.amount_cny + ins.excluded.amount_cny) <= limit,
    ).returning(daily_volume.c.amount_cny)
    return conn.execute(stmt).first() is not None


def release_daily_volume(conn: Connection, *, account_id: str, mode: str, day: str,
                         amount_cny: int) -> None:
    conn.execute(
        update(daily_volume)
        .where(daily_volume.c.account_id == account_id, daily_volume.c.mode == mode,
               daily_volume.c.day == day, daily_volume.c.amount_cny >= amount_cny)
        .values(amount_cny=daily_volume.c.amount_cny - amount_cny)
    )


def daily_volume_used(conn: Connection, *, account_id: str, mode: str, day: str) -> int:
    stmt = select(daily_volume.c.amount_cny).where(
        daily_volume.c.account_id == account_id, daily_volume.c.mode == mode,
        daily_volume.c.day == day)
    return int(conn.execute(stmt).scalar() or 0)
