"""What an upstream's word does to an order (SPEC §5's verify triad, §8).

A payment is believed only when it has been verified: a notification whose signature,
merchant id and amount check out (1), the upstream's answer to Kassa's own query (2, the
poll job; 3, a client asking for verification now). All three end here, in
`apply_upstream_status`, inside the caller's transaction:

- paid, for the order's exact amount, while the order is pending or processing: the
  order completes (once: the transition is conditional);
- paid, but for another amount, or after the order expired or failed, or through another
  link of an order already paid (the payer paid twice): nothing is credited; a payment
  review is opened for an operator (`kassa orders reviews`);
- anything else (still pending, closed, unknown to the upstream): nothing changes.

A refund sent to an upstream again after an unclear answer (a timeout: it may have been
done) and then refused is not failed either: it waits in a review of its own, since the
customer may have the money back already.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from kassa.channels.base import UpstreamState, UpstreamStatus, VerifiedNotification
from kassa.context import ServiceContext
from kassa.core import ids
from kassa.core.clock import shanghai_day
from kassa.core.states import LIVE_ORDER_STATUSES, OrderStatus, TaskStatus
from kassa.errors import InvalidOrderState, NotFound, OrderNotFound, ValidationError
from kassa.payments import repository as orders
from kassa.payments import service as payments
from kassa.refunds import repository as refunds_repo
from kassa.refunds import service as refunds
from kassa.tasks import repository as tasks
from kassa.upstreams import repository

REVIEW_LATE = "late_payment"  # paid after the order expired (or failed)
REVIEW_AMOUNT = "amount_mismatch"  # paid another amount
REVIEW_DUPLICATE = "duplicate_payment"  # paid again, through another link of a paid order
REVIEW_REFUND = "refund_unconfirmed"  # refused when sent again after an unclear answer
WAITING = (OrderStatus.PENDING, OrderStatus.PROCESSING)
ANY_TIME = datetime.min.replace(tzinfo=UTC)
# A day's volume counted for money that has arrived whatever the limit (a late payment an
# operator accepts): the limit is for new orders, not for money already received.
NO_LIMIT = 2**62


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
    if status.reference != order["upstream_ref"]:  # paid, and paid again through another link
        _review(conn, order, attempt, reason=REVIEW_DUPLICATE, amount=status.amount,
                source=source, now=now)
        return "review", order_id
    return "duplicate", order_id  # this very payment was applied already: nothing to do


def _review(conn: Connection, order: dict[str, Any], attempt: dict[str, Any], *, reason: str,
            amount: int | None, source: str, now: datetime) -> None:
    repository.open_review(conn, {
        "review_id": ids.review_id(), "order_id": order["order_id"],
        "account_id": order["account_id"], "mode": order["mode"],
        "channel": attempt["channel"], "reference": attempt["reference"], "reason": reason,
        "reported_amount": amount, "source": source, "status": "open", "note": None,
        "created_at": now, "resolved_at": None})


def review_refund(conn: Connection, *, refund_id: str, channel: str, message: str,
                  now: datetime) -> str:
    """An upstream refused a refund sent again after an unclear answer: it stays processing
    until an operator has checked with the upstream (accept: it was paid back; reject: it
    fails, and the money goes back where it came from)."""
    refund = refunds_repo.get_refund(conn, refund_id)
    if refund is None or refund["status"] != "processing":
        return "skipped"
    order = orders.get_order_by_id(conn, refund["order_id"])
    assert order is not None, "a refund's order exists"
    _review(conn, order, {"channel": channel, "reference": refund_id}, reason=REVIEW_REFUND,
            amount=refund["amount"], source="refund", now=now)
    repository.set_review_note(conn, order_id=order["order_id"], reference=refund_id,
                               reason=REVIEW_REFUND, note=f"upstream: {message}"[:500])
    return "review"


def record_notification(conn: Connection, ctx: ServiceContext, *, channel: str,
                        notification: VerifiedNotification, now: datetime) -> str:
    """Verify triad (1): a verified notification, recorded once; a repeat is a no-op."""
    status = notification.status
    if repository.get_attempt(conn, status.reference[:32]) is None:
        return "unknown_order"  # not recorded: a later copy is answered the same way
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


def references_to_ask(conn: Connection, order_id: str, *, expired_since: datetime | None = None
                      ) -> tuple[dict[str, Any] | None, list[str]]:
    """An order still waiting for an upstream (or one that expired at `expired_since` or
    later: a payment made just before the end is looked for once more), and the references
    of its attempts (newest first, at most three: an older link may still have been paid)."""
    order = orders.get_order_by_id(conn, order_id)
    if order is None:
        return None, []
    expired_to_ask = (order["status"] == OrderStatus.EXPIRED and expired_since is not None
                      and order["expires_at"] >= expired_since)
    if order["status"] not in WAITING and not expired_to_ask:
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
    if review["reason"] == REVIEW_REFUND:
        _settle_refund_review(conn, ctx, review, accept=accept, now=now)
    elif accept:
        if review["reason"] == REVIEW_AMOUNT:
            raise ValidationError("A payment of another amount can't be accepted as the order: "
                                  "reject it and settle the difference upstream")
        if review["reason"] == REVIEW_DUPLICATE:
            raise ValidationError("The order was paid already: reject this second payment and "
                                  "return it upstream")
        _accept_late_payment(conn, ctx, review, now=now)
    repository.resolve_review(conn, review_id=review_id,
                              status="accepted" if accept else "rejected", note=note, now=now)
    found = repository.get_review(conn, review_id)
    assert found is not None
    return found


def _accept_late_payment(conn: Connection, ctx: ServiceContext, review: dict[str, Any], *,
                         now: datetime) -> None:
    """The money of an expired (or failed) order did arrive: the order completes, into
    escrow, as the payment of its task, if the task is still waiting for it."""
    order = orders.get_order_by_id(conn, review["order_id"], for_update=True)
    assert order is not None
    if order["status"] in (OrderStatus.COMPLETED, OrderStatus.REFUNDED):
        return
    if order["task_id"] is not None:
        task = tasks.get_task(conn, account_id=order["account_id"], mode=order["mode"],
                              task_id=order["task_id"], for_update=True)
        current = None if task is None else task["current_order_id"]
        current_status = (None if current is None or current == order["order_id"]
                          else orders.live_order_status(conn, current))
        if task is None or task["status"] != TaskStatus.OPEN or (
                current_status is not None
                and OrderStatus(current_status) in LIVE_ORDER_STATUSES):
            raise InvalidOrderState(
                f"Task {order['task_id']} has moved on (closed, or paid by another order): "
                "reject the review and return the money upstream",
                order_id=order["order_id"])
    extra: dict[str, Any] = {"upstream_ref": review["reference"]}
    if order["status"] in (OrderStatus.EXPIRED, OrderStatus.FAILED):
        # Its day's volume was given back when it ended: the money counts again, today.
        day = shanghai_day(now)
        orders.reserve_daily_volume(conn, account_id=order["account_id"], mode=order["mode"],
                                    day=day, amount_cny=order["amount_cny"], limit=NO_LIMIT)
        extra["limit_day"] = day
    done = payments.complete_order(
        conn, ctx, order_id=order["order_id"], now=now,
        sources={OrderStatus.PENDING, OrderStatus.PROCESSING, OrderStatus.EXPIRED}, **extra)
    if done is None:
        raise InvalidOrderState(f"Order {order['order_id']} is {order['status']}")
    if order["task_id"] is not None:
        tasks.set_current_order(conn, account_id=order["account_id"], mode=order["mode"],
                                task_id=order["task_id"], order_id=order["order_id"], now=now)


def _settle_refund_review(conn: Connection, ctx: ServiceContext, review: dict[str, Any], *,
                          accept: bool, now: datetime) -> None:
    """Accept: the upstream did pay the refund back; reject: it did not, the refund fails."""
    refund_id = review["reference"]
    if accept:
        done = refunds.complete_refund(conn, refund_id=refund_id, now=now)
    else:
        done = refunds.fail_refund(conn, ctx, refund_id=refund_id,
                                   failure_code="refund_refused", now=now)
    if done is None:
        raise InvalidOrderState(f"Refund {refund_id} is not processing any more")


def fail_transfer(conn: Connection, ctx: ServiceContext, *, order_id: str,
                  note: str | None) -> dict[str, Any]:
    """An operator gives up on a live bank transfer that never arrived: the order fails
    (payment.failed), and its task can be paid another way."""
    _transfer(conn, order_id)  # (locked, and checked to be one)
    done = payments.fail_order(conn, ctx, order_id=order_id,
                               failure_code="transfer_not_received",
                               failure_message=(note or "The bank transfer never arrived")[:500],
                               now=ctx.clock.now())
    assert done is not None, "the order is locked and processing"
    return done


def _transfer(conn: Connection, order_id: str) -> dict[str, Any]:
    order = orders.get_order_by_id(conn, order_id, for_update=True)
    if order is None or order["mode"] != "live" or order["payment_method"] != "bank_transfer":
        raise OrderNotFound(f"No live bank-transfer order {order_id}", order_id=order_id)
    if order["status"] != OrderStatus.PROCESSING:
        raise InvalidOrderState(f"Order {order_id} is {order['status']}, not processing",
                                order_id=order_id, status=order["status"])
    return order


def confirm_transfer(conn: Connection, ctx: ServiceContext, *, order_id: str,
                     amount: int | None) -> dict[str, Any]:
    """An operator saw a live bank transfer arrive: the order completes."""
    order = _transfer(conn, order_id)
    if amount is not None and amount != order["amount"]:
        raise ValidationError(f"The transfer received ({amount}) is not the order's amount "
                              f"({order['amount']}): nothing was confirmed")
    done = payments.complete_order(conn, ctx, order_id=order_id, now=ctx.clock.now())
    assert done is not None
    return done
