"""All SQL about accounts and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)

from kassa.db.prepared import Prepared
from kassa.db.tables import accounts, api_keys, facade_credentials

AnyRow = Row[*tuple[Any, ...]]


def _active(now: datetime) -> ColumnElement[bool]:
    """Not revoked, or revoked with a grace period that has not ended (a rotated key)."""
    return or_(api_keys.c.revoked_at.is_(None), api_keys.c.revoked_at > now)


def find_active_key(conn: Connection, key_hash: str, now: datetime | None) -> AnyRow | None:
    """A key usable at `now` (None: a key ever made, revoked or not) with its account."""
    stmt = (
        select(
            api_keys.c.account_id,
            api_keys.c.mode,
            api_keys.c.secret_hash,
            api_keys.c.revoked_at,
            accounts.c.tier,
            accounts.c.name,
        )
        .join(accounts, accounts.c.account_id == api_keys.c.account_id)
        .where(api_keys.c.key_hash == key_hash)
    )
    if now is not None:
        stmt = stmt.where(_active(now))
    return conn.execute(stmt).first()


def active_keys(conn: Connection, *, account_id: str, mode: str, now: datetime
                ) -> list[AnyRow]:
    """The account's usable keys in a mode, newest first: hint, created, revoked_at (set
    while a rotated key's grace period runs)."""
    c = api_keys.c
    stmt = (select(c.key_hint, c.created_at, c.revoked_at)
            .where(c.account_id == account_id, c.mode == mode, _active(now))
            .order_by(c.created_at.desc(), c.key_hint))
    return list(conn.execute(stmt).all())


def key_count(conn: Connection, *, account_id: str, mode: str) -> int:
    """How many keys the account's mode has ever had (its key generation)."""
    c = api_keys.c
    return int(conn.execute(select(func.count()).select_from(api_keys)
                            .where(c.account_id == account_id, c.mode == mode)).scalar_one())


def revoke_keys(conn: Connection, *, account_id: str, mode: str, at: datetime) -> None:
    """Every key of the account's mode stops working at `at` at the latest: keys in use,
    and keys still in an earlier grace period that would end later (rotating again
    shortens a leaked key's grace)."""
    c = api_keys.c
    conn.execute(update(api_keys)
                 .where(c.account_id == account_id, c.mode == mode,
                        or_(c.revoked_at.is_(None), c.revoked_at > at))
                 .values(revoked_at=at))


def lock_account(conn: Connection, account_id: str) -> None:
    """Hold the account's row until the transaction ends (rotations one at a time; SQLite's
    writer is already alone)."""
    conn.execute(select(accounts.c.account_id).where(accounts.c.account_id == account_id)
                 .with_for_update())


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


# --- protocol facade credentials --------------------------------------------------------------

def insert_facade_credential(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(facade_credentials).values(**values))


_find_facade_credential = Prepared(
    select(facade_credentials.c.protocol, facade_credentials.c.lookup,
           facade_credentials.c.account_id, facade_credentials.c.mode,
           facade_credentials.c.secret_version, accounts.c.tier, accounts.c.name)
    .join(accounts, accounts.c.account_id == facade_credentials.c.account_id)
    .where(facade_credentials.c.protocol == bindparam("protocol"),
           facade_credentials.c.lookup == bindparam("lookup"),
           facade_credentials.c.revoked_at.is_(None)))


def find_facade_credential(conn: Connection, *, protocol: str, lookup: str
                           ) -> dict[str, Any] | None:
    """An active credential with its account's tier and name (every protocol request)."""
    return _find_facade_credential.first(conn, {"protocol": protocol, "lookup": lookup})


def facade_credentials_of(conn: Connection, account_id: str) -> list[AnyRow]:
    c = facade_credentials.c
    stmt = (select(c.protocol, c.lookup, c.mode, c.secret_version, c.hint)
            .where(c.account_id == account_id, c.revoked_at.is_(None))
            .order_by(c.protocol, c.mode))
    return list(conn.execute(stmt).all())


def bump_facade_secret(conn: Connection, *, protocol: str, lookup: str) -> int:
    c = facade_credentials.c
    return int(conn.execute(update(facade_credentials)
                            .where(c.protocol == protocol, c.lookup == lookup)
                            .values(secret_version=c.secret_version + 1)
                            .returning(c.secret_version)).scalar_one())
