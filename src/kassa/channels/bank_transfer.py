"""Manual bank transfer, live mode (SPEC §8): the payer wires the money; the order waits in
`processing` until an operator confirms receipt (`kassa orders confirm-transfer`).
Enterprise accounts only, from 100,000 cents: the payment service checks both."""

from __future__ import annotations

from kassa.channels.base import (
    ChannelError,
    ChannelPayment,
    ChannelRefund,
    PaymentIntent,
    RefundIntent,
)


class ManualTransferChannel:
    name = "bank_transfer"
    methods = frozenset({"bank_transfer"})
    supports_refunds = False  # money goes back by the operator's own transfer, not by Kassa

    def create_payment(self, intent: PaymentIntent) -> ChannelPayment:
        if intent.test_card is not None:
            raise ChannelError("test_card applies only to payment_method card", field="test_card")
        return ChannelPayment(card=None, settle_after_seconds=None, planned_outcome=None,
                              initial_status="processing")

    def refund(self, intent: RefundIntent) -> ChannelRefund:
        raise ChannelError("bank transfers are refunded to the balance only")
