"""HTTP only: GET /api/v1/payment/balance (seed 000) and GET /api/v1/workers/{id}/balance."""

from __future__ import annotations

import re

from sqlalchemy import Connection

from kassa.balances import service
from kassa.balances.schemas import AccountBalance, WorkerBalance
from kassa.errors import WorkerNotFound
from kassa.http.api import Api, Call, UnitResult
from kassa.tasks.schemas import WORKER_ID_PATTERN

api = Api()
_WORKER_ID = re.compile(WORKER_ID_PATTERN)


@api.get("/api/v1/payment/balance", summary="Check Account Balance", response=AccountBalance,
         tags=("balances",))
def account_balance(call: Call):  # type: ignore[no-untyped-def]
    """Your available balance (deposits and refunds to balance, spendable with
    `payment_method: "balance"`), what is held in escrow, refunds still on their way
    back, and lifetime spending (escrow released to workers, fees included)."""

    def unit(conn: Connection) -> UnitResult:
        return 200, service.account_balance(conn, principal=call.principal,
                                            now=call.ctx.clock.now())

    return unit


@api.get("/api/v1/workers/{worker_id}/balance", summary="A worker's balance",
         response=WorkerBalance, tags=("balances",), errors=(WorkerNotFound,))
def worker_balance(call: Call):  # type: ignore[no-untyped-def]
    """What approved tasks have paid a worker (payouts after the platform fee)."""
    worker_id: str = call.request.path_params["worker_id"]

    def unit(conn: Connection) -> UnitResult:
        if not _WORKER_ID.fullmatch(worker_id):
            raise WorkerNotFound(f"No payouts to worker {worker_id[:64]}",
                                         worker_id=worker_id[:64])
        return 200, service.worker_balance(conn, principal=call.principal,
                                           worker_id=worker_id)

    return unit
