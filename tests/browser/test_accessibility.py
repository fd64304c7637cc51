"""Automated accessibility checks: axe-core (WCAG 2.0 and 2.1, levels A and AA) run in
Debian's chromium on the hosted checkout and on every merchant console page, in English
and in Chinese, against the package's Kassa server.

axe-core is a pinned npm dependency of these tests (tests/browser/axe: package.json and
package-lock.json), installed by scripts/test with `npm ci --prefix tests/browser/axe`
when npm exists. Without it these tests skip with the reason, except in CI
(KASSA_REQUIRE_BROWSER=1) where that is a failure, as for the browser itself.

The pages send a strict Content-Security-Policy (script-src 'self'), so axe is injected
into contexts made with bypass_csp=True. There are two, each with one page that the
module's tests take turns to navigate: a visitor's (checkout, sign-in) and one signed in
to the console once, as a merchant with paid orders, a refund and a webhook endpoint with
deliveries, so that no table is empty. What axe finds is listed in the failure: each
rule's id, impact and help, with the first few elements it flagged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.browser.conftest import require_browser
from tests.browser.support import DESKTOP, TIMEOUT_MS, Browsing, Shop, open_context
from tests.browser.test_checkout_browser import create_order
from tests.browser.test_console_browser import RETURN_URL, completed, sign_in
from tests.support.harness import KassaServer, Merchant
from tests.support.receivers import Receiver

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)

AXE_DIR = Path(__file__).resolve().parent / "axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
LANGS = ["en", "zh"]
SHOWN_TARGETS = 5
SUCCESS_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"

# Every violation, with its elements' selectors (a target is a list: iframes, shadow roots).
RUN_AXE = """async (tags) => {
  const results = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    targets: v.nodes.map(n => n.target.flat().join(' ')),
    summary: v.nodes.length ? v.nodes[0].failureSummary : ''}));
}"""

# The checkout polls its order's status, and leaves for return_url once it is paid (a
# pending alipay order settles by itself ~1 s after it is made): the polls are held off,
# so axe reads the page as the server rendered it, without it changing or going away.
STATUS_POLL = re.compile(r"/checkout/[^/?]+/status(\?|$)")


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        targets = v["targets"][:SHOWN_TARGETS]
        more = len(v["targets"]) - len(targets)
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} <{v['helpUrl']}>\n"
                     f"    on {', '.join(targets)}" + (f" and {more} more" if more else "")
                     + "\n    " + str(v["summary"]).replace("\n", "\n    "))
    return "\n".join(lines)


def assert_accessible(page: Page) -> None:
    """axe-core's WCAG 2.0/2.1 A and AA rules find nothing on the page as it is now."""
    page.add_script_tag(path=str(AXE_JS))
    violations: list[dict[str, Any]] = page.evaluate(RUN_AXE, WCAG_TAGS)
    assert violations == [], (
        f"axe-core found {len(violations)} accessibility violation(s) on {page.url}:\n"
        + describe(violations))


def close_checked(browsing: Browsing) -> None:
    browsing.context.close()
    assert browsing.blocked == [], f"the page asked for off-loopback URLs: {browsing.blocked}"


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def axe_script() -> Path:
    if not AXE_JS.is_file():
        require_browser(
            f"axe-core is not installed ({AXE_JS.relative_to(AXE_DIR.parents[2])} is missing): "
            "`npm ci --prefix tests/browser/axe`, which scripts/test does when npm exists")
    return AXE_JS


def hold(route: Route) -> None:
    route.abort()


@pytest.fixture(scope="module")
def visitor(axe_script: Path, browser: Browser) -> Iterator[Page]:
    """The page of a desktop context without a console session, that lets axe in
    (bypass_csp); the checkout's status polls are held off (STATUS_POLL)."""
    browsing = open_context(browser, viewport=DESKTOP, bypass_csp=True)
    page = browsing.new_page()
    page.route(STATUS_POLL, hold)
    yield page
    close_checked(browsing)


@dataclass
class ConsoleData:
    merchant: Merchant
    refunded_order: str
    endpoint_id: str


