"""Pydantic I/O of the native payment API (seed 000), and its wire rendering."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from kassa.accounts.schemas import Protocol
from kassa.core.clock import iso
from kassa.core.money import split_fee

BALANCE = "balance"  # pay from the merchant's available balance, at once
PURPOSE_PAYMENT = "payment"  # pays for a task: the money goes into escrow
PURPOSE_DEPOSIT = "deposit"  # tops up the available balance
# A protocol facade's order (EasyPay, crypto gateway): no task; when paid, the money goes to
# the available balance less the channel fee.
PURPOSE_COLLECTION = "collection"
ChannelMethod = Literal["alipay", "wechat", "card", "bank_transfer", "usdt"]
PaymentMethod = Literal["alipay", "wechat", "card", "bank_transfer", "usdt", "balance"]
Currency = Literal["CNY", "USD"]
METADATA_MAX_BYTES = 1024


def check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(orjson.dumps(value)) > METADATA_MAX_BYTES:
        raise ValueError(f"metadata must be at most {METADATA_MAX_BYTES} bytes of JSON")
    return value


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _OrderOptions(StrictModel):
    """What every order request may add: where to notify, metadata, expiry, a test card."""

    callback_url: StrictStr | None = Field(None, max_length=2048)
    metadata: dict[str, Any] | None = Field(None, description="Custom metadata (max 1KB JSON)")
    expires_in_seconds: StrictInt | None = Field(None, ge=300, le=86_400)
    test_card: StrictStr | None = Field(None, max_length=40,
                                        description="Sandbox only: one of the seed's test cards")

    _metadata = field_validator("metadata")(check_metadata)


class CreatePaymentRequest(_OrderOptions):
    """POST /api/v1/payment/create. `currency` and `return_url` default to the task's."""

    task_id: StrictStr = Field(min_length=1, max_length=64, description="The task to pay for")
    amount: StrictInt = Field(gt=0, description="Amount in cents; must match the task cost")
    currency: Currency | None = Field(None, description="CNY or USD; must match the task")
    payment_method: PaymentMethod
    return_url: StrictStr | None = Field(None, max_length=2048)


class DepositRequest(_OrderOptions):
    """POST /api/v1/payment/deposit: top up the available balance (minimum 10,000 cents)."""

    amount: StrictInt = Field(gt=0, description="Amount in cents (minimum 10000, CNY)")
    currency: Currency = "CNY"
    payment_method: ChannelMethod
    return_url: StrictStr = Field(max_length=2048)


class CostBreakdown(BaseModel):
    worker_payout_cents: int
    platform_fee_cents: int
    total_cents: int


class EscrowView(BaseModel):
    """Where the order's money is now (CNY cents): held + released + refunded = paid."""

    held_cents: int
    released_cents: int
    refunded_cents: int
    worker_payout_cents: int
    platform_fee_cents: int
    currency: str


class CardView(BaseModel):
    brand: str
    last4: str


class PaymentOrder(BaseModel):
    """A payment order, as create and query return it."""

    order_id: str
    type: Literal["payment", "deposit", "collection"]
    task_id: str | None
    payment_url: str
    qr_code_url: str
    qr_code: str | None = Field(description="What the QR code says (a live upstream's "
                                            "payment link), for apps that draw their own")
    amount: int
    currency: str
    amount_cny: int
    fx_rate: str | None
    payment_method: str
    status: Literal["pending", "processing", "completed", "failed", "expired", "refunded"]
    transaction_id: str | None
    paid_at: str | None
    expires_at: str
    created_at: str
    cost_breakdown: CostBreakdown
    refunded_cents: int
    escrow: EscrowView
    card: CardView | None
    failure_code: str | None
    failure_message: str | None
    return_url: str | None
    callback_url: str | None
    metadata: dict[str, Any] | None


def held_cny(order: Mapping[Any, Any]) -> int:
    """What a paid task order still holds in escrow (CNY cents): paid, less refunded (in
    flight or done), less released. Nothing for unpaid orders and deposits."""
    if order["purpose"] != PURPOSE_PAYMENT or order["status"] not in ("completed", "refunded"):
        return 0
    return int(order["amount_cny"] - order["refunded_cny"] - order["released_cents"])


