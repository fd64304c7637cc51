"""Posting entries and checking the ledger's invariants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from kassa.core import ids
from kassa.core.ledger import Entry, has_cached_balance
from kassa.ledger import repository


def post(conn: Connection, *, mode: str, account_id: str | None, order_id: str | None,
         entry: Entry, now: datetime, transaction_id: str | None = None) -> str:
    """Write a balanced entry in the caller's transaction; returns its transaction id."""
    transaction_id = transaction_id or ids.transaction_id()
    repository.write_entry(conn, transaction_id=transaction_id, mode=mode, account_id=account_id,
                           order_id=order_id, entry=entry, now=now)
    return transaction_id


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
    return LedgerCheck(problems)
