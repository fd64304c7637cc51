"""Balances, read from the ledger's balances in one snapshot (the unit's transaction)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.balances.schemas import render_account_balance, render_worker_balance
from kassa.core import ledger as accounts
from kassa.errors import NotFound
from kassa.ledger import service as ledger


class WorkerNotFound(NotFound):
    code = "worker_not_found"


def account_balance(conn: Connection, *, principal: Principal, now: datetime
                    ) -> dict[str, Any]:
    acc, mode = principal.account_id, principal.mode
    available, t1 = ledger.balance(conn, mode=mode, account=accounts.customer_available(acc))
    escrow, t2 = ledger.balance(conn, mode=mode, account=accounts.customer_escrow(acc))
    in_flight, t3 = ledger.balance(conn, mode=mode,
                                   account=accounts.customer_refunds_in_flight(acc))
    spent = ledger.lifetime_spent(conn, mode=mode, account_id=acc)
    moved = [t for t in (t1, t2, t3) if t is not None]
    return render_account_balance(available=available, escrow=escrow, in_flight=in_flight,
                                  spent=spent, last_updated=max(moved) if moved else now)


def worker_balance(conn: Connection, *, principal: Principal, worker_id: str
                   ) -> dict[str, Any]:
    balance, updated = ledger.balance(
        conn, mode=principal.mode, account=accounts.worker_payable(principal.account_id,
                                                                   worker_id))
    if updated is None:
        raise WorkerNotFound(f"No payouts to worker {worker_id}", worker_id=worker_id)
    return render_worker_balance(worker_id=worker_id, balance=balance, last_updated=updated)
