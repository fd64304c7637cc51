"""The money invariants hold after any sequence of service calls, on SQLite and PostgreSQL.

A hypothesis state machine drives the service layer directly (no HTTP): it opens
accounts, creates tasks with dispatch, settles, expires and re-orders them, and tries
what must be refused (over-limit, duplicate, live without a channel). A model of what
should have happened is kept beside the database. After every step the database is
read back and checked against the model and against the ledger's invariants:

- `check_invariants` (entries balance, balances sum to zero, cache == postings);
- a completed order has exactly one ledger transaction, moving amount_cny from the
  channel into the customer's escrow; no other order has any posting;
- escrow balances equal the completed orders' amount_cny (per account and per mode);
- daily_volume per (account, mode, day) equals the amount_cny of that day's orders
  that are not failed/expired;
- every order's status and every task's current order are what the model says.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
from kassa.db import tables
from kassa.errors import DuplicateOrder, LimitExceeded, PaymentMethodUnavailable
from kassa.ledger.service import check_invariants
from kassa.payments import service as payments
from kassa.payments.schemas import CreatePaymentRequest, Currency, PaymentMethod
from kassa.tasks import service as tasks
from kassa.tasks.schemas import CreateTaskRequest
from tests.conftest import require_postgres
from tests.support.harness import fresh_postgres_database
from tests.support.machines import ServiceMachine, run_machine

# SPEC §2, written out independently of Settings.
MIN_CNY, MAX_CNY = 1_000, 5_000_000
DAILY_LIMIT = {"standard": 10_000_000, "verified": 50_000_000}
USD_RATE_UNITS = 71_000  # 7.1000 CNY per USD, in 1/10000ths
DEFAULT_EXPIRY = 900
# 21:00 in Shanghai: the limit day rolls over after a few steps that move the clock.
START = datetime(2026, 4, 1, 13, 0, tzinfo=UTC)

CARDS = {  # the seed's test cards (with a spaced spelling) -> how settlement ends
    "4242424242424242": "completed",
    "4242 4242 4242 4242": "completed",
    "4000000000000002": "failed:payment_failed",
    "4000000000009995": "failed:insufficient_funds",
}
METHODS: list[PaymentMethod] = ["alipay", "wechat", "card"]
methods = st.sampled_from(METHODS)
cards = st.sampled_from(list(CARDS))
PROPERTY_SETTINGS = settings(max_examples=25, stateful_step_count=20, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


def shanghai_day(moment: datetime) -> str:
    """UTC+8, no DST (written out here rather than taken from kassa.core.clock)."""
    return (moment.astimezone(UTC) + timedelta(hours=8)).strftime("%Y-%m-%d")


def cny(amount: int, currency: str) -> int:
    if currency == "CNY":
        return amount
    return (amount * USD_RATE_UNITS * 2 + 10_000) // 20_000  # half up, integers only


@st.composite
def task_amounts(draw: st.DrawFn) -> tuple[Currency, int]:
    """(currency, amount): mostly valid, sometimes large (to reach the daily limit) and
    sometimes just outside the per-transaction limits."""
    currency: Currency = draw(st.sampled_from(["CNY", "CNY", "USD"]))
    if currency == "CNY":
        kind = draw(st.sampled_from(["ok", "ok", "big", "big", "big", "edge"]))
        if kind == "ok":
            return currency, draw(st.integers(MIN_CNY, MAX_CNY))
        if kind == "big":
            return currency, draw(st.just(MAX_CNY) | st.integers(4_000_000, MAX_CNY))
        return currency, draw(st.sampled_from([1, MIN_CNY - 1, MIN_CNY, MAX_CNY, MAX_CNY + 1]))
    # USD 1.41 is CNY 10.01 and USD 7042.25 is CNY 50000.00 (rounded half up).
    kind = draw(st.sampled_from(["ok", "ok", "ok", "edge"]))
    if kind == "ok":
        return currency, draw(st.integers(141, 704_225))
    return currency, draw(st.sampled_from([140, 141, 704_225, 704_226]))


@dataclass
class ModelOrder:
    order_id: str
    account_id: str
    task_id: str
    amount_cny: int
    day: str
    status: str
    settles_to: str  # what settle_sandbox_order will answer
    expires_at: datetime


@dataclass
class ModelTask:
    principal: Principal
    task_id: str
    amount: int
    currency: Currency
    order_id: str | None


@dataclass
class Merchant:
    test: Principal
    live: Principal
    daily_limit: int
    tried_live: bool = False


class LedgerMachine(ServiceMachine):
    start = START

    def __init__(self) -> None:
        super().__init__()
        self.merchants: list[Merchant] = []
        self.tasks: dict[str, ModelTask] = {}
        self.orders: dict[str, ModelOrder] = {}

    # --- helpers ------------------------------------------------------------------------

    def orders_in(self, *statuses: str) -> list[ModelOrder]:
        return [o for o in self.orders.values() if o.status in statuses]

    def reorderable(self) -> list[ModelTask]:
        return [t for t in self.tasks.values()
                if t.order_id is None or self.orders[t.order_id].status in ("failed", "expired")]

    def holding(self) -> list[ModelTask]:
        return [t for t in self.tasks.values()
                if t.order_id is not None and self.orders[t.order_id].status in (
                    "pending", "processing", "completed")]

    def used_today(self, account_id: str, day: str) -> int:
        return sum(o.amount_cny for o in self.orders.values()
                   if o.account_id == account_id and o.day == day
                   and o.status not in ("failed", "expired"))

    def expected_refusal(self, merchant: Merchant, amount_cny: int, day: str) -> str | None:
        if amount_cny < MIN_CNY:
            return "per_transaction_minimum"
        if amount_cny > MAX_CNY:
            return "per_transaction_maximum"
        if self.used_today(merchant.test.account_id, day) + amount_cny > merchant.daily_limit:
            return "daily"
        return None

    def merchant_of(self, principal: Principal) -> Merchant:
        return next(m for m in self.merchants if m.test.account_id == principal.account_id)

    def orders_for_task(self, principal: Principal, task_id: str) -> list[str]:
        def unit(conn: Connection) -> list[str]:
            o = tables.orders.c
            return sorted(conn.execute(select(o.order_id).where(
                o.account_id == principal.account_id, o.mode == principal.mode,
                o.task_id == task_id)).scalars())
        return self.db.write_sync(unit)

    def task_row(self, principal: Principal, task_id: str) -> Any:
        def unit(conn: Connection) -> Any:
            t = tables.tasks.c
            return conn.execute(select(tables.tasks).where(
                t.account_id == principal.account_id, t.mode == principal.mode,
                t.task_id == task_id)).mappings().first()
        return self.db.write_sync(unit)

    def order_row(self, order_id: str) -> dict[str, Any]:
        return self.db.write_sync(lambda conn: dict(conn.execute(
            select(tables.orders).where(tables.orders.c.order_id == order_id)).mappings().one()))

    def record_order(self, order: dict[str, Any], *, task: ModelTask, method: PaymentMethod,
                     card: str | None, amount_cny: int, expires_in: int | None,
                     now: datetime) -> None:
        assert order["account_id"] == task.principal.account_id
        assert order["mode"] == "test"
        assert order["task_id"] == task.task_id
        assert (order["amount"], order["currency"]) == (task.amount, task.currency)
        assert order["amount_cny"] == amount_cny
        assert order["payment_method"] == method
        assert order["status"] == ("processing" if method == "card" else "pending")
        assert order["limit_day"] == shanghai_day(now)
        assert order["expires_at"] == now + timedelta(seconds=expires_in or DEFAULT_EXPIRY)
        assert order["transaction_id"] is None and order["paid_at"] is None
        self.orders[order["order_id"]] = ModelOrder(
            order_id=order["order_id"], account_id=task.principal.account_id,
            task_id=task.task_id, amount_cny=amount_cny, day=shanghai_day(now),
            status=order["status"], settles_to=CARDS[card] if card else "completed",
            expires_at=order["expires_at"])
        task.order_id = order["order_id"]

    # --- rules --------------------------------------------------------------------------

    @initialize(tier=st.sampled_from(["standard", "verified"]))
    def first_account(self, tier: str) -> None:
        self.create_account(tier)

    @precondition(lambda self: len(self.merchants) < 3)
    @rule(tier=st.sampled_from(["standard", "verified"]))
    def create_account(self, tier: str) -> None:
        new = self.db.write_sync(lambda conn: accounts.create_account(
            conn, self.ctx, name=f"Property {tier}", tier=tier))
        keys = {k.mode: k for k in new.keys}
        test = self.db.write_sync(
            lambda conn: accounts.resolve_key(conn, self.ctx, keys["test"].api_key))
        live = self.db.write_sync(
            lambda conn: accounts.resolve_key(conn, self.ctx, keys["live"].api_key))
        assert test is not None and live is not None
        assert (test.account_id, test.mode, test.tier) == (new.account_id, "test", tier)
        assert (live.account_id, live.mode, live.tier) == (new.account_id, "live", tier)
        self.merchants.append(Merchant(test=test, live=live, daily_limit=DAILY_LIMIT[tier]))

    @precondition(lambda self: self.merchants)
    @rule(data=st.data(), money=task_amounts(), method=methods, card=cards,
          expires_in=st.sampled_from([None, 300, 900, 3600]))
    def create_task_with_dispatch(self, data: st.DataObject, money: tuple[Currency, int],
                                  method: PaymentMethod, card: str, expires_in: int | None) -> None:
        merchant = data.draw(st.sampled_from(self.merchants), label="merchant")
        currency, amount = money
        self.dispatch(merchant, currency=currency, amount=amount, method=method,
                      card=card if method == "card" else None, expires_in=expires_in)

    @precondition(lambda self: self.merchants)
    @rule(data=st.data(), method=methods, card=cards)
    def fill_the_day_to_the_daily_limit(self, data: st.DataObject, method: PaymentMethod,
                                        card: str) -> None:
        """Orders of the per-transaction maximum until the day's limit refuses one."""
        merchant = data.draw(st.sampled_from(self.merchants), label="merchant")
        for _ in range(merchant.daily_limit // MAX_CNY + 1):
            if not self.dispatch(merchant, currency="CNY", amount=MAX_CNY, method=method,
                                 card=card if method == "card" else None, expires_in=None):
                break
        else:
            raise AssertionError("the daily limit never refused an order")

    def dispatch(self, merchant: Merchant, *, currency: Currency, amount: int,
                 method: PaymentMethod, card: str | None, expires_in: int | None) -> bool:
        """Create a task with dispatch; True if it was accepted (as the model expected)."""
        task_id = f"prop-{uuid.uuid4().hex}"
        request = CreateTaskRequest(
            title="Check the opening hours", amount=amount, currency=currency,
            payment_method=method, return_url="https://merchant.example/return",
            callback_url="https://merchant.example/hook", dispatch=True, task_id=task_id,
            test_card=card, expires_in_seconds=expires_in)
        now = self.now()
        amount_cny = cny(amount, currency)
        refusal = self.expected_refusal(merchant, amount_cny, shanghai_day(now))
        used = self.used_today(merchant.test.account_id, shanghai_day(now))
        try:
            task, order = self.db.write_sync(lambda conn: tasks.create_task(
                conn, self.ctx, principal=merchant.test, request=request))
        except LimitExceeded as exc:
            event(f"create refused: {exc.extra['limit']}")
            assert exc.extra["limit"] == refusal, (exc.extra, refusal)
            assert exc.extra["amount_cny_cents"] == amount_cny
            if refusal == "daily":
                assert exc.extra["used_cents"] == used
                assert exc.extra["limit_cents"] == merchant.daily_limit
            # Refused as a whole: not even the task was written.
            assert self.task_row(merchant.test, task_id) is None
            assert self.orders_for_task(merchant.test, task_id) == []
            return False
        assert refusal is None, f"expected {refusal} for {amount_cny} (used {used})"
        assert order is not None
        assert task["task_id"] == task_id and task["current_order_id"] == order["order_id"]
        model_task = ModelTask(principal=merchant.test, task_id=task_id, amount=amount,
                               currency=currency, order_id=None)
        self.tasks[task_id] = model_task
        self.record_order(order, task=model_task, method=method, card=card,
                          amount_cny=amount_cny, expires_in=expires_in, now=now)
        return True

    @precondition(lambda self: any(not m.tried_live for m in self.merchants))
    @rule(data=st.data(), amount=st.integers(MIN_CNY, MAX_CNY))
    def live_dispatch_without_a_channel_is_refused(self, data: st.DataObject,
                                                   amount: int) -> None:
        merchant = data.draw(st.sampled_from([m for m in self.merchants if not m.tried_live]),
                             label="merchant")
        merchant.tried_live = True
        currency: Currency = "CNY"
        task_id = f"live-{uuid.uuid4().hex}"
        request = CreateTaskRequest(
            title="Live task", amount=amount, currency=currency, payment_method="alipay",
            return_url="https://merchant.example/return", dispatch=True, task_id=task_id)
        with pytest.raises(PaymentMethodUnavailable):
            self.db.write_sync(lambda conn: tasks.create_task(
                conn, self.ctx, principal=merchant.live, request=request))
        assert self.task_row(merchant.live, task_id) is None
        assert self.orders_for_task(merchant.live, task_id) == []

    @precondition(lambda self: self.orders_in("pending", "processing"))
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from(self.orders_in("pending", "processing")),
                          label="order")
        now = self.now()
        result = self.db.write_sync(lambda conn: payments.settle_sandbox_order(
            conn, self.ctx, order_id=order.order_id, now=now))
        assert result == order.settles_to, (result, order)
        event(f"settled: {result}")
        order.status = "completed" if result == "completed" else "failed"
        row = self.order_row(order.order_id)
        if order.status == "completed":
            assert row["paid_at"] == now and row["transaction_id"] is not None
            assert row["failure_code"] is None
        else:
            assert row["paid_at"] is None and row["transaction_id"] is None
            assert row["failure_code"] == result.removeprefix("failed:")

    @precondition(lambda self: self.orders_in("completed", "failed", "expired"))
    @rule(data=st.data())
    def settle_again_changes_nothing(self, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from(self.orders_in("completed", "failed", "expired")),
                          label="order")
        before = self.order_row(order.order_id)
        result = self.db.write_sync(lambda conn: payments.settle_sandbox_order(
            conn, self.ctx, order_id=order.order_id, now=self.now()))
        assert result == f"skipped:{order.status}"
        assert self.order_row(order.order_id) == before

    @precondition(lambda self: self.orders_in("pending"))
    @rule(data=st.data(), early=st.booleans(), late_by=st.integers(0, 600))
    def expire(self, data: st.DataObject, early: bool, late_by: int) -> None:
        order = data.draw(st.sampled_from(self.orders_in("pending")), label="order")
        wait = (order.expires_at - self.now()).total_seconds()
        if early and wait > 0:
            # Not yet due: the expiry is put off, the order stays pending.
            result = self.db.write_sync(lambda conn: payments.expire_order(
                conn, self.ctx, order_id=order.order_id, now=self.now()))
            assert result == "rescheduled"
            assert self.order_row(order.order_id)["status"] == "pending"
        self.ctx.clock.advance(max(wait, 0) + late_by)
        result = self.db.write_sync(lambda conn: payments.expire_order(
            conn, self.ctx, order_id=order.order_id, now=self.now()))
        assert result == "expired"
        order.status = "expired"

    @precondition(lambda self: self.orders_in("processing", "completed", "failed", "expired"))
    @rule(data=st.data())
    def expire_leaves_non_pending_orders_alone(self, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from(
            self.orders_in("processing", "completed", "failed", "expired")), label="order")
        self.ctx.clock.advance(max((order.expires_at - self.now()).total_seconds(), 0) + 1)
        before = self.order_row(order.order_id)
        result = self.db.write_sync(lambda conn: payments.expire_order(
            conn, self.ctx, order_id=order.order_id, now=self.now()))
        assert result == f"skipped:{order.status}"
        assert self.order_row(order.order_id) == before

    @precondition(lambda self: self.reorderable())
    @rule(data=st.data(), method=methods, card=cards,
          expires_in=st.sampled_from([None, 300, 3600]))
    def order_again_after_failure_or_expiry(self, data: st.DataObject, method: PaymentMethod,
                                            card: str, expires_in: int | None) -> None:
        task = data.draw(st.sampled_from(self.reorderable()), label="task")
        card_or_none = card if method == "card" else None
        now = self.now()
        amount_cny = cny(task.amount, task.currency)
        refusal = self.expected_refusal(self.merchant_of(task.principal), amount_cny,
                                        shanghai_day(now))
        before = self.orders_for_task(task.principal, task.task_id)
        request = CreatePaymentRequest(
            task_id=task.task_id, amount=task.amount,
            currency=data.draw(st.sampled_from([None, task.currency]), label="currency"),
            payment_method=method, test_card=card_or_none, expires_in_seconds=expires_in)
        try:
            order = self.db.write_sync(lambda conn: payments.create_order(
                conn, self.ctx, principal=task.principal, request=request))
        except LimitExceeded as exc:
            event("re-order refused: daily")
            assert refusal == "daily" == exc.extra["limit"], (refusal, exc.extra)
            assert self.orders_for_task(task.principal, task.task_id) == before
            assert self.task_row(task.principal, task.task_id)["current_order_id"] == (
                task.order_id)
            return
        assert refusal is None, refusal
        event("ordered again")
        previous = task.order_id
        self.record_order(order, task=task, method=method, card=card_or_none,
                          amount_cny=amount_cny, expires_in=expires_in, now=now)
        after = self.orders_for_task(task.principal, task.task_id)
        assert after == sorted([*before, order["order_id"]])
        if previous is not None:
            assert self.order_row(previous)["status"] == self.orders[previous].status

    @precondition(lambda self: self.holding())
    @rule(data=st.data(), method=methods)
    def second_order_for_a_held_task_is_a_duplicate(self, data: st.DataObject,
                                                    method: PaymentMethod) -> None:
        task = data.draw(st.sampled_from(self.holding()), label="task")
        before = self.orders_for_task(task.principal, task.task_id)
        request = CreatePaymentRequest(
            task_id=task.task_id, amount=task.amount, payment_method=method,
            test_card="4242424242424242" if method == "card" else None)
        with pytest.raises(DuplicateOrder) as err:
            self.db.write_sync(lambda conn: payments.create_order(
                conn, self.ctx, principal=task.principal, request=request))
        assert task.order_id is not None
        assert err.value.extra["order_id"] == task.order_id
        assert err.value.extra["status"] == self.orders[task.order_id].status
        assert self.orders_for_task(task.principal, task.task_id) == before

    @precondition(lambda self: self.orders)
    @rule(seconds=st.integers(1, 8 * 3600))
    def time_passes(self, seconds: int) -> None:
        self.ctx.clock.advance(seconds)

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def money_adds_up(self) -> None:
        snap = self.db.write_sync(read_snapshot)
        assert snap.check_problems == []

        txns_by_order: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for order_id, txn_id, kind in snap.transactions:
            assert order_id in snap.orders, f"ledger transaction {txn_id} for unknown order"
            txns_by_order[order_id].append((txn_id, kind))
        postings_by_order: dict[str, dict[str, int]] = defaultdict(dict)
        for order_id, account, amount in snap.postings:
            assert account not in postings_by_order[order_id]
            postings_by_order[order_id][account] = amount

        completed_by_mode: dict[str, int] = defaultdict(int)
        completed_by_account: dict[tuple[str, str], int] = defaultdict(int)
        counted: dict[tuple[str, str, str], int] = defaultdict(int)
        for order_id, o in snap.orders.items():
            if o["status"] == "completed":
                assert txns_by_order[order_id] == [(o["transaction_id"], "payment")]
                assert postings_by_order[order_id] == {
                    f"customer:{o['account_id']}:escrow": o["amount_cny"],
                    f"external:{o['payment_method']}": -o["amount_cny"],
                }
                completed_by_mode[o["mode"]] += o["amount_cny"]
                completed_by_account[(o["mode"], o["account_id"])] += o["amount_cny"]
            else:
                assert o["status"] in ("pending", "processing", "failed", "expired")
                assert order_id not in txns_by_order, (order_id, o["status"])
                assert order_id not in postings_by_order
                assert o["transaction_id"] is None
            if o["status"] not in ("failed", "expired"):
                counted[(o["account_id"], o["mode"], o["limit_day"])] += o["amount_cny"]

        escrow_by_mode: dict[str, int] = defaultdict(int)
        escrow_by_account: dict[tuple[str, str], int] = defaultdict(int)
        for mode, account, balance in snap.balances:
            if account.startswith("customer:") and account.endswith(":escrow"):
                escrow_by_mode[mode] += balance
                escrow_by_account[(mode, account.split(":")[1])] += balance
        for mode in set(escrow_by_mode) | set(completed_by_mode):
            assert escrow_by_mode[mode] == completed_by_mode[mode], mode
        for key in set(escrow_by_account) | set(completed_by_account):
            assert escrow_by_account[key] == completed_by_account[key], key

        for day_key in set(snap.volume) | set(counted):
            assert snap.volume.get(day_key, 0) == counted.get(day_key, 0), day_key

        # The database says what the model says, and holds nothing else.
        assert set(snap.orders) == set(self.orders)
        assert {key[2] for key in snap.current_orders} == set(self.tasks)
        for order_id, model in self.orders.items():
            assert snap.orders[order_id]["status"] == model.status, (order_id, model)
        for task_id, task in self.tasks.items():
            task_key = (task.principal.account_id, task.principal.mode, task_id)
            assert snap.current_orders[task_key] == task.order_id


