"""The migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from kassa.db.migrate import alembic_config, upgrade
from tests.support.harness import fresh_postgres_database


def test_migrations_match_the_tables(backend: str, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    else:
        request.getfixturevalue("pg_url")  # skips with the reason when PostgreSQL is absent
        with fresh_postgres_database() as pg:
            upgrade(pg)
            command.check(alembic_config(pg))  # raises if autogenerate would find a change
        return
    upgrade(url)
    command.check(alembic_config(url))
    upgrade(url)  # idempotent: a second upgrade is a no-op


def test_upgrade_to_0002_gives_existing_orders_their_history(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Orders made before the transaction history existed appear in it after the upgrade:
    a completed order under its own transaction id, others under the id derived from the
    order id (as new orders get), with the history status of their order status."""
    if backend == "sqlite":
        _check_backfill(f"sqlite:///{tmp_path / 'b.sqlite3'}")
        return
    request.getfixturevalue("pg_url")
    with fresh_postgres_database() as pg:
        _check_backfill(pg)


def _check_backfill(url: str) -> None:
    upgrade(url, "0001")
    engine = create_engine(url)
    at = "2026-04-01 11:00:00.000000"
    orders = [("ord_00000000000000000001", "completed", "txn_aaaaaaaaaaaaaaaaaaaa"),
              ("ord_00000000000000000002", "pending", None),
              ("ord_00000000000000000003", "expired", None),
              ("ord_00000000000000000004", "refunded", "txn_bbbbbbbbbbbbbbbbbbbb")]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts (account_id, name, tier, created_at) "
                          "VALUES ('acc_1', 'Old', 'verified', :at)"), {"at": at})
        for order_id, status, txn in orders:
            conn.execute(text(
                "INSERT INTO orders (order_id, account_id, mode, task_id, amount, currency,"
                " amount_cny, fee_bps, payment_method, channel, status, description,"
                " transaction_id, limit_day, expires_at, created_at, updated_at) VALUES"
                " (:o, 'acc_1', 'test', :o, 5000, 'CNY', 5000, 2000, 'alipay', 'sandbox', :s,"
                " 'Payment for task: old', :t, '2026-04-01', :at, :at, :at)"),
                {"o": order_id, "s": status, "t": txn, "at": at})
    engine.dispose()
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT transaction_id, order_id, type, status, amount, description "
            "FROM transaction_history ORDER BY order_id")).all()
        columns = conn.execute(text(
            "SELECT purpose, refunded_cny, released_amount, platform_fee_cny FROM orders")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("txn_aaaaaaaaaaaaaaaaaaaa", orders[0][0], "payment", "completed", 5000,
         "Payment for task: old"),
        ("txn_00000000000000000002", orders[1][0], "payment", "pending", 5000,
         "Payment for task: old"),
        ("txn_00000000000000000003", orders[2][0], "payment", "failed", 5000,
         "Payment for task: old"),
        ("txn_bbbbbbbbbbbbbbbbbbbb", orders[3][0], "payment", "completed", 5000,
         "Payment for task: old"),
    ]
    assert {tuple(c) for c in columns} == {("payment", 0, 0, 0)}
