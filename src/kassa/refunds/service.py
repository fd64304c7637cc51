"""Refund rules (SPEC §6): only money still in escrow, partial refunds add up, back through
the original channel (processing until it confirms) or to the available balance (at once).

Every function runs inside the caller's transaction. The order row is locked first
(SELECT ... FOR UPDATE), so concurrent refunds and a release of one order queue up and
each sees what the previous one left in escrow.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.channels.base import RefundIntent, is_upstream
from kassa.context import ServiceContext
from kassa.core import ids
from kassa.core import ledger as accounts
from kassa.core.clock import add_business_days, iso
from kassa.core.ledger import InsufficientBalance
from kassa.core.money import convert, split_fee
from kassa.core.states import OrderStatus, RefundStatus, TaskStatus
from kassa.errors import (
    AlreadyRefunded,
    InsufficientFunds,
    OrderNotFound,
    PaymentMethodUnavailable,
    RefundNotAllowed,
    ValidationError,
)
from kassa.events import repository as events
from kassa.history import service as history
from kassa.ledger import service as ledger
from kassa.payments import repository as orders
from kassa.payments.schemas import BALANCE, PURPOSE_COLLECTION, PURPOSE_PAYMENT, held_cny
from kassa.refunds import repository
from kassa.refunds.schemas import DESCRIPTIONS, RefundRequest, render_refund
from kassa.tasks import repository as tasks
from kassa.worker import queue

JOB_SETTLE_SANDBOX_REFUND = "refund.settle_sandbox"
JOB_REFUND_UPSTREAM = "refund.upstream"

# The seed's refund times, upper bounds in business days: the latest a merchant should expect.
ARRIVAL_BUSINESS_DAYS = {"alipay": 3, "wechat": 3, "card": 10, "bank_transfer": 5}


def request_refund(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                   request: RefundRequest) -> dict[str, Any]:
    """POST /api/v1/payment/refund."""
    order = orders.get_order(conn, account_id=principal.account_id, mode=principal.mode,
                             order_id=request.order_id, for_update=True)
    if order is None:
        raise OrderNotFound(f"Order {request.order_id} doesn't exist", order_id=request.order_id)
    return refund_order(conn, ctx, order=order, amount=request.amount, reason=request.reason,
                        reason_detail=request.reason_detail,
                        refund_method=request.refund_method, test_outcome=request.test_outcome)


def refunds_of(conn: Connection, *, principal: Principal, order_id: str
               ) -> list[dict[str, Any]]:
    """The refunds of one of the principal's orders, oldest first (404 for another's)."""
    order = orders.get_order(conn, account_id=principal.account_id, mode=principal.mode,
                             order_id=order_id)
    if order is None:
        raise OrderNotFound(f"Order {order_id} doesn't exist", order_id=order_id)
    return repository.refunds_of_order(conn, order_id)


def automatic_method(ctx: ServiceContext, order: Mapping[str, Any]) -> str:
    """How a task's escrow goes back when nobody said: the way it came where that channel
    takes refunds, else to the account balance (live USDT, live bank transfers)."""
    channel = ctx.channels.for_method(mode=order["mode"], payment_method=order["payment_method"])
    refundable = channel is not None and getattr(channel, "supports_refunds", True)
    return "original" if refundable else "balance"


def refund_order(conn: Connection, ctx: ServiceContext, *, order: Mapping[str, Any],
                 amount: int | None, reason: str, reason_detail: str | None,
                 refund_method: str, test_outcome: str | None,
                 merchant_refund_no: str | None = None) -> dict[str, Any]:
    """Refund `amount` (default: all that is left) of an order the caller holds locked."""
    now = ctx.clock.now()
    order_id = order["order_id"]
    if test_outcome is not None and order["mode"] == "live":
        raise ValidationError("test_outcome is accepted with test keys only",
                              details=[{"field": "test_outcome", "message": "test mode only"}])
    collection = order["purpose"] == PURPOSE_COLLECTION
    if order["purpose"] != PURPOSE_PAYMENT and not collection:
        raise RefundNotAllowed("Deposits are not refundable: the money is in your available "
                               "balance", order_id=order_id)
    if collection and refund_method != "original":
        raise RefundNotAllowed("A protocol order's money went to your available balance: it "
                               "is refunded through its channel only", order_id=order_id)
    if order["status"] not in (OrderStatus.COMPLETED, OrderStatus.REFUNDED):
        raise RefundNotAllowed(f"Order is {order['status']}: only a paid order can be refunded",
                               order_id=order_id, order_status=order["status"])
    # What may still be refunded: in the order's currency, and in CNY held in escrow (a
    # collection's: what it brought in, taken back from the available balance and, for its
    # channel fee, from the platform: see fee_back below).
    remaining = order["amount"] - order["refunded_cents"] - order["released_amount"]
    held = (order["amount_cny"] - order["refunded_cny"]) if collection else held_cny(order)
    if remaining <= 0 or held <= 0:
        first = repository.first_refund(conn, order_id)
        if order["refunded_cents"] >= order["amount"] and first is not None:
            raise AlreadyRefunded("Order has already been fully refunded",
                                  refund_id=first["refund_id"],
                                  refunded_at=iso(first["created_at"]))
        raise RefundNotAllowed("The escrow has been released to the worker: nothing is left "
                               "to refund", order_id=order_id,
                               released_cents=order["released_cents"])
    amount = remaining if amount is None else amount
    if amount == remaining:
        amount_cny = held  # the last of it: whatever the conversion left, nothing stays behind
    else:
        # Converted cumulatively (what is refunded or released so far, plus this), so the
        # rounding is spread over the refunds rather than piled on the last; and leaving at
        # least a fen for every cent still refundable. CNY orders: exactly `amount`.
        rate = order["fx_rate"]
        used = order["refunded_cents"] + order["released_amount"]
        used_cny = order["refunded_cny"] + order["released_cents"]
        converted = amount if rate is None else (
            convert(used + amount, Decimal(rate)) - used_cny)
        amount_cny = min(converted, held - (remaining - amount))
    if amount > remaining or amount_cny > held or amount_cny <= 0:
        raise RefundNotAllowed(
            f"Refund amount ({amount} cents) exceeds what is left to refund ({remaining} cents)",
            order_id=order_id, refundable_amount=remaining, requested_amount=amount)

    refund_id = ids.refund_id()
    transaction_id = ids.derived_transaction_id(refund_id)
    refunded = order["refunded_cents"] + amount
    account_id = order["account_id"]
    instant = refund_method == "balance" or order["payment_method"] == BALANCE
    if instant and test_outcome is not None:
        raise ValidationError(
            "test_outcome applies only to refunds through a payment channel; this one goes "
            "to the balance at once", details=[{"field": "test_outcome",
                                                "message": "not a channel refund"}])
    # A collection's channel fee comes back in proportion (all of what is left with the last
    # refund), so a lone order can always be refunded in full from what it brought in.
    fee_left = order["platform_fee_cny"] if collection else 0
    fee_back = (fee_left if amount == remaining
                else min(split_fee(amount_cny, order["fee_bps"]).platform_fee, fee_left))
    updated = orders.update_order(conn, order_id, {
        "refunded_cents": refunded,
        "refunded_cny": order["refunded_cny"] + amount_cny,
        **({"platform_fee_cny": fee_left - fee_back} if collection else {}),
        "updated_at": now,
    })
    channel = None
    if instant:
        destination = accounts.customer_available(account_id)
        status, estimated = RefundStatus.COMPLETED, now
    else:
        channel = ctx.channels.for_method(mode=order["mode"],
                                          payment_method=order["payment_method"])
        if channel is None or not getattr(channel, "supports_refunds", True):
            raise PaymentMethodUnavailable(
                f"Refunds through {order['payment_method']} are not available now",
                payment_method=order["payment_method"], retry_allowed=channel is None,
                suggested_actions=["Refund to the account balance (refund_method balance)"])
        destination = accounts.customer_refunds_in_flight(account_id)
        status = RefundStatus.PROCESSING
        estimated = add_business_days(now, ARRIVAL_BUSINESS_DAYS.get(order["payment_method"], 5))
    description = DESCRIPTIONS[reason] if reason != "other" else f"Refund: {reason_detail}"
    source = (accounts.customer_available(account_id) if collection
              else accounts.customer_escrow(account_id))
    postings = [accounts.Posting(source, -(amount_cny - fee_back)),
                accounts.Posting(destination, amount_cny)]
    if fee_back:
        postings.append(accounts.Posting(accounts.PLATFORM_REVENUE, -fee_back))
    try:  # before the channel hears of it: a refund the balance can't cover never leaves
        ledger.post(conn, mode=order["mode"], account_id=account_id, order_id=order_id,
                    entry=accounts.Entry(kind="refund", currency="CNY",
                                         postings=tuple(postings), description=description),
                    now=now, transaction_id=transaction_id)
    except InsufficientBalance as exc:  # only a collection's: escrow always holds enough
        available, _ = ledger.balance(conn, mode=order["mode"], account=source)
        raise InsufficientFunds(
            "Account balance is insufficient to refund this order", balance_cents=available,
            required_cents=amount_cny - fee_back) from exc
    planned: str | None = None
    settle_after: float | None = None
    through_upstream = channel is not None and is_upstream(channel)
    if channel is not None and not is_upstream(channel):
        answer = channel.refund(RefundIntent(
            refund_id=refund_id, order_id=order_id, amount=amount, currency=order["currency"],
            payment_method=order["payment_method"], test_outcome=test_outcome))
        planned, settle_after = answer.planned_outcome, answer.settle_after_seconds
    refund: dict[str, Any] = {
        "refund_id": refund_id, "account_id": account_id, "mode": order["mode"],
        "order_id": order_id, "task_id": order["task_id"], "amount": amount,
        "currency": order["currency"], "amount_cny": amount_cny, "reason": reason,
        "reason_detail": reason_detail, "refund_method": "balance" if instant else "original",
        "payment_method": order["payment_method"], "status": status,
        "sandbox_outcome": planned, "failure_code": None, "description": description[:300],
        "estimated_arrival": estimated, "event_seq": 2 if instant else 1,
        "fee_returned_cny": fee_back, "merchant_refund_no": merchant_refund_no,
        "created_at": now, "completed_at": now if instant else None, "updated_at": now,
    }
    repository.insert_refund(conn, refund)
    history.record(conn, transaction_id=transaction_id, type_="refund", account_id=account_id,
                   mode=order["mode"], order_id=order_id, refund_id=refund_id,
                   task_id=order["task_id"], amount=amount, currency=order["currency"],
                   status=status, description=description, now=now)
    _announce(conn, refund, order, "refund.created", 1, now=now)
    if instant:
        _announce(conn, refund, order, "refund.completed", 2, now=now)
        _mark_refunded_if_done(conn, updated, now)
    elif settle_after is not None:
        queue.enqueue(conn, kind=JOB_SETTLE_SANDBOX_REFUND, ref=refund_id,
                      run_at=now + timedelta(seconds=settle_after), now=now)
    elif through_upstream:  # the upstream is asked by a job, retried until it answers
        queue.enqueue(conn, kind=JOB_REFUND_UPSTREAM, ref=refund_id, run_at=now, now=now)
    return refund


def _announce(conn: Connection, refund: Mapping[str, Any], order: Mapping[str, Any] | None,
              event_type: str, sequence: int, *, now: datetime) -> None:
    """Record a refund event; it goes to its order's callback_url too (not to a protocol
    facade's notify_url: EasyPay and the crypto gateway notify payments only)."""
    told = order is not None and order["callback_protocol"] is None
    events.record(conn, account_id=refund["account_id"], mode=refund["mode"],
                  event_type=event_type, object_id=refund["refund_id"], sequence=sequence,
                  data=render_refund(refund),
                  callback_url=order["callback_url"] if told and order else None, now=now)