@dataclass
class Snapshot:
    check_problems: list[str]
    orders: dict[str, dict[str, Any]]
    transactions: list[tuple[str, str, str]]
    postings: list[tuple[str, str, int]]
    balances: list[tuple[str, str, int]]
    volume: dict[tuple[str, str, str], int]
    current_orders: dict[tuple[str, str, str], str | None]


def read_snapshot(conn: Connection) -> Snapshot:
    o, t, p = tables.orders.c, tables.ledger_transactions.c, tables.ledger_postings.c
    b, v, k = tables.ledger_balances.c, tables.daily_volume.c, tables.tasks.c
    orders = {row["order_id"]: dict(row) for row in conn.execute(select(
        o.order_id, o.account_id, o.mode, o.status, o.amount_cny, o.payment_method,
        o.limit_day, o.transaction_id)).mappings()}
    transactions = [(r[0], r[1], r[2]) for r in conn.execute(
        select(t.order_id, t.transaction_id, t.kind).where(t.order_id.is_not(None)))]
    postings = [(r[0], r[1], int(r[2])) for r in conn.execute(
        select(t.order_id, p.ledger_account, func.sum(p.amount))
        .join(tables.ledger_transactions, t.transaction_id == p.transaction_id)
        .where(t.order_id.is_not(None))
        .group_by(t.order_id, p.ledger_account))]
    balances = [(r[0], r[1], int(r[2])) for r in conn.execute(
        select(b.mode, b.ledger_account, b.balance).where(b.currency == "CNY"))]
    volume = {(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(
        select(v.account_id, v.mode, v.day, v.amount_cny))}
    current = {(r[0], r[1], r[2]): r[3] for r in conn.execute(
        select(k.account_id, k.mode, k.task_id, k.current_order_id))}
    return Snapshot(check_invariants(conn).problems, orders, transactions, postings, balances,
                    volume, current)


OVERRIDES: dict[str, Any] = {"fx_rates": {"USD": Decimal("7.1000")}}


def test_ledger_properties_sqlite(tmp_path: Path) -> None:
    run_machine(LedgerMachine, f"sqlite:///{tmp_path / 'kassa.sqlite3'}", tmp_path,
                PROPERTY_SETTINGS, **OVERRIDES)


@pytest.mark.postgres
def test_ledger_properties_postgres(tmp_path: Path) -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        run_machine(LedgerMachine, url, tmp_path, PROPERTY_SETTINGS, **OVERRIDES)
