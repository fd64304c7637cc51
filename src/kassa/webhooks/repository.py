"""All SQL about webhook endpoints, deliveries and attempts."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from kassa.db.tables import (
    accounts,
    events,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)
from kassa.webhooks.ssrf import url_host

AnyRow = Mapping[Any, Any]
_FANOUT_LOCK = 7_419_001  # PostgreSQL advisory lock: one fan-out at a time keeps object order

# --- endpoints -------------------------------------------------------------------------------

_live_endpoints = webhook_endpoints.c.deleted_at.is_(None)


def insert_endpoint(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(webhook_endpoints).values(**row))


def count_endpoints(conn: Connection, *, account_id: str, mode: str) -> int:
    stmt = select(func.count()).select_from(webhook_endpoints).where(
        webhook_endpoints.c.account_id == account_id, webhook_endpoints.c.mode == mode,
        _live_endpoints)
    return int(conn.execute(stmt).scalar() or 0)


def list_endpoints(conn: Connection, *, account_id: str, mode: str) -> list[AnyRow]:
    stmt = select(webhook_endpoints).where(
        webhook_endpoints.c.account_id == account_id, webhook_endpoints.c.mode == mode,
        _live_endpoints).order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.endpoint_id)
    return [r._mapping for r in conn.execute(stmt)]


def get_endpoint(conn: Connection, *, account_id: str, mode: str, endpoint_id: str,
                 for_update: bool = False) -> AnyRow | None:
    stmt = select(webhook_endpoints).where(
        webhook_endpoints.c.endpoint_id == endpoint_id,
        webhook_endpoints.c.account_id == account_id, webhook_endpoints.c.mode == mode,
        _live_endpoints)
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return None if row is None else row._mapping


def update_endpoint(conn: Connection, endpoint_id: str, values: dict[str, Any]) -> AnyRow:
    stmt = (update(webhook_endpoints).where(webhook_endpoints.c.endpoint_id == endpoint_id)
            .values(**values).returning(*webhook_endpoints.c))
    return conn.execute(stmt).one()._mapping


def endpoint_states(conn: Connection, endpoint_ids: Iterable[str]) -> dict[str, AnyRow]:
    ids = list(set(endpoint_ids))
    if not ids:
        return {}
    stmt = select(webhook_endpoints.c.endpoint_id,
                  webhook_endpoints.c.status, webhook_endpoints.c.deleted_at).where(
        webhook_endpoints.c.endpoint_id.in_(ids))
    return {r.endpoint_id: r._mapping for r in conn.execute(stmt)}


# --- fan-out: events -> deliveries -----------------------------------------------------------

def take_fanout_lock(conn: Connection) -> bool:
    """One fan-out at a time (PostgreSQL), so an object's deliveries are made in sequence
    order; SQLite has a single writer anyway."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                             {"k": _FANOUT_LOCK}).scalar())


def events_to_fan_out(conn: Connection, *, limit: int) -> list[AnyRow]:
    stmt = (select(events.c.event_id, events.c.account_id, events.c.mode, events.c.event_type,
                   events.c.object_id, events.c.sequence, events.c.callback_url,
                   events.c.callback_protocol)
            .where(events.c.fanout_pending == 1)
            .order_by(events.c.created_at, events.c.sequence)
            .limit(limit))
    return [r._mapping for r in conn.execute(stmt)]


def enabled_endpoints(conn: Connection, owners: Iterable[tuple[str, str]]) -> list[AnyRow]:
    keys = list(set(owners))
    if not keys:
        return []
    stmt = select(webhook_endpoints.c.endpoint_id, webhook_endpoints.c.account_id,
                  webhook_endpoints.c.mode, webhook_endpoints.c.url,
                  webhook_endpoints.c.event_types).where(
        tuple_(webhook_endpoints.c.account_id, webhook_endpoints.c.mode).in_(keys),
        webhook_endpoints.c.status == "enabled", _live_endpoints)
    return [r._mapping for r in conn.execute(stmt)]


