"""All SQL about payment orders and the daily volume counted against limits.
Hot statements are prepared once (kassa.db.prepared)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from kassa.db.prepared import Prepared
from kassa.db.tables import daily_volume, orders

_insert = Prepared(insert(orders))
_get = Prepared(select(orders).where(orders.c.order_id == bindparam("order_id")))
_get_for_update = Prepared(
    select(orders).where(orders.c.order_id == bindparam("order_id")).with_for_update())
_status = Prepared(select(orders.c.status).where(orders.c.order_id == bindparam("order_id")))
_DAY_KEY = [daily_volume.c.account_id, daily_volume.c.mode, daily_volume.c.day]


def _reserve_statement(mod: Any) -> Prepared:
    ins = mod.insert(daily_volume)  # values come from the column-named parameters
    return Prepared(ins.on_conflict_do_update(
        index_elements=_DAY_KEY,
        set_={"amount_cny": daily_volume.c.amount_cny + ins.excluded.amount_cny},
        where=(daily_volume.c.amount_cny + ins.excluded.amount_cny) <= bindparam("limit"),
    ).returning(daily_volume.c.amount_cny))


_reserve = {"sqlite": _reserve_statement(sqlite), "postgresql": _reserve_statement(postgresql)}
_release = Prepared(
    update(daily_volume)
    .where(daily_volume.c.account_id == bindparam("k_account"),
           daily_volume.c.mode == bindparam("k_mode"), daily_volume.c.day == bindparam("k_day"),
           daily_volume.c.amount_cny >= bindparam("k_amount"))
    .values(amount_cny=daily_volume.c.amount_cny - bindparam("k_amount"))
)
_used = Prepared(select(daily_volume.c.amount_cny).where(
    daily_volume.c.account_id == bindparam("account_id"),
    daily_volume.c.mode == bindparam("mode"), daily_volume.c.day == bindparam("day")))

_transitions: dict[tuple[frozenset[str], str, tuple[str, ...]], Prepared] = {}


_NEW_ORDER = {"purpose": "payment", "refunded_cents": 0, "refunded_cny": 0, "released_cents": 0,
              "released_amount": 0,
              "platform_fee_cny": 0, "pay_url": None, "qr_code": None, "upstream_ref": None}


def insert_order(conn: Connection, values: dict[str, Any]) -> None:
    _insert.run(conn, {**_NEW_ORDER, **values})


def get_order(conn: Connection, *, account_id: str, mode: str, order_id: str,
              for_update: bool = False) -> dict[str, Any] | None:
    # By primary key alone, ownership checked here: with the account and mode in the WHERE
    # a planner without statistics (a fresh database) picked the (account, mode, created_at)
    # index and read every order of the merchant.
    order = (_get_for_update if for_update else _get).first(conn, {"order_id": order_id})
    if order is None or order["account_id"] != account_id or order["mode"] != mode:
        return None
    return order


def get_order_by_id(conn: Connection, order_id: str, *, for_update: bool = False
                    ) -> dict[str, Any] | None:
    """By id alone (jobs). With for_update the row stays locked until the transaction ends:
    every change of an order's money (refund, release) takes this lock first."""
    return (_get_for_update if for_update else _get).first(conn, {"order_id": order_id})


_updates: dict[tuple[str, ...], Prepared] = {}


def update_order(conn: Connection, order_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """Write new values to an order the caller holds locked; returns the whole row."""
    keys = tuple(sorted(values))
    stmt = _updates.get(keys)
    if stmt is None:
        stmt = _updates[keys] = Prepared(
            update(orders).where(orders.c.order_id == bindparam("k_order"))
            .values(**{k: bindparam(f"v_{k}") for k in keys}).returning(*orders.c))
    row = stmt.first(conn, {"k_order": order_id, **{f"v_{k}": v for k, v in values.items()}})
    assert row is not None, f"order {order_id} is locked by the caller, so it exists"
    return row


def live_order_status(conn: Connection, order_id: str) -> str | None:
    value = _status.scalar(conn, {"order_id": order_id})
    return None if value is None else str(value)


def _transition_statement(sources: frozenset[str], target: str, keys: tuple[str, ...]
                          ) -> Prepared:
    stmt = (
        update(orders)
        .where(orders.c.order_id == bindparam("k_order"),
               or_(*(orders.c.status == s for s in sorted(sources))))
        .values(status=target, updated_at=bindparam("k_now"),
                event_seq=orders.c.event_seq + 1,
                **{k: bindparam(f"v_{k}") for k in keys})
        .returning(*orders.c)
    )
    return Prepared(stmt)


def transition(conn: Connection, *, order_id: str, sources: Iterable[str], target: str,
               now: datetime, **values: Any) -> dict[str, Any] | None:
    """Move an order to `target` only if it is in one of `sources`; None if someone else won.

    Bumps the order's event sequence in the same statement.
    """
    key = (frozenset(sources), target, tuple(sorted(values)))
    stmt = _transitions.get(key)
    if stmt is None:
        stmt = _transitions[key] = _transition_statement(*key)
    params = {"k_order": order_id, "k_now": now, **{f"v_{k}": v for k, v in values.items()}}
    return stmt.first(conn, params)


def reserve_daily_volume(conn: Connection, *, account_id: str, mode: str, day: str,
                         amount_cny: int, limit: int) -> bool:
    """Count `amount_cny` against the day's limit in one statement; False if it would exceed."""
    if amount_cny > limit:
        return False
    params = {"account_id": account_id, "mode": mode, "day": day, "amount_cny": amount_cny,
              "limit": limit}
    return _reserve[conn.dialect.name].first(conn, params) is not None


def release_daily_volume(conn: Connection, *, account_id: str, mode: str, day: str,
                         amount_cny: int) -> None:
    _release.run(conn, {"k_account": account_id, "k_mode": mode, "k_day": day,
                        "k_amount": amount_cny})


def daily_volume_used(conn: Connection, *, account_id: str, mode: str, day: str) -> int:
    return int(_used.scalar(conn, {"account_id": account_id, "mode": mode, "day": day}) or 0)


def list_orders(conn: Connection, *, account_id: str, mode: str, statuses: Iterable[str] | None,
                after: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` orders of an account's mode, newest first, strictly after the cursor
    position (created_at, order_id): paging neither repeats nor skips an order while new
    ones arrive. `statuses` None: every status."""
    c = orders.c
    stmt = select(orders).where(c.account_id == account_id, c.mode == mode)
    if statuses is not None:
        stmt = stmt.where(c.status.in_(list(statuses)))
    if after is not None:
        stmt = stmt.where(tuple_(c.created_at, c.order_id) < tuple_(
            bindparam("c_at", after[0], type_=c.created_at.type), after[1]))
    stmt = stmt.order_by(c.created_at.desc(), c.order_id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]
