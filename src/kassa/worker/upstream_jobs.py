"""Jobs that talk to a live upstream: they read, call the upstream with no transaction
open, then write the answer in one transaction that also takes the job (so an answer is
applied at most once even if a lease ran out). An upstream that can't be reached raises:
the runner retries the job with backoff.

- order.poll_upstream: verify triad (2). Asks the upstream about an order still pending,
  again and again, further apart as the order ages, until it completes or expires.
- refund.upstream: sends a refund through the upstream; its answer completes the refund,
  or fails it (the money goes back where it came from). Unreachable: it stays
  processing and is retried, however long that takes. Refused after an earlier attempt
  whose answer never came (it may have been done): a refund review for an operator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import Connection

from kassa.channels.base import (
    UpstreamError,
    UpstreamRefundRequest,
    UpstreamRefused,
    UpstreamState,
)
from kassa.context import ServiceContext
from kassa.core.states import OrderStatus, RefundStatus
from kassa.db.database import Database
from kassa.payments import repository as orders
from kassa.payments import service as payments
from kassa.refunds import repository as refunds_repo
from kassa.refunds import service as refunds
from kassa.upstreams import repository as upstreams_repo
from kassa.upstreams import service as upstreams
from kassa.upstreams.calls import ask_upstream
from kassa.worker import queue


class JobCommit(Protocol):
    """Run `fn` in one transaction with the job's take; returns fn's outcome, or
    "lease_lost" if another worker has the job now."""

    async def __call__(self, fn: Callable[[Connection], str]) -> str: ...


# (database, context, the job as claimed, commit)
AsyncHandler = Callable[[Database, ServiceContext, queue.ClaimedJob, JobCommit], Awaitable[str]]


def next_poll_delay(ctx: ServiceContext, age_seconds: float) -> float:
    """A quarter of the order's age, between poll_min and poll_max."""
    s = ctx.settings
    return max(s.upstream_poll_min_seconds, min(s.upstream_poll_max_seconds, age_seconds / 4))


async def poll_upstream(db: Database, ctx: ServiceContext, job: queue.ClaimedJob,
                        commit: JobCommit) -> str:
    order_id = job.ref
    # An order that expired a moment ago is asked once more: a payment made just before the
    # end is then found (and goes to review) rather than lost with a lost notification.
    since = ctx.clock.now() - timedelta(seconds=ctx.settings.upstream_poll_max_seconds)
    order, references = await db.read(lambda conn: upstreams.references_to_ask(
        conn, order_id, expired_since=since))
    if order is None or not references:
        return await commit(lambda conn: "done" if order is None else f"done:{order['status']}")
    upstream = ctx.channels.upstream(order["channel"])
    if upstream is None:
        return await commit(lambda conn: "unconfigured")
    answers = await ask_upstream(upstream, references)

    def apply(conn: Connection) -> str:
        now = ctx.clock.now()
        outcomes = [upstreams.apply_upstream_status(conn, ctx, channel=upstream.name,
                                                    status=answer, source="poll", now=now)[0]
                    for answer in answers if answer.state is UpstreamState.PAID]
        current = orders.get_order_by_id(conn, order_id)
        assert current is not None
        if current["status"] == OrderStatus.PENDING:
            age = (now - current["created_at"]).total_seconds()
            # ... and the last time just after it expires, whatever the spacing.
            run_at = min(now + timedelta(seconds=next_poll_delay(ctx, age)),
                         max(current["expires_at"], now) + timedelta(seconds=1))
            queue.enqueue(conn, kind=payments.JOB_POLL_UPSTREAM, ref=order_id, run_at=run_at,
                          now=now)
            return ",".join(outcomes) or "still_pending"
        return ",".join(outcomes) or f"done:{current['status']}"

    return await commit(apply)


async def refund_upstream(db: Database, ctx: ServiceContext, job: queue.ClaimedJob,
                          commit: JobCommit) -> str:
    refund_id = job.ref

    def load(conn: Connection) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        refund = refunds_repo.get_refund(conn, refund_id)
        order = None if refund is None else orders.get_order_by_id(conn, refund["order_id"])
        return refund, order

    refund, order = await db.read(load)
    if refund is None or order is None or refund["status"] != RefundStatus.PROCESSING:
        return await commit(lambda conn: "skipped")
    upstream = ctx.channels.upstream(order["channel"])
    reference = order["upstream_ref"]
    if upstream is None or reference is None:  # waited for: the operator may configure it again
        raise UpstreamError(f"refund {refund_id}: upstream {order['channel']} is not "
                            "configured")
    attempt = await db.read(lambda conn: upstreams_repo.get_attempt(conn, reference))
    request = UpstreamRefundRequest(
        reference=reference, trade_no=None if attempt is None else attempt["trade_no"],
        refund_id=refund_id, amount=refund["amount"], currency=refund["currency"])
    try:
        result = await upstream.refund(request)
    except UpstreamRefused as exc:
        if job.attempts > 1:
            # An earlier attempt got no answer and may have been done: a refusal now may
            # only mean "refunded already". An operator checks (kassa orders reviews).
            message = str(exc)
            return await commit(lambda conn: upstreams.review_refund(
                conn, refund_id=refund_id, channel=upstream.name, message=message,
                now=ctx.clock.now()))

        def failed(conn: Connection) -> str:
            done = refunds.fail_refund(conn, ctx, refund_id=refund_id,
                                       failure_code="refund_refused", now=ctx.clock.now())
            return "refused" if done else "lost_race"
        return await commit(failed)

    def completed(conn: Connection) -> str:
        done = refunds.complete_refund(conn, refund_id=refund_id, now=ctx.clock.now(),
                                       upstream_refund_no=result.upstream_refund_no)
        return "completed" if done else "lost_race"
    return await commit(completed)


ASYNC_HANDLERS: dict[str, AsyncHandler] = {
    payments.JOB_POLL_UPSTREAM: poll_upstream,
    refunds.JOB_REFUND_UPSTREAM: refund_upstream,
}