def insert_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert deliveries; one that exists already (same event and target) is kept."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        stmt: Any = pg_insert(webhook_deliveries).on_conflict_do_nothing()
    else:
        stmt = sqlite_insert(webhook_deliveries).on_conflict_do_nothing()
    conn.execute(stmt, rows)


def mark_fanned_out(conn: Connection, event_ids: list[str]) -> None:
    if event_ids:
        conn.execute(update(events).where(events.c.event_id.in_(event_ids))
                     .values(fanout_pending=0))


# --- claiming and finishing deliveries -------------------------------------------------------

def has_work(conn: Connection, *, now: datetime) -> bool:
    """Anything to fan out or send? A read, so an idle worker never takes SQLite's write
    lock just to find nothing."""
    w = webhook_deliveries.c
    pending_event = select(events.c.event_id).where(events.c.fanout_pending == 1).limit(1)
    due = select(w.delivery_id).where(
        w.status == "pending", w.next_attempt_at <= now,
        or_(w.locked_until.is_(None), w.locked_until < now)).limit(1)
    return (conn.execute(pending_event).first() is not None
            or conn.execute(due).first() is not None)


def claim_due(conn: Connection, *, now: datetime, limit: int, lease_seconds: float,
              busy_hosts: Sequence[str]) -> tuple[str, list[AnyRow]]:
    """Lease up to `limit` due deliveries. A delivery waits while an earlier one of the same
    object to the same target is pending, so each receiver sees an object's events in
    sequence order; `busy_hosts` are skipped (this worker has enough in flight there)."""
    d = webhook_deliveries.alias("d")
    p = webhook_deliveries.alias("p")
    earlier_pending = exists().where(
        p.c.account_id == d.c.account_id, p.c.mode == d.c.mode,
        p.c.object_id == d.c.object_id, p.c.target == d.c.target,
        p.c.status == "pending", p.c.sequence < d.c.sequence)
    # ... and while an earlier event of the object is not even fanned out yet (a fan-out
    # batch can end between two events of one object).
    earlier_unfanned = exists().where(
        events.c.account_id == d.c.account_id, events.c.mode == d.c.mode,
        events.c.object_id == d.c.object_id, events.c.sequence < d.c.sequence,
        events.c.fanout_pending == 1)
    conditions = [d.c.status == "pending", d.c.next_attempt_at <= now,
                  or_(d.c.locked_until.is_(None), d.c.locked_until < now), ~earlier_pending,
                  ~earlier_unfanned]
    if busy_hosts:
        conditions.append(d.c.host.not_in(list(busy_hosts)))
    due = (select(d.c.delivery_id).where(*conditions).order_by(d.c.next_attempt_at)
           .limit(limit).with_for_update(skip_locked=True, of=d))
    token = secrets.token_hex(8)
    w = webhook_deliveries.c
    stmt = (update(webhook_deliveries)
            .where(w.delivery_id.in_(due.scalar_subquery()))
            .values(locked_until=now + timedelta(seconds=lease_seconds), lease_token=token,
                    attempts=w.attempts + 1, window_attempts=w.window_attempts + 1,
                    updated_at=now)
            .returning(w.delivery_id, w.event_id, w.account_id, w.mode, w.target, w.protocol,
                       w.url, w.host, w.object_id, w.attempts, w.window_attempts,
                       w.window_started_at))
    return token, [r._mapping for r in conn.execute(stmt)]


def unclaim(conn: Connection, *, delivery_ids: list[str], lease_token: str) -> None:
    """Hand back deliveries claimed in excess (their URL has enough in flight): not an
    attempt, so the count goes back down."""
    if delivery_ids:
        w = webhook_deliveries.c
        conn.execute(update(webhook_deliveries)
                     .where(w.delivery_id.in_(delivery_ids), w.lease_token == lease_token)
                     .values(locked_until=None, lease_token=None, attempts=w.attempts - 1,
                             window_attempts=w.window_attempts - 1))


