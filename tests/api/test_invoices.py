"""GET /api/v1/invoices/{order_id} (SPEC §10, issue 7): the invoice of a paid order as a PDF,
read back with pypdf on both databases. What it must say (merchant, order, amounts, where
the money went), which orders have one (completed or refunded: anything else is 409), and
whose (the key's account and mode: anything else is 404, odd ids included, never a 500)."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pypdf import PdfReader

from tests.api.test_escrow import approve, dispatch, paid_task, query, refunded
from tests.facades.epay_shop import credential
from tests.facades.test_epay import created, fee, refund, settled
from tests.support.factories import assert_error, new_task, pay
from tests.support.harness import KassaServer, Merchant

SHANGHAI = ZoneInfo("Asia/Shanghai")
CHINESE_NAME = "测试商户 Acme"


# --- helpers -------------------------------------------------------------------------------

def invoice(client: httpx.Client, order_id: str) -> httpx.Response:
    return client.get(f"/api/v1/invoices/{order_id}")


def invoice_pdf(client: httpx.Client, order_id: str) -> bytes:
    r = invoice(client, order_id)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == f'attachment; filename="invoice-{order_id}.pdf"'
    assert r.content.startswith(b"%PDF-")
    return r.content


def pdf_lines(content: bytes) -> list[str]:
    """The page's text, line by line as laid out (a label and its amount share a line),
    each line's runs of spaces squeezed to one."""
    reader = PdfReader(io.BytesIO(content))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text(extraction_mode="layout")
    lines = (re.sub(r"\s+", " ", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def invoice_lines(client: httpx.Client, order_id: str) -> list[str]:
    return pdf_lines(invoice_pdf(client, order_id))


def fonts(content: bytes) -> set[str]:
    reader = PdfReader(io.BytesIO(content))
    font_dict: Any = reader.pages[0]["/Resources"]["/Font"]
    return {str(font.get_object()["/BaseFont"]) for font in font_dict.values()}


def shanghai_date(iso_utc: str) -> str:
    moment = datetime.strptime(iso_utc, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return moment.astimezone(SHANGHAI).date().isoformat()


def expected_number(order_id: str) -> str:
    return "INV-" + order_id.removeprefix("ord_").upper()


def section(lines: list[str], title: str) -> list[str]:
    """The lines after the heading `title`, up to the footer."""
    start = lines.index(title) + 1
    return lines[start:-1]


# --- what an invoice says ------------------------------------------------------------------

def test_invoice_of_a_paid_task_order(server: KassaServer, merchant: Merchant) -> None:
    task_id, order_id = paid_task(server, merchant.test, amount=5000)
    order = query(merchant.test, order_id)
    # The key alone will do, as for every read.
    with server.client(merchant.test_key) as key_only:
        content = invoice_pdf(key_only, order_id)
    lines = pdf_lines(content)
    number = expected_number(order_id)
    assert lines[0] == f"Invoice {number}"
    assert f"Test Merchant Issued {shanghai_date(order['paid_at'])}" in lines
    assert f"Invoice number {number}" in lines
    assert f"Issue date {shanghai_date(order['paid_at'])} (Asia/Shanghai)" in lines
    assert f"Order {order_id}" in lines
    assert f"Task {task_id}" in lines
    assert f"Transaction {order['transaction_id']}" in lines
    assert "Description Payment for task: Escrow task" in lines
    assert "Payment method alipay" in lines
    assert "Status completed" in lines
    assert section(lines, "Amount")[:2] == ["Amount 50.00 CNY", "Refunded so far 0.00 CNY"]
    assert not any("Amount in CNY" in line for line in lines)  # a CNY order has no FX
    assert section(lines, "Escrow (CNY)") == [
        "Paid into escrow 50.00 CNY", "Refunded 0.00 CNY", "Released 0.00 CNY",
        "to worker 0.00 CNY", "platform fee (20.00%) 0.00 CNY",
        "Still held in escrow 50.00 CNY"]
    assert "TEST MODE: no real money moved" in " ".join(lines)
    # Latin text only: no CJK font is needed, and none is used.
    assert fonts(content) == {"/Helvetica", "/Helvetica-Bold"}
    # Deterministic and small: the same order makes the same bytes.
    assert invoice_pdf(merchant.test, order_id) == content
    assert len(content) < 20_000


def test_fee_breakdown_after_approval(server: KassaServer, merchant: Merchant) -> None:
    task_id, order_id = paid_task(server, merchant.test, amount=12_345)
    r = approve(merchant.test, task_id, "wrk_invoice_1")
    assert r.status_code == 200, r.text
    # 20% of 123.45 is 24.69; the worker gets the rest, 98.76.
    assert section(invoice_lines(merchant.test, order_id), "Escrow (CNY)") == [
        "Paid into escrow 123.45 CNY", "Refunded 0.00 CNY", "Released 123.45 CNY",
        "to worker wrk_invoice_1 98.76 CNY", "platform fee (20.00%) 24.69 CNY",
        "Still held in escrow 0.00 CNY"]


def test_partial_refund_then_approval_and_a_full_refund(server: KassaServer,
                                                       merchant: Merchant) -> None:
    client = merchant.test
    task_id, order_id = paid_task(server, client, amount=10_000)
    refunded(client, order_id, amount=2_500, refund_method="balance")
    assert approve(client, task_id, "wrk_2").status_code == 200
    lines = invoice_lines(client, order_id)
    assert "Status completed" in lines
    assert "Refunded so far 25.00 CNY" in lines
    assert section(lines, "Escrow (CNY)") == [
        "Paid into escrow 100.00 CNY", "Refunded 25.00 CNY", "Released 75.00 CNY",
        "to worker wrk_2 60.00 CNY", "platform fee (20.00%) 15.00 CNY",
        "Still held in escrow 0.00 CNY"]

    # Refunded in full: still invoiced (it was paid), with its status and its refunds.
    _, other = paid_task(server, client, amount=3_000)
    refunded(client, other, refund_method="balance")
    server.wait_for_status(client, other, "refunded")
    lines = invoice_lines(client, other)
    assert "Status refunded" in lines
    assert "Refunded so far 30.00 CNY" in lines
    assert section(lines, "Escrow (CNY)")[-1] == "Still held in escrow 0.00 CNY"


def test_usd_order_shows_its_cny_amount_and_rate(server: KassaServer,
                                                merchant: Merchant) -> None:
    client = merchant.test
    task_id = new_task(client, amount=1_999, currency="USD")
    r = pay(client, task_id, 1_999, currency="USD", payment_method="card",
            test_card="4242424242424242")
    assert r.status_code == 201, r.text
    order = server.wait_for_status(client, r.json()["order_id"], "completed")
    assert (order["amount_cny"], order["fx_rate"]) == (14_193, "7.1000")  # 19.99 x 7.1
    lines = invoice_lines(client, order["order_id"])
    assert section(lines, "Amount")[:4] == [
        "Amount 19.99 USD", "Amount in CNY 141.93 CNY", "at 1 USD = 7.1000 CNY",
        "Refunded so far 0.00 USD"]
    assert "Payment method card (visa, last 4: 4242)" in lines
    assert section(lines, "Escrow (CNY)")[0] == "Paid into escrow 141.93 CNY"


def test_chinese_merchant_name_and_description(server: KassaServer) -> None:
    merchant = server.merchant(name=CHINESE_NAME)
    r = merchant.test.post("/api/v1/tasks", json={
        "title": "设计一张海报 (A3)", "amount": 5000, "currency": "CNY",
        "payment_method": "wechat", "return_url": "https://merchant.example.com/paid"})
    assert r.status_code == 201, r.text
    order_id = r.json()["payment"]["order_id"]
    server.wait_for_status(merchant.test, order_id, "completed")
    content = invoice_pdf(merchant.test, order_id)
    lines = pdf_lines(content)
    # pypdf reads the CID text back (its ToUnicode is the font's standard UniGB-UCS2 map).
    assert any(line.startswith(f"{CHINESE_NAME} Issued ") for line in lines), lines
    assert "Description Payment for task: 设计一张海报 (A3)" in lines
    assert "Payment method wechat" in lines
    # The text that Helvetica cannot carry is set in the built-in CID font, not embedded.
    assert "/STSong-Light" in fonts(content)
    assert b"/FontFile" not in content


def test_collection_shows_the_channel_fee_the_ledger_charged(server: KassaServer,
                                                            merchant: Merchant) -> None:
    """An EasyPay order (a collection): its channel fee (0.6%) as charged, and after a
    partial refund, what the refund gave back of it."""
    cred = credential(merchant)
    trade_no = created(server, cred, "INVOICE-1", money="10.00")["trade_no"]
    server.wait_for_status(merchant.test, trade_no, "completed")
    assert fee(1000) == 6
    lines = invoice_lines(merchant.test, trade_no)
    assert not any(line.startswith("Task ") for line in lines)  # it has no task
    assert [line for line in lines if line.startswith("Description ")] == [
        "Description epay order INVOICE-1: VIP会员"], lines
    assert section(lines, "Collection (CNY)") == [
        "Paid 10.00 CNY", "Channel fee charged (0.60%) 0.06 CNY", "Refunded 0.00 CNY",
        "Credited to your balance 9.94 CNY"]

    reply = refund(server, cred, "5", trade_no=trade_no)
    assert reply["code"] == 1, reply
    settled(merchant)
    # 0.6% of 5.00 is 3 cents back to the merchant; 3 stay with the platform.
    assert section(invoice_lines(merchant.test, trade_no), "Collection (CNY)") == [
        "Paid 10.00 CNY", "Channel fee charged (0.60%) 0.06 CNY",
        "Fee returned with refunds 0.03 CNY", "Refunded 5.00 CNY",
        "Credited to your balance 4.97 CNY"]


# --- which orders have one, and whose ----------------------------------------------------

def test_unpaid_orders_have_no_invoice(server: KassaServer, merchant: Merchant) -> None:
    client = merchant.test
    _, pending = dispatch(client, method="card")  # waits for a card: pending
    error = assert_error(invoice(client, pending), 409, "invalid_order_state")
    assert pending in error["message"] and "pending" in error["message"]
    assert "completed" in error["message"]  # says what would have an invoice
    assert (error["order_id"], error["status"]) == (pending, "pending")

    _, declined = dispatch(client, method="card", test_card="4000000000000002")
    server.wait_for_status(client, declined, "failed")
    error = assert_error(invoice(client, declined), 409, "invalid_order_state")
    assert error["status"] == "failed"


def test_another_merchants_or_the_other_modes_order_is_not_found(
        server: KassaServer, merchant: Merchant) -> None:
    _, order_id = paid_task(server, merchant.test)
    assert invoice(merchant.test, order_id).status_code == 200
    stranger = server.merchant()
    for client in (stranger.test, stranger.live, merchant.live):
        error = assert_error(invoice(client, order_id), 404, "order_not_found")
        assert error["order_id"] == order_id
    with server.client() as anonymous:
        assert_error(invoice(anonymous, order_id), 401, "invalid_credentials")
    with server.client(merchant.test_key + "x") as wrong:
        assert_error(invoice(wrong, order_id), 401, "invalid_credentials")


@pytest.mark.parametrize("raw_id", [
    "%00", "ord_%00", "ord_0123456789abcdef0123%00", "ord_" + "f" * 5000, "x" * 5000,
    "ord_0123456789abcdef0123",  # well formed, but no such order
    "ORD_0123456789ABCDEF0123", "ord_", "ord_xyz", "%E6%B5%8B%E8%AF%95", "%F0%9F%98%80",
    "ord_1'%20OR%20'1'='1", "ord_..", "%20", "ord_0123456789abcdef0123%20",
])
def test_odd_order_ids_are_not_found(server: KassaServer, merchant: Merchant,
                                     raw_id: str) -> None:
    r = merchant.test.get(f"/api/v1/invoices/{raw_id}")
    error = assert_error(r, 404, "order_not_found")
    assert "\x00" not in error["message"]


def test_a_path_that_is_no_invoice_is_a_json_404(server: KassaServer,
                                                merchant: Merchant) -> None:
    for path in ("/api/v1/invoices/", "/api/v1/invoices/a%2Fb", "/api/v1/invoices/a/b"):
        r = merchant.test.get(path)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert list(r.json()) == ["error"]
    assert merchant.test.post("/api/v1/invoices/ord_0123", json={}).status_code == 405


# --- the OpenAPI document --------------------------------------------------------------------

def test_openapi_lists_the_invoice_as_a_pdf(server: KassaServer) -> None:
    r = httpx.get(f"{server.base_url}/openapi.json")
    assert r.status_code == 200
    op = r.json()["paths"]["/api/v1/invoices/{order_id}"]["get"]
    ok = op["responses"]["200"]
    assert ok["content"] == {"application/pdf": {"schema": {"type": "string",
                                                             "format": "binary"}}}
    assert set(ok["headers"]) == {"Content-Disposition"}
    assert op["responses"]["404"]["description"].endswith("order_not_found")
    assert op["responses"]["409"]["description"].endswith("invalid_order_state")
    assert {"apiKey": []} in op["security"]  # the key alone will do
    assert [(p["name"], p["in"]) for p in op["parameters"]] == [("order_id", "path")]
