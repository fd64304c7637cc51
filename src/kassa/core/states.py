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
    OrderStatus.EXPIRED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
}

# An order in one of these holds the task: a second order for it is a duplicate.
LIVE_ORDER_STATUSES = frozenset(
    {OrderStatus.PENDING, OrderStatus.PROCESSING, OrderStatus.COMPLETED, OrderStatus.REFUNDED}
)
# Orders in these count towards the daily limit (SPEC §2: orders not failed/expired).
LIMIT_COUNTED_STATUSES = LIVE_ORDER_STATUSES


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
