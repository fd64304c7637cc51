"""The one interface every upstream channel implements."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from typing_extensions import TypeIs


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


# --- live upstreams (SPEC §8): channels Kassa reaches over the network ----------------------
#
# An upstream is called outside any database transaction (it is slow and may fail): the
# order is written only once the upstream has answered, and refunds and status queries run
# as durable jobs. Every upstream status is mapped explicitly; an unknown one is an
# UpstreamError, never success.


class UpstreamState(StrEnum):
    """An upstream order's state, as far as Kassa is concerned."""

    PENDING = "pending"  # created, not paid (yet)
    PAID = "paid"
    REFUNDED = "refunded"  # paid, then refunded in full upstream
    CLOSED = "closed"  # expired or cancelled upstream, never paid
    NOT_FOUND = "not_found"  # the upstream has no such order (a submit.php link never opened)


@dataclass(frozen=True, slots=True)
class UpstreamOrder:
    """What Kassa asks an upstream to collect. `reference` is the upstream's merchant order
    number for this attempt (8-32 letters and digits: both seeds accept it)."""

    reference: str
    amount: int  # minor units of `currency`
    currency: str
    payment_method: str  # alipay | wechat | usdt
    description: str
    notify_url: str  # where the upstream notifies Kassa
    return_url: str | None
    client_ip: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamPayment:
    """The upstream's answer to create: where the payer pays."""

    trade_no: str | None  # the upstream's own order number, when it gives one
    pay_url: str
    qr_code: str | None  # the QR code's content (a URL), when the upstream gives one
    # What the upstream says it will collect when that is not `amount` (USDT quotes).
    quote: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """The upstream's answer to a query (and what a verified notification says)."""

    reference: str
    state: UpstreamState
    trade_no: str | None = None
    amount: int | None = None  # minor units the upstream says were paid (None: not given)
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamRefundRequest:
    reference: str  # the attempt that was paid
    trade_no: str | None
    refund_id: str  # Kassa's refund id: the upstream's refund number (retries are repeats)
    amount: int  # minor units of `currency`
    currency: str


@dataclass(frozen=True, slots=True)
class UpstreamRefundResult:
    """The upstream took the refund (EasyPay's code 1: the money goes back)."""

    upstream_refund_no: str | None


@dataclass(frozen=True, slots=True)
class InboundNotification:
    """An upstream's notification exactly as it reached Kassa: verified on these bytes."""

    method: str
    query: bytes  # the raw query string
    headers: dict[str, str]  # lowercase names
    body: bytes


@dataclass(frozen=True, slots=True)
class VerifiedNotification:
    status: UpstreamStatus
    # Unique per upstream event: a repeat of the same notification is the same key.
    dedupe_key: str


class UpstreamError(Exception):
    """The upstream could not be reached or answered nonsense: worth trying again later.
    The message is safe to show (no secret in it)."""

    retry_allowed = True


class UpstreamRefused(UpstreamError):
    """The upstream answered and said no (its own error message): trying again as-is will
    not help."""

    retry_allowed = False


class NotificationRejected(Exception):
    """A notification that is not genuine (signature, merchant id, timestamp...)."""


class Upstream(Protocol):
    """A live channel reached over HTTP: EasyPay (seed 003), the crypto gateway (seed 002)."""

    name: str
    methods: frozenset[str]
    remote: bool  # True: what is_upstream() looks for
    supports_refunds: bool

    async def create_payment(self, order: UpstreamOrder) -> UpstreamPayment: ...

    async def query(self, reference: str) -> UpstreamStatus: ...

    async def refund(self, request: UpstreamRefundRequest) -> UpstreamRefundResult: ...

    def verify_notification(self, notification: InboundNotification) -> VerifiedNotification:
        """Raises NotificationRejected unless it is genuine; the amount is the caller's to
        check against the order."""
        ...

    def notification_reply(self, accepted: bool) -> tuple[int, bytes]:
        """The HTTP status and body the upstream expects (`success` when accepted)."""
        ...

    async def check(self) -> str:
        """Reachable and the credentials accepted: a one-line description; else raises
        UpstreamError with a clear message."""
        ...


def is_upstream(channel: object) -> TypeIs[Upstream]:
    """A live channel reached over the network (called outside transactions)."""
    return getattr(channel, "remote", False) is True
