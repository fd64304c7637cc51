"""The escrow lifecycle keeps every cent in one place, after any sequence of service calls.

A hypothesis state machine drives the service layer directly (no HTTP), each call in its
own `db.write_sync` unit, on SQLite and PostgreSQL. It opens accounts (verified and
enterprise), creates tasks with and without dispatch, pays them through a channel (then
settles or fails the order) or from the available balance, deposits, approves tasks to
workers from a small pool, fails and cancels tasks (refund to the original channel or to
the balance, with the sandbox told to confirm or refuse), refunds by hand (full, partial,
too much), settles the refunds in flight (a refused one goes back into escrow, or to the
balance when its task is already closed), and tries what must be refused (refund after
release, over-refund, approve twice, pay from balance when short, close a closed task,
close a task whose payment is processing): each refusal must raise the right error and
leave every table exactly as it was.

Beside the database a model keeps what should have happened: per merchant the available
balance, escrow, refunds in flight and lifetime spending; per worker the payouts; the
platform's revenue; the channels' external balances; per order where its money is (paid,
refunded, released, fee, status); per refund its status. After every step:

- `check_invariants(conn).ok` (entries balance, balances sum to zero, nothing negative,
  cache == postings, each order's money in exactly one place);
- the balances services (`account_balance`, `worker_balance`) and the system accounts'
  postings say what the model says;
- every order, refund and task row says what the model says (and so do the order
  query's escrow figures), and there are no others; no order's money is stranded (money
  held in escrow can be refunded, and nothing else can);
- `transaction_history` has exactly one row per payment, deposit and refund, with the
  status the model expects; the events are exactly the model's.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import Connection, func, select

from kassa.accounts import service as accounts
from kassa.accounts.schemas import Principal
from kassa.balances.service import account_balance, worker_balance
from kassa.core.states import TaskStatus
from kassa.db import tables
from kassa.errors import (
    AlreadyRefunded,
    InsufficientFunds,
    InvalidTaskState,
    KassaError,
    LimitExceeded,
    OrderNotFound,
    PaymentMethodUnavailable,
    RefundNotAllowed,
    ValidationError,
    WorkerNotFound,
)
from kassa.ledger.service import check_invariants
from kassa.payments import service as payments
from kassa.payments.schemas import CreatePaymentRequest, DepositRequest, render_order
from kassa.refunds import service as refunds
from kassa.refunds.schemas import RefundRequest, TaskCloseRequest
from kassa.tasks import service as tasks
from kassa.tasks.schemas import CreateTaskRequest
from tests.conftest import require_postgres
from tests.support.harness import fresh_postgres_database
from tests.support.machines import ServiceMachine, run_machine

# SPEC §2, written out here rather than read from Settings.
FEE_BPS = 2000
USD_RATE = Decimal("7.1000")
MIN_DEPOSIT = 10_000
BANK_TRANSFER_MIN = 100_000
DAILY_LIMIT = {"verified": 50_000_000, "enterprise": None}
WORKERS = ["w1", "w2", "w3"]
RETURN_URL = "https://merchant.example/return"
START = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)  # a Wednesday, 10:00 in Shanghai

GOOD_CARD, BAD_CARD = "4242424242424242", "4000000000000002"
CARD_OUTCOME = {GOOD_CARD: "completed", BAD_CARD: "failed:payment_failed"}
CHANNEL_METHODS = ["alipay", "wechat", "card", "bank_transfer"]
# One time in four (and the simplest value, the one shrinking goes to, is False).
USUALLY_NOT = st.sampled_from([False, False, False, True])
PAID = ("completed", "refunded")
HISTORY_STATUS = {"pending": "pending", "processing": "pending", "completed": "completed",
                  "refunded": "completed", "failed": "failed"}
REASONS = ["task_cancelled", "quality_issue", "task_failed", "duplicate_payment", "other"]

PROPERTY_SETTINGS = settings(max_examples=30, stateful_step_count=50, deadline=None,
                             derandomize=False, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow])


def to_cny(amount: int, currency: str) -> int:
    if currency == "CNY":
        return amount
    return int((Decimal(amount) * USD_RATE).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def platform_fee(amount: int) -> int:
    """round_half_up(amount * fee_bps / 10000)."""
    return int((Decimal(amount) * FEE_BPS / 10_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def shanghai_day(moment: datetime) -> str:
    return (moment.astimezone(UTC) + timedelta(hours=8)).strftime("%Y-%m-%d")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the model ---------------------------------------------------------------------------

@dataclass
class MMerchant:
    principal: Principal
    tier: str
    available: int = 0
    escrow: int = 0
    in_flight: int = 0
    spent: int = 0  # released to workers and as fees

    @property
    def account_id(self) -> str:
        return self.principal.account_id

    def __repr__(self) -> str:  # short, for hypothesis's reports of failing steps
        return (f"MMerchant({self.account_id}, {self.tier}, available={self.available}, "
                f"escrow={self.escrow}, in_flight={self.in_flight}, spent={self.spent})")


@dataclass
class MOrder:
    order_id: str
    merchant: MMerchant
    purpose: str  # payment or deposit
    task_id: str | None
    amount: int
    currency: str
    amount_cny: int
    method: str
    status: str
    day: str
    planned: str | None  # what settle_sandbox_order will answer (None: not sandbox-settled)
    failure_code: str | None = None
    refunded_cents: int = 0
    refunded_cny: int = 0
    released: int = 0  # CNY released to the worker and the platform
    released_amount: int = 0  # the same, in the order's currency
    fee: int = 0

    @property
    def paid(self) -> bool:
        return self.status in PAID

    @property
    def held(self) -> int:
        """CNY still in escrow."""
        if not self.paid or self.purpose != "payment":
            return 0
        return self.amount_cny - self.refunded_cny - self.released

    @property
    def remaining(self) -> int:
        """What may still be refunded, in the order's currency."""
        if not self.paid or self.purpose != "payment":
            return 0
        return self.amount - self.refunded_cents - self.released_amount