def render_order(order: Mapping[Any, Any], public_url: str) -> dict[str, Any]:
    split = split_fee(order["amount"], order["fee_bps"])
    status = order["status"]
    refunded = order["refunded_cny"]
    released = order["released_cents"]
    fee = order["platform_fee_cny"]
    held = held_cny(order)
    order_id = order["order_id"]
    return {
        "order_id": order_id,
        "type": order["purpose"],
        "task_id": order["task_id"],
        # A live upstream's order is paid where that upstream says; the rest on Kassa's page.
        "payment_url": order.get("pay_url") or f"{public_url}/checkout/{order_id}",
        "qr_code_url": f"{public_url}/qr/{order_id}.png",
        "qr_code": order.get("qr_code"),
        "amount": order["amount"],
        "currency": order["currency"],
        "amount_cny": order["amount_cny"],
        "fx_rate": order["fx_rate"],
        "payment_method": order["payment_method"],
        "status": status,
        "transaction_id": order["transaction_id"],
        "paid_at": iso(order["paid_at"]),
        "expires_at": iso(order["expires_at"]),
        "created_at": iso(order["created_at"]),
        "cost_breakdown": ({  # a deposit pays no worker and no fee: it is all yours
            "worker_payout_cents": 0, "platform_fee_cents": 0, "total_cents": order["amount"],
        } if order["purpose"] == PURPOSE_DEPOSIT else {  # a collection pays the channel fee
            "worker_payout_cents": 0, "platform_fee_cents": split.platform_fee,
            "total_cents": split.total,
        } if order["purpose"] == PURPOSE_COLLECTION else {
            "worker_payout_cents": split.worker_payout,
            "platform_fee_cents": split.platform_fee,
            "total_cents": split.total,
        }),
        "refunded_cents": order["refunded_cents"],
        # (a collection's fee is the channel's, taken when it was paid: no worker is paid)
        "escrow": {"held_cents": held, "released_cents": released, "refunded_cents": refunded,
                   "worker_payout_cents": released - fee if order["purpose"] == PURPOSE_PAYMENT
                   else 0, "platform_fee_cents": fee,
                   "currency": "CNY"},
        "card": ({"brand": order["card_brand"], "last4": order["card_last4"]}
                 if order["card_last4"] else None),
        "failure_code": order["failure_code"],
        "failure_message": order["failure_message"],
        "return_url": order["return_url"],
        "callback_url": order["callback_url"],
        "metadata": orjson.loads(order["metadata_json"]) if order["metadata_json"] else None,
    }


# --- the hosted checkout (SPEC §10): what the payer may see of an order ---------------------

QR_METHODS = frozenset({"alipay", "wechat", "usdt"})  # paid by scanning a code


@dataclass(frozen=True, slots=True)
class CheckoutView:
    """An order as its hosted checkout page shows it to the payer: no merchant secret, no
    metadata, no callback URL. Anyone with the (unguessable) order id may see this."""

    order_id: str
    live: bool
    status: str
    amount: int  # minor units of `currency`
    currency: str
    description: str
    payment_method: str
    expires_at: datetime
    seconds_left: int  # until expires_at, never negative
    checkout_url: str
    pay_url: str | None  # a live upstream's payment link
    qr_text: str  # what the QR code says: the upstream's code or link, else checkout_url
    card_brand: str | None
    card_last4: str | None
    failure_code: str | None
    # Test mode, pending: a card order without a card waits for one on the page; the other
    # methods get "simulate success / failure" buttons.
    awaits_card: bool
    can_simulate: bool
    # Where the payer goes once paid (completed orders only): the merchant's return_url,
    # or for an EasyPay order Kassa's signed way back (GET /epay/return/{order_id}).
    return_url: str | None

    @property
    def shows_qr(self) -> bool:
        return self.payment_method in QR_METHODS


def render_checkout(order: Mapping[Any, Any], public_url: str, now: datetime) -> CheckoutView:
    order_id = order["order_id"]
    live = order["mode"] == "live"
    status = order["status"]
    method = order["payment_method"]
    pending = status == "pending" and order["expires_at"] > now
    checkout_url = f"{public_url}/checkout/{order_id}"
    pay_url = order.get("pay_url") if live else None
    qr_text = ((order.get("qr_code") or pay_url) if live else None) or checkout_url
    return_url: str | None = None
    if status == "completed" and order["return_url"]:
        return_url = (f"{public_url}/epay/return/{order_id}"
                      if order["purpose"] == PURPOSE_COLLECTION
                      and order["callback_protocol"] == Protocol.EPAY
                      else order["return_url"])
    return CheckoutView(
        order_id=order_id, live=live, status=status, amount=order["amount"],
        currency=order["currency"], description=order["description"], payment_method=method,
        expires_at=order["expires_at"],
        seconds_left=max(0, int((order["expires_at"] - now).total_seconds())),
        checkout_url=checkout_url, pay_url=pay_url, qr_text=qr_text,
        card_brand=order["card_brand"], card_last4=order["card_last4"],
        failure_code=order["failure_code"],
        awaits_card=(not live and pending and method == "card"
                     and order["sandbox_outcome"] is None and order["card_last4"] is None),
        can_simulate=not live and pending and method not in ("card", BALANCE),
        return_url=return_url)


class QueryParams(StrictModel):
    order_id: StrictStr = Field(min_length=1, max_length=64)
    verify: Literal["true", "false", "1", "0"] | None = Field(
        None, description="true: ask the order's upstream now before answering (verify "
                          "triad, 3)")


class RetryPaymentRequest(StrictModel):
    order_id: StrictStr = Field(min_length=1, max_length=64)
