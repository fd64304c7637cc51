"""Money as integer minor units beside a currency.

`float` never touches money here: decimal strings are parsed exactly, as integers, and
rejected when they carry more places than the currency has.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

# Minor units per currency (ISO 4217 exponent). USDT is carried with 2 places in
# Kassa's wire formats (seed 002 sends amounts as 2-decimal strings).
CURRENCY_EXPONENT: dict[str, int] = {"CNY": 2, "USD": 2, "EUR": 2, "USDT": 2}


# Decimal precision for conversions: far more digits than any amount a request can carry
# (the default 28 would round, or refuse to quantize, amounts from about 10**26).
EXACT_DIGITS = 80


class MoneyError(ValueError):
    """A money value that cannot be represented exactly."""


@dataclass(frozen=True, slots=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise MoneyError("money is an integer number of minor units")
        if self.currency not in CURRENCY_EXPONENT:
            raise MoneyError(f"unsupported currency {self.currency!r}")

    def to_decimal(self) -> Decimal:
        """The major-unit value, exact: 5000 CNY cents -> Decimal('50.00')."""
        exp = CURRENCY_EXPONENT[self.currency]
        # Built from a string, which is exact at any size (arithmetic would round at 28 digits).
        return Decimal(f"{self.minor}E-{exp}")

    def to_decimal_string(self) -> str:
        return str(self.to_decimal())


def parse_decimal_amount(text: str, currency: str) -> Money:
    """Parse a major-unit decimal string ("5.67", "1", "1.0") into minor units.

    Rejects floats' spellings that are not plain decimals (exponents, NaN,
    infinities, signs other than a plain positive number) and values with more
    decimal places than the currency allows.
    """
    if currency not in CURRENCY_EXPONENT:
        raise MoneyError(f"unsupported currency {currency!r}")
    if not isinstance(text, str):
        raise MoneyError("amount must be a decimal string")
    stripped = text.strip()
    if not stripped or any(c not in "0123456789." for c in stripped) or stripped.count(".") > 1:
        raise MoneyError(f"amount {text!r} is not a plain decimal number")
    if stripped.startswith(".") or stripped.endswith("."):
        raise MoneyError(f"amount {text!r} is not a plain decimal number")
    whole, _, frac = stripped.partition(".")
    exp = CURRENCY_EXPONENT[currency]
    if len(frac) > exp:
        raise MoneyError(f"amount {text!r} has more than {exp} decimal places")
    # Only digits are left: integers are exact at any size (Decimal rounds past 28 digits).
    return Money(int(whole + frac.ljust(exp, "0")), currency)


def round_half_up(value: Decimal) -> int:
    with localcontext(prec=EXACT_DIGITS):
        return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class FeeSplit:
    total: int
    platform_fee: int
    worker_payout: int


def split_fee(amount: int, fee_bps: int) -> FeeSplit:
    """platform_fee = round_half_up(amount * fee_bps / 10000); the parts sum to the whole."""
    if amount < 0:
        raise MoneyError("amount must not be negative")
    if not 0 <= fee_bps <= 10_000:
        raise MoneyError("fee must be between 0 and 10000 basis points")
    # round_half_up(amount * fee_bps / 10000), exactly, in integers.
    fee = (amount * fee_bps * 2 + 10_000) // 20_000
    return FeeSplit(total=amount, platform_fee=fee, worker_payout=amount - fee)


def convert(amount_minor: int, rate: Decimal) -> int:
    """Convert minor units at `rate` (target per source unit), rounding half up."""
    with localcontext(prec=EXACT_DIGITS):
        return round_half_up(Decimal(amount_minor) * rate)
