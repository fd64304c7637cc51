"""State machines as transition tables. A change not in the table is refused."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"


ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.PROCESSING, OrderStatus.COMPLETED, OrderStatus.FAILED, OrderStatus.EXPIRED}
    ),
    OrderStatus.PROCESSING: frozenset({OrderStatus.COMPLETED, OrderStatus.FAILED}),
    OrderStatus.COMPLETED: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.FAILED: frozenset(),
    # Retried (a new payment link, a new expiry), or paid late and accepted by an operator
    # (a payment review): never completed by a notification on its own.
    OrderStatus.EXPIRED: frozenset({OrderStatus.PENDING, OrderStatus.COMPLETED}),
    # Refunded in full, every refund confirmed: a completed refund cannot fail any more.
    OrderStatus.REFUNDED: frozenset(),
}

# An order in one of these holds the task: a second order for it is a duplicate.
LIVE_ORDER_STATUSES = frozenset(
    {OrderStatus.PENDING, OrderStatus.PROCESSING, OrderStatus.COMPLETED, OrderStatus.REFUNDED}
)
# Orders in these count towards the daily limit (SPEC §2: orders not failed/expired).
LIMIT_COUNTED_STATUSES = LIVE_ORDER_STATUSES


class RefundStatus(StrEnum):
    PROCESSING = "processing"  # sent to the channel, waiting for its confirmation
    COMPLETED = "completed"
    FAILED = "failed"  # the channel refused: the money went back into escrow


REFUND_TRANSITIONS: dict[RefundStatus, frozenset[RefundStatus]] = {
    RefundStatus.PROCESSING: frozenset({RefundStatus.COMPLETED, RefundStatus.FAILED}),
    RefundStatus.COMPLETED: frozenset(),
    RefundStatus.FAILED: frozenset(),
}


class TaskStatus(StrEnum):
    OPEN = "open"  # created; its payment may be pending, in escrow or partly refunded
    APPROVED = "approved"  # escrow released to the worker
    FAILED = "failed"  # escrow refunded (reason task_failed)
    CANCELLED = "cancelled"  # escrow refunded (reason task_cancelled)


TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.OPEN: frozenset({TaskStatus.APPROVED, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.APPROVED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}

# The status a transaction-history row shows for an order's or a refund's status.
HISTORY_STATUS: dict[str, str] = {
    OrderStatus.PENDING: "pending",
    OrderStatus.PROCESSING: "pending",
    OrderStatus.COMPLETED: "completed",
    OrderStatus.REFUNDED: "completed",
    OrderStatus.FAILED: "failed",
    OrderStatus.EXPIRED: "failed",
    RefundStatus.PROCESSING: "pending",
    RefundStatus.COMPLETED: "completed",
    RefundStatus.FAILED: "failed",
}


class TransitionError(Exception):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"cannot move from {current} to {target}")
        self.current = current
        self.target = target


def sources_for(target: OrderStatus) -> frozenset[OrderStatus]:
    """Every status from which `target` may be reached (for conditional UPDATEs)."""
    return frozenset(s for s, targets in ORDER_TRANSITIONS.items() if target in targets)


def check_transition(current: OrderStatus, target: OrderStatus) -> None:
    if target not in ORDER_TRANSITIONS[current]:
        raise TransitionError(current, target)