@dataclass
class MRefund:
    refund_id: str
    order: MOrder
    amount: int
    amount_cny: int
    method: str  # original or balance
    status: str
    planned: str  # what the sandbox will answer: succeeded or failed
    created_at: datetime
    reason: str
    failure_code: str | None = None


@dataclass
class MTask:
    merchant: MMerchant
    task_id: str
    amount: int
    currency: str
    status: str = "open"
    order_id: str | None = None
    worker_id: str | None = None


@dataclass
class Expected:
    """A refusal the model predicts: the error class and what its extra must contain."""

    error: type[KassaError]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RefundPlan:
    amount: int
    amount_cny: int
    instant: bool


class EscrowMachine(ServiceMachine):
    start = START

    def __init__(self) -> None:
        super().__init__()
        self.merchants: list[MMerchant] = []
        self.tasks: dict[str, MTask] = {}
        self.orders: dict[str, MOrder] = {}
        self.refunds: dict[str, MRefund] = {}
        self.workers: dict[tuple[str, str], int] = {}
        self.platform = 0
        self.external: dict[str, int] = {}

    # --- helpers ----------------------------------------------------------------------

    def run(self, fn: Any) -> Any:
        return self.db.write_sync(fn)

    def refused(self, fn: Any, expected: Expected) -> KassaError:
        """The call raises exactly the expected error and changes nothing at all."""
        before = self.run(dump)
        with pytest.raises(KassaError) as err:
            self.run(fn)
        assert type(err.value) is expected.error, (err.value, err.value.extra, expected)
        for key, value in expected.extra.items():
            assert err.value.extra.get(key) == value, (key, err.value.extra, expected)
        assert self.run(dump) == before, f"{expected.error.__name__} changed the database"
        event(f"refused: {expected.error.code} {expected.extra.get('limit', '')}".strip())
        return err.value

    def used_today(self, merchant: MMerchant, day: str) -> int:
        return sum(o.amount_cny for o in self.orders.values()
                   if o.merchant is merchant and o.day == day and o.status != "failed")

    def open_refusal(self, merchant: MMerchant, *, method: str, amount_cny: int,
                     deposit: bool) -> Expected | None:
        """What opening an order (task payment or deposit) must refuse, in the service's
        order of checks; amounts are always within the per-transaction limits here."""
        if deposit and amount_cny < MIN_DEPOSIT:
            return Expected(LimitExceeded, {"limit": "deposit_minimum",
                                            "amount_cny_cents": amount_cny})
        if method == "bank_transfer":
            if merchant.tier != "enterprise":
                return Expected(PaymentMethodUnavailable, {"payment_method": "bank_transfer"})
            if amount_cny < BANK_TRANSFER_MIN:
                return Expected(LimitExceeded, {"limit": "bank_transfer_minimum"})
        limit = DAILY_LIMIT[merchant.tier]
        if limit is not None and self.used_today(merchant, shanghai_day(self.now())) + (
                amount_cny) > limit:
            return Expected(LimitExceeded, {"limit": "daily"})
        if method == "balance" and merchant.available < amount_cny:
            return Expected(InsufficientFunds, {"balance_cents": merchant.available,
                                                "required_cents": amount_cny})
        return None

    def record_order(self, row: dict[str, Any], *, merchant: MMerchant, purpose: str,
                     task: MTask | None, amount: int, currency: str, method: str,
                     card: str | None) -> MOrder:
        """A freshly opened order: check what the service returned and add it to the model
        (a balance payment is paid at once)."""
        amount_cny = to_cny(amount, currency)
        balance = method == "balance"
        status = "completed" if balance else ("processing" if card else "pending")
        assert row["account_id"] == merchant.account_id and row["mode"] == "test"
        assert row["purpose"] == purpose
        assert row["task_id"] == (task.task_id if task else None)
        assert (row["amount"], row["currency"], row["amount_cny"]) == (
            amount, currency, amount_cny)
        assert row["payment_method"] == method
        assert row["status"] == status, (row["status"], status)
        assert row["fee_bps"] == FEE_BPS
        planned = None
        if method in ("alipay", "wechat", "bank_transfer"):
            planned = "completed"
        elif method == "card" and card is not None:
            planned = CARD_OUTCOME[card]
        event(f"opened {purpose}: {method}")
        order = MOrder(order_id=row["order_id"], merchant=merchant, purpose=purpose,
                       task_id=task.task_id if task else None, amount=amount,
                       currency=currency, amount_cny=amount_cny, method=method,
                       status=status, day=shanghai_day(self.now()), planned=planned)
        self.orders[order.order_id] = order
        if task is not None:
            task.order_id = order.order_id
        if balance:
            merchant.available -= amount_cny
            merchant.escrow += amount_cny
        return order

    def order_paid(self, order: MOrder) -> None:
        """The channel confirmed an order: its money arrives from the channel."""
        order.status = "completed"
        self.external[order.method] = self.external.get(order.method, 0) - order.amount_cny
        if order.purpose == "deposit":
            order.merchant.available += order.amount_cny
        else:
            order.merchant.escrow += order.amount_cny

    def complete(self, order: MOrder) -> None:
        now = self.now()
        assert self.run(lambda conn: payments.complete_order(
            conn, self.ctx, order_id=order.order_id, now=now)) is not None
        self.order_paid(order)

    def payable(self) -> list[MTask]:
        return [t for t in self.tasks.values() if t.status == "open" and (
            t.order_id is None or self.orders[t.order_id].status == "failed")]

    def approvable(self) -> list[MTask]:
        return [t for t in self.tasks.values() if t.status == "open" and t.order_id is not None
                and self.orders[t.order_id].held > 0]

    def orders_in(self, *statuses: str) -> list[MOrder]:
        return [o for o in self.orders.values() if o.status in statuses]

    def refunds_in(self, *statuses: str) -> list[MRefund]:
        return [r for r in self.refunds.values() if r.status in statuses]

    def maybe_refunded(self, order: MOrder) -> None:
        """completed -> refunded once the whole amount is refunded and every refund of it
        confirmed."""
        if order.status == "completed" and order.refunded_cents >= order.amount and not any(
                r.order is order and r.status == "processing" for r in self.refunds.values()):
            order.status = "refunded"

    # --- refunds (the model's rules, SPEC §6) -----------------------------------------

    def plan_refund(self, order: MOrder, amount: int | None, refund_method: str
                    ) -> RefundPlan | Expected:
        oid = order.order_id
        if order.purpose != "payment" or not order.paid:
            return Expected(RefundNotAllowed, {"order_id": oid})
        held, remaining = order.held, order.remaining
        if remaining <= 0 or held <= 0:
            if order.refunded_cents >= order.amount:
                first = min((r for r in self.refunds.values()
                             if r.order is order and r.status != "failed"),
                            key=lambda r: (r.created_at, r.refund_id))
                return Expected(AlreadyRefunded, {"refund_id": first.refund_id,
                                                  "refunded_at": iso(first.created_at)})
            return Expected(RefundNotAllowed, {"order_id": oid})
        instant = refund_method == "balance" or order.method == "balance"
        if amount is None or amount == remaining:
            # All that is left (also after a release, when a failed refund brought money
            # back into escrow): whatever the conversion left, nothing stays behind.
            return RefundPlan(amount=remaining, amount_cny=held, instant=instant)
        if amount > remaining:
            return Expected(RefundNotAllowed, {"order_id": oid, "refundable_amount": remaining,
                                               "requested_amount": amount})
        # A converted partial refund: converted cumulatively (with what is refunded or
        # released so far), and leaving at least a fen in escrow for every cent still
        # refundable, so rounding can never strand the rest. CNY orders: exactly `amount`.
        used = order.refunded_cents + order.released_amount
        used_cny = order.refunded_cny + order.released
        converted = to_cny(used + amount, order.currency) - used_cny
        amount_cny = min(converted, held - (remaining - amount))
        if amount_cny <= 0:
            return Expected(RefundNotAllowed, {"order_id": oid})
        return RefundPlan(amount=amount, amount_cny=amount_cny, instant=instant)

    def record_refund(self, order: MOrder, plan: RefundPlan, row: dict[str, Any], *,
                      reason: str, test_outcome: str | None, rendered: bool = False
                      ) -> MRefund:
        """A refund the service made (`row` as stored, or as rendered by end_task, which
        names the channel's method for an original refund, as the seed does)."""
        assert row["amount"] == plan.amount, (row, plan)
        assert row["amount_cny"] == plan.amount_cny, (row, plan)
        assert row["order_id"] == order.order_id and row["task_id"] == order.task_id
        assert row["reason"] == reason
        assert row["status"] == ("completed" if plan.instant else "processing")
        original = order.method if rendered else "original"
        assert row["refund_method"] == ("balance" if plan.instant else original)
        refund = MRefund(refund_id=row["refund_id"], order=order, amount=row["amount"],
                         amount_cny=plan.amount_cny,
                         method="balance" if plan.instant else "original",
                         status=row["status"], planned=test_outcome or "succeeded",
                         created_at=self.now(), reason=reason)
        self.refunds[refund.refund_id] = refund
        order.refunded_cents += refund.amount
        order.refunded_cny += refund.amount_cny
        merchant = order.merchant
        merchant.escrow -= refund.amount_cny
        if plan.instant:
            merchant.available += refund.amount_cny
            self.maybe_refunded(order)
        else:
            merchant.in_flight += refund.amount_cny
        event(f"refund: {refund.method} {'full' if order.remaining == 0 else 'partial'}")
        return refund

    def refund(self, order_id: str, *, merchant: MMerchant, amount: int | None,
               refund_method: str, test_outcome: str | None, reason: str) -> None:
        """A manual refund (request_refund), whatever the model says must come of it."""
        request = RefundRequest(order_id=order_id, amount=amount, reason=reason,
                                reason_detail="Customer asked" if reason == "other" else None,
                                refund_method=refund_method, test_outcome=test_outcome)

        def unit(conn: Connection) -> dict[str, Any]:
            return refunds.request_refund(conn, self.ctx, principal=merchant.principal,
                                          request=request)

        order = self.orders.get(order_id)
        if order is None or order.merchant is not merchant:
            self.refused(unit, Expected(OrderNotFound, {"order_id": order_id}))
            return
        plan = self.plan_refund(order, amount, refund_method)
        if isinstance(plan, Expected):
            self.refused(unit, plan)
            return
        if plan.instant and test_outcome is not None:  # no channel to answer it
            self.refused(unit, Expected(ValidationError))
            return
        self.record_refund(order, plan, self.run(unit), reason=reason,
                           test_outcome=test_outcome)

    # --- accounts, tasks, payments ----------------------------------------------------

    @initialize(tier=st.sampled_from(["verified", "enterprise"]))
    def first_account(self, tier: str) -> None:
        self.open_account(tier)

    @precondition(lambda self: len(self.merchants) < 3)
    @rule(tier=st.sampled_from(["verified", "enterprise"]))
    def open_account(self, tier: str) -> None:
        new = self.run(lambda conn: accounts.create_account(
            conn, self.ctx, name=f"Escrow {tier}", tier=tier))
        key = next(k for k in new.keys if k.mode == "test")
        principal = self.run(lambda conn: accounts.resolve_key(conn, self.ctx, key.api_key))
        assert principal is not None and principal.tier == tier
        self.merchants.append(MMerchant(principal=principal, tier=tier))

    def draw_task_money(self, data: st.DataObject, method: str) -> tuple[str, int]:
        currency = data.draw(st.sampled_from(["CNY", "CNY", "USD"]), label="currency")
        bank = method == "bank_transfer" and not data.draw(USUALLY_NOT, label="under_bank_min")
        if currency == "CNY":
            low = BANK_TRANSFER_MIN if bank else 1_000
            amount = data.draw(st.integers(low, 200_000), label="amount") if not data.draw(
                USUALLY_NOT, label="edge?") else data.draw(
                st.sampled_from([low, low + 1, low + 3, 33_333]), label="edge")
        else:  # USD 1.41 is CNY 10.01; USD 140.85 is CNY 1000.04
            low = 14_085 if bank else 141
            amount = data.draw(st.integers(low, 28_000), label="amount") if not data.draw(
                USUALLY_NOT, label="edge?") else data.draw(
                st.sampled_from([low, low + 1, 145, 4_695]), label="edge")
        return currency, amount

    def draw_card(self, data: st.DataObject, method: str) -> str | None:
        if method != "card":
            return None
        return data.draw(st.sampled_from([GOOD_CARD, GOOD_CARD, BAD_CARD, None]), label="card")

    @precondition(lambda self: self.merchants)
    @rule(data=st.data(), dispatch=st.booleans(), settle_now=st.sampled_from([True, True, False]),
          method=st.sampled_from(["alipay", "wechat", "card", *CHANNEL_METHODS, "balance"]))
    def create_task(self, data: st.DataObject, dispatch: bool, settle_now: bool,
                    method: str) -> None:
        merchant = data.draw(st.sampled_from(self.merchants), label="merchant")
        currency, amount = self.draw_task_money(data, method)
        card = self.draw_card(data, method) if dispatch else None
        task_id = f"t-{uuid.uuid4().hex[:16]}"
        request = CreateTaskRequest(
            title="Photograph the shop front", amount=amount, currency=currency,
            payment_method=method if dispatch else None,
            return_url=RETURN_URL if dispatch else None, dispatch=dispatch, task_id=task_id,
            test_card=card)

        def unit(conn: Connection) -> tuple[dict[str, Any], dict[str, Any] | None]:
            return tasks.create_task(conn, self.ctx, principal=merchant.principal,
                                     request=request)

        refusal = None
        if dispatch:
            refusal = self.open_refusal(merchant, method=method,
                                        amount_cny=to_cny(amount, currency), deposit=False)
        if refusal:
            self.refused(unit, refusal)  # refused as a whole: not even the task is written
            return
        task_row, order_row = self.run(unit)
        assert task_row["task_id"] == task_id and task_row["status"] == "open"
        task = MTask(merchant=merchant, task_id=task_id, amount=amount, currency=currency)
        self.tasks[task_id] = task
        if dispatch:
            assert order_row is not None
            order = self.record_order(order_row, merchant=merchant, purpose="payment",
                                      task=task, amount=amount, currency=currency,
                                      method=method, card=card)
            if settle_now and not order.paid:  # the channel confirms it at once
                self.complete(order)
        else:
            assert order_row is None

    def pay(self, task: MTask, method: str, card: str | None) -> None:
        request = CreatePaymentRequest(task_id=task.task_id, amount=task.amount,
                                       payment_method=method, return_url=RETURN_URL,
                                       test_card=card)

        def unit(conn: Connection) -> dict[str, Any]:
            return payments.create_order(conn, self.ctx, principal=task.merchant.principal,
                                         request=request)

        refusal = self.open_refusal(task.merchant, method=method,
                                    amount_cny=to_cny(task.amount, task.currency),
                                    deposit=False)
        if refusal:
            self.refused(unit, refusal)
            return
        self.record_order(self.run(unit), merchant=task.merchant, purpose="payment", task=task,
                          amount=task.amount, currency=task.currency, method=method, card=card)

    @precondition(lambda self: self.payable())
    @rule(data=st.data(), method=st.sampled_from(["alipay", "wechat", *CHANNEL_METHODS]))
    def pay_with_a_channel(self, data: st.DataObject, method: str) -> None:
        task = data.draw(st.sampled_from(self.payable()), label="task")
        self.pay(task, method, self.draw_card(data, method))

    @precondition(lambda self: self.affordable())
    @rule(data=st.data())
    def pay_from_balance(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self.affordable()), label="task")
        self.pay(task, "balance", None)

    def short_of_balance(self) -> list[MTask]:
        return [t for t in self.payable() if to_cny(t.amount, t.currency) > t.merchant.available]

    def affordable(self) -> list[MTask]:
        return [t for t in self.payable()
                if to_cny(t.amount, t.currency) <= t.merchant.available]

    def pay_from_balance_when_short(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self.short_of_balance()), label="task")
        assert self.open_refusal(task.merchant, method="balance",
                                 amount_cny=to_cny(task.amount, task.currency),
                                 deposit=False) is not None
        self.pay(task, "balance", None)

    @precondition(lambda self: self.merchants)
    @rule(data=st.data(), method=st.sampled_from(["alipay", "wechat", *CHANNEL_METHODS]),
          settle_now=st.booleans())
    def deposit(self, data: st.DataObject, method: str, settle_now: bool) -> None:
        merchant = data.draw(st.sampled_from(self.merchants), label="merchant")
        currency = data.draw(st.sampled_from(["CNY", "CNY", "USD"]), label="currency")
        if currency == "CNY":
            amount = data.draw(st.integers(10_000, 500_000), label="amount") if not data.draw(
                USUALLY_NOT, label="edge?") else data.draw(
                st.sampled_from([9_999, 10_000, 100_000]), label="edge")
        else:  # USD 14.08 is CNY 99.97; USD 14.09 is CNY 100.04
            amount = data.draw(st.integers(1_409, 70_000), label="amount") if not data.draw(
                USUALLY_NOT, label="edge?") else data.draw(
                st.sampled_from([1_408, 1_409, 14_085]), label="edge")
        card = self.draw_card(data, method)
        request = DepositRequest(amount=amount, currency=currency, payment_method=method,
                                 return_url=RETURN_URL, test_card=card)

        def unit(conn: Connection) -> dict[str, Any]:
            return payments.open_deposit(conn, self.ctx, principal=merchant.principal,
                                         request=request)

        refusal = self.open_refusal(merchant, method=method,
                                    amount_cny=to_cny(amount, currency), deposit=True)
        if refusal:
            self.refused(unit, refusal)
            return
        order = self.record_order(self.run(unit), merchant=merchant, purpose="deposit",
                                  task=None, amount=amount, currency=currency, method=method,
                                  card=card)
        if settle_now:
            self.complete(order)

    @precondition(lambda self: self.orders_in("pending", "processing"))
    @rule(data=st.data(), how=st.sampled_from(["complete", "fail", "sandbox"]))
    def settle_order(self, data: st.DataObject, how: str) -> None:
        order = data.draw(st.sampled_from(self.orders_in("pending", "processing")),
                          label="order")
        now = self.now()
        if how == "sandbox" and order.planned is not None:
            result = self.run(lambda conn: payments.settle_sandbox_order(
                conn, self.ctx, order_id=order.order_id, now=now))
            assert result == order.planned, (result, order)
            how = "complete" if result == "completed" else "sandbox-fail"
        elif how == "complete" or how == "sandbox":
            how = "complete"
            assert self.run(lambda conn: payments.complete_order(
                conn, self.ctx, order_id=order.order_id, now=now)) is not None
        else:
            assert self.run(lambda conn: payments.fail_order(
                conn, self.ctx, order_id=order.order_id, failure_code="payment_failed",
                failure_message="The card was declined", now=now)) is not None
        event(f"settle {order.purpose}: {how}")
        if how == "complete":
            self.order_paid(order)
        else:
            order.status, order.failure_code = "failed", "payment_failed"

    def settling_a_settled_order(self, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from(self.orders_in("completed", "failed", "refunded")),
                          label="order")
        before = self.run(dump)
        now = self.now()
        assert self.run(lambda conn: payments.complete_order(
            conn, self.ctx, order_id=order.order_id, now=now)) is None
        assert self.run(lambda conn: payments.fail_order(
            conn, self.ctx, order_id=order.order_id, failure_code="payment_failed",
            failure_message="late", now=now)) is None
        assert self.run(dump) == before

    # --- approve, fail, cancel --------------------------------------------------------

    @precondition(lambda self: self.approvable())
    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def approve(self, data: st.DataObject, worker: str) -> None:
        approvable = self.approvable()
        # Half the time, if there is one, a task partly refunded (or with a refund still in
        # flight, which may yet fail after the release: then it goes to the balance).
        refunded = [t for t in approvable if any(
            r.order.order_id == t.order_id for r in self.refunds.values())]
        task = data.draw(st.sampled_from(
            refunded if refunded and data.draw(st.booleans(), label="refunded?")
            else approvable), label="task")
        assert task.order_id is not None
        order = self.orders[task.order_id]
        held = order.held
        fee = platform_fee(held)
        result = self.run(lambda conn: tasks.approve_task(
            conn, self.ctx, principal=task.merchant.principal, task_id=task.task_id,
            worker_id=worker))
        release = result["release"]
        assert (release["worker_id"], release["total_cents"], release["worker_payout_cents"],
                release["platform_fee_cents"]) == (worker, held, held - fee, fee), release
        order.released_amount = order.remaining
        order.released += held
        order.fee += fee
        assert result["payment"]["escrow"] == {
            "held_cents": 0, "released_cents": order.released,
            "refunded_cents": order.refunded_cny, "worker_payout_cents": order.released - order.fee,
            "platform_fee_cents": order.fee, "currency": "CNY"}
        assert result["task"]["status"] == "approved" and result["task"]["worker_id"] == worker
        task.status, task.worker_id = "approved", worker
        merchant = task.merchant
        merchant.escrow -= held
        merchant.spent += held
        key = (merchant.account_id, worker)
        self.workers[key] = self.workers.get(key, 0) + held - fee
        self.platform += fee
        in_flight = any(r.order is order for r in self.refunds_in("processing"))
        event("approved with a refund in flight" if in_flight else
              "approved after a refund" if order.refunded_cents else "approved")

    @precondition(lambda self: any(t.status == "open" for t in self.tasks.values()))
    @rule(data=st.data(), how=st.sampled_from(["failed", "cancelled"]),
          refund_method=st.sampled_from(["original", "balance"]),
          test_outcome=st.sampled_from([None, "succeeded", "failed"]))
    def end_task(self, data: st.DataObject, how: str, refund_method: str,
                 test_outcome: str | None) -> None:
        task = data.draw(st.sampled_from(
            [t for t in self.tasks.values() if t.status == "open"]), label="task")
        order = None if task.order_id is None else self.orders[task.order_id]
        request = TaskCloseRequest(refund_method=refund_method,
                                   test_outcome=test_outcome)

        def unit(conn: Connection) -> dict[str, Any]:
            return tasks.end_task(conn, self.ctx, principal=task.merchant.principal,
                                  task_id=task.task_id, status=TaskStatus(how), request=request)

        if order is not None and order.status == "processing":
            self.refused(unit, Expected(InvalidTaskState, {"task_id": task.task_id,
                                                           "payment_status": "processing"}))
            return
        plan = None
        if order is not None and order.held > 0:
            plan = self.plan_refund(order, None, refund_method)
            assert isinstance(plan, RefundPlan)
            if plan.instant and test_outcome is not None:  # no channel to answer it
                self.refused(unit, Expected(ValidationError))
                return
        result = self.run(unit)
        reason = "task_failed" if how == "failed" else "task_cancelled"
        if order is not None and order.status == "pending":
            order.status, order.failure_code = "failed", reason
        if plan is not None:
            assert order is not None and result["refund"] is not None
            self.record_refund(order, plan, result["refund"], reason=reason,
                               test_outcome=test_outcome, rendered=True)
        else:
            assert result["refund"] is None
        assert result["task"]["status"] == how
        task.status = how
        if order is not None:
            assert result["payment"]["status"] == order.status
        event(f"task {how}: {order.status if order else 'unpaid'}")

    def approve_fail_or_cancel_a_closed_task(self, data: st.DataObject) -> None:
        """Approve twice, or fail/cancel after approval or a first fail/cancel."""
        action = data.draw(st.sampled_from(["approve", "failed", "cancelled"]), label="action")
        worker = data.draw(st.sampled_from(WORKERS), label="worker")
        task = data.draw(st.sampled_from(
            [t for t in self.tasks.values() if t.status != "open"]), label="task")
        principal = task.merchant.principal

        def unit(conn: Connection) -> dict[str, Any]:
            if action == "approve":
                return tasks.approve_task(conn, self.ctx, principal=principal,
                                          task_id=task.task_id, worker_id=worker)
            return tasks.end_task(conn, self.ctx, principal=principal, task_id=task.task_id,
                                  status=TaskStatus(action), request=TaskCloseRequest())

        self.refused(unit, Expected(InvalidTaskState, {"task_id": task.task_id,
                                                       "task_status": task.status}))

    def not_approvable(self) -> list[MTask]:
        approvable = self.approvable()
        return [t for t in self.tasks.values() if t.status == "open" and t not in approvable]

    def approve_without_money_in_escrow(self, data: st.DataObject) -> None:
        """Unpaid, payment still pending/processing/failed, or refunded (in flight or
        confirmed): nothing to release."""
        worker = data.draw(st.sampled_from(WORKERS), label="worker")
        task = data.draw(st.sampled_from(self.not_approvable()), label="task")
        order = None if task.order_id is None else self.orders[task.order_id]
        self.refused(lambda conn: tasks.approve_task(
            conn, self.ctx, principal=task.merchant.principal, task_id=task.task_id,
            worker_id=worker), Expected(InvalidTaskState, {
                "task_id": task.task_id, "task_status": "open",
                "payment_status": order.status if order else None}))

    # --- refunds ----------------------------------------------------------------------

    def refundable(self) -> list[MOrder]:
        return [o for o in self.orders.values() if o.held > 0]

    @precondition(lambda self: self.refundable())
    @rule(data=st.data(), kind=st.sampled_from(["full", "partial", "remaining", "one"]),
          refund_method=st.sampled_from(["original", "balance"]),
          test_outcome=st.sampled_from([None, "succeeded", "failed"]),
          reason=st.sampled_from(REASONS))
    def request_refund(self, data: st.DataObject, kind: str, refund_method: str,
                       test_outcome: str | None, reason: str) -> None:
        order = data.draw(st.sampled_from(self.refundable()), label="order")
        remaining = max(order.remaining, 1)
        amount = {
            "full": None,
            "remaining": remaining,
            "one": 1,
            "partial": data.draw(st.integers(1, max(remaining - 1, 1)), label="partial"),
        }[kind]
        self.refund(order.order_id, merchant=order.merchant, amount=amount,
                    refund_method=refund_method, test_outcome=test_outcome, reason=reason)

    def refund_of_an_order_without_money_in_escrow(self, data: st.DataObject) -> None:
        """A deposit, an order not (yet) paid, refunded in full (already_refunded), or
        whose escrow is all in refunds in flight."""
        order = data.draw(st.sampled_from(
            [o for o in self.orders.values() if o.held == 0]), label="order")
        amount = data.draw(st.none() | st.integers(1, max(order.remaining, 1)), label="amount")
        refund_method = data.draw(st.sampled_from(["original", "balance"]), label="method")
        plan = self.plan_refund(order, amount, refund_method)
        assert isinstance(plan, Expected), plan
        self.refund(order.order_id, merchant=order.merchant, amount=amount,
                    refund_method=refund_method, test_outcome=None, reason="task_cancelled")

    def refund_after_release(self, data: st.DataObject) -> None:
        full = data.draw(st.booleans(), label="full")
        refund_method = data.draw(st.sampled_from(["original", "balance"]), label="method")
        order = data.draw(st.sampled_from(
            [o for o in self.orders.values() if o.released > 0 and o.held == 0]),
            label="order")
        amount = None if full else data.draw(st.integers(1, max(order.remaining, 1)),
                                             label="amount")
        plan = self.plan_refund(order, amount, refund_method)
        assert isinstance(plan, Expected) and plan.error is RefundNotAllowed, plan
        self.refund(order.order_id, merchant=order.merchant, amount=amount,
                    refund_method=refund_method, test_outcome=None, reason="quality_issue")

    def over_refund(self, data: st.DataObject) -> None:
        excess = data.draw(st.integers(1, 10_000), label="excess")
        refund_method = data.draw(st.sampled_from(["original", "balance"]), label="method")
        order = data.draw(st.sampled_from([o for o in self.orders.values() if o.held > 0]),
                          label="order")
        amount = order.remaining + excess
        plan = self.plan_refund(order, amount, refund_method)
        assert isinstance(plan, Expected) and plan.error is RefundNotAllowed, plan
        self.refund(order.order_id, merchant=order.merchant, amount=amount,
                    refund_method=refund_method, test_outcome=None, reason="duplicate_payment")

    def refund_of_an_unknown_or_foreign_order(self, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from(list(self.orders.values())), label="order")
        others = [m for m in self.merchants if m is not order.merchant]
        if others:  # another merchant's order does not exist for this one
            merchant = data.draw(st.sampled_from(others), label="merchant")
            order_id = order.order_id
        else:
            merchant, order_id = order.merchant, "ord_" + "0" * 20
        self.refund(order_id, merchant=merchant, amount=None, refund_method="balance",
                    test_outcome=None, reason="other")

    @precondition(lambda self: self.refunds_in("processing"))
    @rule(data=st.data(), how=st.sampled_from(["complete", "fail", "sandbox"]))
    def settle_refund(self, data: st.DataObject, how: str) -> None:
        refund = data.draw(st.sampled_from(self.refunds_in("processing")), label="refund")
        now = self.now()
        rid = refund.refund_id
        if how == "sandbox":
            result = self.run(lambda conn: refunds.settle_sandbox_refund(
                conn, self.ctx, refund_id=rid, now=now))
            expected = "completed" if refund.planned == "succeeded" else "failed"
            assert result == expected, (result, refund)
            how, code = ("complete", None) if expected == "completed" else (
                "fail", "refund_declined")
        elif how == "complete":
            code = None
            assert self.run(lambda conn: refunds.complete_refund(
                conn, refund_id=rid, now=now)) is not None
        else:
            code = "channel_refused"
            assert self.run(lambda conn: refunds.fail_refund(
                conn, self.ctx, refund_id=rid, failure_code="channel_refused", now=now)) is not None
        order, merchant = refund.order, refund.order.merchant
        merchant.in_flight -= refund.amount_cny
        if how == "complete":
            refund.status = "completed"
            self.external[order.method] = self.external.get(order.method, 0) + (
                refund.amount_cny)
            self.maybe_refunded(order)
        else:
            refund.status, refund.failure_code = "failed", code
            merchant.escrow += refund.amount_cny
            order.refunded_cents -= refund.amount
            order.refunded_cny -= refund.amount_cny
            task = self.tasks[order.task_id] if order.task_id else None
            if task is not None and task.status != "open":
                # Nothing would ever release that money again: it is refunded to the
                # available balance at once, as a new refund of the same amount.
                plan = self.plan_refund(order, refund.amount, "balance")
                assert isinstance(plan, RefundPlan), plan
                new = self.run(lambda conn: [dict(r) for r in conn.execute(
                    select(tables.refunds).where(tables.refunds.c.order_id == order.order_id)
                ).mappings() if r["refund_id"] not in self.refunds])
                assert len(new) == 1, new
                self.record_refund(order, plan, new[0], reason=refund.reason,
                                   test_outcome=None)
                event(f"refund failed, task {task.status}: to the balance")
        event(f"refund {refund.status}" + (" after release" if order.released else ""))

    def settling_a_settled_refund(self, data: st.DataObject) -> None:
        refund = data.draw(st.sampled_from(self.refunds_in("completed", "failed")),
                           label="refund")
        before = self.run(dump)
        now, rid = self.now(), refund.refund_id
        assert self.run(lambda conn: refunds.complete_refund(
            conn, refund_id=rid, now=now)) is None
        assert self.run(lambda conn: refunds.fail_refund(
            conn, self.ctx, refund_id=rid, failure_code="late", now=now)) is None
        assert self.run(lambda conn: refunds.settle_sandbox_refund(
            conn, self.ctx, refund_id=rid, now=now)) == f"skipped:{refund.status}"
        assert self.run(dump) == before

    # --- what must be refused (one rule, so that refusals take their share of the
    # steps and no more) ------------------------------------------------------------------

    def refusals(self) -> list[str]:
        applicable = {
            "pay_from_balance_when_short": bool(self.short_of_balance()),
            "settling_a_settled_order": bool(self.orders_in("completed", "failed",
                                                            "refunded")),
            "approve_fail_or_cancel_a_closed_task": any(
                t.status != "open" for t in self.tasks.values()),
            "approve_without_money_in_escrow": bool(self.not_approvable()),
            "refund_after_release": any(o.released > 0 and o.held == 0
                                        for o in self.orders.values()),
            "over_refund": any(o.held > 0 for o in self.orders.values()),
            "refund_of_an_order_without_money_in_escrow": any(
                o.held == 0 for o in self.orders.values()),
            "refund_of_an_unknown_or_foreign_order": bool(self.orders),
            "settling_a_settled_refund": bool(self.refunds_in("completed", "failed")),
        }
        return [name for name, ok in applicable.items() if ok]

    @precondition(lambda self: self.refusals())
    @rule(data=st.data())
    def something_that_must_be_refused(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.refusals()), label="refusal")
        getattr(self, name)(data)

    @precondition(lambda self: self.merchants)
    @rule(seconds=st.integers(1, 6 * 3600))
    def time_passes(self, seconds: int) -> None:
        self.ctx.clock.advance(seconds)

    # --- after every step ---------------------------------------------------------------

    @invariant()
    def database_equals_model(self) -> None:
        snap: Snapshot = self.run(lambda conn: read_snapshot(conn, self.merchants, self.now()))
        assert snap.problems == [], snap.problems

        # The model agrees with itself: the per-merchant figures are its orders' sums.
        for m in self.merchants:
            mine = [o for o in self.orders.values() if o.merchant is m]
            assert m.escrow == sum(o.held for o in mine)
            assert m.in_flight == sum(r.amount_cny for r in self.refunds_in("processing")
                                      if r.order.merchant is m)
            assert m.spent == sum(o.released for o in mine)
            for o in mine:  # nothing is stranded: money held can be refunded, and only that
                assert (o.held > 0) == (o.remaining > 0), o
                if o.held > 0:  # ... and still be released or refunded by its open task
                    assert o.task_id is not None, o
                    task = self.tasks[o.task_id]
                    assert task.status == "open" and task.order_id == o.order_id, (task, o)
            assert min(m.available, m.escrow, m.in_flight) >= 0

        # Balances, through the balances service and the system accounts' postings.
        for m in self.merchants:
            b = snap.balances[m.account_id]
            assert (b["balance_cents"], b["escrow_cents"], b["refunds_in_flight_cents"],
                    b["lifetime_spent_cents"]) == (m.available, m.escrow, m.in_flight,
                                                   m.spent), (m, b)
            for worker in WORKERS:
                assert snap.workers[(m.account_id, worker)] == self.workers.get(
                    (m.account_id, worker)), (m.account_id, worker)
        assert snap.system.get("platform:revenue", 0) == self.platform
        assert {k: v for k, v in snap.system.items() if k.startswith("external:") and v} == {
            f"external:{k}": v for k, v in self.external.items() if v}

        # Orders, refunds, tasks: the same rows as the model, and no others.
        assert set(snap.orders) == set(self.orders)
        for oid, o in self.orders.items():
            row = snap.orders[oid]
            assert (row["status"], row["purpose"], row["account_id"], row["task_id"],
                    row["amount"], row["amount_cny"], row["payment_method"],
                    row["refunded_cents"], row["refunded_cny"], row["released_cents"],
                    row["released_amount"], row["platform_fee_cny"], row["failure_code"]) == (
                o.status, o.purpose, o.merchant.account_id, o.task_id, o.amount, o.amount_cny,
                o.method, o.refunded_cents, o.refunded_cny, o.released, o.released_amount,
                o.fee, o.failure_code), (row, o)
            assert (row["paid_at"] is not None) == o.paid
            shown = render_order(row, "http://kassa.test")  # what the order query shows
            assert (shown["type"], shown["status"], shown["refunded_cents"]) == (
                o.purpose, o.status, o.refunded_cents)
            assert shown["escrow"] == {
                "held_cents": o.held, "released_cents": o.released,
                "refunded_cents": o.refunded_cny, "worker_payout_cents": o.released - o.fee,
                "platform_fee_cents": o.fee, "currency": "CNY"}, (shown["escrow"], o)
            assert row["transaction_id"] == (txn(oid) if o.paid else None)
        assert set(snap.refunds) == set(self.refunds)
        for rid, r in self.refunds.items():
            row = snap.refunds[rid]
            assert (row["status"], row["order_id"], row["amount"], row["amount_cny"],
                    row["currency"], row["refund_method"], row["payment_method"],
                    row["failure_code"]) == (
                r.status, r.order.order_id, r.amount, r.amount_cny, r.order.currency,
                r.method, r.order.method, r.failure_code), (row, r)
            assert (row["completed_at"] is not None) == (r.status == "completed")
        assert set(snap.tasks) == set(self.tasks)
        for tid, t in self.tasks.items():
            row = snap.tasks[tid]
            assert (row["account_id"], row["status"], row["current_order_id"],
                    row["worker_id"]) == (t.merchant.account_id, t.status, t.order_id,
                                          t.worker_id), (row, t)
            assert (row["closed_at"] is not None) == (t.status != "open")

        # The transaction history: one row per payment, deposit and refund.
        expected_history = {
            txn(oid): (o.purpose, HISTORY_STATUS[o.status], o.merchant.account_id, oid, None,
                       o.task_id, o.amount, o.currency)
            for oid, o in self.orders.items()}
        expected_history.update({
            txn(rid): ("refund", HISTORY_STATUS[r.status], r.order.merchant.account_id,
                       r.order.order_id, rid, r.order.task_id, r.amount, r.order.currency)
            for rid, r in self.refunds.items()})
        assert snap.history == expected_history

        # Events: what was announced for each order, refund and closed task.
        expected_events: Counter[tuple[str, str]] = Counter()
        for oid, o in self.orders.items():
            expected_events[(oid, "payment.created")] += 1
            if o.paid:
                expected_events[(oid, "payment.completed")] += 1
            elif o.status == "failed":
                expected_events[(oid, "payment.failed")] += 1
        for rid, r in self.refunds.items():
            expected_events[(rid, "refund.created")] += 1
            if r.status != "processing":
                expected_events[(rid, f"refund.{r.status}")] += 1
        for tid, t in self.tasks.items():
            if t.status != "open":
                expected_events[(tid, f"task.{t.status}")] += 1
        assert snap.events == expected_events


