"""All SQL about upstream attempts, recorded notifications and payment reviews."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kassa.db.tables import payment_reviews, upstream_attempts, upstream_notifications


def insert_attempt(conn: Connection, *, reference: str, order_id: str, channel: str,
                   trade_no: str | None, pay_url: str, qr_code: str | None,
                   now: datetime) -> None:
    conn.execute(insert(upstream_attempts).values(
        reference=reference, order_id=order_id, channel=channel,
        trade_no=None if trade_no is None else trade_no[:64],
        pay_url=pay_url, qr_code=qr_code, created_at=now))


def get_attempt(conn: Connection, reference: str) -> dict[str, Any] | None:
    row = conn.execute(select(upstream_attempts).where(
        upstream_attempts.c.reference == reference)).mappings().first()
    return None if row is None else dict(row)


def attempts_of(conn: Connection, order_id: str) -> list[dict[str, Any]]:
    """Newest first."""
    rows = conn.execute(select(upstream_attempts).where(
        upstream_attempts.c.order_id == order_id).order_by(
        upstream_attempts.c.created_at.desc(), upstream_attempts.c.reference.desc())
    ).mappings()
    return [dict(r) for r in rows]


def attempt_count(conn: Connection, order_id: str) -> int:
    return int(conn.execute(select(func.count()).select_from(upstream_attempts).where(
        upstream_attempts.c.order_id == order_id)).scalar() or 0)


def record_notification(conn: Connection, *, dedupe_key: str, channel: str, reference: str,
                        state: str, amount: int | None, now: datetime) -> bool:
    """Record a verified notification once: False if this very notification came before."""
    mod: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = mod.insert(upstream_notifications).values(
        dedupe_key=dedupe_key, channel=channel, reference=reference[:64], state=state,
        amount=amount, outcome="received", received_at=now,
    ).on_conflict_do_nothing(index_elements=[upstream_notifications.c.dedupe_key]
                             ).returning(upstream_notifications.c.dedupe_key)
    # (RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT here)
    return conn.execute(stmt).first() is not None


def set_notification_outcome(conn: Connection, *, dedupe_key: str, order_id: str | None,
                             outcome: str) -> None:
    conn.execute(update(upstream_notifications).where(
        upstream_notifications.c.dedupe_key == dedupe_key).values(
        order_id=order_id, outcome=outcome[:20]))


def notifications_for(conn: Connection, order_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(upstream_notifications).where(
        upstream_notifications.c.order_id == order_id).order_by(
        upstream_notifications.c.received_at)).mappings()
    return [dict(r) for r in rows]


def open_review(conn: Connection, values: dict[str, Any]) -> bool:
    """A review per (order, reference, reason): False if that one is already open."""
    mod: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = mod.insert(payment_reviews).values(**values).on_conflict_do_nothing(
        index_elements=[payment_reviews.c.order_id, payment_reviews.c.reference,
                        payment_reviews.c.reason]).returning(payment_reviews.c.review_id)
    return conn.execute(stmt).first() is not None


def set_review_note(conn: Connection, *, order_id: str, reference: str, reason: str,
                    note: str) -> None:
    conn.execute(update(payment_reviews).where(
        payment_reviews.c.order_id == order_id, payment_reviews.c.reference == reference,
        payment_reviews.c.reason == reason).values(note=note))


def get_review(conn: Connection, review_id: str, *, for_update: bool = False
               ) -> dict[str, Any] | None:
    stmt = select(payment_reviews).where(payment_reviews.c.review_id == review_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return None if row is None else dict(row)


def list_reviews(conn: Connection, *, status: str | None) -> list[dict[str, Any]]:
    stmt = select(payment_reviews).order_by(payment_reviews.c.created_at)
    if status is not None:
        stmt = stmt.where(payment_reviews.c.status == status)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def reviews_of(conn: Connection, order_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(payment_reviews).where(
        payment_reviews.c.order_id == order_id).order_by(payment_reviews.c.created_at)
    ).mappings()
    return [dict(r) for r in rows]


def resolve_review(conn: Connection, *, review_id: str, status: str, note: str | None,
                   now: datetime) -> bool:
    result = conn.execute(update(payment_reviews).where(
        payment_reviews.c.review_id == review_id, payment_reviews.c.status == "open").values(
        status=status, note=note, resolved_at=now))
    return bool(result.rowcount == 1)