def follow_endpoint(conn: Connection, *, endpoint_id: str, url: str) -> None:
    """An endpoint's pending deliveries go to its new URL."""
    conn.execute(update(webhook_deliveries)
                 .where(webhook_deliveries.c.target == endpoint_id,
                        webhook_deliveries.c.status == "pending")
                 .values(url=url, host=url_host(url)))


def payloads(conn: Connection, event_ids: Iterable[str]) -> dict[str, AnyRow]:
    ids = list(set(event_ids))
    if not ids:
        return {}
    stmt = select(events.c.event_id, events.c.event_type, events.c.payload_json).where(
        events.c.event_id.in_(ids))
    return {r.event_id: r._mapping for r in conn.execute(stmt)}


def secret_versions(conn: Connection, account_ids: Iterable[str]) -> dict[str, AnyRow]:
    ids = list(set(account_ids))
    if not ids:
        return {}
    stmt = select(accounts.c.account_id, accounts.c.webhook_secret_version,
                  accounts.c.webhook_secret_previous_version,
                  accounts.c.webhook_secret_previous_until).where(accounts.c.account_id.in_(ids))
    return {r.account_id: r._mapping for r in conn.execute(stmt)}


def record_attempts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(webhook_attempts), rows)


def finish(conn: Connection, *, delivery_id: str, lease_token: str,
           values: dict[str, Any]) -> bool:
    """Apply an attempt's outcome if our lease still holds (else another worker owns it)."""
    stmt = (update(webhook_deliveries)
            .where(webhook_deliveries.c.delivery_id == delivery_id,
                   webhook_deliveries.c.lease_token == lease_token,
                   webhook_deliveries.c.status == "pending")
            .values(locked_until=None, lease_token=None, **values))
    return conn.execute(stmt).rowcount == 1


_OUTCOME_COLUMNS = ("status", "next_attempt_at", "completed_at", "last_status_code",
                    "last_error", "updated_at")
_finish_many = (
    update(webhook_deliveries)
    .where(webhook_deliveries.c.delivery_id == bindparam("k_delivery"),
           webhook_deliveries.c.lease_token == bindparam("k_token"),
           webhook_deliveries.c.status == "pending")
    .values(locked_until=None, lease_token=None,
            **{c: bindparam(f"v_{c}", type_=webhook_deliveries.c[c].type)
               for c in _OUTCOME_COLUMNS})
)


def finish_many(conn: Connection, outcomes: list[tuple[str, str, dict[str, Any]]]) -> int:
    """finish() for many deliveries in one executemany; how many were still ours."""
    if not outcomes:
        return 0
    params = [{"k_delivery": delivery_id, "k_token": token,
               **{f"v_{c}": values[c] for c in _OUTCOME_COLUMNS}}
              for delivery_id, token, values in outcomes]
    return int(conn.execute(_finish_many, params).rowcount)


# --- reading the log -------------------------------------------------------------------------

def get_event(conn: Connection, *, account_id: str, mode: str, event_id: str) -> AnyRow | None:
    row = conn.execute(select(events).where(
        events.c.event_id == event_id, events.c.account_id == account_id,
        events.c.mode == mode)).first()
    return None if row is None else row._mapping


def list_events(conn: Connection, *, account_id: str, mode: str, delivery_status: str,
                event_type: str | None, object_id: str | None, after: AnyRow | None,
                limit: int) -> list[AnyRow]:
    conditions = [events.c.account_id == account_id, events.c.mode == mode]
    if event_type is not None:
        conditions.append(events.c.event_type == event_type)
    if object_id is not None:
        conditions.append(events.c.object_id == object_id)
    if delivery_status != "all":
        conditions.append(exists().where(webhook_deliveries.c.event_id == events.c.event_id,
                                         webhook_deliveries.c.status == delivery_status))
    if after is not None:
        conditions.append(or_(events.c.created_at < after["created_at"],
                              and_(events.c.created_at == after["created_at"],
                                   events.c.event_id < after["event_id"])))
    stmt = (select(events).where(*conditions)
            .order_by(events.c.created_at.desc(), events.c.event_id.desc()).limit(limit))
    return [r._mapping for r in conn.execute(stmt)]


