"""What an upstream's word does to an order (SPEC §5's verify triad, §8).

A payment is believed only when it has been verified: a notification whose signature,
merchant id and amount check out (1), the upstream's answer to Kassa's own query (2, the
poll job; 3, a client asking for verification now). All three end here, in
`apply_upstream_status`, inside the caller's transaction:

- paid, for the order's exact amount, while the order is pending or processing: the
  order completes (once: the transition is conditional);
- paid, but for another amount, or after the order expired or failed: nothing is
  credited; a payment review is opened for an operator (`kassa orders reviews`);
- anything else (still pending, closed, unknown to the upstream): nothing changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kassa.channels.base import UpstreamState, UpstreamStatus, VerifiedNotification
from kassa.context import ServiceContext
from kassa.core import ids
from kassa.core.states import OrderStatus
from kassa.errors import InvalidOrderState, NotFound, OrderNotFound, ValidationError
from kassa.payments import repository as orders
from kassa.payments import service as payments
from kassa.upstreams import repository

REVIEW_LATE = "late_payment"
REVIEW_AMOUNT = "amount_mismatch"


def apply_upstream_status(conn: Connection, ctx: ServiceContext, *, channel: str,
                          status: UpstreamStatus, source: str, now: datetime
                          ) -> tuple[str, str | None]:
    """(outcome, order id) of what the upstream says about one of its orders."""
    attempt = repository.get_attempt(conn, status.reference)
    if attempt is None or attempt["channel"] != channel:
        return "unknown_order", None
    order_id = attempt["order_id"]
    order = orders.get_order_by_id(conn, order_id, for_update=True)
    assert order is not None, "an attempt's order exists (foreign key)"
    if status.state is not UpstreamState.PAID:
        return f"upstream_{status.state.value}", order_id
    if status.amount != order["amount"] or (status.currency or order["currency"]) != order[
            "currency"]:
        _review(conn, order, attempt, reason=REVIEW_AMOUNT, amount=status.amount,
                source=source, now=now)
        return "review", order_id
    if order["status"] in (OrderStatus.PENDING, OrderStatus.PROCESSING):
        done = payments.complete_order(conn, ctx, order_id=order_id, now=now,
                                       upstream_ref=status.reference)
        return ("completed" if done else "lost_race"), order_id
    if order["status"] in (OrderStatus.EXPIRED, OrderStatus.FAILED):
        _review(conn, order, attempt, reason=REVIEW_LATE, amount=status.amount, source=source,
                now=now)
        return "review", order_id
    return "duplicate", order_id  # completed or refunded already: nothing more to do


def _review(conn: Connection, order: dict[str, Any], attempt: dict[str, Any], *, reason: str,
            amount: int | None, source: str, now: datetime) -> None:
    repository.open_review(conn, {
        "review_id": ids.review_id(), "order_id": order["order_id"],
        "account_id": order["account_id"], "mode": order["mode"],
        "channel": attempt["channel"], "reference": attempt["reference"], "reason": reason,
        "reported_amount": amount, "source": source, "status": "open", "note": None,
        "created_at": now, "resolved_at": None})


def record_notification(conn: Connection, ctx: ServiceContext, *, channel: str,
                        notification: VerifiedNotification, now: datetime) -> str:
    """Verify triad (1): a verified notification, recorded once; a repeat is a no-op."""
    status = notification.status
    if not repository.record_notification(
            conn, dedupe_key=notification.dedupe_key[:200], channel=channel,
            reference=status.reference, state=status.state.value, amount=status.amount,
            now=now):
        return "duplicate"
    outcome, order_id = apply_upstream_status(conn, ctx, channel=channel, status=status,
                                              source="notification", now=now)
    repository.set_notification_outcome(conn, dedupe_key=notification.dedupe_key[:200],
                                        order_id=order_id, outcome=outcome)
    return outcome


def references_to_ask(conn: Connection, order_id: str) -> tuple[dict[str, Any] | None,
                                                                  list[str]]:
    """An order still waiting for an upstream, and the references of its attempts (newest
    first, at most three: an older link may still have been paid)."""
    order = orders.get_order_by_id(conn, order_id)
    if order is None or order["status"] not in (OrderStatus.PENDING, OrderStatus.PROCESSING):
        return order, []
    return order, [a["reference"] for a in repository.attempts_of(conn, order_id)[:3]]


# --- operators: payment reviews and bank transfers (kassa orders …) ----------------------------

def resolve_review(conn: Connection, ctx: ServiceContext, *, review_id: str, accept: bool,
                   note: str | None) -> dict[str, Any]:
    """Accept: the money did arrive, the order completes now (an expired one too).
    Reject: nothing is credited (the operator returns the money upstream)."""
    review = repository.get_review(conn, review_id, for_update=True)
    if review is None:
        raise NotFound(f"Review {review_id} doesn't exist")
    if review["status"] != "open":
        raise InvalidOrderState(f"Review {review_id} is {review['status']} already")
    now = ctx.clock.now()
    if accept:
        if review["reason"] == REVIEW_AMOUNT:
            raise ValidationError("A payment of another amount can't be accepted as the order: "
                                  "reject it and settle the difference upstream")
        order = orders.get_order_by_id(conn, review["order_id"], for_update=True)
        assert order is not None
        if order["status"] not in (OrderStatus.COMPLETED, OrderStatus.REFUNDED):
            done = payments.complete_order(
                conn, ctx, order_id=order["order_id"], now=now,
                sources={OrderStatus.PENDING, OrderStatus.PROCESSING, OrderStatus.EXPIRED},
                upstream_ref=review["reference"])
            if done is None:
                raise InvalidOrderState(f"Order {order['order_id']} is {order['status']}")
    repository.resolve_review(conn, review_id=review_id,
                              status="accepted" if accept else "rejected", note=note, now=now)
    found = repository.get_review(conn, review_id)
    assert found is not None
    return found


def confirm_transfer(conn: Connection, ctx: ServiceContext, *, order_id: str,
                     amount: int | None) -> dict[str, Any]:
    """An operator saw a live bank transfer arrive: the order completes."""
    order = orders.get_order_by_id(conn, order_id, for_update=True)
    if order is None or order["mode"] != "live" or order["payment_method"] != "bank_transfer":
        raise OrderNotFound(f"No live bank-transfer order {order_id}", order_id=order_id)
    if order["status"] != OrderStatus.PROCESSING:
        raise InvalidOrderState(f"Order {order_id} is {order['status']}, not processing",
                                order_id=order_id, status=order["status"])
    if amount is not None and amount != order["amount"]:
        raise ValidationError(f"The transfer received ({amount}) is not the order's amount "
                              f"({order['amount']}): nothing was confirmed")
    done = payments.complete_order(conn, ctx, order_id=order_id, now=ctx.clock.now())
    assert done is not None
    return done
