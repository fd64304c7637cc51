"""Verify triad (3): a client asks for verification now. The order's upstream is queried
with no transaction open, and its answer applied as a poll's would be."""

from __future__ import annotations

from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.channels.base import UpstreamError, UpstreamState
from kassa.context import ServiceContext
from kassa.db.database import Database
from kassa.errors import OrderNotFound, UpstreamUnavailable
from kassa.payments import repository as orders
from kassa.upstreams import service
from kassa.upstreams.calls import ask_upstream


async def verify_now(db: Database, ctx: ServiceContext, *, principal: Principal,
                     order_id: str) -> bool:
    """Ask the upstream about one of the merchant's orders still waiting for it; True if an
    upstream was asked. Unreachable: 503 payment_method_unavailable (retry_allowed)."""
    def load(conn: Connection) -> list[str]:
        order = orders.get_order(conn, account_id=principal.account_id, mode=principal.mode,
                                 order_id=order_id)
        if order is None:
            raise OrderNotFound(f"Order {order_id} doesn't exist", order_id=order_id)
        # (an expired order too: a payment the upstream took late goes to review)
        return service.references_to_ask(conn, order_id, expired_since=service.ANY_TIME)[1]

    references = await db.read(load)
    if not references:
        return False
    order = await db.read(lambda conn: orders.get_order_by_id(conn, order_id))
    assert order is not None
    upstream = ctx.channels.upstream(order["channel"])
    if upstream is None:
        return False
    try:
        answers = await ask_upstream(upstream, references)
    except UpstreamError as exc:
        raise UpstreamUnavailable(
            f"The {order['payment_method']} channel can't be asked right now: {exc}",
            payment_method=order["payment_method"], retry_allowed=True,
            suggested_actions=["Query again without verify=true",
                               "Retry the verification in a minute"]) from exc
    paid = [a for a in answers if a.state is UpstreamState.PAID]
    if paid:
        def apply(conn: Connection) -> None:
            now = ctx.clock.now()
            for answer in paid:
                service.apply_upstream_status(conn, ctx, channel=upstream.name, status=answer,
                                              source="verify", now=now)
        await db.write(apply)
    return True
