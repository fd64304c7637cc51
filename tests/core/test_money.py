"""Money arithmetic, checked against independent integer arithmetic (no float anywhere)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kassa.core.money import (
    CURRENCY_EXPONENT,
    Money,
    MoneyError,
    convert,
    parse_decimal_amount,
    split_fee,
)

# Amounts are stored as BIGINT minor units: the arithmetic must be exact over that whole range.
BIGINT_MAX = 2**63 - 1
amounts = st.integers(min_value=0, max_value=BIGINT_MAX)
fee_bps = st.integers(min_value=0, max_value=10_000)
currencies = st.sampled_from(sorted(CURRENCY_EXPONENT))
# Any non-negative integer, including ones far beyond Decimal's default 28-digit precision.
any_minor = st.integers(min_value=0) | st.integers(min_value=10**27, max_value=10**60)


def fee_oracle(amount: int, bps: int) -> int:
    """round_half_up(amount * bps / 10000) in integers: floor(x + 1/2) = (2ab + 10000) // 20000."""
    return (amount * bps * 2 + 10_000) // 20_000


def render(minor: int, exponent: int, places: int) -> str:
    """`minor` written in major units with `places` decimals (places <= exponent), integers only."""
    scale = 10**exponent
    whole, frac = divmod(minor, scale)
    if places == 0:
        assert frac == 0
        return str(whole)
    cut = 10 ** (exponent - places)
    assert frac % cut == 0
    return f"{whole}.{str(frac // cut).zfill(places)}"


# --- split_fee ------------------------------------------------------------------------------

@given(amount=amounts, bps=fee_bps)
@example(amount=5000, bps=2000)  # the seed's cost breakdown: 1000 fee, 4000 payout
@example(amount=1, bps=5000)  # exactly one half: rounds up
@example(amount=3, bps=5000)  # 1.5 -> 2
@example(amount=BIGINT_MAX, bps=9_999)
def test_split_fee_parts_sum_and_fee_is_round_half_up(amount: int, bps: int) -> None:
    split = split_fee(amount, bps)
    assert split.total == amount
    assert split.platform_fee + split.worker_payout == amount
    assert split.platform_fee == fee_oracle(amount, bps)
    assert 0 <= split.platform_fee <= amount
    assert 0 <= split.worker_payout <= amount
    for part in (split.total, split.platform_fee, split.worker_payout):
        assert type(part) is int


def test_split_fee_known_values() -> None:
    assert split_fee(5000, 2000).platform_fee == 1000
    assert split_fee(1, 5000).platform_fee == 1  # 0.5 -> 1 (half up, not half even)
    assert split_fee(5, 1000).platform_fee == 1  # 0.5 -> 1
    assert split_fee(25, 2000).platform_fee == 5
    assert split_fee(2, 2500).platform_fee == 1  # 0.5 -> 1
    assert split_fee(1, 4999).platform_fee == 0  # 0.4999 -> 0
    assert split_fee(0, 10_000).platform_fee == 0
    assert split_fee(7, 10_000) == split_fee(7, 10_000)
    assert split_fee(7, 10_000).worker_payout == 0
    assert split_fee(7, 0).platform_fee == 0


@given(amount=amounts, extra=st.integers(min_value=0, max_value=10**12), bps=fee_bps)
def test_split_fee_is_monotonic_in_amount(amount: int, extra: int, bps: int) -> None:
    bigger = min(amount + extra, BIGINT_MAX)
    low, high = split_fee(amount, bps), split_fee(bigger, bps)
    assert low.platform_fee <= high.platform_fee
    assert low.worker_payout <= high.worker_payout


@given(amount=amounts, bps=fee_bps)
def test_split_fee_steps_by_at_most_one_cent(amount: int, bps: int) -> None:
    step = split_fee(min(amount + 1, BIGINT_MAX), bps).platform_fee - split_fee(amount, bps
                                                                                ).platform_fee
    assert step in (0, 1)


@given(amount=st.integers(max_value=-1), bps=fee_bps)
def test_split_fee_rejects_negative_amounts(amount: int, bps: int) -> None:
    with pytest.raises(MoneyError):
        split_fee(amount, bps)


@given(amount=amounts, bps=st.integers(max_value=-1) | st.integers(min_value=10_001))
def test_split_fee_rejects_fees_outside_0_to_10000_bps(amount: int, bps: int) -> None:
    with pytest.raises(MoneyError):
        split_fee(amount, bps)


# --- parse_decimal_amount -------------------------------------------------------------------

@st.composite
def decimal_spellings(draw: st.DrawFn) -> tuple[int, str, str]:
    """(minor, currency, text): `minor` spelled with 0..exponent decimal places."""
    currency = draw(currencies)
    exponent = CURRENCY_EXPONENT[currency]
    places = draw(st.integers(min_value=0, max_value=exponent))
    major = draw(any_minor)
    unit = 10 ** (exponent - places)  # the smallest step `places` decimals can write
    frac = draw(st.integers(min_value=0, max_value=10**places - 1))
    minor = major * 10**exponent + frac * unit
    return minor, currency, render(minor, exponent, places)


@given(decimal_spellings())
@example((500, "CNY", "5"))
@example((500, "CNY", "5.0"))
@example((500, "CNY", "5.00"))
@example((567, "USD", "5.67"))
@example((0, "CNY", "0"))
@example((1, "USDT", "0.01"))
@example((10**30 + 1, "CNY", render(10**30 + 1, 2, 2)))
def test_parse_decimal_amount_reads_back_exactly(case: tuple[int, str, str]) -> None:
    minor, currency, text = case
    parsed = parse_decimal_amount(text, currency)
    assert parsed == Money(minor, currency)
    assert type(parsed.minor) is int


