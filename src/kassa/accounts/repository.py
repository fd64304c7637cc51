"""All SQL about accounts and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from kassa.db.tables import accounts, api_keys

AnyRow = Row[*tuple[Any, ...]]


def find_active_key(conn: Connection, key_hash: str) -> AnyRow | None:
    stmt = (
        select(
            api_keys.c.account_id,
            api_keys.c.mode,
            api_keys.c.secret_hash,
            accounts.c.tier,
            accounts.c.name,
        )
        .join(accounts, accounts.c.account_id == api_keys.c.account_id)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
    )
    return conn.execute(stmt).first()


def insert_account(conn: Connection, *, account_id: str, name: str, tier: str,
                   now: datetime) -> None:
    conn.execute(insert(accounts).values(account_id=account_id, name=name, tier=tier,
                                         webhook_secret_version=1, created_at=now))


def insert_api_key(conn: Connection, *, key_hash: str, account_id: str, mode: str,
                   secret_hash: str, key_hint: str, now: datetime) -> None:
    conn.execute(insert(api_keys).values(key_hash=key_hash, account_id=account_id, mode=mode,
                                         secret_hash=secret_hash, key_hint=key_hint,
                                         created_at=now))


def key_exists(conn: Connection, key_hash: str) -> bool:
    return conn.execute(select(api_keys.c.key_hash).where(api_keys.c.key_hash == key_hash)
                        ).first() is not None


def get_account(conn: Connection, account_id: str) -> AnyRow | None:
    stmt = select(accounts.c.account_id, accounts.c.name, accounts.c.tier,
                  accounts.c.webhook_secret_version).where(accounts.c.account_id == account_id)
    return conn.execute(stmt).first()


def list_accounts(conn: Connection) -> list[AnyRow]:
    stmt = select(accounts.c.account_id, accounts.c.name, accounts.c.tier).order_by(
        accounts.c.created_at)
    return list(conn.execute(stmt).all())
