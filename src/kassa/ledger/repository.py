"""All SQL about ledger transactions, postings and cached balances."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, insert, literal_column, select, union_all
from sqlalchemy.dialects import postgresql, sqlite

from kassa.core.ledger import Entry, has_cached_balance
from kassa.db.prepared import Prepared
from kassa.db.tables import ledger_balances, ledger_postings, ledger_transactions

_insert_txn = Prepared(insert(ledger_transactions))
_insert_postings = Prepared(
    insert(ledger_postings),
    columns=["transaction_id", "mode", "ledger_account", "amount", "currency"])


def _upsert_balance(dialect: str) -> Prepared:
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(ledger_balances)
    return Prepared(ins.on_conflict_do_update(
        index_elements=[ledger_balances.c.mode, ledger_balances.c.ledger_account,
                        ledger_balances.c.currency],
        set_={
            "balance": ledger_balances.c.balance + ins.excluded.balance,
            "updated_at": ins.excluded.updated_at,
        },
    ))


_UPSERTS = {d: _upsert_balance(d) for d in ("sqlite", "postgresql")}


def write_entry(conn: Connection, *, transaction_id: str, mode: str, account_id: str | None,
                order_id: str | None, entry: Entry, now: datetime) -> None:
    _insert_txn.run(conn, {
        "transaction_id": transaction_id, "mode": mode, "account_id": account_id,
        "kind": entry.kind, "order_id": order_id, "currency": entry.currency,
        "description": entry.description[:300], "created_at": now,
    })
    rows = [
        {"transaction_id": transaction_id, "mode": mode, "ledger_account": p.account,
         "amount": p.amount, "currency": entry.currency}
        for p in entry.postings
    ]
    _insert_postings.run_many(conn, rows)
    cached = sorted(  # one lock order for every transaction: no deadlocks between them
        (p for p in entry.postings if has_cached_balance(p.account)), key=lambda p: p.account)
    if cached:
        _UPSERTS[conn.dialect.name].run_many(conn, [
            {"mode": mode, "ledger_account": p.account, "currency": entry.currency,
             "balance": p.amount, "updated_at": now}
            for p in cached
        ])


def posted_and_cached_balances(conn: Connection) -> tuple[
        dict[tuple[str, str, str], int], dict[tuple[str, str, str], int]]:
    """Balances summed from the postings (the truth) and the cached balance rows, read by
    one statement, hence from one snapshot: under READ COMMITTED two statements may see
    a payment land in between."""
    p, b = ledger_postings.c, ledger_balances.c
    stmt = union_all(
        select(literal_column("'posted'"), p.mode, p.ledger_account, p.currency,
               func.sum(p.amount)).group_by(p.mode, p.ledger_account, p.currency),
        select(literal_column("'cached'"), b.mode, b.ledger_account, b.currency, b.balance),
    )
    posted: dict[tuple[str, str, str], int] = {}
    cached: dict[tuple[str, str, str], int] = {}
    for source, m, a, c, amount in conn.execute(stmt):
        (posted if source == "posted" else cached)[(m, a, c)] = int(amount)
    return posted, cached


def transaction_sums(conn: Connection) -> list[tuple[str, int]]:
    """Each ledger transaction's posting total (every one must be zero)."""
    stmt = select(ledger_postings.c.transaction_id, func.sum(ledger_postings.c.amount)).group_by(
        ledger_postings.c.transaction_id)
    return [(t, int(s)) for t, s in conn.execute(stmt)]


def postings_for_order(conn: Connection, order_id: str) -> list[tuple[str, int]]:
    stmt = (
        select(ledger_postings.c.ledger_account, ledger_postings.c.amount)
        .join(ledger_transactions,
              ledger_transactions.c.transaction_id == ledger_postings.c.transaction_id)
        .where(ledger_transactions.c.order_id == order_id)
    )
    return [(a, int(x)) for a, x in conn.execute(stmt)]
