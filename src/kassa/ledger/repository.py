"""All SQL about ledger transactions, postings and cached balances."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.pq import TransactionStatus
from sqlalchemy import (
    Connection,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from kassa.core.ledger import Entry, InsufficientBalance, has_cached_balance, must_not_go_negative
from kassa.db.prepared import Prepared
from kassa.db.tables import ledger_balances, ledger_postings, ledger_transactions, orders, refunds

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
_b = ledger_balances.c
# A debit that may not take the balance below zero: no row changed means "short".
_guarded_debit = Prepared(
    update(ledger_balances)
    .where(_b.mode == bindparam("k_mode"), _b.ledger_account == bindparam("k_account"),
           _b.currency == bindparam("k_currency"),
           _b.balance + bindparam("k_amount") >= 0)
    .values(balance=_b.balance + bindparam("k_amount"), updated_at=bindparam("k_now"))
)
_balance = Prepared(select(_b.balance, _b.updated_at).where(
    _b.mode == bindparam("mode"), _b.ledger_account == bindparam("account"),
    _b.currency == bindparam("currency")))


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
    if not cached:
        return
    upsert = _UPSERTS[conn.dialect.name]
    if all(p.amount > 0 or not must_not_go_negative(p.account) for p in cached):
        upsert.run_many(conn, [  # credits only (a payment into escrow): one statement
            {"mode": mode, "ledger_account": p.account, "currency": entry.currency,
             "balance": p.amount, "updated_at": now}
            for p in cached
        ])
        return
    for p in cached:
        if p.amount < 0 and must_not_go_negative(p.account):
            if not _guarded_debit.run(conn, {"k_mode": mode, "k_account": p.account,
                                             "k_currency": entry.currency,
                                             "k_amount": p.amount, "k_now": now}):
                raise InsufficientBalance(p.account)
        else:
            upsert.run(conn, {"mode": mode, "ledger_account": p.account,
                              "currency": entry.currency, "balance": p.amount,
                              "updated_at": now})


def balance(conn: Connection, *, mode: str, account: str, currency: str = "CNY"
            ) -> tuple[int, datetime | None]:
    """A merchant or worker account's cached balance and when it last moved."""
    row = _balance.first(conn, {"mode": mode, "account": account, "currency": currency})
    return (0, None) if row is None else (int(row["balance"]), row["updated_at"])


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


def one_snapshot(conn: Connection) -> None:
    """Make every following statement of this transaction read one snapshot (PostgreSQL's
    READ COMMITTED takes a new one per statement; SQLite's reader already has one)."""
    if conn.dialect.name != "postgresql":
        return
    raw: Any = conn.connection.dbapi_connection
    if raw.info.transaction_status == TransactionStatus.IDLE:  # nothing read yet
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


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


def merchant_figures(conn: Connection, *, mode: str, accounts: list[str], escrow_account: str,
                     account_id: str) -> tuple[dict[str, tuple[int, datetime | None]], int]:
    """The merchant's cached balances and lifetime released total, in ONE statement, hence
    one snapshot (PostgreSQL reads run in autocommit: two statements may see a payment
    land in between and count its money twice)."""
    t, p = ledger_transactions.c, ledger_postings.c
    balances = select(_b.ledger_account, _b.balance, _b.updated_at).where(
        _b.mode == mode, _b.ledger_account.in_(accounts), _b.currency == "CNY")
    released = (select(literal_column("'released'"), func.coalesce(func.sum(p.amount), 0),
                       func.max(t.created_at))
                .select_from(ledger_transactions.join(
                    ledger_postings, p.transaction_id == t.transaction_id))
                .where(t.account_id == account_id, t.mode == mode, t.kind == "release",
                       p.ledger_account == escrow_account))
    figures: dict[str, tuple[int, datetime | None]] = {}
    spent = 0
    for account, amount, updated in conn.execute(union_all(balances, released)):
        if account == "released":
            spent = -int(amount)
        else:
            figures[account] = (int(amount), updated)
    return figures, spent


def order_postings(conn: Connection) -> dict[str, dict[str, int]]:
    """For every order: the sum of its postings per ledger account."""
    t, p = ledger_transactions.c, ledger_postings.c
    stmt = (select(t.order_id, p.ledger_account, func.sum(p.amount))
            .select_from(ledger_transactions.join(
                ledger_postings, p.transaction_id == t.transaction_id))
            .where(t.order_id.is_not(None)).group_by(t.order_id, p.ledger_account))
    out: dict[str, dict[str, int]] = {}
    for order_id, account, amount in conn.execute(stmt):
        out.setdefault(order_id, {})[account] = int(amount)
    return out


def order_positions(conn: Connection) -> list[dict[str, Any]]:
    """Every order's own record of where its money is, with its refunds in flight."""
    o, r = orders.c, refunds.c
    in_flight = (select(r.order_id, func.sum(r.amount_cny).label("in_flight"))
                 .where(r.status == "processing").group_by(r.order_id).subquery())
    stmt = (select(o.order_id, o.account_id, o.purpose, o.status, o.payment_method,
                   o.amount_cny, o.refunded_cny, o.released_cents, o.platform_fee_cny,
                   func.coalesce(in_flight.c.in_flight, 0).label("in_flight"))
            .select_from(orders.outerjoin(in_flight, in_flight.c.order_id == o.order_id)))
    return [dict(row) for row in conn.execute(stmt).mappings()]
