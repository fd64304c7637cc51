"""HTTP only: GET /api/v1/payment/transactions (seed 000)."""

from __future__ import annotations

from sqlalchemy import Connection

from kassa.history import service
from kassa.history.schemas import TransactionPage, TransactionsQuery
from kassa.http.api import Api, Call, UnitResult

api = Api()


@api.get("/api/v1/payment/transactions", summary="Get Transaction History",
         query=TransactionsQuery, response=TransactionPage, tags=("payments",))
def list_transactions(call: Call):  # type: ignore[no-untyped-def]
    """Payments, deposits and refunds, newest first. Page with `starting_after` set to the
    previous page's `next_cursor`; paging never repeats or skips a transaction while new
    ones arrive."""
    query: TransactionsQuery = call.query

    def unit(conn: Connection) -> UnitResult:
        return 200, service.list_transactions(conn, principal=call.principal, query=query)

    return unit
