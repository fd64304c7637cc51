"""Opening an upstream order for a request, between its two runs (UpstreamSlot, below),
and what an upstream's failure looks like to the caller (the seed's error format)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kassa.channels.base import (
    Upstream,
    UpstreamError,
    UpstreamOrder,
    UpstreamPayment,
    UpstreamRefused,
    UpstreamStatus,
)
from kassa.errors import PaymentFailed, UpstreamUnavailable

log = logging.getLogger("kassa.upstreams")

# A request asks the upstream at most this often (the rerun may find things changed).
MAX_UPSTREAM_CALLS = 3


@dataclass
class UpstreamSlot:
    """An upstream order opened for one request before its transaction. The request's unit
    of work runs once without it and raises UpstreamCallNeeded; the edge calls the upstream
    (no transaction open), fills the slot, and runs the unit again, which now writes the
    order with the upstream's answer, or nothing at all if the upstream failed."""

    order_id: str | None = None
    order: UpstreamOrder | None = None
    payment: UpstreamPayment | None = None

    def answer_for(self, order: UpstreamOrder) -> UpstreamPayment | None:
        """The upstream's answer if it was for exactly this order (the rerun may differ
        when a concurrent request changed things in between: then it asks again)."""
        return self.payment if self.order == order else None


class UpstreamCallNeeded(Exception):
    """Raised inside a unit of work: call `upstream` with `order`, fill `slot`, rerun."""

    def __init__(self, upstream: Upstream, order: UpstreamOrder, slot: UpstreamSlot) -> None:
        super().__init__(f"{upstream.name}: {order.reference}")
        self.upstream = upstream
        self.order = order
        self.slot = slot


async def ask_upstream(upstream: Upstream, references: list[str]) -> list[UpstreamStatus]:
    """What the upstream says of each of an order's references. One it can't answer about
    (a link nobody opened may confuse an aggregator) is passed over while another answers;
    if none does, the first error is raised."""
    answers: list[UpstreamStatus] = []
    errors: list[UpstreamError] = []
    for reference in references:
        try:
            answers.append(await upstream.query(reference))
        except UpstreamError as exc:
            log.warning("%s: asking about %s failed: %s", upstream.name, reference, exc)
            errors.append(exc)
    if errors and not answers:
        raise errors[0]
    return answers


async def fill_slot(need: UpstreamCallNeeded) -> None:
    """Ask the upstream to open the order; nothing of Kassa's is written if it fails."""
    method = need.order.payment_method
    try:
        payment = await need.upstream.create_payment(need.order)
    except UpstreamRefused as exc:
        log.warning("%s refused order %s: %s", need.upstream.name, need.order.reference, exc)
        raise PaymentFailed(
            f"The {method} channel refused the payment: {exc}", payment_method=method,
            details={"provider": need.upstream.name, "provider_message": str(exc)},
            retry_allowed=False,
            suggested_actions=["Try a different payment method", "Contact support"]) from exc
    except UpstreamError as exc:
        log.warning("%s unavailable for %s: %s", need.upstream.name, need.order.reference, exc)
        raise UpstreamUnavailable(
            f"The {method} channel is not reachable right now; nothing was created",
            payment_method=method, details={"provider": need.upstream.name,
                                            "provider_message": str(exc)},
            retry_allowed=True,
            suggested_actions=["Retry in a few minutes", "Try a different payment method"]
        ) from exc
    need.slot.order = need.order
    need.slot.payment = payment
