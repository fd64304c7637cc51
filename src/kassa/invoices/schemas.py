"""What an invoice says, as plain data: the service gathers it from the order, pdf.py draws
it. Money stays integer minor units beside its currency (core.money.Money) until the PDF
prints it."""

from __future__ import annotations

from dataclasses import dataclass

from kassa.core.money import Money

PDF = "application/pdf"
ORDER_PREFIX = "ord_"


def invoice_number(order_id: str) -> str:
    """Stable, one per order, derived from its id: "ord_3f2a…" -> "INV-3F2A…"."""
    return "INV-" + order_id.removeprefix(ORDER_PREFIX).upper()


def invoice_filename(order_id: str) -> str:
    return f"invoice-{order_id}.pdf"


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line of the cost breakdown; `part` lines split the line above them."""

    label: str
    amount: Money
    part: bool = False


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    number: str
    merchant_name: str
    test_mode: bool
    issue_date: str  # the Asia/Shanghai calendar day the order was paid, YYYY-MM-DD
    order_id: str
    task_id: str | None
    transaction_id: str | None
    description: str
    payment_method: str  # as printed: "card (visa, last 4: 4242)"
    status: str
    amount: Money
    amount_cny: Money | None  # only for an order not in CNY, with the rate it used
    fx_rate: str | None  # CNY per unit of the order's currency, exact decimal text
    refunded: Money  # in the order's currency (refunds in progress included)
    breakdown_title: str
    breakdown: tuple[InvoiceLine, ...]
