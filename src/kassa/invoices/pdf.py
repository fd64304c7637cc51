"""An invoice drawn as a one-page A4 PDF: a pure function of InvoiceFacts to bytes.

Text that Helvetica's WinAnsi encoding can carry is set in Helvetica; anything else (a
Chinese merchant name or task title) in reportlab's built-in CID font STSong-Light, which
every PDF reader supplies, so no font file is embedded or needed. The document is drawn in
reportlab's invariant mode (fixed creation date and document id), so the same facts always
make the same bytes.
"""

from __future__ import annotations

import io
import unicodedata

from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

from kassa.core.money import Money
from kassa.invoices.schemas import InvoiceFacts, InvoiceLine

LATIN = "Helvetica"
LATIN_BOLD = "Helvetica-Bold"
CJK = "STSong-Light"
pdfmetrics.registerFont(UnicodeCIDFont(CJK))

WIDTH, HEIGHT = A4
MARGIN = 56.0
LABEL_X = MARGIN
VALUE_X = MARGIN + 130
RIGHT = WIDTH - MARGIN
SIZE = 10.0
LEADING = 15.0


def _clean(text: str) -> str:
    """No control characters or lone surrogates reach the page (a space instead)."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cs") else c for c in text)


def _font(text: str, bold: bool = False) -> str:
    try:
        text.encode("cp1252")  # Helvetica's WinAnsiEncoding
    except UnicodeEncodeError:
        return CJK
    return LATIN_BOLD if bold else LATIN


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Lines no wider than `width`: broken at the last space that fits, else anywhere
    (Chinese has no spaces)."""
    lines: list[str] = []
    line = ""
    for char in text:
        if pdfmetrics.stringWidth(line + char, font, size) <= width or not line:
            line += char
            continue
        cut = line.rfind(" ")
        if cut > 0:
            lines.append(line[:cut])
            line = line[cut + 1:] + char
        else:
            lines.append(line)
            line = char
    if line or not lines:
        lines.append(line)
    return lines


def _money(value: Money) -> str:
    return f"{value.to_decimal_string()} {value.currency}"


class _Page:
    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.y = HEIGHT - MARGIN

    def text(self, x: float, text: str, *, size: float = SIZE, bold: bool = False,
             right: bool = False, width: float | None = None) -> None:
        """Draw `text` at x on the current line (wrapped to `width`: the cursor moves down
        for every extra line)."""
        text = _clean(text)
        font = _font(text, bold)
        lines = [text] if width is None else _wrap(text, font, size, width)
        self.canvas.setFont(font, size)
        for i, line in enumerate(lines):
            if i:
                self.y -= LEADING
            if right:
                self.canvas.drawRightString(x, self.y, line)
            else:
                self.canvas.drawString(x, self.y, line)

    def field(self, label: str, value: str) -> None:
        self.text(LABEL_X, label, bold=True)
        self.text(VALUE_X, value, width=RIGHT - VALUE_X)
        self.down()

    def amount(self, label: str, value: Money, *, indent: bool = False) -> None:
        self.text(LABEL_X + (16 if indent else 0), label)
        self.text(RIGHT, _money(value), right=True)
        self.down()

    def rule(self) -> None:
        self.canvas.setLineWidth(0.5)
        self.canvas.line(MARGIN, self.y + 4, RIGHT, self.y + 4)
        self.down()

    def heading(self, text: str) -> None:
        self.text(LABEL_X, text, size=12, bold=True)
        self.down(LEADING + 2)

    def down(self, by: float = LEADING) -> None:
        self.y -= by


def render_invoice(facts: InvoiceFacts) -> bytes:
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=1, pageCompression=1)
    canvas.setTitle(f"Invoice {facts.number}")
    canvas.setSubject(facts.order_id)
    canvas.setCreator("Kassa")
    page = _Page(canvas)

    page.text(LABEL_X, "Invoice", size=22, bold=True)
    page.text(RIGHT, facts.number, size=12, bold=True, right=True)
    page.down(24)
    page.text(RIGHT, f"Issued {facts.issue_date}", right=True)
    if facts.test_mode:
        page.canvas.setFont(LATIN_BOLD, 8)
        page.canvas.drawRightString(RIGHT, page.y - LEADING, "TEST MODE: no real money moved")
    page.text(LABEL_X, facts.merchant_name, size=13, width=RIGHT - LABEL_X - 170)
    page.down(2 * LEADING)
    page.rule()

    page.field("Invoice number", facts.number)
    page.field("Issue date", f"{facts.issue_date} (Asia/Shanghai)")
    page.field("Order", facts.order_id)
    if facts.task_id is not None:
        page.field("Task", facts.task_id)
    if facts.transaction_id is not None:
        page.field("Transaction", facts.transaction_id)
    page.field("Description", facts.description)
    page.field("Payment method", facts.payment_method)
    page.field("Status", facts.status)
    page.down(6)
    page.rule()

    page.heading("Amount")
    page.amount("Amount", facts.amount)
    if facts.amount_cny is not None:
        page.amount("Amount in CNY", facts.amount_cny)
        if facts.fx_rate is not None:
            page.text(LABEL_X + 16, f"at 1 {facts.amount.currency} = {facts.fx_rate} CNY")
            page.down()
    page.amount("Refunded so far", facts.refunded)
    page.down(6)
    page.rule()

    page.heading(facts.breakdown_title)
    line: InvoiceLine
    for line in facts.breakdown:
        page.amount(line.label, line.amount, indent=line.part)
    page.down(6)
    page.rule()

    canvas.setFont(LATIN, 8)
    canvas.drawString(MARGIN, MARGIN, f"{facts.number} - issued by Kassa for order "
                                      f"{facts.order_id}. Amounts are exact; dates are "
                                      f"Asia/Shanghai calendar days.")
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()
