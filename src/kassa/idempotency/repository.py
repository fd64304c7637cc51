"""All SQL about stored idempotent responses."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, RowMapping, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kassa.db.tables import idempotency_keys as keys

IN_PROGRESS = 0  # response_status while the first request is still running


def claim(conn: Connection, *, account_id: str, mode: str, key: str, request_hash: str,
          now: datetime) -> bool:
    """Insert the key as in progress; False if it already exists.

    On PostgreSQL a concurrent insert of the same key waits for the other
    transaction and then does nothing, so the loser sees the winner's response.
    """
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = mod.insert(keys).values(
        account_id=account_id, mode=mode, idempotency_key=key, request_hash=request_hash,
        response_status=IN_PROGRESS, response_body="", created_at=now,
    ).on_conflict_do_nothing().returning(keys.c.idempotency_key)
    return conn.execute(stmt).first() is not None


def get(conn: Connection, *, account_id: str, mode: str, key: str) -> RowMapping | None:
    stmt = select(keys).where(keys.c.account_id == account_id, keys.c.mode == mode,
                              keys.c.idempotency_key == key)
    return conn.execute(stmt).mappings().first()


def forget(conn: Connection, *, account_id: str, mode: str, key: str) -> None:
    conn.execute(delete(keys).where(keys.c.account_id == account_id, keys.c.mode == mode,
                                    keys.c.idempotency_key == key))


def store_response(conn: Connection, *, account_id: str, mode: str, key: str, status: int,
                   body: str) -> None:
    conn.execute(update(keys).where(keys.c.account_id == account_id, keys.c.mode == mode,
                                    keys.c.idempotency_key == key)
                 .values(response_status=status, response_body=body))


def purge_older_than(conn: Connection, cutoff: datetime) -> int:
    return conn.execute(delete(keys).where(keys.c.created_at < cutoff)).rowcount