@given(minor=any_minor, currency=currencies,
       extra=st.integers(min_value=1, max_value=4), last=st.integers(min_value=0, max_value=9))
def test_parse_decimal_amount_rejects_too_many_places(minor: int, currency: str, extra: int,
                                                      last: int) -> None:
    exponent = CURRENCY_EXPONENT[currency]
    text = render(minor, exponent, exponent) if exponent else str(minor) + "."
    text += "0" * (extra - 1) + str(last)  # even trailing zeros: "5.000" has 3 places
    with pytest.raises(MoneyError):
        parse_decimal_amount(text, currency)


@pytest.mark.parametrize("text", [
    "1e3", "1E3", "1e-2", "5.00e0", "NaN", "nan", "sNaN", "inf", "-inf", "Infinity",
    "-1", "-0", "-0.01", "+1", "+0.5", " ", "", "\t", "1.2.3", ".5", "5.", ".", "..",
    "1,000", "1_000", "0x10", "5.001", "5.000", "5 .00", "5. 00", "１", "٥", "5.٥", "1/2",
])
@pytest.mark.parametrize("currency", sorted(CURRENCY_EXPONENT))
def test_parse_decimal_amount_rejects_non_plain_decimals(text: str, currency: str) -> None:
    with pytest.raises(MoneyError):
        parse_decimal_amount(text, currency)


PLAIN = re.compile(r"[0-9]+(?:\.([0-9]+))?")


@given(text=st.text(alphabet="0123456789.-+eEnaif_ \t", max_size=12) | st.text(max_size=8),
       currency=currencies)
def test_parse_decimal_amount_accepts_exactly_plain_decimals(text: str, currency: str) -> None:
    """Any string: either it is a plain decimal within the currency's places (and parses to
    the value integer arithmetic gives), or it is rejected with MoneyError -- nothing else."""
    exponent = CURRENCY_EXPONENT[currency]
    match = PLAIN.fullmatch(text.strip())
    if match is None or len(match.group(1) or "") > exponent:
        with pytest.raises(MoneyError):
            parse_decimal_amount(text, currency)
        return
    whole, _, frac = text.strip().partition(".")
    expected = int(whole) * 10**exponent + int(frac.ljust(exponent, "0") or "0")
    assert parse_decimal_amount(text, currency) == Money(expected, currency)


@pytest.mark.parametrize("currency", ["JPY", "cny", "", "BTC"])
def test_parse_decimal_amount_rejects_unsupported_currencies(currency: str) -> None:
    with pytest.raises(MoneyError):
        parse_decimal_amount("5.00", currency)


# --- Money ----------------------------------------------------------------------------------

@given(minor=any_minor, currency=currencies)
@example(minor=5000, currency="CNY")
@example(minor=0, currency="USD")
@example(minor=7, currency="USDT")
def test_money_decimal_string_round_trips(minor: int, currency: str) -> None:
    text = Money(minor, currency).to_decimal_string()
    exponent = CURRENCY_EXPONENT[currency]
    assert text == render(minor, exponent, exponent)  # always every place: "50.00", "0.07"
    assert parse_decimal_amount(text, currency) == Money(minor, currency)


def test_money_decimal_string_examples() -> None:
    assert Money(5000, "CNY").to_decimal_string() == "50.00"
    assert Money(7, "USD").to_decimal_string() == "0.07"
    assert Money(0, "CNY").to_decimal_string() == "0.00"
    assert Money(5000, "CNY").to_decimal() == Decimal("50.00")


@pytest.mark.parametrize("minor", [True, False, 1.0, Decimal(1), "1", None])
def test_money_rejects_non_integer_minor_units(minor: object) -> None:
    with pytest.raises(MoneyError):
        Money(minor, "CNY")  # type: ignore[arg-type]


def test_money_rejects_unsupported_currency() -> None:
    with pytest.raises(MoneyError):
        Money(100, "JPY")


# --- convert --------------------------------------------------------------------------------

@given(amount=amounts, rate_units=st.integers(min_value=0, max_value=99_999_999))
@example(amount=5000, rate_units=71_000)  # USD 50.00 at 7.1000 -> CNY 355.00
@example(amount=1, rate_units=5_000)  # 0.5 -> 1 (half up)
@example(amount=3, rate_units=5_000)  # 1.5 -> 2
@example(amount=5, rate_units=1)  # 0.0005 -> 0
@example(amount=5_000, rate_units=1)  # 0.5 -> 1
def test_convert_rounds_half_up(amount: int, rate_units: int) -> None:
    """rate = rate_units / 10000 (four decimals); amount * rate rounded half up, in integers."""
    rate = Decimal(rate_units).scaleb(-4)
    assert rate == Decimal(f"{rate_units // 10_000}.{str(rate_units % 10_000).zfill(4)}")
    converted = convert(amount, rate)
    assert converted == (amount * rate_units * 2 + 10_000) // 20_000
    assert type(converted) is int


def test_convert_known_values() -> None:
    assert convert(5000, Decimal("7.1000")) == 35_500
    assert convert(1, Decimal("0.5")) == 1
    assert convert(1, Decimal("0.4999")) == 0
    assert convert(123, Decimal("1")) == 123
    assert convert(0, Decimal("7.1")) == 0
