"""Seed 004's Payments resource over the payment orders (SPEC §5, §9): a Payment names one
of the merchant's orders and shows it in the seed's shape; its retry and verify are the
order's (payments.service.retry_order, upstreams.verify.verify_now).

Every function but verify_payment runs inside the caller's transaction (the edge commits).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.context import ServiceContext
from kassa.db.database import Database
from kassa.errors import PaymentNotFound
from kassa.payment_resources import repository
from kassa.payment_resources.schemas import (
    CONFIRMED,
    CreatePaymentResource,
    payment_status,
    render_payment,
)
from kassa.payments import service as payments
from kassa.upstreams.calls import UpstreamSlot
from kassa.upstreams.verify import verify_now


def _view(conn: Connection, ctx: ServiceContext, payment: Mapping[str, Any],
          order: Mapping[str, Any]) -> dict[str, Any]:
    reference = order["upstream_ref"]
    trade_no = None if reference is None else repository.trade_no(conn, reference=reference)
    return render_payment(payment, order, trade_no=trade_no, public_url=ctx.public_url)


def _find(conn: Connection, *, principal: Principal, payment_id: int) -> dict[str, Any]:
    payment = repository.get_payment(conn, account_id=principal.account_id,
                                     mode=principal.mode, payment_id=payment_id)
    if payment is None:
        raise PaymentNotFound(f"Payment {payment_id} doesn't exist", payment_id=payment_id)
    return payment


def create_payment(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                   request: CreatePaymentResource) -> tuple[bool, dict[str, Any]]:
    """POST /api/v1/payments: the Payment of one of the merchant's orders (in the key's
    mode), made now, or the one it already has (one per order: a repeat changes nothing).
    Returns (created, the Payment as the seed shows it)."""
    order = payments.get_order(conn, principal=principal, order_id=request.order_id)
    existing = repository.payment_for_order(conn, order_id=order["order_id"])
    if existing is not None:
        return False, _view(conn, ctx, existing, order)
    payment = repository.insert_payment(
        conn, account_id=principal.account_id, mode=principal.mode,
        order_id=order["order_id"], payer=request.payer, subject=request.subject,
        description=request.description, now=ctx.clock.now())
    return True, _view(conn, ctx, payment, order)


def get_payment(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                payment_id: int) -> dict[str, Any]:
    payment = _find(conn, principal=principal, payment_id=payment_id)
    order = payments.get_order(conn, principal=principal, order_id=payment["order_id"])
    return _view(conn, ctx, payment, order)


def retry_payment(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                  payment_id: int, slot: UpstreamSlot | None) -> dict[str, Any]:
    """GET /api/v1/payments/retry/{id}: the order's retry (a pending or expired order gets a
    new payment link and a new expiry); the Payment with its new orderString."""
    payment = _find(conn, principal=principal, payment_id=payment_id)
    order = payments.retry_order(conn, ctx, principal=principal,
                                 order_id=payment["order_id"], slot=slot)
    return _view(conn, ctx, payment, order)


async def verify_payment(db: Database, ctx: ServiceContext, *, principal: Principal,
                         payment_id: int) -> None:
    """Verify triad (3) for a Payment: its order's upstream is asked now (no transaction
    open; a sandbox order has nobody to ask and is left as it is)."""
    payment = await db.read(lambda conn: _find(conn, principal=principal,
                                               payment_id=payment_id))
    await verify_now(db, ctx, principal=principal, order_id=payment["order_id"])


def is_confirmed(conn: Connection, *, principal: Principal, payment_id: int) -> bool:
    payment = _find(conn, principal=principal, payment_id=payment_id)
    order = payments.get_order(conn, principal=principal, order_id=payment["order_id"])
    return payment_status(order["status"]) == CONFIRMED