def txn(object_id: str) -> str:
    """The transaction id of an order's payment or a refund: ord_<hex>/ref_<hex> ->
    txn_<hex>."""
    return "txn_" + object_id.split("_", 1)[1]


@dataclass
class Snapshot:
    problems: list[str]
    balances: dict[str, dict[str, Any]]
    workers: dict[tuple[str, str], int | None]
    system: dict[str, int]
    orders: dict[str, dict[str, Any]]
    refunds: dict[str, dict[str, Any]]
    tasks: dict[str, dict[str, Any]]
    history: dict[str, tuple[Any, ...]]
    events: Counter[tuple[str, str]]


def read_snapshot(conn: Connection, merchants: list[MMerchant], now: datetime) -> Snapshot:
    """Everything the invariant compares, in one unit (check_invariants first: on
    PostgreSQL it makes the unit one snapshot)."""
    problems = check_invariants(conn).problems
    balances = {m.account_id: account_balance(conn, principal=m.principal, now=now)
                for m in merchants}
    workers: dict[tuple[str, str], int | None] = {}
    for m in merchants:
        for worker in WORKERS:
            try:
                found = worker_balance(conn, principal=m.principal, worker_id=worker)
            except WorkerNotFound:
                workers[(m.account_id, worker)] = None
            else:
                assert found["worker_id"] == worker and found["currency"] == "CNY"
                workers[(m.account_id, worker)] = found["balance_cents"]
    p = tables.ledger_postings.c
    system = {str(a): int(s) for a, s in conn.execute(
        select(p.ledger_account, func.sum(p.amount))
        .where(p.mode == "test", p.ledger_account.like("external:%")
               | (p.ledger_account == "platform:revenue"))
        .group_by(p.ledger_account))}
    orders = {r["order_id"]: dict(r) for r in conn.execute(select(tables.orders)).mappings()}
    refund_rows = {r["refund_id"]: dict(r)
                   for r in conn.execute(select(tables.refunds)).mappings()}
    task_rows = {r["task_id"]: dict(r) for r in conn.execute(select(tables.tasks)).mappings()}
    h = tables.transaction_history.c
    history = {r[0]: tuple(r[1:]) for r in conn.execute(select(
        h.transaction_id, h.type, h.status, h.account_id, h.order_id, h.refund_id, h.task_id,
        h.amount, h.currency))}
    e = tables.events.c
    events = Counter((str(r[0]), str(r[1])) for r in conn.execute(
        select(e.object_id, e.event_type)))
    return Snapshot(problems, balances, workers, system, orders, refund_rows, task_rows,
                    history, events)


def dump(conn: Connection) -> dict[str, list[str]]:
    """Every row of every table, to show that a refused call changed nothing."""
    return {table.name: sorted(repr(tuple(row)) for row in conn.execute(select(table)))
            for table in tables.metadata.sorted_tables}


# A pass takes seconds; a failure is shrunk for up to five minutes (hypothesis's own cap)
# and must be reported with its minimal example rather than cut short by the default timeout.
SHRINK_TIMEOUT = pytest.mark.timeout(420)
OVERRIDES: dict[str, Any] = {"fx_rates": {"USD": USD_RATE}, "platform_fee_bps": FEE_BPS}


@SHRINK_TIMEOUT
def test_escrow_machine_sqlite(tmp_path: Path) -> None:
    run_machine(EscrowMachine, f"sqlite:///{tmp_path / 'kassa.sqlite3'}", tmp_path,
                PROPERTY_SETTINGS, **OVERRIDES)


@SHRINK_TIMEOUT
@pytest.mark.postgres
def test_escrow_machine_postgres(tmp_path: Path) -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        run_machine(EscrowMachine, url, tmp_path, PROPERTY_SETTINGS, **OVERRIDES)
