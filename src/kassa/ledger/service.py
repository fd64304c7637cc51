"""Posting entries and checking the ledger's invariants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from kassa.core import ids
from kassa.core.ledger import (
    PLATFORM_REVENUE,
    Entry,
    customer_available,
    customer_escrow,
    customer_refunds_in_flight,
    has_cached_balance,
)
from kassa.ledger import repository


def post(conn: Connection, *, mode: str, account_id: str | None, order_id: str | None,
         entry: Entry, now: datetime, transaction_id: str | None = None) -> str:
    """Write a balanced entry in the caller's transaction; returns its transaction id."""
    transaction_id = transaction_id or ids.transaction_id()
    repository.write_entry(conn, transaction_id=transaction_id, mode=mode, account_id=account_id,
                           order_id=order_id, entry=entry, now=now)
    return transaction_id


def balance(conn: Connection, *, mode: str, account: str) -> tuple[int, datetime | None]:
    """A merchant or worker account's balance (CNY cents) and when it last moved."""
    return repository.balance(conn, mode=mode, account=account)


@dataclass(frozen=True)
class MerchantBalances:
    available: int
    escrow: int
    refunds_in_flight: int
    lifetime_spent: int  # escrow released to workers and as fees, for good
    last_moved: datetime | None


def merchant_balances(conn: Connection, *, mode: str, account_id: str) -> MerchantBalances:
    """A merchant's balances, all from one snapshot."""
    names = [customer_available(account_id), customer_escrow(account_id),
             customer_refunds_in_flight(account_id)]
    figures, spent = repository.merchant_figures(
        conn, mode=mode, accounts=names, escrow_account=names[1], account_id=account_id)
    moved = [t for _, t in figures.values() if t is not None]
    available, escrow, in_flight = (figures.get(n, (0, None))[0] for n in names)
    return MerchantBalances(available=available, escrow=escrow, refunds_in_flight=in_flight,
                            lifetime_spent=spent, last_moved=max(moved) if moved else None)


@dataclass
class LedgerCheck:
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_invariants(conn: Connection) -> LedgerCheck:
    """SPEC §3: entries balance, balances sum to zero, no customer balance is negative,
    and the cached balances equal the postings."""
    problems: list[str] = []
    repository.one_snapshot(conn)
    for txn, total in repository.transaction_sums(conn):
        if total != 0:
            problems.append(f"transaction {txn} sums to {total}")
    posted, cached = repository.posted_and_cached_balances(conn)
    for key in set(posted) | set(cached):
        if not has_cached_balance(key[1]):
            if key in cached:
                problems.append(f"system account {key} has a cached balance row")
            continue
        if posted.get(key, 0) != cached.get(key, 0):
            problems.append(f"cached balance {key} is {cached.get(key)} but postings say "
                            f"{posted.get(key)}")
    by_mode_currency: dict[tuple[str, str], int] = {}
    for (mode, account, currency), balance in posted.items():
        by_mode_currency[(mode, currency)] = by_mode_currency.get((mode, currency), 0) + balance
        if account.startswith("customer:") and balance < 0:
            problems.append(f"{mode} {account} is negative: {balance}")
    for mode_currency, total in by_mode_currency.items():
        if total != 0:
            problems.append(f"balances of {mode_currency} sum to {total}")
    problems.extend(order_money_problems(conn))
    return LedgerCheck(problems)


def order_money_problems(conn: Connection) -> list[str]:
    """Each order's money is in exactly one place, and where the order says it is: its
    escrow, refunds in flight and release postings equal the order's own figures, and an
    order that was never paid has no postings at all."""
    problems: list[str] = []
    postings = repository.order_postings(conn)
    for o in repository.order_positions(conn):
        order_id, acc = str(o["order_id"]), str(o["account_id"])
        mine = postings.get(order_id, {})
        paid = o["status"] in ("completed", "refunded")
        if not paid:
            if any(mine.values()):
                problems.append(f"unpaid order {order_id} ({o['status']}) moved money: {mine}")
            continue
        fee, released = int(o["platform_fee_cny"]), int(o["released_cents"])
        held = int(o["amount_cny"]) - int(o["refunded_cny"]) - released
        workers = sum(v for a, v in mine.items() if a.startswith(f"worker:{acc}/"))
        if o["purpose"] == "deposit":
            expected = {"available": int(o["amount_cny"]), "escrow": 0, "in_flight": 0,
                        "workers": 0, "fee": 0}
        elif o["purpose"] == "collection":  # less its fee, less what was refunded
            expected = {"available": int(o["amount_cny"]) - fee - int(o["refunded_cny"]),
                        "escrow": 0, "in_flight": int(o["in_flight"]), "workers": 0,
                        "fee": fee}
        else:
            expected = {"escrow": held, "in_flight": int(o["in_flight"]),
                        "workers": released - fee, "fee": fee}
        actual = {"available": mine.get(customer_available(acc), 0),
                  "escrow": mine.get(customer_escrow(acc), 0),
                  "in_flight": mine.get(customer_refunds_in_flight(acc), 0),
                  "workers": workers, "fee": mine.get(PLATFORM_REVENUE, 0)}
        for place, amount in expected.items():
            if actual[place] != amount:
                problems.append(f"order {order_id}: {place} holds {actual[place]} by the "
                                f"ledger but {amount} by the order")
    return problems
