"""Balances, read from the ledger's cached balances (one snapshot per answer)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.balances.schemas import render_account_balance, render_worker_balance
from kassa.core import ledger as accounts
from kassa.errors import WorkerNotFound
from kassa.ledger import service as ledger


def account_balance(conn: Connection, *, principal: Principal, now: datetime
                    ) -> dict[str, Any]:
    b = ledger.merchant_balances(conn, mode=principal.mode, account_id=principal.account_id)
    return render_account_balance(available=b.available, escrow=b.escrow,
                                  in_flight=b.refunds_in_flight, spent=b.lifetime_spent,
                                  last_updated=b.last_moved or now)


def worker_balance(conn: Connection, *, principal: Principal, worker_id: str
                   ) -> dict[str, Any]:
    balance, updated = ledger.balance(
        conn, mode=principal.mode, account=accounts.worker_payable(principal.account_id,
                                                                   worker_id))
    if updated is None:
        raise WorkerNotFound(f"No payouts to worker {worker_id}", worker_id=worker_id)
    return render_worker_balance(worker_id=worker_id, balance=balance, last_updated=updated)