def deliveries_of_events(conn: Connection, event_ids: Sequence[str]) -> list[AnyRow]:
    if not event_ids:
        return []
    stmt = (select(webhook_deliveries).where(webhook_deliveries.c.event_id.in_(list(event_ids)))
            .order_by(webhook_deliveries.c.created_at, webhook_deliveries.c.delivery_id))
    return [r._mapping for r in conn.execute(stmt)]


def get_delivery(conn: Connection, *, account_id: str, mode: str,
                 delivery_id: str) -> AnyRow | None:
    row = conn.execute(select(webhook_deliveries).where(
        webhook_deliveries.c.delivery_id == delivery_id,
        webhook_deliveries.c.account_id == account_id,
        webhook_deliveries.c.mode == mode)).first()
    return None if row is None else row._mapping


def deliveries_of_target(conn: Connection, *, account_id: str, mode: str, target: str,
                         status: str, after: AnyRow | None, limit: int) -> list[AnyRow]:
    w = webhook_deliveries.c
    conditions = [w.account_id == account_id, w.mode == mode, w.target == target]
    if status != "all":
        conditions.append(w.status == status)
    if after is not None:
        conditions.append(or_(w.created_at < after["created_at"],
                              and_(w.created_at == after["created_at"],
                                   w.delivery_id < after["delivery_id"])))
    stmt = (select(webhook_deliveries).where(*conditions)
            .order_by(w.created_at.desc(), w.delivery_id.desc()).limit(limit))
    return [r._mapping for r in conn.execute(stmt)]


def event_types_of(conn: Connection, event_ids: Iterable[str]) -> dict[str, str]:
    ids = list(set(event_ids))
    if not ids:
        return {}
    stmt = select(events.c.event_id, events.c.event_type).where(events.c.event_id.in_(ids))
    return {r.event_id: r.event_type for r in conn.execute(stmt)}


def attempts_of(conn: Connection, delivery_ids: Sequence[str]) -> list[AnyRow]:
    if not delivery_ids:
        return []
    stmt = (select(webhook_attempts)
            .where(webhook_attempts.c.delivery_id.in_(list(delivery_ids)))
            .order_by(webhook_attempts.c.delivery_id, webhook_attempts.c.attempt_id))
    return [r._mapping for r in conn.execute(stmt)]


# --- resend ---------------------------------------------------------------------------------

def reopen(conn: Connection, *, event_id: str, targets: Sequence[str], now: datetime) -> int:
    """Put an event's finished deliveries to `targets` back in the queue, with a fresh
    retry window. Pending ones are left alone: they are on their way."""
    if not targets:
        return 0
    w = webhook_deliveries.c
    conditions = [w.event_id == event_id, w.status != "pending", w.target.in_(list(targets))]
    stmt = (update(webhook_deliveries).where(*conditions)
            .values(status="pending", next_attempt_at=now, window_started_at=now,
                    window_attempts=0,
                    completed_at=None, locked_until=None, lease_token=None, updated_at=now))
    return conn.execute(stmt).rowcount


# --- the account's secret versions -----------------------------------------------------------

def rotate_secret(conn: Connection, *, account_id: str, previous_until: datetime | None,
                  from_version: int | None = None) -> AnyRow | None:
    """The next secret version; with `from_version`, only from that version (None when
    the secret has moved on: a conditional update, so two rotations cannot both pass)."""
    a = accounts.c
    stmt = (update(accounts).where(a.account_id == account_id)
            .values(webhook_secret_previous_version=(
                        a.webhook_secret_version if previous_until is not None
                        else literal(None)),
                    webhook_secret_previous_until=previous_until,
                    webhook_secret_version=a.webhook_secret_version + 1)
            .returning(a.webhook_secret_version, a.webhook_secret_previous_version,
                       a.webhook_secret_previous_until))
    if from_version is not None:
        stmt = stmt.where(a.webhook_secret_version == from_version)
    row = conn.execute(stmt).first()
    return None if row is None else row._mapping

