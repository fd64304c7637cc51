"""The order state machine: exactly the table's transitions, nothing else."""

from __future__ import annotations

import itertools

import pytest

from kassa.core.states import (
    LIMIT_COUNTED_STATUSES,
    LIVE_ORDER_STATUSES,
    ORDER_TRANSITIONS,
    OrderStatus,
    TransitionError,
    check_transition,
    sources_for,
)

S = OrderStatus
ALL_PAIRS = list(itertools.product(OrderStatus, OrderStatus))
ALLOWED = {(a, b) for a, targets in ORDER_TRANSITIONS.items() for b in targets}
# The order lifecycle as SPEC §2 and the seed describe it, written out independently.
EXPECTED = {
    (S.PENDING, S.PROCESSING), (S.PENDING, S.COMPLETED), (S.PENDING, S.FAILED),
    (S.PENDING, S.EXPIRED), (S.PROCESSING, S.COMPLETED), (S.PROCESSING, S.FAILED),
    (S.COMPLETED, S.REFUNDED),
    # SPEC §5 / seed 004: retry gives an expired order a new link and expiry (pending
    # again); a late payment an operator accepts from its review completes it.
    (S.EXPIRED, S.PENDING), (S.EXPIRED, S.COMPLETED),
}
TERMINAL = {S.FAILED, S.REFUNDED}


def test_the_table_covers_every_status_and_is_the_documented_lifecycle() -> None:
    assert set(ORDER_TRANSITIONS) == set(OrderStatus)
    assert ALLOWED == EXPECTED
    assert {s.value for s in OrderStatus} == {
        "pending", "processing", "completed", "failed", "expired", "refunded"}


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_every_transition_in_the_table_passes(current: OrderStatus,
                                              target: OrderStatus) -> None:
    check_transition(current, target)  # raises TransitionError if refused


@pytest.mark.parametrize(("current", "target"),
                         sorted(p for p in ALL_PAIRS if p not in ALLOWED))
def test_every_other_pair_raises(current: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(TransitionError) as err:
        check_transition(current, target)
    assert (err.value.current, err.value.target) == (current, target)
    assert str(err.value) == f"cannot move from {current} to {target}"


@pytest.mark.parametrize("status", list(OrderStatus))
def test_no_status_moves_to_itself(status: OrderStatus) -> None:
    with pytest.raises(TransitionError):
        check_transition(status, status)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_have_no_way_out(terminal: OrderStatus) -> None:
    assert ORDER_TRANSITIONS[terminal] == frozenset()
    for target in OrderStatus:
        with pytest.raises(TransitionError):
            check_transition(terminal, target)
        assert terminal not in sources_for(target)


def test_terminal_states_are_exactly_those_without_targets() -> None:
    assert {s for s, targets in ORDER_TRANSITIONS.items() if not targets} == TERMINAL


def test_only_a_retried_expired_order_returns_to_pending() -> None:
    assert sources_for(S.PENDING) == {S.EXPIRED}


@pytest.mark.parametrize("target", list(OrderStatus))
def test_sources_for_is_consistent_with_the_table(target: OrderStatus) -> None:
    sources = sources_for(target)
    assert sources == {a for a, b in EXPECTED if b == target}
    for source in OrderStatus:
        allowed = source in sources
        assert allowed == (target in ORDER_TRANSITIONS[source])
        if allowed:
            check_transition(source, target)
        else:
            with pytest.raises(TransitionError):
                check_transition(source, target)


def test_sources_for_known_targets() -> None:
    assert sources_for(S.COMPLETED) == {S.PENDING, S.PROCESSING, S.EXPIRED}
    assert sources_for(S.FAILED) == {S.PENDING, S.PROCESSING}
    assert sources_for(S.EXPIRED) == {S.PENDING}
    assert sources_for(S.REFUNDED) == {S.COMPLETED}
    assert sources_for(S.PROCESSING) == {S.PENDING}


def test_every_status_is_reachable_from_pending() -> None:
    reached, frontier = {S.PENDING}, [S.PENDING]
    while frontier:
        for nxt in ORDER_TRANSITIONS[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(OrderStatus)


def test_live_statuses_hold_the_task_and_count_towards_limits() -> None:
    # SPEC §2: orders not failed/expired count against the daily limit.
    assert set(OrderStatus) - {S.FAILED, S.EXPIRED} == LIMIT_COUNTED_STATUSES
    assert set(OrderStatus) - {S.FAILED, S.EXPIRED} == LIVE_ORDER_STATUSES
