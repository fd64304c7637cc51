"""HTTP only: seed 004's Payments resource. POST /api/v1/payments,
GET /api/v1/payments/{id}, GET /api/v1/payments/retry/{id} (a GET that writes: secret
required) and GET /api/v1/payments/verify/{id}; every answer is {"data": …}."""

from __future__ import annotations

import re

from sqlalchemy import Connection

from kassa.errors import (
    DuplicateOrder,
    InvalidOrderState,
    InvalidTaskState,
    LimitExceeded,
    OrderNotFound,
    PaymentFailed,
    PaymentMethodUnavailable,
    PaymentNotFound,
    UpstreamUnavailable,
)
from kassa.http.api import Api, Call, Unit, UnitResult
from kassa.payment_resources import service
from kassa.payment_resources.schemas import (
    CreatePaymentResource,
    PaymentData,
    PaymentVerification,
)

api = Api()
TAGS = ("payments (seed 004)",)
# A Payment id as Kassa hands them out: a positive integer, ASCII digits, no sign or
# leading zero, and small enough for a BIGINT (anything else names no Payment).
_ID = re.compile(r"[1-9][0-9]{0,17}")


def _payment_id(call: Call) -> int:
    text: str = call.request.path_params["payment_id"]
    if not _ID.fullmatch(text):
        raise PaymentNotFound(f"Payment {text[:40]} doesn't exist", payment_id=text[:40])
    return int(text)


@api.post("/api/v1/payments", summary="Create a Payment", body=CreatePaymentResource,
          response=PaymentData, status=201, errors=(OrderNotFound,), tags=TAGS)
def create_payment_resource(call: Call) -> Unit:
    """A Payment for one of your payment orders (`orderId`: `ord_…`, in the key's mode):
    201 with the new Payment. One Payment per order: asked again for the same order, the
    existing Payment is returned (200), unchanged."""
    request: CreatePaymentResource = call.body

    def unit(conn: Connection) -> UnitResult:
        created, payment = service.create_payment(conn, call.ctx, principal=call.principal,
                                                  request=request)
        return (201 if created else 200), {"data": payment}

    return unit


@api.get("/api/v1/payments/{payment_id}", summary="Get a specific Payment",
         response=PaymentData, errors=(PaymentNotFound,), tags=TAGS)
def get_payment_resource(call: Call) -> Unit:
    """One of your Payments (in the key's mode), as its order is now."""
    payment_id = _payment_id(call)
    return lambda conn: (200, {"data": service.get_payment(
        conn, call.ctx, principal=call.principal, payment_id=payment_id)})


@api.get("/api/v1/payments/retry/{payment_id}", summary="Retry Payment Action",
         response=PaymentData, write=True, tags=TAGS,
         errors=(PaymentNotFound, InvalidOrderState, InvalidTaskState, DuplicateOrder,
                 LimitExceeded, PaymentMethodUnavailable, PaymentFailed, UpstreamUnavailable))
def retry_payment_resource(call: Call) -> Unit:
    """Re-obtain the orderString of a pending or expired Payment: its order gets a new
    payment link (a new upstream order for live channels) and a new expiry, and an expired
    one is PENDING again. A GET that changes something: key and X-API-Secret required."""
    payment_id = _payment_id(call)

    def unit(conn: Connection) -> UnitResult:
        return 200, {"data": service.retry_payment(conn, call.ctx, principal=call.principal,
                                                   payment_id=payment_id,
                                                   slot=call.upstream)}

    return unit


@api.get("/api/v1/payments/verify/{payment_id}", summary="Verify Payment",
         response=PaymentVerification, errors=(PaymentNotFound, UpstreamUnavailable),
         tags=TAGS)
async def verify_payment_resource(call: Call) -> Unit:
    """Verification asked by the client (verify triad, 3): a live order still waiting for
    its upstream is checked with that upstream now. `data` is true when the Payment is
    CONFIRMED afterwards."""
    payment_id = _payment_id(call)
    await service.verify_payment(call.db, call.ctx, principal=call.principal,
                                 payment_id=payment_id)
    return lambda conn: (200, {"data": service.is_confirmed(
        conn, principal=call.principal, payment_id=payment_id)})
