"""Ledger entries: two or more integer postings that sum to zero, or nothing at all."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kassa.core.ledger import Entry, Posting, UnbalancedEntry, transfer

amounts = st.integers(min_value=-(2**63), max_value=2**63 - 1)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz:_", min_size=1, max_size=24)


def postings(values: Sequence[object]) -> tuple[Posting, ...]:
    return tuple(Posting(f"account:{i}", v) for i, v in enumerate(values))  # type: ignore[arg-type]


@st.composite
def balanced(draw: st.DrawFn, min_size: int = 2) -> list[int]:
    head = draw(st.lists(amounts, min_size=min_size - 1, max_size=8))
    values = [*head, -sum(head)]
    return draw(st.permutations(values))


@given(values=balanced(), kind=names, currency=st.sampled_from(["CNY", "USD", "USDT"]))
def test_any_balanced_postings_make_an_entry(values: list[int], kind: str,
                                             currency: str) -> None:
    entry = Entry(kind=kind, currency=currency, postings=postings(values))
    assert [p.amount for p in entry.postings] == values
    assert sum(p.amount for p in entry.postings) == 0
    assert (entry.kind, entry.currency) == (kind, currency)


@given(values=st.lists(amounts, min_size=2, max_size=9))
def test_postings_that_do_not_sum_to_zero_are_refused(values: list[int]) -> None:
    assume(sum(values) != 0)
    with pytest.raises(UnbalancedEntry):
        Entry(kind="payment", currency="CNY", postings=postings(values))


@given(values=balanced(), delta=amounts.filter(lambda d: d != 0),
       index=st.integers(min_value=0, max_value=8))
def test_one_changed_posting_unbalances_any_entry(values: list[int], delta: int,
                                                  index: int) -> None:
    values = list(values)
    values[index % len(values)] += delta
    with pytest.raises(UnbalancedEntry):
        Entry(kind="payment", currency="CNY", postings=postings(values))


@given(values=st.lists(amounts, max_size=1))
def test_fewer_than_two_postings_are_refused(values: list[int]) -> None:
    # Even a single zero posting "sums to zero": it is still not an entry.
    with pytest.raises(UnbalancedEntry):
        Entry(kind="payment", currency="CNY", postings=postings(values))


@given(values=balanced(), index=st.integers(min_value=0, max_value=8),
       odd=st.sampled_from([True, False, 1.0, 0.0, -3.0, Decimal(0), Decimal(2), "0", None]))
def test_non_integer_amounts_are_refused_even_when_they_balance(values: list[int], index: int,
                                                                odd: object) -> None:
    mixed: list[object] = list(values)
    i, j = index % len(values), (index + 1) % len(values)
    mixed[i] = odd
    if isinstance(odd, bool | float | Decimal):
        # Keep the numeric sum at zero with an int neighbour: only the type is wrong.
        mixed[j] = values[j] + values[i] - int(odd)
        assert odd == int(odd)
        assert int(odd) + sum(v for k, v in enumerate(mixed) if k != i) == 0  # type: ignore[misc]
    with pytest.raises(UnbalancedEntry):
        Entry(kind="payment", currency="CNY", postings=postings(mixed))


def test_bool_and_float_pairs_that_add_to_zero_are_refused() -> None:
    with pytest.raises(UnbalancedEntry):
        Entry(kind="x", currency="CNY", postings=postings([True, -1]))
    with pytest.raises(UnbalancedEntry):
        Entry(kind="x", currency="CNY", postings=postings([False, 0]))
    with pytest.raises(UnbalancedEntry):
        Entry(kind="x", currency="CNY", postings=postings([1.0, -1]))
    with pytest.raises(UnbalancedEntry):
        Entry(kind="x", currency="CNY", postings=postings([0.5, -0.5]))
    # The integer version of each is fine.
    assert Entry(kind="x", currency="CNY", postings=postings([1, -1])).postings[0].amount == 1


@given(amount=st.integers(min_value=1, max_value=2**63 - 1), source=names, destination=names,
       kind=names, currency=st.sampled_from(["CNY", "USD"]))
def test_transfer_always_balances(amount: int, source: str, destination: str, kind: str,
                                  currency: str) -> None:
    entry = transfer(kind, currency, source=source, destination=destination, amount=amount,
                     description="d")
    assert entry.postings == (Posting(source, -amount), Posting(destination, amount))
    assert sum(p.amount for p in entry.postings) == 0
    assert (entry.kind, entry.currency, entry.description) == (kind, currency, "d")


@given(amount=st.integers(max_value=0))
def test_transfer_of_nothing_or_less_is_refused(amount: int) -> None:
    with pytest.raises(UnbalancedEntry):
        transfer("payment", "CNY", source="a", destination="b", amount=amount)
