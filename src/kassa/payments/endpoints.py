"""HTTP only: POST /api/v1/payment/create, POST /api/v1/payment/deposit and
GET /api/v1/payment/query (seed 000)."""

from __future__ import annotations

from sqlalchemy import Connection

from kassa.errors import (
    AmountMismatch,
    DuplicateOrder,
    InsufficientFunds,
    InvalidOrderState,
    LimitExceeded,
    OrderNotFound,
    PaymentFailed,
    PaymentMethodUnavailable,
    TaskNotFound,
    UpstreamUnavailable,
)
from kassa.http.api import Api, Call, UnitResult
from kassa.payments import service
from kassa.payments.schemas import (
    CreatePaymentRequest,
    DepositRequest,
    PaymentOrder,
    QueryParams,
    RetryPaymentRequest,
    render_order,
)
from kassa.upstreams.verify import verify_now

api = Api()


@api.post("/api/v1/payment/create", summary="Create Payment Order", body=CreatePaymentRequest,
          response=PaymentOrder, status=201, tags=("payments",),
          errors=(AmountMismatch, LimitExceeded, PaymentMethodUnavailable, InsufficientFunds,
                  TaskNotFound, DuplicateOrder))
def create_payment(call: Call):  # type: ignore[no-untyped-def]
    """Create a payment order for a task. The amount must match the task's cost."""
    request: CreatePaymentRequest = call.body

    def unit(conn: Connection) -> UnitResult:
        order = service.create_order(conn, call.ctx, principal=call.principal, request=request,
                                     slot=call.upstream)
        return 201, render_order(order, call.ctx.public_url)

    return unit


@api.get("/api/v1/payment/query", summary="Query Payment Status", query=QueryParams,
         response=PaymentOrder, tags=("payments",), errors=(OrderNotFound, UpstreamUnavailable))
async def query_payment(call: Call):  # type: ignore[no-untyped-def]
    """Retrieve the current status of a payment order. With `verify=true`, a live order
    still waiting for its upstream is first checked with that upstream (verify triad, 3)."""
    params: QueryParams = call.query
    if params.verify in ("true", "1"):
        await verify_now(call.db, call.ctx, principal=call.principal, order_id=params.order_id)

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
        order = service.open_deposit(conn, call.ctx, principal=call.principal, request=request,
                                     slot=call.upstream)
        return 201, render_order(order, call.ctx.public_url)

    return unit


@api.post("/api/v1/payment/retry", summary="Retry a payment", body=RetryPaymentRequest,
          response=PaymentOrder, tags=("payments",),
          errors=(OrderNotFound, InvalidOrderState, DuplicateOrder, LimitExceeded,
                  PaymentMethodUnavailable, PaymentFailed, UpstreamUnavailable))
def retry_payment(call: Call):  # type: ignore[no-untyped-def]
    """Re-obtain a payment link for a pending or expired order: a new link (a new upstream
    order for live channels) and a new expiry, the same order."""
    request: RetryPaymentRequest = call.body

    def unit(conn: Connection) -> UnitResult:
        order = service.retry_order(conn, call.ctx, principal=call.principal,
                                    order_id=request.order_id, slot=call.upstream)
        return 200, render_order(order, call.ctx.public_url)

    return unit
