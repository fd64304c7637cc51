"""All SQL about facade orders and request nonces."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select

from kassa.db.prepared import Prepared
from kassa.db.tables import facade_nonces, facade_orders, orders

AnyRow = dict[str, Any]

# A facade order is the payment order and its protocol row, read together.
_joined = select(orders, *[c for c in facade_orders.c if c.name not in orders.c]).join(
    facade_orders, facade_orders.c.order_id == orders.c.order_id)


_insert = Prepared(insert(facade_orders))
_by_merchant_no = _joined.where(
    facade_orders.c.account_id == bindparam("account_id"),
    facade_orders.c.mode == bindparam("mode"), facade_orders.c.protocol == bindparam("protocol"),
    facade_orders.c.merchant_order_no == bindparam("merchant_order_no"))
_find_by_merchant_no = Prepared(_by_merchant_no)
_lock_by_merchant_no = Prepared(_by_merchant_no.with_for_update(of=orders))
_nonce_seen = Prepared(select(facade_nonces.c.nonce).where(
    facade_nonces.c.credential == bindparam("credential"),
    facade_nonces.c.nonce == bindparam("nonce")))
_insert_nonce = Prepared(insert(facade_nonces))


def insert_facade_order(conn: Connection, values: dict[str, Any]) -> None:
    _insert.run(conn, values)


def find_by_merchant_no(conn: Connection, *, account_id: str, mode: str, protocol: str,
                        merchant_order_no: str, for_update: bool = False) -> AnyRow | None:
    return (_lock_by_merchant_no if for_update else _find_by_merchant_no).first(conn, {
        "account_id": account_id, "mode": mode, "protocol": protocol,
        "merchant_order_no": merchant_order_no})


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
    key = {"credential": credential, "nonce": nonce}
    if _nonce_seen.first(conn, key) is not None:
        return False
    _insert_nonce.run(conn, {**key, "expires_at": expires_at})
    return True


def purge_nonces(conn: Connection, *, now: datetime) -> int:
    """Nonces whose timestamps would be refused anyway need not be remembered."""
    return conn.execute(delete(facade_nonces).where(facade_nonces.c.expires_at < now)).rowcount
