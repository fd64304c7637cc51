"""Opening an upstream order for a request, between its two runs (channels.base.UpstreamSlot),
and what an upstream's failure looks like to the caller (the seed's error format)."""

from __future__ import annotations

import logging

from kassa.channels.base import UpstreamCallNeeded, UpstreamError, UpstreamRefused
from kassa.errors import PaymentFailed, UpstreamUnavailable

log = logging.getLogger("kassa.upstreams")

# A request asks the upstream at most this often (the rerun may find things changed).
MAX_UPSTREAM_CALLS = 3


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
