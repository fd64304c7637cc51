"""HTTP only: POST /api/v1/payment/refund (seed 000)."""

from __future__ import annotations

from sqlalchemy import Connection

from kassa.errors import (
    AlreadyRefunded,
    OrderNotFound,
    PaymentMethodUnavailable,
    RefundNotAllowed,
)
from kassa.http.api import Api, Call, UnitResult
from kassa.refunds import service
from kassa.refunds.schemas import Refund, RefundRequest, render_refund

api = Api()


@api.post("/api/v1/payment/refund", summary="Request Refund", body=RefundRequest,
          response=Refund, tags=("payments",),
          errors=(RefundNotAllowed, AlreadyRefunded, OrderNotFound, PaymentMethodUnavailable))
def request_refund(call: Call):  # type: ignore[no-untyped-def]
    """Refund a paid order from what it still holds in escrow: all of it, or `amount`
    cents (partial refunds add up until nothing is left). `original` goes back through the
    payment channel and stays `processing` until the channel confirms; `balance` credits
    your available balance at once."""
    request: RefundRequest = call.body

    def unit(conn: Connection) -> UnitResult:
        refund = service.request_refund(conn, call.ctx, principal=call.principal,
                                        request=request)
        return 200, render_refund(refund)

    return unit