def pay_by_card(server: KassaServer, merchant: Merchant, cards: list[tuple[str, int, str]]
                ) -> list[str]:
    """Test-mode card orders (card, amount, title) made at once, each waited for until it
    has settled (sandbox: ~1 s) completed or failed; returns their order ids."""
    ids = []
    for card, amount, title in cards:
        r = merchant.test.post("/api/v1/tasks", json={
            "title": title, "amount": amount, "currency": "CNY", "payment_method": "card",
            "return_url": RETURN_URL, "test_card": card})
        assert r.status_code == 201, r.text
        ids.append(str(r.json()["payment"]["order_id"]))
    for card, order_id in zip((c for c, _, _ in cards), ids, strict=True):
        server.wait_for_status(merchant.test, order_id,
                               "completed" if card == SUCCESS_CARD else "failed")
    return ids


@pytest.fixture(scope="module")
def console_data(server: KassaServer) -> Iterator[ConsoleData]:
    """A merchant with a webhook endpoint that took its deliveries, three orders (two paid,
    one declined) and a partial refund of one to the balance."""
    merchant = server.merchant(name="Accessible Studio Ltd")
    receiver = Receiver().up()
    try:
        r = merchant.test.post("/api/v1/webhooks/endpoints",
                               json={"url": receiver.url, "description": "Shop backend"})
        assert r.status_code == 201, r.text
        endpoint_id = str(r.json()["endpoint_id"])
        refunded, _, _ = pay_by_card(server, merchant, [
            (SUCCESS_CARD, 5000, "Logo design"),
            (SUCCESS_CARD, 12345, "Translate a 40-page contract"),
            (DECLINED_CARD, 2000, "Business cards")])
        r = merchant.test.post("/api/v1/payment/refund", json={
            "order_id": refunded, "amount": 1250, "reason": "quality_issue",
            "reason_detail": "Wrong colours", "refund_method": "balance"})
        assert r.status_code == 200, r.text
        receiver.wait_for(lambda got: sum(completed(g) for g in got) >= 2)
        yield ConsoleData(merchant, refunded, endpoint_id)
    finally:
        receiver.down()


@pytest.fixture(scope="module")
def console(axe_script: Path, browser: Browser, server: KassaServer,
            console_data: ConsoleData) -> Iterator[Page]:
    """The page of a desktop context signed in to the console as console_data's merchant
    (once, for every console page), that lets axe in (bypass_csp)."""
    browsing = open_context(browser, viewport=DESKTOP, bypass_csp=True)
    page = browsing.new_page()
    sign_in(page, server, console_data.merchant)
    yield page
    close_checked(browsing)


@pytest.fixture(scope="module")
def checkout_merchant(server: KassaServer) -> Merchant:
    return server.merchant(name="Accessible Checkout Ltd")


@pytest.fixture(scope="module")
def settled_orders(server: KassaServer, checkout_merchant: Merchant) -> dict[str, str]:
    """A paid and a declined test-mode card order of checkout_merchant, by outcome."""
    paid, declined = pay_by_card(server, checkout_merchant, [
        (SUCCESS_CARD, 12345, "Logo design"), (DECLINED_CARD, 12345, "Logo design")])
    return {"paid": paid, "declined": declined}


