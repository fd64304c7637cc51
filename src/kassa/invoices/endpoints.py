"""HTTP only: GET /api/v1/invoices/{order_id}, the invoice of a paid order as a PDF."""

from __future__ import annotations

import functools

from sqlalchemy import Connection

from kassa.core.ids import ORDER_ID
from kassa.errors import InvalidOrderState, OrderNotFound
from kassa.http.api import Api, Call, RawBody, Unit, UnitResult
from kassa.invoices import service
from kassa.invoices.schemas import PDF, invoice_filename

api = Api()
TAGS = ("invoices",)


def _order_id(call: Call) -> str:
    text: str = call.request.path_params["order_id"]
    if not ORDER_ID.fullmatch(text):
        shown = text[:40].replace("\x00", "")
        raise OrderNotFound(f"Order {shown} doesn't exist", order_id=shown)
    return text


@api.get("/api/v1/invoices/{order_id}", summary="Download the invoice of a paid order (PDF)",
         response=None, media_type=PDF, errors=(OrderNotFound, InvalidOrderState), tags=TAGS,
         response_headers={"Content-Disposition":
                           'attachment; filename="invoice-{order_id}.pdf"'})
def get_invoice(call: Call) -> Unit:
    """The invoice of one of your orders (in the key's mode) whose payment completed (status
    `completed`, or `refunded` since), as an A4 PDF: invoice number (`INV-` and the order
    id's hex), your account's name, the issue date (the Asia/Shanghai day it was paid), the
    order, task and description, the payment method, the amount (with its CNY amount and FX
    rate when not in CNY), refunds, and where the money went: escrow, released to the
    worker and platform fee for a task; the channel fee for a collection. Any other status
    is 409 `invalid_order_state`."""
    order_id = _order_id(call)

    def unit(conn: Connection) -> UnitResult:
        facts = service.invoice_facts(conn, principal=call.principal, order_id=order_id)
        return 200, RawBody(
            render=functools.partial(service.invoice_pdf, facts),
            headers={"Content-Disposition":
                     f'attachment; filename="{invoice_filename(order_id)}"'})

    return unit
