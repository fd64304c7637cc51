"""All SQL about console sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select, update

from kassa.db.tables import accounts, api_keys, console_sessions

s = console_sessions.c


def insert_session(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(console_sessions).values(**values))


def get_session(conn: Connection, *, session_hash: str, now: datetime) -> dict[str, Any] | None:
    """A session whose API key still works at `now`, with its account's name and tier and
    its key's secret hash (a rotation asks for the secret again)."""
    k = api_keys.c
    stmt = (select(s.session_hash, s.account_id, s.mode, s.key_hash, s.created_at,
                   s.last_seen_at, s.expires_at, accounts.c.name, accounts.c.tier,
                   k.secret_hash, k.revoked_at)
            .join(accounts, accounts.c.account_id == s.account_id)
            .join(api_keys, k.key_hash == s.key_hash)
            .where(s.session_hash == session_hash,
                   or_(k.revoked_at.is_(None), k.revoked_at > now)))
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def touch(conn: Connection, *, session_hash: str, now: datetime) -> None:
    conn.execute(update(console_sessions).where(s.session_hash == session_hash)
                 .values(last_seen_at=now))


def rebind(conn: Connection, *, session_hash: str, key_hash: str) -> None:
    """The session now lasts as long as another key of its account and mode (the new key
    of a rotation made from it)."""
    conn.execute(update(console_sessions).where(s.session_hash == session_hash)
                 .values(key_hash=key_hash))


def delete_session(conn: Connection, session_hash: str) -> None:
    conn.execute(delete(console_sessions).where(s.session_hash == session_hash))


def delete_sessions_of(conn: Connection, *, account_id: str, mode: str,
                       keep: str | None = None) -> int:
    stmt = delete(console_sessions).where(s.account_id == account_id, s.mode == mode)
    if keep is not None:
        stmt = stmt.where(s.session_hash != keep)
    return int(conn.execute(stmt).rowcount or 0)


def delete_ended(conn: Connection, *, idle_before: datetime, now: datetime) -> None:
    """Every session that has ended (unused too long, or past its end)."""
    conn.execute(delete(console_sessions).where(
        (s.last_seen_at < idle_before) | (s.expires_at <= now)))
