"""The invoice of a paid order: its facts, gathered in the caller's transaction, and its
PDF, drawn afterwards (pdf.py).

Only an order whose payment completed has an invoice: status completed, or refunded since
(the invoice then shows the refunds). The cost breakdown is the order's own record of where
its money went, in CNY minor units as the ledger keeps it:

    task payment   paid into escrow = refunded + released (to the worker + platform fee)
                   + still held in escrow
    collection     paid = channel fee still kept + refunded + credited to the balance; the
                   fee as charged is the ledger's (a refund gives back its share of it)
    deposit        paid = refunded + credited to the balance
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.core.clock import shanghai_day
from kassa.core.money import Money
from kassa.core.states import OrderStatus
from kassa.errors import InvalidOrderState, OrderNotFound
from kassa.invoices import pdf, repository
from kassa.invoices.schemas import InvoiceFacts, InvoiceLine, invoice_number
from kassa.payments.schemas import PURPOSE_COLLECTION, PURPOSE_DEPOSIT, held_cny

INVOICED = frozenset({OrderStatus.COMPLETED, OrderStatus.REFUNDED})
CNY = "CNY"


def _percent(bps: int) -> str:
    """Basis points as a percentage, exactly: 2000 -> "20.00%", 60 -> "0.60%"."""
    return f"{Decimal(bps).scaleb(-2):.2f}%"


def _payment_method(order: Mapping[str, Any]) -> str:
    method = str(order["payment_method"])
    if order["card_last4"]:
        return f"{method} ({order['card_brand'] or 'card'}, last 4: {order['card_last4']})"
    return method


def _breakdown(conn: Connection, order: Mapping[str, Any]) -> tuple[str, list[InvoiceLine]]:
    def cny(minor: int) -> Money:
        return Money(int(minor), CNY)

    paid, refunded = int(order["amount_cny"]), int(order["refunded_cny"])
    fee = int(order["platform_fee_cny"])
    if order["purpose"] == PURPOSE_DEPOSIT:
        return "Deposit (CNY)", [
            InvoiceLine("Paid", cny(paid)),
            InvoiceLine("Refunded", cny(refunded)),
            InvoiceLine("Credited to your balance", cny(paid - refunded)),
        ]
    if order["purpose"] == PURPOSE_COLLECTION:
        charged = (repository.fee_posted(conn, transaction_id=order["transaction_id"])
                   if order["transaction_id"] else fee)
        lines = [
            InvoiceLine("Paid", cny(paid)),
            InvoiceLine(f"Channel fee charged ({_percent(order['fee_bps'])})", cny(charged)),
        ]
        if charged != fee:
            lines.append(InvoiceLine("Fee returned with refunds", cny(charged - fee), part=True))
        lines += [InvoiceLine("Refunded", cny(refunded)),
                  InvoiceLine("Credited to your balance", cny(paid - fee - refunded))]
        return "Collection (CNY)", lines
    released = int(order["released_cents"])
    worker = f" {order['worker_id']}" if order.get("worker_id") else ""
    return "Escrow (CNY)", [
        InvoiceLine("Paid into escrow", cny(paid)),
        InvoiceLine("Refunded", cny(refunded)),
        InvoiceLine("Released", cny(released)),
        InvoiceLine(f"to worker{worker}", cny(released - fee), part=True),
        InvoiceLine(f"platform fee ({_percent(order['fee_bps'])})", cny(fee), part=True),
        InvoiceLine("Still held in escrow", cny(held_cny(order))),
    ]


def invoice_facts(conn: Connection, *, principal: Principal, order_id: str) -> InvoiceFacts:
    """The facts of one of the merchant's orders (in the key's mode) for its invoice.
    Raises OrderNotFound, or InvalidOrderState for an order whose payment has not completed
    (pending, processing, failed, expired)."""
    order = repository.invoice_order(conn, account_id=principal.account_id,
                                     mode=principal.mode, order_id=order_id)
    if order is None:
        raise OrderNotFound(f"Order {order_id} doesn't exist", order_id=order_id)
    status = order["status"]
    if status not in INVOICED:
        raise InvalidOrderState(
            f"Order {order_id} is {status}: an invoice is issued once its payment has "
            f"completed (status completed or refunded)", order_id=order_id, status=status)
    currency = order["currency"]
    foreign = currency != CNY
    title, lines = _breakdown(conn, order)
    return InvoiceFacts(
        number=invoice_number(order_id),
        merchant_name=order["merchant_name"],
        test_mode=order["mode"] == "test",
        issue_date=shanghai_day(order["paid_at"] or order["updated_at"]),
        order_id=order_id,
        task_id=order["task_id"],
        transaction_id=order["transaction_id"],
        description=order["description"],
        payment_method=_payment_method(order),
        status=status,
        amount=Money(order["amount"], currency),
        amount_cny=Money(order["amount_cny"], CNY) if foreign else None,
        fx_rate=order["fx_rate"] if foreign else None,
        refunded=Money(order["refunded_cents"], currency),
        breakdown_title=title,
        breakdown=tuple(lines),
    )


def invoice_pdf(facts: InvoiceFacts) -> bytes:
    """The invoice as a PDF document (no database: run it after the transaction)."""
    return pdf.render_invoice(facts)
