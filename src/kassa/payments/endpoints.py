"""HTTP only: POST /api/v1/payment/create, POST /api/v1/payment/deposit and
GET /api/v1/payment/query (seed 000)."""

from __future__ import annotations

from sqlalchemy import Connection

from kassa.errors import (
    AmountMismatch,
    DuplicateOrder,
    InsufficientFunds,
    LimitExceeded,
    OrderNotFound,
    PaymentMethodUnavailable,
    TaskNotFound,
)
from kassa.http.api import Api, Call, UnitResult
from kassa.payments import service
from kassa.payments.schemas import (
    CreatePaymentRequest,
    DepositRequest,
    PaymentOrder,
    QueryParams,
    render_order,
)

api = Api()


@api.post("/api/v1/payment/create", summary="Create Payment Order", body=CreatePaymentRequest,
          response=PaymentOrder, status=201, tags=("payments",),
          errors=(AmountMismatch, LimitExceeded, PaymentMethodUnavailable, InsufficientFunds,
                  TaskNotFound, DuplicateOrder))
def create_payment(call: Call):  # type: ignore[no-untyped-def]
    """Create a payment order for a task. The amount must match the task's cost."""
    request: CreatePaymentRequest = call.body

    def unit(conn: Connection) -> UnitResult:
        order = service.create_order(conn, call.ctx, principal=call.principal, request=request)
        return 201, render_order(order, call.ctx.public_url)

    return unit


@api.get("/api/v1/payment/query", summary="Query Payment Status", query=QueryParams,
         response=PaymentOrder, tags=("payments",), errors=(OrderNotFound,))
def query_payment(call: Call):  # type: ignore[no-untyped-def]
    """Retrieve the current status of a payment order."""
    params: QueryParams = call.query

    def unit(conn: Connection) -> UnitResult:
        order = service.get_order(conn, principal=call.principal, order_id=params.order_id)
        return 200, render_order(order, call.ctx.public_url)

    return unit


@api.post("/api/v1/payment/deposit", summary="Deposit to the account balance",
          body=DepositRequest, response=PaymentOrder, status=201, tags=("payments",),
          errors=(LimitExceeded, PaymentMethodUnavailable))
def create_deposit(call: Call):  # type: ignore[no-untyped-def]
    """Top up your available balance through a payment channel (minimum 10,000 cents).
    The deposit is an order of type `deposit`: once completed its amount is in
    `balance_cents`, and tasks can be paid with `payment_method: "balance"`."""
    request: DepositRequest = call.body

    def unit(conn: Connection) -> UnitResult:
        order = service.open_deposit(conn, call.ctx, principal=call.principal, request=request)
        return 201, render_order(order, call.ctx.public_url)

    return unit