def _mark_refunded_if_done(conn: Connection, order: Mapping[str, Any], now: datetime) -> None:
    """completed -> refunded once the whole amount is refunded and every refund confirmed
    (so a refunded order never goes back: a confirmed refund cannot fail). `order` is the
    row as locked by the caller."""
    order_id = order["order_id"]
    if (order["status"] == OrderStatus.COMPLETED and order["refunded_cents"] >= order["amount"]
            and repository.processing_count(conn, order_id) == 0):
        orders.update_order(conn, order_id, {"status": OrderStatus.REFUNDED, "updated_at": now})


# --- the channel's answer (jobs, and later channel notifications) ---------------------------

def _lock_order_of(conn: Connection, refund_id: str) -> dict[str, Any] | None:
    """Lock the refund's order before anything else: every path that moves an order's money
    takes the order row first and the balance rows after, so none can deadlock another."""
    found = repository.get_refund(conn, refund_id)
    return None if found is None else orders.get_order_by_id(conn, found["order_id"],
                                                             for_update=True)


def complete_refund(conn: Connection, *, refund_id: str, now: datetime,
                    upstream_refund_no: str | None = None) -> dict[str, Any] | None:
    """The channel paid the money back: out of refunds in flight, to the channel."""
    order = _lock_order_of(conn, refund_id)
    refund = repository.settle(conn, refund_id=refund_id, status=RefundStatus.COMPLETED,
                               failure_code=None, now=now)
    if refund is None:
        return None
    if upstream_refund_no is not None:
        repository.set_upstream_refund_no(conn, refund_id=refund_id,
                                          upstream_refund_no=upstream_refund_no[:64])
    account_id = refund["account_id"]
    ledger.post(conn, mode=refund["mode"], account_id=account_id, order_id=refund["order_id"],
                entry=accounts.transfer(
                    "refund_settled", "CNY",
                    source=accounts.customer_refunds_in_flight(account_id),
                    destination=accounts.external(refund["payment_method"]),
                    amount=refund["amount_cny"], description=refund["description"]),
                now=now)
    history.update_status(conn, transaction_id=ids.derived_transaction_id(refund_id),
                          status=RefundStatus.COMPLETED, now=now)
    _announce(conn, refund, order, "refund.completed", refund["event_seq"], now=now)
    assert order is not None
    _mark_refunded_if_done(conn, order, now)
    return refund


