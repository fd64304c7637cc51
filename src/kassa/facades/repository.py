"""All SQL about facade orders and request nonces."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from kassa.db.tables import facade_nonces, facade_orders, orders

AnyRow = dict[str, Any]

# A facade order is the payment order and its protocol row, read together.
_joined = select(orders, *[c for c in facade_orders.c if c.name not in orders.c]).join(
    facade_orders, facade_orders.c.order_id == orders.c.order_id)


def insert_facade_order(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(facade_orders).values(**values))


def find_by_merchant_no(conn: Connection, *, account_id: str, mode: str, protocol: str,
                        merchant_order_no: str, for_update: bool = False) -> AnyRow | None:
    stmt = _joined.where(facade_orders.c.account_id == account_id,
                         facade_orders.c.mode == mode, facade_orders.c.protocol == protocol,
                         facade_orders.c.merchant_order_no == merchant_order_no)
    if for_update:
        stmt = stmt.with_for_update(of=orders)
    row = conn.execute(stmt).mappings().first()
    return None if row is None else dict(row)


def find_by_order_id(conn: Connection, *, account_id: str, mode: str, protocol: str,
                     order_id: str, for_update: bool = False) -> AnyRow | None:
    stmt = _joined.where(facade_orders.c.order_id == order_id,
                         facade_orders.c.account_id == account_id,
                         facade_orders.c.mode == mode, facade_orders.c.protocol == protocol)
    if for_update:
        stmt = stmt.with_for_update(of=orders)
    row = conn.execute(stmt).mappings().first()
    return None if row is None else dict(row)


def by_order_ids(conn: Connection, order_ids: Iterable[str]) -> dict[str, AnyRow]:
    wanted = list(set(order_ids))
    if not wanted:
        return {}
    rows = conn.execute(_joined.where(facade_orders.c.order_id.in_(wanted))).mappings()
    return {r["order_id"]: dict(r) for r in rows}


def use_nonce(conn: Connection, *, credential: str, nonce: str, expires_at: datetime) -> bool:
    """Record a nonce; False if it was used before (and has not expired yet). A concurrent
    use of the same nonce fails on the primary key and is retried by the caller, which
    then sees it here."""
    found = conn.execute(select(facade_nonces.c.nonce).where(
        facade_nonces.c.credential == credential, facade_nonces.c.nonce == nonce)).first()
    if found is not None:
        return False
    conn.execute(insert(facade_nonces).values(credential=credential, nonce=nonce,
                                              expires_at=expires_at))
    return True


def purge_nonces(conn: Connection, *, now: datetime) -> int:
    """Nonces whose timestamps would be refused anyway need not be remembered."""
    return conn.execute(delete(facade_nonces).where(facade_nonces.c.expires_at < now)).rowcount
