"""The sandbox channel: test mode's only channel. Nothing leaves the machine.

alipay, wechat, bank_transfer and usdt settle successfully after a configurable
delay (5 s, as the seed says). Cards follow the seed's test numbers; the full
number is read once here to pick the outcome and then dropped: only brand and
last four digits leave this module.
"""

from __future__ import annotations

from kassa.channels.base import (
    CardDetails,
    ChannelError,
    ChannelPayment,
    ChannelRefund,
    PaymentIntent,
    RefundIntent,
    SettleOutcome,
)

TEST_CARDS: dict[str, SettleOutcome] = {
    "4242424242424242": SettleOutcome.SUCCEEDED,
    "4000000000000002": SettleOutcome.DECLINED,
    "4000000000009995": SettleOutcome.INSUFFICIENT_FUNDS,
}


def normalise_card_number(raw: str, *, field: str = "test_card") -> str:
    digits = raw.replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise ChannelError(f"{field} must be 12 to 19 digits", field=field)
    return digits


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str:
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in {"34", "37"}:
        return "amex"
    if digits[:2] in {"51", "52", "53", "54", "55"} or 2221 <= int(digits[:4]) <= 2720:
        return "mastercard"
    if digits.startswith("62"):
        return "unionpay"
    return "unknown"


class NotATestCard(ChannelError):
    """A valid card number, but not one of the sandbox's test cards."""


def read_test_card(raw: str, *, field: str = "test_card") -> tuple[CardDetails, SettleOutcome]:
    """The sandbox's decision for a card number (`test_card` at creation, or the number a
    payer types on the checkout page): its brand and last four, and the outcome. The number
    itself goes no further, and no error repeats it."""
    digits = normalise_card_number(raw, field=field)
    if not luhn_valid(digits):
        raise ChannelError(f"{field} is not a valid card number", field=field)
    outcome = TEST_CARDS.get(digits)
    if outcome is None:
        raise NotATestCard("test mode accepts only the sandbox test cards "
                           "(4242424242424242, 4000000000000002, 4000000000009995)",
                           field=field)
    return CardDetails(brand=card_brand(digits), last4=digits[-4:]), outcome


class SandboxChannel:
    name = "sandbox"
    methods = frozenset({"alipay", "wechat", "card", "bank_transfer", "usdt"})

    def __init__(self, settle_seconds: float, refund_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self.refund_seconds = refund_seconds

    def refund(self, intent: RefundIntent) -> ChannelRefund:
        """Refunds are accepted and confirmed after a delay; `test_outcome: "failed"` on the
        request makes the channel refuse it then (to exercise the failure path)."""
        return ChannelRefund(settle_after_seconds=self.refund_seconds,
                             planned_outcome=intent.test_outcome or "succeeded")

    def create_payment(self, intent: PaymentIntent) -> ChannelPayment:
        if intent.payment_method == "card":
            if intent.test_card is None:
                # Waits for the payer to enter a card on the checkout page.
                return ChannelPayment(card=None, settle_after_seconds=None,
                                      planned_outcome=None, initial_status="pending")
            card, outcome = read_test_card(intent.test_card)
            return ChannelPayment(card=card, settle_after_seconds=self.settle_seconds,
                                  planned_outcome=outcome, initial_status="processing")
        if intent.test_card is not None:
            raise ChannelError("test_card applies only to payment_method card", field="test_card")
        return ChannelPayment(card=None, settle_after_seconds=self.settle_seconds,
                              planned_outcome=SettleOutcome.SUCCEEDED, initial_status="pending")