def fail_refund(conn: Connection, ctx: ServiceContext, *, refund_id: str, failure_code: str,
                now: datetime) -> dict[str, Any] | None:
    """The channel refused: the money goes back into escrow (a collection's: the available
    balance) and the order can be refunded
    (or released) again. If its task is already closed (approved, failed or cancelled),
    nothing would ever release that money: it is refunded to the available balance at
    once, as a new refund."""
    order = _lock_order_of(conn, refund_id)
    refund = repository.settle(conn, refund_id=refund_id, status=RefundStatus.FAILED,
                               failure_code=failure_code, now=now)
    if refund is None:
        return None
    assert order is not None
    fee_back = refund["fee_returned_cny"]  # a collection's fee goes back to the platform
    orders.update_order(conn, order["order_id"], {  # still completed: this was in flight
        "refunded_cents": order["refunded_cents"] - refund["amount"],
        "refunded_cny": order["refunded_cny"] - refund["amount_cny"],
        "platform_fee_cny": order["platform_fee_cny"] + fee_back,
        "updated_at": now,
    })
    account_id = refund["account_id"]
    back_to = (accounts.customer_available(account_id)
               if order["purpose"] == PURPOSE_COLLECTION
               else accounts.customer_escrow(account_id))
    postings = [accounts.Posting(accounts.customer_refunds_in_flight(account_id),
                                 -refund["amount_cny"]),
                accounts.Posting(back_to, refund["amount_cny"] - fee_back)]
    if fee_back:
        postings.append(accounts.Posting(accounts.PLATFORM_REVENUE, fee_back))
    ledger.post(conn, mode=refund["mode"], account_id=account_id, order_id=refund["order_id"],
                entry=accounts.Entry(kind="refund_reversed", currency="CNY",
                                     postings=tuple(postings),
                                     description=f"Failed: {refund['description']}"),
                now=now)
    history.update_status(conn, transaction_id=ids.derived_transaction_id(refund_id),
                          status=RefundStatus.FAILED, now=now)
    _announce(conn, refund, order, "refund.failed", refund["event_seq"], now=now)
    task_id = order["task_id"]
    task = None if task_id is None else tasks.get_task(
        conn, account_id=account_id, mode=refund["mode"], task_id=task_id)
    if task is not None and task["status"] != TaskStatus.OPEN:
        reopened = orders.get_order_by_id(conn, order["order_id"], for_update=True)
        assert reopened is not None
        refund_order(conn, ctx, order=reopened, amount=refund["amount"], reason=refund["reason"],
                     reason_detail=f"{refund['refund_id']} was refused by the channel; the "
                                   f"task is {task['status']}, so it goes to your balance",
                     refund_method="balance", test_outcome=None)
    return refund


def settle_sandbox_refund(conn: Connection, ctx: ServiceContext, *, refund_id: str,
                          now: datetime) -> str:
    refund = repository.get_refund(conn, refund_id)
    if refund is None:
        return "missing"
    if refund["status"] != RefundStatus.PROCESSING:
        return f"skipped:{refund['status']}"
    if refund["sandbox_outcome"] == "failed":
        done = fail_refund(conn, ctx, refund_id=refund_id, failure_code="refund_declined",
                           now=now)
        return "failed" if done else "lost_race"
    return "completed" if complete_refund(conn, refund_id=refund_id, now=now) else "lost_race"
