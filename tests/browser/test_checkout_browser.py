"""The hosted checkout page (/checkout/{order_id}) in a real browser: Debian's chromium,
driven by Playwright, against a real Kassa server on SQLite whose sandbox settles test
payments after 1 s. Orders are made through the API with the merchant's test key; their
return_url is a small shop on loopback that says Thanks.

The page's DOM contract: <main id="checkout" data-status="pending|processing|completed|
failed|expired" data-order="ord_…">, #amount, #description, #countdown (ticks every
second), <img id="qr"> for alipay and wechat, #card-form with a labelled #card-number and
#pay-card for test-mode card orders, #simulate-success / #simulate-failure forms for other
pending test orders, <p id="message" role="alert">, language links a[hreflang=en|zh]; it
polls /checkout/{id}/status every second and goes to return_url once completed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, Response, expect
from sqlalchemy import Connection, MetaData, select

from tests.browser.support import PHONE, TIMEOUT_MS, Browsing, Shop
from tests.support.harness import KassaServer, Merchant

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)

SUCCESS_CARD = "4242 4242 4242 4242"
DECLINED_CARD = "4000000000000002"
CJK = re.compile(r"[\u4e00-\u9fff]")
DECLINED = {"en": "Your card was declined.", "zh": "您的银行卡被拒绝。"}

# Reports every value data-status takes on #checkout, in every document the page loads, to
# the test (window.kassaStatus, exposed below): the page may re-render or reload.
RECORD_STATUS = """
(() => {
  let last = null;
  const report = () => {
    const main = document.getElementById('checkout');
    const status = main ? main.getAttribute('data-status') : null;
    if (status !== null && status !== last) { last = status; window.kassaStatus(status); }
  };
  new MutationObserver(report).observe(document, {
    subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
  document.addEventListener('DOMContentLoaded', report);
})();
"""


def create_order(merchant: Merchant, shop: Shop, method: str, *, title: str = "Logo design",
                 amount: int = 5000) -> dict[str, Any]:
    """A task with its payment order, through the API; returns the payment (order_id,
    payment_url, qr_code_url, ...) and the return_url it was given."""
    return_url = shop.return_url(f"{method}-{time.monotonic_ns()}")
    r = merchant.test.post("/api/v1/tasks", json={
        "title": title, "amount": amount, "currency": "CNY", "payment_method": method,
        "return_url": return_url})
    assert r.status_code == 201, r.text
    payment: dict[str, Any] = r.json()["payment"]
    assert payment["order_id"].startswith("ord_"), payment
    return {**payment, "return_url": return_url}


def record_statuses(page: Page) -> list[str]:
    statuses: list[str] = []

    def report(status: str) -> None:
        statuses.append(status)

    page.expose_function("kassaStatus", report)
    page.add_init_script(RECORD_STATUS)
    return statuses


def landed_on(return_url: str) -> Callable[[str], bool]:
    return lambda url: url.startswith(return_url)


def wait_for_return(page: Page, order: dict[str, Any], timeout: float = TIMEOUT_MS) -> None:
    page.wait_for_url(landed_on(order["return_url"]), timeout=timeout)
    assert page.url.startswith(order["return_url"]), page.url
    expect(page.locator("h1")).to_have_text("Thanks")


def checkout(page: Page) -> Locator:
    return page.locator("main#checkout")


def scroll_width(page: Page) -> int:
    return int(page.evaluate("document.scrollingElement.scrollWidth"))


# --- (a) a card order paid through the form -------------------------------------------------

def test_card_order_paid_through_the_form_completes_and_returns(
        page: Page, server: KassaServer, merchant: Merchant, shop: Shop) -> None:
    order = create_order(merchant, shop, "card", title="Logo design", amount=12345)
    assert order["payment_url"] == f"{server.base_url}/checkout/{order['order_id']}"
    statuses = record_statuses(page)
    page.goto(order["payment_url"])

    main = checkout(page)
    expect(main).to_have_attribute("data-order", order["order_id"])
    expect(main).to_have_attribute("data-status", "pending")
    expect(page.locator("#amount")).to_contain_text("123.45")
    expect(page.locator("#description")).to_contain_text("Logo design")
    expect(page.locator("#card-form")).to_be_visible()
    expect(page.locator("#simulate-success")).to_have_count(0)  # a card order takes a card

    page.locator("#card-number").fill(SUCCESS_CARD)
    page.locator("#pay-card").click()
    wait_for_return(page, order)

    assert statuses[0] == "pending", statuses
    assert "processing" in statuses and "completed" in statuses, statuses
    assert statuses.index("processing") < statuses.index("completed"), statuses
    assert "failed" not in statuses, statuses
    done = server.wait_for_status(merchant.test, order["order_id"], "completed")
    assert done["card"]["last4"] == "4242", done


# --- (b) alipay and wechat: a QR code, then back to the shop with no click -----------------

@pytest.mark.parametrize("method", ["alipay", "wechat"])
def test_qr_order_completes_by_itself_and_returns_without_a_click(
        page: Page, server: KassaServer, merchant: Merchant, shop: Shop, method: str) -> None:
    order = create_order(merchant, shop, method)
    page.goto(order["payment_url"])

    expect(checkout(page)).to_have_attribute("data-order", order["order_id"])
    qr = page.locator("img#qr")
    expect(qr).to_be_visible()
    # The picture itself loaded (not a broken image).
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0"), qr.get_attribute("src")
    expect(page.locator("#card-form")).to_have_count(0)
    for form in ("#simulate-success", "#simulate-failure"):
        expect(page.locator(f"{form} button, {form} input[type=submit]")).to_have_count(1)

    # The sandbox settles after ~1 s; the page, polling every second, goes on by itself.
    wait_for_return(page, order)
    server.wait_for_status(merchant.test, order["order_id"], "completed")


# --- (c) a declined card: a clear message, status failed, no return ------------------------

@pytest.mark.parametrize("lang", ["en", "zh"])
def test_declined_card_says_so_clearly(page: Page, server: KassaServer, merchant: Merchant,
                                       shop: Shop, lang: str) -> None:
    order = create_order(merchant, shop, "card")
    page.goto(order["payment_url"] + ("?lang=zh" if lang == "zh" else ""))
    page.locator("#card-number").fill(DECLINED_CARD)
    page.locator("#pay-card").click()

    expect(checkout(page)).to_have_attribute("data-status", "failed")
    message = page.locator("p#message")
    expect(message).to_have_attribute("role", "alert")
    expect(message).to_contain_text(DECLINED[lang])
    expect(page.get_by_role("alert")).to_contain_text(DECLINED[lang])
    assert page.url.startswith(order["payment_url"]), page.url  # no trip to the shop
    server.wait_for_status(merchant.test, order["order_id"], "failed")


# --- (d) keyboard only -----------------------------------------------------------------------

def test_card_form_works_with_the_keyboard_alone(page: Page, server: KassaServer,
                                                 merchant: Merchant, shop: Shop) -> None:
    order = create_order(merchant, shop, "card")
    page.goto(order["payment_url"])

    # The input is named by its label (label[for=card-number]).
    label = page.locator('label[for="card-number"]').inner_text().strip()
    assert label, "the card number's label is empty"
    by_label = page.get_by_label(label, exact=True)
    expect(by_label).to_have_id("card-number")
    expect(by_label).to_have_attribute("name", "card_number")

    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == "card-number":
            break
    else:
        pytest.fail("Tab never reached #card-number")
    page.keyboard.type(SUCCESS_CARD)
    page.keyboard.press("Enter")
    wait_for_return(page, order)
    server.wait_for_status(merchant.test, order["order_id"], "completed")


# --- (e) a phone, in English and in Chinese -------------------------------------------------

def test_phone_viewport_has_no_horizontal_scroll_in_either_language(
        phone: Browsing, server: KassaServer, merchant: Merchant, shop: Shop) -> None:
    page = phone.new_page()
    order = create_order(merchant, shop, "card", title="Translate a 40-page contract")

    page.goto(order["payment_url"])
    expect(page.locator("#card-form")).to_be_visible()
    label = page.locator('label[for="card-number"]')
    assert not CJK.search(label.inner_text()), label.inner_text()
    assert scroll_width(page) <= PHONE["width"]

    page.goto(order["payment_url"] + "?lang=zh")
    expect(page.locator("#card-form")).to_be_visible()
    assert CJK.search(label.inner_text()), f"?lang=zh, label: {label.inner_text()!r}"
    assert CJK.search(checkout(page).inner_text())
    assert scroll_width(page) <= PHONE["width"]

    # The language links switch back and forth.
    page.locator('a[hreflang="en"]').click()
    expect(label).not_to_have_text(CJK)
    page.locator('a[hreflang="zh"]').click()
    expect(label).to_have_text(CJK)

    # A QR order on the phone: the code fits the screen too.
    qr_order = create_order(merchant, shop, "alipay")
    page.goto(qr_order["payment_url"])
    expect(page.locator("img#qr")).to_be_visible()
    box = page.locator("img#qr").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    assert scroll_width(page) <= PHONE["width"]


# --- (f) screenshots, and the countdown ------------------------------------------------------

def _settled_screenshot(page: Page, path: Path) -> None:
    page.evaluate("document.fonts.ready.then(() => true)")
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 5_000, path


def test_screenshots_desktop_and_phone(page: Page, phone: Browsing, server: KassaServer,
                                       merchant: Merchant, shop: Shop,
                                       screenshots: Path) -> None:
    """test-artifacts/screenshots/checkout-desktop.png (1280x800) and checkout-phone.png
    (375x812): a pending test-mode card order, for a person to look at; also the phone in
    Chinese (checkout-phone-zh.png) and an alipay order's QR code (checkout-phone-qr.png)."""
    order = create_order(merchant, shop, "card", title="Logo design", amount=12345)
    page.goto(order["payment_url"])
    expect(page.locator("#card-form")).to_be_visible()
    _settled_screenshot(page, screenshots / "checkout-desktop.png")

    phone_page = phone.new_page()
    phone_page.goto(order["payment_url"])
    expect(phone_page.locator("#card-form")).to_be_visible()
    _settled_screenshot(phone_page, screenshots / "checkout-phone.png")
    phone_page.goto(order["payment_url"] + "?lang=zh")
    expect(phone_page.locator("#card-form")).to_be_visible()
    _settled_screenshot(phone_page, screenshots / "checkout-phone-zh.png")

    # An alipay order, while it waits (its sandbox settles ~1 s after it is made).
    qr_order = create_order(merchant, shop, "alipay")
    phone_page.goto(qr_order["payment_url"] + "?lang=en")
    phone_page.wait_for_function(
        "() => { const i = document.getElementById('qr'); return i && i.naturalWidth > 0; }")
    _settled_screenshot(phone_page, screenshots / "checkout-phone-qr.png")


def test_countdown_ticks_every_second(page: Page, server: KassaServer, merchant: Merchant,
                                      shop: Shop) -> None:
    order = create_order(merchant, shop, "card")
    page.goto(order["payment_url"])
    countdown = page.locator("#countdown")
    seen = [countdown.inner_text()]
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        text = countdown.inner_text()
        if text != seen[-1]:
            seen.append(text)
        page.wait_for_timeout(100)
    assert len(seen) >= 3, f"#countdown over 3.5 s: {seen}"  # two ticks at least


# --- (g) the card number goes nowhere but the payment -------------------------------------

def _every_stored_value(conn: Connection) -> list[tuple[str, str, str]]:
    found = MetaData()
    found.reflect(bind=conn)
    cells: list[tuple[str, str, str]] = []
    for table in found.sorted_tables:
        for row in conn.execute(select(table)).mappings():
            for column, value in row.items():
                if value is not None:
                    text = (value.decode(errors="replace") if isinstance(value, bytes)
                            else str(value))
                    cells.append((table.name, column, text))
    return cells


def card_pattern(number: str) -> re.Pattern[str]:
    """A full card number, with or without spaces or dashes between its digits."""
    digits = number.replace(" ", "")
    return re.compile(r"[\s-]*".join(digits))


def test_card_numbers_reach_no_log_no_response_and_no_row(
        desktop: Browsing, server: KassaServer, merchant: Merchant, shop: Shop,
        caplog: pytest.LogCaptureFixture) -> None:
    """Three numbers typed in the browser: one Luhn-valid but no test card, one not a card
    number at all (both refused: the error paths, where echoing input is likeliest), then
    the test card that pays. None comes back in a response (body, header, redirect), a URL,
    a log line (Kassa's at DEBUG, uvicorn's with access lines) or a database row. The page
    itself prints the sandbox's public test cards as a hint: that text alone is allowed."""
    caplog.set_level(logging.DEBUG)
    page = desktop.new_page()
    received: list[tuple[str, str]] = []  # (what, text) of everything the browser got
    unread: list[str] = []
    requested: list[str] = []

    def on_response(response: Response) -> None:
        received.append((f"headers of {response.url}", json.dumps(response.all_headers())))
        ctype = response.headers.get("content-type", "")
        if 300 <= response.status < 400 or not ("html" in ctype or "json" in ctype):
            return
        try:
            received.append((f"body of {response.url}", response.text()))
        except PlaywrightError as exc:
            unread.append(f"{response.url}: {exc}")

    page.on("response", on_response)
    page.on("request", lambda request: requested.append(request.url))

    order = create_order(merchant, shop, "card")
    page.goto(order["payment_url"])
    hint = page.locator("#card-hint").inner_text() if page.locator("#card-hint").count() else ""
    refused = ["4111 1111 1111 1111", "1234 5678 9012 3456"]
    for number in refused:
        page.locator("#card-number").click()
        page.keyboard.type(number)
        page.locator("#pay-card").click()
        expect(page.locator("#message")).not_to_have_text("")
        expect(checkout(page)).to_have_attribute("data-status", "pending")
        page.locator("#message").evaluate("m => { m.textContent = ''; }")  # for the next one
    page.locator("#card-number").click()
    page.keyboard.type(SUCCESS_CARD)
    page.locator("#pay-card").click()
    wait_for_return(page, order)
    server.wait_for_status(merchant.test, order["order_id"], "completed")
    page.wait_for_timeout(300)  # the last responses' bodies

    # The checks saw something: the page, its status polls, and uvicorn's access lines.
    urls = [what for what, _ in received]
    pages = [u for u in urls if re.fullmatch(rf"body of {order['payment_url']}(\?.*)?", u)]
    assert len(pages) >= 3, urls  # the page, then again after each submission
    assert any("/status" in u and u.startswith("body of") for u in urls), urls
    assert any(rec.name == "uvicorn.access" for rec in caplog.records), "no access log seen"
    assert not unread, unread

    logged = [f"{rec.name}: {rec.getMessage()}" for rec in caplog.records]
    stored = server.db.write_sync(_every_stored_value)
    for number in [*refused, SUCCESS_CARD]:
        typed = card_pattern(number)
        leaks = [what for what, text in received if typed.search(text.replace(hint, ""))]
        assert leaks == [], f"{number} came back to the browser in: {leaks}"
        assert not [u for u in requested if typed.search(u)], requested
        assert not [p for p in shop.paths if typed.search(p)], shop.paths
        assert not [m for m in logged if typed.search(m)], number
        assert not typed.search(caplog.text), number
        assert not [(t, c) for t, c, v in stored if typed.search(v)], number
    assert hint == "" or card_pattern(SUCCESS_CARD).search(hint)  # what was allowed, and why
