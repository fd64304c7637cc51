"""All SQL about tasks. Hot statements are prepared once (kassa.db.prepared)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from kassa.db.prepared import Prepared
from kassa.db.tables import orders, tasks

_KEY = (
    tasks.c.account_id == bindparam("account_id"),
    tasks.c.mode == bindparam("mode"),
    tasks.c.task_id == bindparam("task_id"),
)
_insert = Prepared(insert(tasks))
_get = Prepared(select(tasks).where(*_KEY))
_get_for_update = Prepared(select(tasks).where(*_KEY).with_for_update())
_exists = Prepared(select(tasks.c.task_id).where(*_KEY))
_get_with_status = Prepared(
    select(tasks, orders.c.status.label("payment_status"))
    .outerjoin(orders, orders.c.order_id == tasks.c.current_order_id)
    .where(*_KEY)
)
_set_current_order = Prepared(
    update(tasks)
    .where(tasks.c.account_id == bindparam("k_account"), tasks.c.mode == bindparam("k_mode"),
           tasks.c.task_id == bindparam("k_task"))
    .values(current_order_id=bindparam("k_order"), updated_at=bindparam("k_now"))
)


def _key(account_id: str, mode: str, task_id: str) -> dict[str, Any]:
    return {"account_id": account_id, "mode": mode, "task_id": task_id}


_NEW_TASK = {"current_order_id": None, "worker_id": None, "event_seq": 0, "closed_at": None}


def insert_task(conn: Connection, values: dict[str, Any]) -> None:
    _insert.run(conn, {**_NEW_TASK, **values})


def get_task(conn: Connection, *, account_id: str, mode: str, task_id: str,
             for_update: bool = False) -> dict[str, Any] | None:
    stmt = _get_for_update if for_update else _get
    return stmt.first(conn, _key(account_id, mode, task_id))


def get_task_with_payment_status(conn: Connection, *, account_id: str, mode: str,
                                 task_id: str) -> tuple[dict[str, Any], str | None] | None:
    row = _get_with_status.first(conn, _key(account_id, mode, task_id))
    if row is None:
        return None
    return row, row.pop("payment_status")


def task_exists(conn: Connection, *, account_id: str, mode: str, task_id: str) -> bool:
    return _exists.first(conn, _key(account_id, mode, task_id)) is not None


def set_current_order(conn: Connection, *, account_id: str, mode: str, task_id: str,
                      order_id: str, now: datetime) -> None:
    _set_current_order.run(conn, {"k_account": account_id, "k_mode": mode, "k_task": task_id,
                                  "k_order": order_id, "k_now": now})


_close = Prepared(
    update(tasks)
    .where(tasks.c.account_id == bindparam("k_account"), tasks.c.mode == bindparam("k_mode"),
           tasks.c.task_id == bindparam("k_task"), tasks.c.status == "open")
    .values(status=bindparam("k_status"), worker_id=bindparam("k_worker"),
            closed_at=bindparam("k_now"), updated_at=bindparam("k_now"),
            event_seq=tasks.c.event_seq + 1)
    .returning(*tasks.c)
)


def close_task(conn: Connection, *, account_id: str, mode: str, task_id: str, status: str,
               worker_id: str | None, now: datetime) -> dict[str, Any] | None:
    """open -> approved/failed/cancelled, only if still open; None if someone else won."""
    return _close.first(conn, {"k_account": account_id, "k_mode": mode, "k_task": task_id,
                               "k_status": status, "k_worker": worker_id, "k_now": now})
