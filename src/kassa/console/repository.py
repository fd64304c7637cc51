"""All SQL about console sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from kassa.db.tables import accounts, console_sessions

s = console_sessions.c


def insert_session(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(console_sessions).values(**values))


def get_session(conn: Connection, session_hash: str) -> dict[str, Any] | None:
    """A session with its account's name and tier."""
    stmt = (select(s.session_hash, s.account_id, s.mode, s.created_at, s.last_seen_at,
                   s.expires_at, accounts.c.name, accounts.c.tier)
            .join(accounts, accounts.c.account_id == s.account_id)
            .where(s.session_hash == session_hash))
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def touch(conn: Connection, *, session_hash: str, now: datetime) -> None:
    conn.execute(update(console_sessions).where(s.session_hash == session_hash)
                 .values(last_seen_at=now))


def delete_session(conn: Connection, session_hash: str) -> None:
    conn.execute(delete(console_sessions).where(s.session_hash == session_hash))


def delete_sessions_of(conn: Connection, *, account_id: str, mode: str,
                       keep: str | None = None) -> int:
    stmt = delete(console_sessions).where(s.account_id == account_id, s.mode == mode)
    if keep is not None:
        stmt = stmt.where(s.session_hash != keep)
    return int(conn.execute(stmt).rowcount or 0)


def delete_ended(conn: Connection, *, account_id: str, idle_before: datetime,
                 now: datetime) -> None:
    """An account's sessions that have ended (unused too long, or past their end)."""
    conn.execute(delete(console_sessions).where(
        s.account_id == account_id,
        (s.last_seen_at < idle_before) | (s.expires_at <= now)))
