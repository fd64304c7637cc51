"""The merchant console (/console/…) in a real browser: Debian's chromium, driven by
Playwright, against the package's Kassa server on SQLite (sandbox payments settle after
1 s). Every test signs in as a merchant of its own with that merchant's test key and secret;
orders are made and paid through the API, then looked at and acted on in the console.

The console is server-rendered and has no script: every action is a form post answered by
a redirect (or by the page again, with an error), so `expect` on the next page is all the
waiting there is. The DOM contract: see kassa.web.console and its templates.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pypdf import PdfReader

from tests.browser.support import PHONE, TIMEOUT_MS, Browsing
from tests.support.harness import KassaServer, Merchant
from tests.support.receivers import Received, Receiver

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)

SUCCESS_CARD = "4242424242424242"
RETURN_URL = "https://merchant.example.com/paid"  # the browser never goes there


def paid_order(server: KassaServer, merchant: Merchant, *, amount: int = 5000,
               title: str = "Logo design") -> str:
    """A test-mode card order for `amount` CNY cents, paid through the API with the
    sandbox's success card; returns its order id once the payment has completed."""
    r = merchant.test.post("/api/v1/tasks", json={
        "title": title, "amount": amount, "currency": "CNY", "payment_method": "card",
        "return_url": RETURN_URL, "test_card": SUCCESS_CARD})
    assert r.status_code == 201, r.text
    order_id = str(r.json()["payment"]["order_id"])
    server.wait_for_status(merchant.test, order_id, "completed")
    return order_id


def completed(received: Received) -> bool:
    return received.json.get("event") == "payment.completed"


def sign_in(page: Page, server: KassaServer, merchant: Merchant) -> None:
    """Through the form, with the merchant's test key and secret; lands on the overview."""
    page.goto(f"{server.base_url}/console/login")
    page.locator("#api_key").fill(merchant.test_key)
    page.locator("#api_secret").fill(merchant.test_secret)
    page.locator("#login-submit").click()
    expect(page).to_have_url(f"{server.base_url}/console/overview")


def refunded_cents(merchant: Merchant, order_id: str) -> int:
    r = merchant.test.get("/api/v1/payment/query", params={"order_id": order_id})
    assert r.status_code == 200, r.text
    return int(r.json()["refunded_cents"])


def share_session(source: Browsing, target: Browsing) -> None:
    """The source context's cookies (the console session's among them) in the target's."""
    target.context.add_cookies([
        {"name": c["name"], "value": c["value"], "domain": c["domain"], "path": c["path"],
         "httpOnly": c["httpOnly"], "secure": c["secure"], "sameSite": c["sameSite"]}
        for c in source.context.cookies()])


