"""Payment order rules: opening an order for a task, settling, failing and expiring it.

Every function runs inside the caller's transaction (the edge commits). Every
state change is a conditional UPDATE through the transition table; every money
movement is a balanced ledger entry; every announced change is an event row,
all in that same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection

from kassa.accounts.schemas import Principal, Tier
from kassa.channels import sandbox
from kassa.channels.base import (
    FAILURE_MESSAGES,
    ChannelError,
    ChannelPayment,
    PaymentIntent,
    SettleOutcome,
    Upstream,
    UpstreamOrder,
    UpstreamPayment,
    is_upstream,
)
from kassa.context import ServiceContext
from kassa.core import ids
from kassa.core import ledger as accounts
from kassa.core.clock import iso, shanghai_day
from kassa.core.ledger import InsufficientBalance
from kassa.core.money import convert, split_fee
from kassa.core.states import LIVE_ORDER_STATUSES, OrderStatus, TaskStatus, sources_for
from kassa.core.urls import UrlError, check_url
from kassa.errors import (
    AmountMismatch,
    DuplicateOrder,
    InsufficientFunds,
    InvalidOrderState,
    InvalidTaskState,
    LimitExceeded,
    OrderNotFound,
    PaymentMethodUnavailable,
    TaskNotFound,
    ValidationError,
)
from kassa.events import repository as events
from kassa.history import service as history
from kassa.ledger import service as ledger
from kassa.payments import repository
from kassa.payments.schemas import (
    BALANCE,
    PURPOSE_COLLECTION,
    PURPOSE_DEPOSIT,
    PURPOSE_PAYMENT,
    CheckoutView,
    CreatePaymentRequest,
    DepositRequest,
    held_cny,
    render_checkout,
    render_order,
)
from kassa.tasks import repository as tasks
from kassa.upstreams import repository as upstreams
from kassa.upstreams.calls import UpstreamCallNeeded, UpstreamSlot
from kassa.worker import queue

DEFAULT_EXPIRY_SECONDS = 900
MIN_EXPIRY_SECONDS, MAX_EXPIRY_SECONDS = 300, 86_400  # expires_in_seconds' bounds (SPEC §5)
BANK_TRANSFER_MIN_CENTS = 100_000

JOB_SETTLE_SANDBOX = "order.settle_sandbox"
JOB_EXPIRE = "order.expire"
JOB_POLL_UPSTREAM = "order.poll_upstream"


def checked_url(url: str | None, *, principal: Principal, field: str) -> str | None:
    if url is None:
        return None
    try:
        return check_url(url, live=principal.live, field=field)
    except UrlError as exc:
        raise ValidationError(str(exc), details=[{"field": field, "message": str(exc)}]
                              ) from exc


def amount_in_cny(ctx: ServiceContext, amount: int, currency: str) -> tuple[int, Decimal | None]:
    if currency == "CNY":
        return amount, None
    try:
        rate = ctx.fx_rate(currency)
    except KeyError as exc:
        raise ValidationError(f"no exchange rate configured for {currency}") from exc
    return convert(amount, rate), rate


def check_transaction_limits(ctx: ServiceContext, amount_cny: int) -> None:
    s = ctx.settings
    if amount_cny < s.min_amount_cents:
        raise LimitExceeded(
            f"Amount is below the per-transaction minimum of {s.min_amount_cents} cents (CNY)",
            limit="per_transaction_minimum", limit_cents=s.min_amount_cents,
            amount_cny_cents=amount_cny)
    if amount_cny > s.max_amount_cents:
        raise LimitExceeded(
            f"Amount is above the per-transaction maximum of {s.max_amount_cents} cents (CNY)",
            limit="per_transaction_maximum", limit_cents=s.max_amount_cents,
            amount_cny_cents=amount_cny)


def _unavailable(method: str, message: str) -> PaymentMethodUnavailable:
    return PaymentMethodUnavailable(
        message, payment_method=method, retry_allowed=False,
        suggested_actions=["Choose a different payment method"])


def open_order(conn: Connection, ctx: ServiceContext, *, principal: Principal,
               task: Mapping[Any, Any], request: CreatePaymentRequest,
               slot: UpstreamSlot | None = None) -> dict[str, Any]:
    """Create the payment order for a task already locked by the caller."""
    currency = request.currency or task["currency"]
    if currency != task["currency"]:
        raise ValidationError(
            f"currency {currency} does not match the task's currency {task['currency']}",
            details=[{"field": "currency", "message": f"must be {task['currency']}"}])
    if request.amount != task["amount"]:
        raise AmountMismatch(
            f"Payment amount ({request.amount} cents) doesn't match task cost "
            f"({task['amount']} cents)",
            expected_amount=task["amount"], provided_amount=request.amount)
    if task["status"] != TaskStatus.OPEN:
        raise InvalidTaskState(f"Task {task['task_id']} is {task['status']}",
                               task_id=task["task_id"], task_status=task["status"])
    # The task's URLs were checked when it was created; only the request's need it now.
    return_url = (checked_url(request.return_url, principal=principal, field="return_url")
                  if request.return_url else task["return_url"])
    if return_url is None:
        raise ValidationError("return_url is required",
                              details=[{"field": "return_url", "message": "Field required"}])
    callback_url = (checked_url(request.callback_url, principal=principal, field="callback_url")
                    if request.callback_url else task["callback_url"])

    current = task["current_order_id"]
    if current is not None:
        status = repository.live_order_status(conn, current)
        if status in LIVE_ORDER_STATUSES:
            raise DuplicateOrder("Payment order already exists for task", order_id=current,
                                 status=status)
    metadata = request.metadata if request.metadata is not None else (
        orjson.loads(task["metadata_json"]) if task["metadata_json"] else None)
    order = _open(conn, ctx, principal=principal, purpose=PURPOSE_PAYMENT,
                  task_id=task["task_id"], amount=request.amount, currency=currency,
                  method=request.payment_method, return_url=return_url,
                  callback_url=callback_url, metadata=metadata,
                  expires_in=request.expires_in_seconds, test_card=request.test_card,
                  description=f"Payment for task: {task['title']}", slot=slot)
    tasks.set_current_order(conn, account_id=principal.account_id, mode=principal.mode,
                            task_id=task["task_id"], order_id=order["order_id"],
                            now=order["created_at"])
    return order


def open_deposit(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                 request: DepositRequest, slot: UpstreamSlot | None = None) -> dict[str, Any]:
    """POST /api/v1/payment/deposit: top up the available balance through a channel."""
    amount_cny, _ = amount_in_cny(ctx, request.amount, request.currency)
    if amount_cny < ctx.settings.min_deposit_cents:
        raise LimitExceeded(
            f"Deposits start at {ctx.settings.min_deposit_cents} cents (CNY)",
            limit="deposit_minimum", limit_cents=ctx.settings.min_deposit_cents,
            amount_cny_cents=amount_cny)
    return _open(conn, ctx, principal=principal, purpose=PURPOSE_DEPOSIT, task_id=None,
                 amount=request.amount, currency=request.currency,
                 method=request.payment_method,
                 return_url=checked_url(request.return_url, principal=principal,
                                        field="return_url"),
                 callback_url=checked_url(request.callback_url, principal=principal,
                                          field="callback_url"),
                 metadata=request.metadata, expires_in=request.expires_in_seconds,
                 test_card=request.test_card, description="Deposit to account balance",
                 slot=slot)


def open_collection(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                    amount: int, currency: str, method: str, return_url: str | None,
                    notify_url: str, protocol: str, description: str,
                    slot: UpstreamSlot | None = None) -> dict[str, Any]:
    """A protocol facade's order (SPEC §9): no task; when paid, credited to the available
    balance less the channel fee (`collection_fee_bps`). Its notify_url is told of the
    payment in `protocol`'s own format. URLs are the caller's to check."""
    fee_bps = ctx.settings.collection_fee_bps.get(method, 0)
    return _open(conn, ctx, principal=principal, purpose=PURPOSE_COLLECTION, task_id=None,
                 amount=amount, currency=currency, method=method, return_url=return_url,
                 callback_url=notify_url, metadata=None, expires_in=None, test_card=None,
                 description=description, fee_bps=fee_bps, callback_protocol=protocol,
                 slot=slot)


def _open(conn: Connection, ctx: ServiceContext, *, principal: Principal, purpose: str,
          task_id: str | None, amount: int, currency: str, method: str,
          return_url: str | None, callback_url: str | None, metadata: Any,
          expires_in: int | None, test_card: str | None, description: str,
          fee_bps: int | None = None, callback_protocol: str | None = None,
          slot: UpstreamSlot | None = None) -> dict[str, Any]:
    """What a task payment, a deposit and a collection share: limits, the channel, the
    order row, its history row, its jobs and its events."""
    now = ctx.clock.now()
    amount_cny, rate = amount_in_cny(ctx, amount, currency)
    check_transaction_limits(ctx, amount_cny)
    if method == "bank_transfer":
        if principal.tier != Tier.ENTERPRISE:
            raise _unavailable(method, "Bank transfer is available to enterprise accounts only")
        if amount_cny < BANK_TRANSFER_MIN_CENTS:
            raise LimitExceeded(
                f"Bank transfers start at {BANK_TRANSFER_MIN_CENTS} cents (CNY)",
                limit="bank_transfer_minimum", limit_cents=BANK_TRANSFER_MIN_CENTS,
                amount_cny_cents=amount_cny)
    if test_card is not None and principal.live:
        raise ValidationError("test_card is accepted with test keys only",
                              details=[{"field": "test_card", "message": "test mode only"}])

    order_id = ids.order_id() if slot is None or slot.order_id is None else slot.order_id
    answer: ChannelPayment | None = None
    upstream_answer: tuple[UpstreamOrder, UpstreamPayment] | None = None
    if method == BALANCE:
        if test_card is not None:
            raise ValidationError("test_card applies only to payment_method card",
                                  details=[{"field": "test_card",
                                            "message": "payment_method is balance"}])
        channel_name = BALANCE
    else:
        channel = ctx.channels.for_method(mode=principal.mode, payment_method=method)
        if channel is None:
            raise _unavailable(method, f"Payment method {method} is not available for "
                                       f"{principal.mode} payments on this account")
        if is_upstream(channel):
            if test_card is not None:
                raise ValidationError("test_card applies only to payment_method card",
                                      details=[{"field": "test_card", "message": method}])
            if slot is None:
                raise _unavailable(method, f"Payment method {method} cannot be used here")
            slot.order_id = order_id
            upstream_order = _upstream_order(ctx, channel, order_id=order_id, attempt=1,
                                             amount=amount, currency=currency, method=method,
                                             description=description, return_url=return_url)
            payment = slot.answer_for(upstream_order)
            if payment is None:  # ask the upstream, outside this transaction, then again
                # ... but not for an order the day's limit refuses anyway (this run is
                # rolled back: the rerun counts it again).
                reserve_daily(conn, ctx, principal=principal, amount_cny=amount_cny, now=now)
                raise UpstreamCallNeeded(channel, upstream_order, slot)
            upstream_answer = (upstream_order, payment)
            answer = ChannelPayment(card=None, settle_after_seconds=None,
                                    planned_outcome=None, initial_status="pending")
        else:
            try:
                answer = channel.create_payment(PaymentIntent(
                    order_id=order_id, amount=amount, currency=currency,
                    payment_method=method, test_card=test_card))
            except ChannelError as exc:
                field = exc.field or "payment_method"
                raise ValidationError(str(exc), details=[{"field": field,
                                                          "message": str(exc)}]) from exc
        channel_name = channel.name

    day = reserve_daily(conn, ctx, principal=principal, amount_cny=amount_cny, now=now)

    paid_now = answer is None  # from the balance: settled in this transaction
    status = OrderStatus.COMPLETED if answer is None else answer.initial_status
    order: dict[str, Any] = {
        "order_id": order_id,
        "account_id": principal.account_id,
        "mode": principal.mode,
        "task_id": task_id,
        "purpose": purpose,
        "amount": amount,
        "currency": currency,
        "amount_cny": amount_cny,
        "fx_rate": None if rate is None else str(rate),
        "fee_bps": ctx.settings.platform_fee_bps if fee_bps is None else fee_bps,
        "payment_method": method,
        "channel": channel_name,
        "status": status,
        "return_url": return_url,
        "callback_url": callback_url,
        "callback_protocol": callback_protocol,
        "metadata_json": None if metadata is None else orjson.dumps(metadata).decode(),
        "description": description[:300],
        "card_brand": answer.card.brand if answer and answer.card else None,
        "card_last4": answer.card.last4 if answer and answer.card else None,
        "sandbox_outcome": (answer.planned_outcome.value
                            if answer and answer.planned_outcome else None),
        "failure_code": None,
        "failure_message": None,
        "transaction_id": ids.derived_transaction_id(order_id) if paid_now else None,
        "limit_day": day,
        "refunded_cents": 0,
        "refunded_cny": 0,
        "released_cents": 0,
        "released_amount": 0,
        "platform_fee_cny": 0,
        "event_seq": 2 if paid_now else 1,
        "expires_at": now + timedelta(seconds=expires_in or DEFAULT_EXPIRY_SECONDS),
        "paid_at": now if paid_now else None,
        "pay_url": upstream_answer[1].pay_url if upstream_answer else None,
        "qr_code": upstream_answer[1].qr_code if upstream_answer else None,
        "upstream_ref": upstream_answer[0].reference if upstream_answer else None,
        "created_at": now,
        "updated_at": now,
    }
    repository.insert_order(conn, order)
    if upstream_answer is not None:
        _record_attempt(conn, order, *upstream_answer, now=now)
    history.record(conn, transaction_id=ids.derived_transaction_id(order_id), type_=purpose,
                   account_id=principal.account_id, mode=principal.mode, order_id=order_id,
                   refund_id=None, task_id=task_id, amount=amount, currency=currency,
                   status=order["status"], description=order["description"], now=now)
    data = render_order(order, ctx.public_url)
    _announce(conn, ctx, {**order, "event_seq": 1}, "payment.created", now, data=data)
    if paid_now:
        try:
            _post_payment(conn, order, now)
        except InsufficientBalance as exc:
            available, _ = ledger.balance(conn, mode=principal.mode,
                                          account=accounts.customer_available(
                                              principal.account_id))
            raise InsufficientFunds(
                "Account balance is insufficient for this payment",
                balance_cents=available, required_cents=amount_cny,
                suggested_actions=["Deposit funds (POST /api/v1/payment/deposit)",
                                   "Choose a different payment method"]) from exc
        _announce(conn, ctx, order, "payment.completed", now, data=data)
        return order
    assert answer is not None
    jobs = [(JOB_EXPIRE, order_id, order["expires_at"])]
    if answer.settle_after_seconds is not None:
        jobs.append((JOB_SETTLE_SANDBOX, order_id,
                     now + timedelta(seconds=answer.settle_after_seconds)))
    if upstream_answer is not None:  # verify triad (2): ask the upstream until it is settled
        jobs.append((JOB_POLL_UPSTREAM, order_id,
                     now + timedelta(seconds=ctx.settings.upstream_poll_min_seconds)))
    queue.enqueue_many(conn, jobs, now)
    return order


def reserve_daily(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                  amount_cny: int, now: datetime) -> str:
    """Count an order against its account's daily limit (SPEC §2), in this transaction;
    400 limit_exceeded if it would go over. Returns the day it counts on."""
    day = shanghai_day(now)
    limit = ctx.settings.daily_limit_cents.get(principal.tier)
    if limit is not None and not repository.reserve_daily_volume(
            conn, account_id=principal.account_id, mode=principal.mode, day=day,
            amount_cny=amount_cny, limit=limit):
        used = repository.daily_volume_used(conn, account_id=principal.account_id,
                                            mode=principal.mode, day=day)
        raise LimitExceeded(
            f"This payment would exceed the {principal.tier} daily limit of {limit} cents (CNY)",
            limit="daily", limit_cents=limit, used_cents=used, amount_cny_cents=amount_cny)
    return day


def _upstream_order(ctx: ServiceContext, upstream: Upstream, *, order_id: str, attempt: int,
                    amount: int, currency: str, method: str, description: str,
                    return_url: str | None) -> UpstreamOrder:
    return UpstreamOrder(
        reference=ids.upstream_reference(order_id, attempt), amount=amount, currency=currency,
        payment_method=method, description=description[:100],
        notify_url=f"{ctx.settings.resolved_upstream_notify_url}/notify/{upstream.name}",
        return_url=return_url)


def _record_attempt(conn: Connection, order: Mapping[str, Any], upstream_order: UpstreamOrder,
                    payment: UpstreamPayment, *, now: datetime) -> None:
    upstreams.insert_attempt(conn, reference=upstream_order.reference,
                             order_id=order["order_id"], channel=order["channel"],
                             trade_no=payment.trade_no, pay_url=payment.pay_url,
                             qr_code=payment.qr_code, now=now)


def retry_order(conn: Connection, ctx: ServiceContext, *, principal: Principal, order_id: str,
                slot: UpstreamSlot | None) -> dict[str, Any]:
    """POST /api/v1/payment/retry (seed 004's retry): a pending or expired order gets a new
    payment link and a new expiry; it stays the same order."""
    order = repository.get_order(conn, account_id=principal.account_id, mode=principal.mode,
                                 order_id=order_id, for_update=True)
    if order is None:
        raise OrderNotFound(f"Order {order_id} doesn't exist", order_id=order_id)
    if order["status"] not in (OrderStatus.PENDING, OrderStatus.EXPIRED):
        raise InvalidOrderState(
            f"Order {order_id} is {order['status']}: only pending or expired orders can be "
            "retried", order_id=order_id, status=order["status"])
    now = ctx.clock.now()
    if order["status"] == OrderStatus.EXPIRED and order["task_id"] is not None:
        task = tasks.get_task(conn, account_id=principal.account_id, mode=principal.mode,
                              task_id=order["task_id"], for_update=True)
        if task is None or task["status"] != TaskStatus.OPEN:
            raise InvalidTaskState(f"Task {order['task_id']} is no longer open",
                                   task_id=order["task_id"],
                                   task_status=None if task is None else task["status"])
        current = task["current_order_id"]
        if current != order_id and repository.live_order_status(
                conn, current) in LIVE_ORDER_STATUSES:
            raise DuplicateOrder("Another payment order exists for the task", order_id=current)
    # The order's own lifetime again (its created_at stays: a retried order's grows, so
    # within the bounds expires_in_seconds has, 300 s to a day).
    lifetime = order["expires_at"] - order["created_at"]
    if not MIN_EXPIRY_SECONDS <= lifetime.total_seconds() <= MAX_EXPIRY_SECONDS:
        lifetime = timedelta(seconds=min(max(lifetime.total_seconds(), MIN_EXPIRY_SECONDS),
                                         MAX_EXPIRY_SECONDS))
    values: dict[str, Any] = {"expires_at": now + lifetime}
    channel = ctx.channels.for_method(mode=order["mode"], payment_method=order["payment_method"])
    jobs = [(JOB_EXPIRE, order_id, now + lifetime)]
    # An expired order counts against the day's limit again (its volume was given back).
    day = (reserve_daily(conn, ctx, principal=principal, amount_cny=order["amount_cny"],
                         now=now) if order["status"] == OrderStatus.EXPIRED else None)
    if channel is not None and is_upstream(channel):
        if slot is None:
            raise _unavailable(order["payment_method"], "This order cannot be retried here")
        slot.order_id = order_id
        upstream_order = _upstream_order(
            ctx, channel, order_id=order_id, attempt=upstreams.attempt_count(conn, order_id) + 1,
            amount=order["amount"], currency=order["currency"],
            method=order["payment_method"], description=order["description"],
            return_url=order["return_url"])
        payment = slot.answer_for(upstream_order)
        if payment is None:
            raise UpstreamCallNeeded(channel, upstream_order, slot)
        _record_attempt(conn, order, upstream_order, payment, now=now)
        values.update(pay_url=payment.pay_url, qr_code=payment.qr_code,
                      upstream_ref=upstream_order.reference)
        if order["status"] == OrderStatus.EXPIRED:  # (a pending one is being polled already)
            jobs.append((JOB_POLL_UPSTREAM, order_id,
                         now + timedelta(seconds=ctx.settings.upstream_poll_min_seconds)))
    elif channel is None and order["payment_method"] != BALANCE:
        raise _unavailable(order["payment_method"],
                           f"Payment method {order['payment_method']} is not available now")
    elif order["sandbox_outcome"] is not None:
        jobs.append((JOB_SETTLE_SANDBOX, order_id,
                     now + timedelta(seconds=ctx.settings.sandbox_settle_seconds)))
    if order["status"] == OrderStatus.EXPIRED:
        revived = repository.transition(conn, order_id=order_id, sources={OrderStatus.EXPIRED},
                                        target=OrderStatus.PENDING, now=now, limit_day=day,
                                        **values)
        assert revived is not None, "the order is locked by this transaction"
        order = revived
        history.update_status(conn, transaction_id=ids.derived_transaction_id(order_id),
                              status=OrderStatus.PENDING, now=now)
        if order["task_id"] is not None:
            tasks.set_current_order(conn, account_id=principal.account_id,
                                    mode=principal.mode, task_id=order["task_id"],
                                    order_id=order_id, now=now)
    else:
        order = repository.update_order(conn, order_id, {**values, "updated_at": now})
    queue.enqueue_many(conn, jobs, now)
    return order


def create_order(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                 request: CreatePaymentRequest, slot: UpstreamSlot | None = None
                 ) -> dict[str, Any]:
    """POST /api/v1/payment/create: pay for an existing task."""
    task = tasks.get_task(conn, account_id=principal.account_id, mode=principal.mode,
                          task_id=request.task_id, for_update=True)
    if task is None:
        raise TaskNotFound(f"Task {request.task_id} doesn't exist", task_id=request.task_id)
    return open_order(conn, ctx, principal=principal, task=task, request=request, slot=slot)


def get_order(conn: Connection, *, principal: Principal, order_id: str) -> dict[str, Any]:
    order = repository.get_order(conn, account_id=principal.account_id, mode=principal.mode,
                                 order_id=order_id)
    if order is None:
        raise OrderNotFound(f"Order {order_id} doesn't exist", order_id=order_id)
    return order


def list_orders(conn: Connection, *, principal: Principal, statuses: tuple[str, ...] | None,
                starting_after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The principal's orders, newest first, `limit` at a time after the order
    `starting_after` (an order of theirs, else 404): (orders, whether there are more)."""
    after = None
    if starting_after is not None:
        cursor = get_order(conn, principal=principal, order_id=starting_after)
        after = (cursor["created_at"], cursor["order_id"])
    rows = repository.list_orders(conn, account_id=principal.account_id, mode=principal.mode,
                                  statuses=statuses, after=after, limit=limit + 1)
    return rows[:limit], len(rows) > limit


# --- settlement (run by jobs and, later, channel notifications) ---------------------------

def _announce(conn: Connection, ctx: ServiceContext, order: Mapping[Any, Any], event_type: str,
              now: datetime, *, data: dict[str, Any] | None = None) -> None:
    """Record an order event. A protocol's notify_url hears of the payment only (EasyPay
    and the crypto gateway notify success and nothing else); endpoints hear of them all."""
    protocol = order["callback_protocol"]
    told = protocol is None or event_type == "payment.completed"
    events.record(conn, account_id=order["account_id"], mode=order["mode"],
                  event_type=event_type, object_id=order["order_id"],
                  sequence=order["event_seq"],
                  data=render_order(order, ctx.public_url) if data is None else data,
                  callback_url=order["callback_url"] if told else None,
                  callback_protocol=protocol if told else None, now=now)


def _post_payment(conn: Connection, order: Mapping[Any, Any], now: datetime) -> None:
    """The money of a paid order: into the merchant's escrow (a task payment) or available
    balance (a deposit; a collection less its channel fee), from the channel, or from the
    available balance."""
    account_id = order["account_id"]
    if order["payment_method"] == BALANCE:
        source = accounts.customer_available(account_id)
    else:
        source = accounts.external(order["payment_method"])
    if order["purpose"] == PURPOSE_COLLECTION:
        split = split_fee(order["amount_cny"], order["fee_bps"])
        postings = [accounts.Posting(source, -order["amount_cny"]),
                    accounts.Posting(accounts.customer_available(account_id),
                                     split.worker_payout)]
        if split.platform_fee:
            postings.append(accounts.Posting(accounts.PLATFORM_REVENUE, split.platform_fee))
        entry = accounts.Entry(kind=order["purpose"], currency="CNY", postings=tuple(postings),
                               description=order["description"])
    else:
        destination = (accounts.customer_available(account_id)
                       if order["purpose"] == PURPOSE_DEPOSIT
                       else accounts.customer_escrow(account_id))
        entry = accounts.transfer(order["purpose"], "CNY", source=source,
                                  destination=destination, amount=order["amount_cny"],
                                  description=order["description"])
    ledger.post(conn, mode=order["mode"], account_id=account_id, order_id=order["order_id"],
                entry=entry, now=now, transaction_id=order["transaction_id"])


def complete_order(conn: Connection, ctx: ServiceContext, *, order_id: str,
                   now: datetime, sources: set[OrderStatus] | None = None,
                   **extra: Any) -> dict[str, Any] | None:
    """The channel confirmed the money: pending/processing -> completed, into escrow (or,
    for a deposit, the available balance)."""
    transaction_id = ids.derived_transaction_id(order_id)
    # (an expired order is completed only by an operator resolving its review: accept_late)
    order = repository.transition(
        conn, order_id=order_id, sources=sources or {OrderStatus.PENDING, OrderStatus.PROCESSING},
        target=OrderStatus.COMPLETED, now=now, paid_at=now, transaction_id=transaction_id,
        **extra)
    if order is None:
        return None
    _post_payment(conn, order, now)
    if order["purpose"] == PURPOSE_COLLECTION:
        order = repository.update_order(conn, order_id, {
            "platform_fee_cny": split_fee(order["amount_cny"], order["fee_bps"]).platform_fee})
    history.update_status(conn, transaction_id=transaction_id, status=OrderStatus.COMPLETED,
                          now=now)
    _announce(conn, ctx, order, "payment.completed", now)
    return order


def _unwind(conn: Connection, order: Mapping[Any, Any], now: datetime) -> None:
    """An order that ended without money: it no longer counts against the day's limit."""
    repository.release_daily_volume(conn, account_id=order["account_id"], mode=order["mode"],
                                    day=order["limit_day"], amount_cny=order["amount_cny"])
    history.update_status(conn, transaction_id=ids.derived_transaction_id(order["order_id"]),
                          status=order["status"], now=now)


def fail_order(conn: Connection, ctx: ServiceContext, *, order_id: str, failure_code: str,
               failure_message: str, now: datetime) -> dict[str, Any] | None:
    order = repository.transition(
        conn, order_id=order_id, sources=sources_for(OrderStatus.FAILED),
        target=OrderStatus.FAILED, now=now, failure_code=failure_code,
        failure_message=failure_message)
    if order is None:
        return None
    _unwind(conn, order, now)
    _announce(conn, ctx, order, "payment.failed", now)
    return order


def expire_order(conn: Connection, ctx: ServiceContext, *, order_id: str,
                 now: datetime) -> str:
    current = repository.get_order_by_id(conn, order_id)
    if current is None:
        return "missing"
    if current["status"] != OrderStatus.PENDING:
        return f"skipped:{current['status']}"
    if current["expires_at"] > now:
        queue.enqueue(conn, kind=JOB_EXPIRE, ref=order_id, run_at=current["expires_at"], now=now)
        return "rescheduled"
    order = repository.transition(conn, order_id=order_id, sources={OrderStatus.PENDING},
                                  target=OrderStatus.EXPIRED, now=now)
    if order is None:
        return "lost_race"
    _unwind(conn, order, now)
    _announce(conn, ctx, order, "payment.expired", now)
    return "expired"


def settle_sandbox_order(conn: Connection, ctx: ServiceContext, *, order_id: str,
                         now: datetime) -> str:
    """The sandbox channel's own settlement, decided when the order was created."""
    order = repository.get_order_by_id(conn, order_id)
    if order is None:
        return "missing"
    if order["status"] not in (OrderStatus.PENDING, OrderStatus.PROCESSING):
        return f"skipped:{order['status']}"
    outcome = SettleOutcome(order["sandbox_outcome"])
    if outcome is SettleOutcome.SUCCEEDED:
        return "completed" if complete_order(conn, ctx, order_id=order_id, now=now) else "lost_race"
    done = fail_order(conn, ctx, order_id=order_id, failure_code=outcome.value,
                      failure_message=FAILURE_MESSAGES[outcome], now=now)
    return f"failed:{outcome.value}" if done else "lost_race"


# --- the hosted checkout (SPEC §10): the payer's side of an order ---------------------------
#
# Anyone holding an order's id may look at its checkout page, so these functions take the id
# alone. What a payer may do there in test mode (enter a test card, simulate the outcome)
# never reaches a live order: a live order id is "not found" to them.

CARD_INVALID = "card_invalid"  # not 12-19 digits, or not a valid card number (Luhn)
CARD_NOT_A_TEST_CARD = "card_not_test_card"  # valid, but not one of the sandbox's cards
SIMULATED_OUTCOMES = ("succeeded", "failed")


def checkout_view(conn: Connection, ctx: ServiceContext, *, order_id: str, now: datetime
                  ) -> CheckoutView | None:
    """The order as its checkout page shows it; None for an unknown id."""
    order = repository.get_order_by_id(conn, order_id)
    return None if order is None else render_checkout(order, ctx.public_url, now)


def _pending_test_order(conn: Connection, *, order_id: str, now: datetime) -> dict[str, Any]:
    """A test-mode order still waiting for its payer, locked for this transaction."""
    order = repository.get_order_by_id(conn, order_id, for_update=True)
    if order is None or order["mode"] != "test":
        raise OrderNotFound(f"Order {order_id} doesn't exist", order_id=order_id)
    if order["status"] != OrderStatus.PENDING:
        raise InvalidOrderState(f"Order {order_id} is {order['status']}", order_id=order_id,
                                status=order["status"])
    if order["expires_at"] <= now:  # (the sweeper has not got to it yet)
        raise InvalidOrderState(f"Order {order_id} has expired", order_id=order_id,
                                status=OrderStatus.EXPIRED)
    return order


def _read_test_card(card_number: str) -> tuple[str, str, SettleOutcome]:
    """The sandbox's decision for a card number: (brand, last4, outcome). The number itself
    goes no further than this function, and no error repeats it."""
    try:
        card, outcome = sandbox.read_test_card(card_number, field="card_number")
    except sandbox.NotATestCard as exc:
        raise ValidationError(
            "Test mode accepts only the sandbox test cards (4242424242424242, "
            "4000000000000002, 4000000000009995)", reason=CARD_NOT_A_TEST_CARD,
            details=[{"field": "card_number", "message": "not a test card"}]) from exc
    except ChannelError as exc:
        raise ValidationError("This is not a valid card number", reason=CARD_INVALID,
                              details=[{"field": "card_number", "message": "invalid"}]
                              ) from exc
    return card.brand, card.last4, outcome


def pay_by_test_card(conn: Connection, ctx: ServiceContext, *, order_id: str,
                     card_number: str, now: datetime) -> dict[str, Any]:
    """Test mode: the payer enters a card on the checkout page of a card order made without
    `test_card`. The sandbox decides by the test card, as it does for `test_card` at
    creation: pending -> processing, brand and last four kept (never the number), and the
    sandbox settles it after `sandbox_settle_seconds`."""
    order = _pending_test_order(conn, order_id=order_id, now=now)
    if (order["payment_method"] != "card" or order["sandbox_outcome"] is not None
            or order["card_last4"] is not None):
        raise InvalidOrderState(f"Order {order_id} does not take a card here",
                                order_id=order_id, status=order["status"])
    brand, last4, outcome = _read_test_card(card_number)
    updated = repository.transition(
        conn, order_id=order_id, sources={OrderStatus.PENDING}, target=OrderStatus.PROCESSING,
        now=now, card_brand=brand, card_last4=last4, sandbox_outcome=outcome.value)
    assert updated is not None, "the order is locked by this transaction"
    queue.enqueue(conn, kind=JOB_SETTLE_SANDBOX, ref=order_id,
                  run_at=now + timedelta(seconds=ctx.settings.sandbox_settle_seconds), now=now)
    return updated


def simulate_payment(conn: Connection, ctx: ServiceContext, *, order_id: str, outcome: str,
                     now: datetime) -> dict[str, Any]:
    """Test mode: the checkout page's "simulate success / failure" for a pending order of a
    method the payer pays elsewhere (not a card: cards take a test card). Settles it now,
    as the sandbox would: completed (money into escrow or the balance) or failed
    (`payment_failed`)."""
    if outcome not in SIMULATED_OUTCOMES:
        raise ValidationError("outcome must be succeeded or failed",
                              details=[{"field": "outcome", "message": "invalid"}])
    order = _pending_test_order(conn, order_id=order_id, now=now)
    if order["payment_method"] in ("card", BALANCE):
        raise InvalidOrderState(f"Order {order_id} cannot be simulated",
                                order_id=order_id, status=order["status"])
    if outcome == "succeeded":
        done = complete_order(conn, ctx, order_id=order_id, now=now,
                              sources={OrderStatus.PENDING})
    else:
        done = fail_order(conn, ctx, order_id=order_id,
                          failure_code=SettleOutcome.DECLINED.value,
                          failure_message="The payment failed (simulated on the test "
                                          "checkout page)", now=now)
    assert done is not None, "the order is locked by this transaction"
    return done


# --- release (task approved) ----------------------------------------------------------------

def release_order(conn: Connection, *, order: Mapping[str, Any], worker_id: str,
                  now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything still in escrow for an order the caller holds locked goes to the worker,
    minus the platform fee, as one balanced entry; returns the release figures and the
    order as it is now."""
    held = held_cny(order)
    split = split_fee(held, order["fee_bps"])
    account_id = order["account_id"]
    postings = [accounts.Posting(accounts.customer_escrow(account_id), -held)]
    if split.worker_payout:
        postings.append(accounts.Posting(accounts.worker_payable(account_id, worker_id),
                                         split.worker_payout))
    if split.platform_fee:
        postings.append(accounts.Posting(accounts.PLATFORM_REVENUE, split.platform_fee))
    transaction_id = ledger.post(
        conn, mode=order["mode"], account_id=account_id, order_id=order["order_id"],
        entry=accounts.Entry(kind="release", currency="CNY", postings=tuple(postings),
                             description=f"Release to worker {worker_id}"),
        now=now)
    updated = repository.update_order(conn, order["order_id"], {
        "released_cents": order["released_cents"] + held,
        "released_amount": order["amount"] - order["refunded_cents"],  # the rest, all of it
        "platform_fee_cny": order["platform_fee_cny"] + split.platform_fee,
        "updated_at": now,
    })
    return {"worker_id": worker_id, "total_cents": held,
            "worker_payout_cents": split.worker_payout,
            "platform_fee_cents": split.platform_fee, "currency": "CNY",
            "transaction_id": transaction_id, "released_at": iso(now)}, updated
