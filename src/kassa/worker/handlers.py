"""What each job kind does. Every handler re-reads its row and re-checks its state,
so running one twice is harmless."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection

from kassa.context import ServiceContext
from kassa.payments import service as payments
from kassa.refunds import service as refunds

Handler = Callable[[Connection, ServiceContext, str, datetime], str]


def _settle_sandbox(conn: Connection, ctx: ServiceContext, ref: str, now: datetime) -> str:
    return payments.settle_sandbox_order(conn, ctx, order_id=ref, now=now)


def _expire(conn: Connection, ctx: ServiceContext, ref: str, now: datetime) -> str:
    return payments.expire_order(conn, ctx, order_id=ref, now=now)


def _settle_sandbox_refund(conn: Connection, ctx: ServiceContext, ref: str, now: datetime
                          ) -> str:
    return refunds.settle_sandbox_refund(conn, ctx, refund_id=ref, now=now)


HANDLERS: dict[str, Handler] = {
    refunds.JOB_SETTLE_SANDBOX_REFUND: _settle_sandbox_refund,
    payments.JOB_SETTLE_SANDBOX: _settle_sandbox,
    payments.JOB_EXPIRE: _expire,
}