@pytest.fixture(autouse=True)
def screenshot_on_failure(request: pytest.FixtureRequest, screenshots: Path) -> Iterator[None]:
    """The shared page as a failed test left it: failed-<test>.png (as conftest's do)."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed:
        return
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    for fixture in ("visitor", "console"):
        if fixture in request.fixturenames:
            page: Page = request.getfixturevalue(fixture)
            try:
                page.screenshot(path=screenshots / f"failed-{name}.png", full_page=True)
            except Exception as exc:  # the page may be gone; the failure is what counts
                logging.getLogger(__name__).warning("no screenshot of %s: %s", page.url, exc)


# --- the hosted checkout -------------------------------------------------------------------

CHECKOUT_STATES = ["alipay-qr", "card-form", "paid", "declined", "not-found"]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("state", CHECKOUT_STATES)
def test_checkout_page_is_accessible(
        state: str, lang: str, visitor: Page, server: KassaServer,
        checkout_merchant: Merchant, settled_orders: dict[str, str], shop: Shop) -> None:
    page = visitor
    if state == "alipay-qr":
        order_id = create_order(checkout_merchant, shop, "alipay")["order_id"]
    elif state == "card-form":
        order_id = create_order(checkout_merchant, shop, "card")["order_id"]
    elif state == "not-found":
        order_id = "ord_00000000000000000000"
    else:
        order_id = settled_orders[state]
    response = page.goto(f"{server.base_url}/checkout/{order_id}?lang={lang}")
    assert response is not None
    expect(page.locator("html")).to_have_attribute("lang", lang)

    main = page.locator("main#checkout")
    if state == "alipay-qr":
        assert main.get_attribute("data-status") == "pending", (
            "the alipay order settled before its page was rendered: "
            f"{main.get_attribute('data-status')}")
        page.wait_for_function(
            "() => { const i = document.getElementById('qr'); return i && i.naturalWidth > 0; }")
        expect(page.locator("#simulate-success")).to_be_visible()
    elif state == "card-form":
        expect(main).to_have_attribute("data-status", "pending")
        expect(page.locator("#card-form")).to_be_visible()
    elif state == "paid":
        expect(main).to_have_attribute("data-status", "completed")
        expect(page.locator("#return-link")).to_be_visible()
    elif state == "declined":
        expect(main).to_have_attribute("data-status", "failed")
        expect(page.locator("#message")).not_to_be_empty()
    else:
        assert response.status == 404, response.status
        expect(page.locator("main#problem")).to_be_visible()
    assert_accessible(page)


# --- the merchant console ------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("refused", [False, True], ids=["form", "refused"])
def test_console_sign_in_is_accessible(
        refused: bool, lang: str, visitor: Page, server: KassaServer,
        checkout_merchant: Merchant) -> None:
    page = visitor
    page.goto(f"{server.base_url}/console/login?lang={lang}")
    expect(page.locator("#login-form")).to_be_visible()
    if refused:  # the form again, with its message (role=alert)
        page.locator("#api_key").fill(checkout_merchant.test_key)
        page.locator("#api_secret").fill("not-the-secret")
        page.locator("#login-submit").click()
        expect(page.locator("#login-error")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", lang)
    assert_accessible(page)


# Each page: its path, and what must be on it (the tables not empty).
CONSOLE_PAGES: dict[str, tuple[str, list[str]]] = {
    "overview": ("overview", ["#recent-orders tr[data-order-id]", "#balance-escrow"]),
    "transactions": ("transactions", ["#transactions tr[data-type=refund]",
                                      "#transactions tr[data-type=payment]"]),
    "orders": ("orders", ["#orders tr[data-order-id]"]),
    "order": ("orders/{order}", ["#refunds tr[data-refund-id]", "#refund-form"]),
    "invoices": ("invoices", ["#invoices a.invoice-download"]),
    "webhooks": ("webhooks", ["#endpoints tr[data-endpoint-id]", "#events tr[data-event-id]",
                              "#endpoint-form"]),
    "endpoint": ("webhooks/{endpoint}", ["#deliveries tr[data-delivery-id] li[data-attempt]"]),
    "keys": ("keys", ["#keys tbody tr", "#rotate-key-form"]),
    "not-found": ("orders/ord_00000000000000000000", ["#problem"]),
}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", list(CONSOLE_PAGES))
def test_console_page_is_accessible(
        name: str, lang: str, console: Page, server: KassaServer,
        console_data: ConsoleData) -> None:
    path, present = CONSOLE_PAGES[name]
    path = path.format(order=console_data.refunded_order, endpoint=console_data.endpoint_id)
    page = console
    page.goto(f"{server.base_url}/console/{path}?lang={lang}")
    expect(page.locator("#console-nav")).to_be_visible()  # signed in
    expect(page.locator("html")).to_have_attribute("lang", lang)
    # What the fixtures made is there (a delivery's attempt may be a moment behind it).
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while missing := [s for s in present if page.locator(s).count() == 0]:
        assert time.monotonic() < deadline, f"{page.url} has no {missing}"
        page.wait_for_timeout(100)
        page.reload()
    for selector in present:
        expect(page.locator(selector).first).to_be_visible()
    assert_accessible(page)