def assert_no_sideways_scroll(page: Page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, "
                           "document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"{page.url} scrolls sideways: {widths}"


def settled_screenshot(page: Page, path: Path) -> None:
    page.evaluate("document.fonts.ready.then(() => true)")
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 5_000, path


# --- 1. signing in and out; the overview; screenshots ----------------------------------------

def test_login_overview_and_logout(desktop: Browsing, phone: Browsing, server: KassaServer,
                                   screenshots: Path) -> None:
    merchant = server.merchant(name="Console Overview Ltd")
    order_id = paid_order(server, merchant, amount=5000)
    page = desktop.new_page()
    login_url = f"{server.base_url}/console/login"

    # A wrong secret: the form again, with one message.
    page.goto(login_url)
    page.locator("#api_key").fill(merchant.test_key)
    page.locator("#api_secret").fill(merchant.test_secret[:-1] + "x")
    page.locator("#login-submit").click()
    expect(page.locator("#login-error")).to_be_visible()
    expect(page.locator("#login-form")).to_be_visible()
    assert page.url == login_url, page.url
    expect(page.locator("#mode-badge")).to_have_count(0)

    # The right one: the overview, in test mode, with the paid order's 50.00 in escrow.
    page.locator("#api_key").fill(merchant.test_key)
    page.locator("#api_secret").fill(merchant.test_secret)
    page.locator("#login-submit").click()
    expect(page).to_have_url(f"{server.base_url}/console/overview")
    expect(page.locator("#mode-badge")).to_have_text("Test mode")
    expect(page.locator("#account-name")).to_have_text("Console Overview Ltd")
    expect(page.locator("#balance-escrow")).to_contain_text("50.00")
    expect(page.locator("#balance-available")).to_contain_text("0.00")
    expect(page.locator(f'#recent-orders tr[data-order-id="{order_id}"]')).to_be_visible()
    expect(page.locator("#nav-overview")).to_have_attribute("aria-current", "page")
    settled_screenshot(page, screenshots / "console-overview.png")

    page.goto(f"{server.base_url}/console/orders/{order_id}")
    expect(page.locator("#order-status")).to_have_attribute("data-status", "completed")
    expect(page.locator("#order-amount")).to_contain_text("50.00")
    settled_screenshot(page, screenshots / "console-order.png")

    # The same session on a phone: every page fits the screen's width.
    share_session(desktop, phone)  # a sign-in fewer: they are limited per address
    small = phone.new_page()
    small.goto(f"{server.base_url}/console/overview")
    expect(small.locator("#balance-escrow")).to_contain_text("50.00")
    assert_no_sideways_scroll(small)
    settled_screenshot(small, screenshots / "console-phone.png")
    for path in ("transactions", "orders", f"orders/{order_id}", "invoices", "keys"):
        small.goto(f"{server.base_url}/console/{path}")
        expect(small.locator("#console-nav")).to_be_visible()
        assert small.viewport_size == PHONE
        assert_no_sideways_scroll(small)

    # Signing out ends the session: back to sign-in, and the overview sends there too.
    page.goto(f"{server.base_url}/console/overview")
    page.locator("#logout").click()
    expect(page).to_have_url(login_url)
    expect(page.locator("#login-form")).to_be_visible()
    page.goto(f"{server.base_url}/console/overview")
    expect(page).to_have_url(login_url)
    small.goto(f"{server.base_url}/console/overview")  # it was the phone's session too
    expect(small).to_have_url(login_url)


def test_webhook_pages_fit_a_phone(phone: Browsing, server: KassaServer) -> None:
    merchant = server.merchant(name="Console Phone Webhooks Ltd")
    receiver = Receiver().up()
    try:
        r = merchant.test.post("/api/v1/webhooks/endpoints", json={"url": receiver.url})
        assert r.status_code == 201, r.text
        endpoint_id = r.json()["endpoint_id"]
        paid_order(server, merchant)
        receiver.wait_for(lambda got: any(completed(g) for g in got))
        page = phone.new_page()
        sign_in(page, server, merchant)
        too_wide: dict[str, list[int]] = {}
        for path in ("webhooks", f"webhooks/{endpoint_id}"):
            page.goto(f"{server.base_url}/console/{path}")
            expect(page.locator("tr[data-event-id]").first).to_be_visible()
            widths = page.evaluate("[document.documentElement.scrollWidth, "
                                   "document.documentElement.clientWidth]")
            if widths[0] > widths[1]:
                too_wide[path] = widths
        assert too_wide == {}, f"these pages scroll sideways: {too_wide}"
    finally:
        receiver.down()


# --- 2. a refund ---------------------------------------------------------------------------

def test_partial_refund_to_the_balance_then_a_bad_amount(page: Page,
                                                        server: KassaServer) -> None:
    merchant = server.merchant(name="Console Refunds Ltd")
    order_id = paid_order(server, merchant, amount=5000)
    sign_in(page, server, merchant)

    page.locator("#nav-orders").click()
    row = page.locator(f'#orders tr[data-order-id="{order_id}"]')
    expect(row).to_be_visible()
    row.get_by_role("link", name=order_id).click()
    expect(page).to_have_url(f"{server.base_url}/console/orders/{order_id}")
    expect(page.locator("#order-status")).to_have_attribute("data-status", "completed")
    expect(page.locator("#refunds tr[data-refund-id]")).to_have_count(0)

    page.locator("#refund-amount").fill("12.50")
    page.locator("#refund-reason").select_option("quality_issue")
    page.locator("#refund-detail").fill("Wrong colours")
    page.locator('input[name="refund_method"][value="balance"]').check()
    page.locator("#refund-submit").click()

    expect(page.locator("#notice")).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/console/orders/{order_id}\?notice="))
    refund = page.locator("#refunds tr[data-refund-id]")
    expect(refund).to_have_count(1)
    expect(refund).to_have_attribute("data-status", "completed")  # to the balance: at once
    expect(refund.locator("td.num")).to_contain_text("12.50")
    expect(page.locator("#order-refunded")).to_contain_text("12.50")
    assert refunded_cents(merchant, order_id) == 1250

    # Not a number: the form again with the message, and nothing refunded.
    page.locator("#refund-amount").fill("abc")
    page.locator("#refund-submit").click()
    expect(page.locator("#refund-error")).to_be_visible()
    expect(page.locator("#refund-amount")).to_have_value("abc")
    expect(page.locator("#refunds tr[data-refund-id]")).to_have_count(1)
    expect(page.locator("#notice")).to_have_count(0)
    assert refunded_cents(merchant, order_id) == 1250
    server.check_ledger()


# --- 3. sending a webhook again -----------------------------------------------------------

def test_resend_a_delivered_webhook_from_the_endpoint_page(page: Page,
                                                           server: KassaServer) -> None:
    merchant = server.merchant(name="Console Webhooks Ltd")
    receiver = Receiver().up()
    try:
        r = merchant.test.post("/api/v1/webhooks/endpoints", json={"url": receiver.url})
        assert r.status_code == 201, r.text
        endpoint_id = r.json()["endpoint_id"]
        order_id = paid_order(server, merchant)

        # The merchant's only order, so its only payment.completed.
        got = receiver.wait_for(lambda got: any(completed(g) for g in got))
        event_id = next(g for g in got if completed(g)).headers["x-event-id"]
        assert event_id.startswith("evt_"), event_id

        sign_in(page, server, merchant)
        page.locator("#nav-webhooks").click()
        event_row = page.locator(f'#events tr[data-event-id="{event_id}"]')
        expect(event_row).to_contain_text("payment.completed")
        expect(event_row).to_contain_text(order_id)
        page.locator(f'#endpoints tr[data-endpoint-id="{endpoint_id}"] a').click()
        expect(page).to_have_url(f"{server.base_url}/console/webhooks/{endpoint_id}")

        delivery = page.locator(f'#deliveries tr[data-event-id="{event_id}"]')
        # The receiver answered; the delivery's row may be a moment behind it.
        deadline = time.monotonic() + 10
        while delivery.get_attribute("data-status") != "succeeded":
            assert time.monotonic() < deadline, delivery.get_attribute("data-status")
            page.wait_for_timeout(100)
            page.reload()
        expect(delivery).to_contain_text("payment.completed")

        delivery.locator("form.resend-form button.resend").click()
        expect(page.locator("#notice")).to_be_visible()
        expect(page).to_have_url(re.compile(rf"/console/webhooks/{endpoint_id}\?notice="))

        again = receiver.wait_for(
            lambda got: sum(g.headers.get("x-event-id") == event_id for g in got) >= 2)
        bodies = [g.json for g in again if g.headers.get("x-event-id") == event_id]
        assert all(b["event"] == "payment.completed" for b in bodies), bodies
    finally:
        receiver.down()


# --- 4. an invoice ------------------------------------------------------------------------

def test_download_an_invoice_pdf(page: Page, server: KassaServer, tmp_path: Path) -> None:
    merchant = server.merchant(name="Invoice Studio Ltd")
    order_id = paid_order(server, merchant, amount=5000, title="Poster design")
    sign_in(page, server, merchant)

    page.locator("#nav-invoices").click()
    link = page.locator(f'#invoices tr[data-order-id="{order_id}"] a.invoice-download')
    expect(link).to_have_attribute("href", f"/console/invoices/{order_id}.pdf")
    with page.expect_download() as info:
        link.click()
    download = info.value
    saved = tmp_path / (download.suggested_filename or "invoice.pdf")
    download.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF-"), saved.read_bytes()[:40]

    text = "\n".join(p.extract_text() for p in PdfReader(saved).pages)
    assert order_id in text, text
    assert "Invoice Studio Ltd" in text, text
    assert "50.00" in text, text


# --- 5. in Chinese, with the keyboard alone -----------------------------------------------

def test_chinese_console_and_keyboard_sign_in(page: Page, server: KassaServer) -> None:
    merchant = server.merchant(name="键盘商户")
    paid_order(server, merchant, amount=5000)
    page.goto(f"{server.base_url}/console/login?lang=zh")
    expect(page.locator("html")).to_have_attribute("lang", "zh")
    expect(page.locator("h1")).to_have_text("登录商户后台")
    expect(page.locator("#login-submit")).to_have_text("登录")

    page.locator("#api_key").focus()
    page.keyboard.type(merchant.test_key)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "api_secret"
    page.keyboard.type(merchant.test_secret)
    page.keyboard.press("Enter")

    expect(page).to_have_url(f"{server.base_url}/console/overview")
    expect(page.locator("html")).to_have_attribute("lang", "zh")  # remembered by the cookie
    expect(page.locator("#mode-badge")).to_have_text("测试模式")
    expect(page.locator("#account-name")).to_have_text("键盘商户")
    expect(page.locator("main")).to_contain_text("可用余额")
    expect(page.locator("#balance-escrow")).to_contain_text("50.00")

    page.locator('a[hreflang="en"]').click()
    expect(page.locator("main")).to_contain_text("Available balance")


# --- 6. a new API key ---------------------------------------------------------------------

def test_rotate_the_api_key_now(page: Page, server: KassaServer) -> None:
    merchant = server.merchant(name="Console Keys Ltd")
    assert merchant.test.get("/api/v1/payment/balance").status_code == 200
    sign_in(page, server, merchant)

    page.locator("#nav-keys").click()
    expect(page.locator("#secret-live-only")).to_be_visible()
    expect(page.locator("#rotate-secret")).to_have_count(0)
    expect(page.locator("#new-api-key")).to_have_count(0)
    page.locator("#grace-seconds").select_option(label="Now")
    # The secret is asked for again: a wrong one rotates nothing.
    page.get_by_label("Your current API secret (of the key you signed in with)").fill("sk_no")
    page.locator("#rotate-key").click()
    expect(page.locator("#rotate-error")).to_contain_text("Nothing was rotated")
    assert merchant.test.get("/api/v1/payment/balance").status_code == 200
    page.locator("#grace-seconds").select_option(label="Now")
    page.locator("#rotate-key-secret").fill(merchant.test_secret)
    page.locator("#rotate-key").click()

    expect(page.locator("#new-api-key")).to_have_text(re.compile(r"^zr_test_"))
    new_key = page.locator("#new-api-key").inner_text().strip()
    new_secret = page.locator("#new-api-secret").inner_text().strip()
    assert new_key != merchant.test_key and new_secret, (new_key, new_secret)

    old = merchant.test.get("/api/v1/payment/balance")
    assert old.status_code == 401, old.text
    with server.client(new_key, new_secret) as client:
        new = client.get("/api/v1/payment/balance")
        assert new.status_code == 200, new.text

    # Shown once: the keys page again no longer has them; the session goes on.
    page.goto(f"{server.base_url}/console/keys")
    expect(page.locator("#mode-badge")).to_have_text("Test mode")
    expect(page.locator("#new-api-key")).to_have_count(0)
    assert new_secret not in page.content()
