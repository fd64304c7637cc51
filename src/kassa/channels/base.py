"""The one interface every upstream channel implements."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class SettleOutcome(StrEnum):
    """How a channel says a payment ended. Anything else is an error, never success."""

    SUCCEEDED = "succeeded"
    DECLINED = "payment_failed"
    INSUFFICIENT_FUNDS = "insufficient_funds"


FAILURE_MESSAGES = {
    SettleOutcome.DECLINED: "The card was declined",
    SettleOutcome.INSUFFICIENT_FUNDS: "The card has insufficient funds",
}


@dataclass(frozen=True, slots=True)
class CardDetails:
    """What Kassa keeps of a card: brand and last four digits, nothing else."""

    brand: str
    last4: str


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    order_id: str
    amount: int
    currency: str
    payment_method: str
    test_card: str | None


@dataclass(frozen=True, slots=True)
class ChannelPayment:
    """A channel's answer to create-payment."""

    card: CardDetails | None
    # When the channel will settle by itself (sandbox), seconds from now; else None.
    settle_after_seconds: float | None
    # The outcome decided at creation (sandbox test cards), applied when it settles.
    planned_outcome: SettleOutcome | None
    initial_status: str  # "pending" or "processing"


@dataclass(frozen=True, slots=True)
class RefundIntent:
    refund_id: str
    order_id: str
    amount: int  # in the order's currency
    currency: str
    payment_method: str
    test_outcome: str | None  # sandbox only: "succeeded" or "failed"


@dataclass(frozen=True, slots=True)
class ChannelRefund:
    """A channel's answer to a refund request: accepted, confirmed later."""

    settle_after_seconds: float | None  # sandbox: it confirms by itself after this delay
    planned_outcome: str | None  # sandbox: "succeeded" or "failed", applied then


class ChannelError(Exception):
    """The channel refused the request; the message is safe to show."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Channel(Protocol):
    name: str
    methods: frozenset[str]

    def create_payment(self, intent: PaymentIntent) -> ChannelPayment: ...

    def refund(self, intent: RefundIntent) -> ChannelRefund: ...
