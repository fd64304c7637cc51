"""Pydantic I/O of seed 004's Payments resource, and its wire rendering.

A Payment is a view of one payment order (at most one Payment per order). Its fields,
as the seed names them, come from:

    id             the Payment's own integer id
    order          the order's id (ord_…)
    orderString    the order's payment link (PaymentOrder.payment_url)
    createdAt      when the Payment was created
    updatedAt      the later of that and the order's last change
    payer          as given when the Payment was created, else null
    subject        as given
    description    as given, else null
    totalAmount    the order's amount in major units of its currency, a JSON number
                   written from the exact decimal (5000 cents -> 50.00), never a float
    status         from the order's status (ORDER_TO_PAYMENT_STATUS)
    vendorTradeId  the upstream's trade number for the order's current upstream attempt
                   (live upstreams), else null
    confirmedAt    the order's paid_at
    confirmed      status is CONFIRMED
    valid          the same as confirmed: the system has verified the money (the seed's
                   example shows a PENDING payment with valid false)
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr, WithJsonSchema

from kassa.core.clock import iso
from kassa.core.money import Money
from kassa.core.states import OrderStatus
from kassa.payments.schemas import StrictModel, render_order

PaymentStatus = Literal["PENDING", "CONFIRMED", "TIMEOUT", "INVALID"]
CONFIRMED: PaymentStatus = "CONFIRMED"

# Every order status, mapped explicitly: a status missing here is an error, never a guess.
ORDER_TO_PAYMENT_STATUS: dict[str, PaymentStatus] = {
    OrderStatus.PENDING: "PENDING",
    OrderStatus.PROCESSING: "PENDING",
    OrderStatus.COMPLETED: CONFIRMED,
    OrderStatus.REFUNDED: CONFIRMED,  # it was paid; the refund is the order's business
    OrderStatus.EXPIRED: "TIMEOUT",
    OrderStatus.FAILED: "INVALID",
}


class CreatePaymentResource(StrictModel):
    """POST /api/v1/payments: a Payment for one of your payment orders."""

    order_id: StrictStr = Field(alias="orderId", min_length=1, max_length=64,
                                description="Parent order: a payment order id (ord_…) of "
                                            "yours, in the key's mode")
    subject: StrictStr = Field(min_length=1, max_length=255,
                               description="Subject of this payment")
    description: StrictStr | None = Field(None, max_length=1000, description="Description")
    payer: StrictStr | None = Field(None, max_length=100,
                                    description="Username of the payer (Kassa's addition)")


class Payment(BaseModel):
    """Seed 004's Payment entity, field for field."""

    model_config = ConfigDict(populate_by_name=True)

    id: int = Field(description="Payment ID")
    order: str = Field(description="Parent Order ID (ord_…)")
    order_string: str = Field(alias="orderString", description="Payment link of the order")
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    payer: str | None
    subject: str
    description: str | None
    total_amount: Annotated[Decimal, WithJsonSchema({
        "type": "number",
        "description": "The order's amount in major units of its currency (exact decimal)"})
    ] = Field(alias="totalAmount")
    status: PaymentStatus
    vendor_trade_id: str | None = Field(alias="vendorTradeId",
                                        description="The upstream's trade number")
    confirmed_at: str | None = Field(alias="confirmedAt")
    confirmed: bool = Field(description="The payment is confirmed by the system")
    valid: bool = Field(description="Valid flag: the same as confirmed")


class PaymentData(BaseModel):
    """{"data": Payment}"""

    data: Payment


class PaymentVerification(BaseModel):
    """{"data": true} when the payment is CONFIRMED after the verification."""

    data: bool


def payment_status(order_status: str) -> PaymentStatus:
    try:
        return ORDER_TO_PAYMENT_STATUS[order_status]
    except KeyError:
        raise ValueError(f"order status {order_status!r} has no Payment status") from None


def total_amount(order: Mapping[str, Any]) -> orjson.Fragment:
    """The amount as a JSON number, from its exact decimal text: 5000 -> 50.00."""
    text = Money(order["amount"], order["currency"]).to_decimal_string()
    return orjson.Fragment(text.encode())


def render_payment(payment: Mapping[str, Any], order: Mapping[str, Any], *,
                   trade_no: str | None, public_url: str) -> dict[str, Any]:
    status = payment_status(order["status"])
    confirmed = status == CONFIRMED
    return {
        "id": payment["payment_id"],
        "order": order["order_id"],
        "orderString": render_order(order, public_url)["payment_url"],
        "createdAt": iso(payment["created_at"]),
        "updatedAt": iso(max(payment["created_at"], order["updated_at"])),
        "payer": payment["payer"],
        "subject": payment["subject"],
        "description": payment["description"],
        "totalAmount": total_amount(order),
        "status": status,
        "vendorTradeId": trade_no,
        "confirmedAt": iso(order["paid_at"]),
        "confirmed": confirmed,
        "valid": confirmed,
    }
