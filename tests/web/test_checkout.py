"""The hosted checkout (SPEC §10), over HTTP on a real loopback server, on SQLite and
PostgreSQL: the page and its DOM contract, 404s that never 500, the QR code's PNG read back
by a barcode decoder, CSRF on every form, test cards and simulated outcomes in test mode
(never in live mode), the status the page polls, the way back to the merchant, English and
Chinese, and a card number that is kept, logged and shown nowhere."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import select

from kassa.db.tables import metadata, orders
from kassa.events import repository as events
from tests.conftest import own_database_url
from tests.facades.epay_shop import credential, signed
from tests.support.dom import Dom
from tests.support.factories import RETURN_URL, new_task, pay
from tests.support.harness import KassaServer, Merchant, make_settings
from tests.upstreams.conftest import Pair, live, pair  # noqa: F401  (fixtures)

SUCCESS_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
NO_FUNDS_CARD = "4000000000009995"
NOT_A_TEST_CARD = "4111111111111111"  # a valid number (Luhn), but not the sandbox's
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COUNTDOWN = re.compile(r"^(\d+:)?\d\d:\d\d$")


# --- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def web(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KassaServer]:
    """A server of this module's own whose sandbox takes its time (10 minutes) to settle
    wallet orders by itself, so they stay pending until a test settles them."""
    tmp = tmp_path_factory.mktemp(f"web-{backend}")
    with own_database_url(backend, tmp) as url:
        srv = KassaServer(make_settings(tmp, url, sandbox_settle_seconds=600)).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture
def shop(web: KassaServer) -> Iterator[Merchant]:
    """A fresh merchant; the ledger must balance after the test."""
    yield web.merchant()
    web.check_ledger()


@pytest.fixture
def payer(web: KassaServer) -> Iterator[httpx.Client]:
    """A browser of its own: its own cookie jar, no credentials."""
    with httpx.Client(base_url=web.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def card_settle(web: KassaServer) -> Iterator[float]:
    """Cards entered on the page settle after 1.5 s (long enough to see processing)."""
    settings = web.settings
    before = settings.sandbox_settle_seconds
    settings.sandbox_settle_seconds = 1.5
    yield settings.sandbox_settle_seconds
    settings.sandbox_settle_seconds = before


def new_order(m: Merchant, method: str = "alipay", amount: int = 5000, **fields: Any
              ) -> dict[str, Any]:
    task_id = new_task(m.test, amount=amount, title="Photograph the storefront")
    r = pay(m.test, task_id, amount=amount, payment_method=method, **fields)
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    return order


def query(m: Merchant, order_id: str, client: httpx.Client | None = None) -> dict[str, Any]:
    r = (client or m.test).get("/api/v1/payment/query", params={"order_id": order_id})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def open_page(payer: httpx.Client, order_id: str, **params: str) -> Dom:
    r = payer.get(f"/checkout/{order_id}", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    return Dom(r.text)


def csrf_of(page: Dom, form_id: str) -> str:
    token = page.fields(form_id)["csrf_token"]
    assert token
    return token


def post_form(payer: httpx.Client, path: str, data: dict[str, str]) -> httpx.Response:
    return payer.post(path, data=data, follow_redirects=False)


def status_of(payer: httpx.Client, order_id: str, **params: str) -> dict[str, Any]:
    r = payer.get(f"/checkout/{order_id}/status", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    assert set(body) == {"status", "message", "return_url"}
    return body


def pay_by_card(payer: httpx.Client, order_id: str, card: str) -> httpx.Response:
    page = open_page(payer, order_id)
    r = post_form(payer, f"/checkout/{order_id}/card",
                  {"csrf_token": csrf_of(page, "card-form"), "card_number": card})
    assert r.status_code == 303, r.text
    return r


def simulate(payer: httpx.Client, order_id: str, outcome: str) -> httpx.Response:
    page = open_page(payer, order_id)
    form = "simulate-success" if outcome == "succeeded" else "simulate-failure"
    assert page.fields(form)["outcome"] == outcome
    return post_form(payer, f"/checkout/{order_id}/simulate",
                     {"csrf_token": csrf_of(page, form), "outcome": outcome})


def decode_qr(png: bytes) -> str:
    assert png.startswith(PNG_MAGIC)
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1, found
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    return str(found[0].text)


CARD_HINT = re.compile(r'<p id="card-hint"[^>]*>[^<]*</p>')


def spellings(number: str) -> tuple[str, str, str]:
    """A card number as typed: plain, in groups of four with spaces, with dashes."""
    groups = [number[i:i + 4] for i in range(0, len(number), 4)]
    return number, " ".join(groups), "-".join(groups)


def everything_stored(web: KassaServer) -> str:
    """Every row of every table of the server's database, as one text."""
    def dump(conn: Any) -> str:
        return "\n".join(repr(tuple(row)) for table in metadata.sorted_tables
                         for row in conn.execute(select(table)))
    return web.db.write_sync(dump)


# --- the page --------------------------------------------------------------------------------

def test_alipay_page_shows_amount_description_method_qr_and_countdown(
        web: KassaServer, shop: Merchant, payer: httpx.Client) -> None:
    order = new_order(shop, amount=123_456, metadata={"internal_note": "do-not-show-xyz"},
                      callback_url="http://127.0.0.1:9/hook-secret-path")
    order_id = order["order_id"]
    page = open_page(payer, order_id)

    assert page.html_lang() == "en"
    main = page.by_id["checkout"]
    assert main["tag"] == "main"
    assert main["attrs"]["data-status"] == "pending"
    assert main["attrs"]["data-order"] == order_id
    assert page.text("amount") == "¥1,234.56 CNY"  # 123456 fen, in yuan, exactly
    assert page.text("description") == "Payment for task: Photograph the storefront"
    assert page.text("method") == "Alipay"
    assert page.attr("qr", "src") == f"/qr/{order_id}.png"
    assert page.attr("qr", "alt")
    assert page.by_id["qr"]["tag"] == "img"
    countdown = page.text("countdown")
    assert COUNTDOWN.match(countdown), countdown
    minutes, seconds = (int(x) for x in countdown.split(":"))
    assert 14 * 60 <= minutes * 60 + seconds <= 15 * 60  # the default 900 s expiry
    assert page.attr("countdown", "data-state") == "running"
    assert page.text("message") == ""
    assert page.attr("message", "role") == "alert"
    assert page.attr("status", "aria-live") == "polite"
    # Test mode, a wallet: the simulate buttons, each a real button in a CSRF'd form.
    for form_id, outcome in (("simulate-success", "succeeded"),
                             ("simulate-failure", "failed")):
        form = page.by_id[form_id]
        assert (form["attrs"]["method"], form["attrs"]["action"]) == (
            "post", f"/checkout/{order_id}/simulate")
        assert page.fields(form_id)["outcome"] == outcome
        assert page.fields(form_id)["csrf_token"] == payer.cookies["kassa_csrf"]
        assert [e["attrs"].get("type") for e in form["inputs"] if e["tag"] == "button"] == [
            "submit"]
    assert "card-form" not in page and "pay-link" not in page
    # The language links.
    links = {e["attrs"].get("hreflang"): (e["attrs"].get("href"), " ".join(e["text"].split()))
             for e in page.elements if e["tag"] == "a" and e["attrs"].get("hreflang")}
    assert links == {"en": ("?lang=en", "English"), "zh": ("?lang=zh", "中文")}
    # Nothing of the merchant's own: no metadata, no callback URL, no return URL yet.
    r = payer.get(f"/checkout/{order_id}")
    for private in ("do-not-show-xyz", "internal_note", "hook-secret-path", RETURN_URL,
                    shop.account_id, shop.test_key):
        assert private not in r.text


def test_card_order_page_has_the_card_form(web: KassaServer, shop: Merchant,
                                           payer: httpx.Client) -> None:
    order_id = new_order(shop, "card")["order_id"]
    page = open_page(payer, order_id)
    form = page.by_id["card-form"]
    assert (form["attrs"]["method"], form["attrs"]["action"]) == (
        "post", f"/checkout/{order_id}/card")
    assert page.by_id["card-number"]["attrs"].items() >= {
        "name": "card_number", "inputmode": "numeric", "autocomplete": "cc-number"}.items()
    labels = [e for e in page.elements if e["tag"] == "label"]
    assert [e["attrs"].get("for") for e in labels] == ["card-number"]
    assert page.attr("pay-card", "type") == "submit"
    assert page.by_id["pay-card"]["tag"] == "button"
    assert page.fields("card-form")["csrf_token"] == payer.cookies["kassa_csrf"]
    assert "qr" not in page and "simulate-success" not in page  # cards take a card


def test_every_input_has_a_label(web: KassaServer, shop: Merchant,
                                 payer: httpx.Client) -> None:
    for method in ("card", "wechat"):
        page = open_page(payer, new_order(shop, method)["order_id"])
        visible = [e for e in page.elements
                   if e["tag"] == "input" and e["attrs"].get("type") != "hidden"]
        labelled = {e["attrs"].get("for") for e in page.elements if e["tag"] == "label"}
        assert all(e["attrs"].get("id") in labelled for e in visible)


@pytest.mark.parametrize("path", [
    "/checkout/ord_00000000000000000000",
    "/checkout/%00",
    "/checkout/ord_%00abc",
    "/checkout/" + "a" * 5000,
    "/checkout/%F0%9F%92%B3",
    "/checkout/ord_1'%22%3E%3Cscript%3E",
])
def test_unknown_ids_are_a_404_page_never_a_500(web: KassaServer, payer: httpx.Client,
                                                 path: str) -> None:
    r = payer.get(path)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    page = Dom(r.text)
    assert page.html_lang() == "en"
    assert page.text("message") == ("This payment link is not valid. Ask the merchant "
                                     "for a new one.")
    r = payer.get(path, headers={"Accept-Language": "zh-CN"})
    assert r.status_code == 404 and Dom(r.text).html_lang() == "zh"
    assert "未找到该订单" in r.text
    for other in (f"{path}/status", path.replace("/checkout/", "/qr/", 1) + ".png"):
        r = payer.get(other)
        assert r.status_code == 404, (other, r.text)


# --- the QR code ------------------------------------------------------------------------------

def test_qr_code_is_a_png_of_the_checkout_url(web: KassaServer, shop: Merchant,
                                              payer: httpx.Client) -> None:
    for method in ("alipay", "wechat", "usdt"):
        order = new_order(shop, method)
        r = payer.get(f"/qr/{order['order_id']}.png")
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/png"
        assert r.headers["cache-control"] == "no-store"
        assert decode_qr(r.content) == f"{web.base_url}/checkout/{order['order_id']}"
        # The API's qr_code_url is this image.
        assert order["qr_code_url"] == f"{web.base_url}/qr/{order['order_id']}.png"
    assert payer.get("/qr/ord_00000000000000000000.png").status_code == 404


# --- CSRF ---------------------------------------------------------------------------------------

def test_posts_without_a_matching_csrf_token_are_refused(web: KassaServer, shop: Merchant,
                                                          payer: httpx.Client) -> None:
    card_order = new_order(shop, "card")["order_id"]
    wallet_order = new_order(shop, "alipay")["order_id"]
    token = csrf_of(open_page(payer, card_order), "card-form")
    other_token = "x" * 43
    attempts = [
        ({}, {"card_number": SUCCESS_CARD}),  # no token at all
        ({}, {"card_number": SUCCESS_CARD, "csrf_token": other_token}),  # wrong token
        ({"omit_cookie": "1"}, {"card_number": SUCCESS_CARD, "csrf_token": token}),
        ({}, {"card_number": SUCCESS_CARD, "csrf_token": ""}),
        ({}, {"card_number": SUCCESS_CARD, "csrf_token": token[:-1]}),
    ]
    for how, data in attempts:
        headers = {} if how else {"Cookie": f"kassa_csrf={token}"}
        with httpx.Client(base_url=web.base_url, timeout=30, headers=headers) as client:
            r = client.post(f"/checkout/{card_order}/card", data=data, follow_redirects=False)
            assert r.status_code == 403, (how, data, r.text)
            assert r.headers["content-type"] == "text/html; charset=utf-8"
            assert SUCCESS_CARD not in r.text
            r = client.post(f"/checkout/{wallet_order}/simulate",
                            data={**data, "outcome": "succeeded"}, follow_redirects=False)
            assert r.status_code == 403, (how, data, r.text)
    # A JSON body carries no form token either.
    r = payer.post(f"/checkout/{card_order}/card",
                   json={"csrf_token": token, "card_number": SUCCESS_CARD})
    assert r.status_code == 403
    # Nothing changed.
    for order_id in (card_order, wallet_order):
        after = query(shop, order_id)
        assert (after["status"], after["card"]) == ("pending", None)
    # The token itself: HttpOnly, SameSite=Strict, not Secure on an http public URL.
    cookie = payer.get(f"/checkout/{card_order}").headers["set-cookie"]
    assert "kassa_csrf=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie
    # The matching token works (so the refusals above were the token's).
    assert pay_by_card(payer, card_order, SUCCESS_CARD).status_code == 303
    assert query(shop, card_order)["status"] == "processing"


def test_csrf_cookie_is_secure_when_the_public_url_is_https(web: KassaServer, shop: Merchant,
                                                            payer: httpx.Client) -> None:
    order_id = new_order(shop)["order_id"]
    before = web.settings.public_url
    web.settings.public_url = "https://pay.example.com"
    try:
        r = payer.get(f"/checkout/{order_id}", params={"lang": "zh"})
    finally:
        web.settings.public_url = before
    cookies = r.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert all("Secure" in c and "HttpOnly" in c for c in cookies), cookies


# --- test cards ---------------------------------------------------------------------------------

def test_success_card_goes_processing_then_completed(web: KassaServer, shop: Merchant,
                                                     payer: httpx.Client,
                                                     card_settle: float) -> None:
    order_id = new_order(shop, "card")["order_id"]
    r = pay_by_card(payer, order_id, "4242 4242 4242 4242")
    assert r.headers["location"] == f"/checkout/{order_id}"
    processing = query(shop, order_id)
    assert processing["status"] == "processing"
    assert processing["card"] == {"brand": "visa", "last4": "4242"}
    assert status_of(payer, order_id) == {"status": "processing",
                                          "message": "Your payment is being processed…",
                                          "return_url": None}
    page = open_page(payer, order_id)
    assert page.attr("checkout", "data-status") == "processing"
    assert "card-form" not in page  # the card is in: the form is gone

    done = web.wait_for_status(shop.test, order_id, "completed")
    assert done["escrow"]["held_cents"] == 5000 and done["transaction_id"]
    assert status_of(payer, order_id) == {
        "status": "completed", "return_url": RETURN_URL,
        "message": "Payment received. Returning you to the merchant…"}
    page = open_page(payer, order_id)
    assert page.attr("checkout", "data-status") == "completed"
    assert page.attr("return-link", "href") == RETURN_URL
    kinds = [e.event_type for e in web.db.write_sync(
        lambda conn: events.for_object(conn, order_id))]
    assert kinds == ["payment.created", "payment.completed"]
    # The card is in: a second one is not taken.
    r = post_form(payer, f"/checkout/{order_id}/card",
                  {"csrf_token": payer.cookies["kassa_csrf"], "card_number": DECLINED_CARD})
    assert (r.status_code, r.headers["location"]) == (
        303, f"/checkout/{order_id}?notice=not_allowed")
    assert query(shop, order_id)["card"]["last4"] == "4242"


@pytest.mark.parametrize(("card", "code", "english", "chinese"), [
    (DECLINED_CARD, "payment_failed", "Your card was declined.", "您的银行卡被拒绝。"),
    (NO_FUNDS_CARD, "insufficient_funds", "Your card has insufficient funds.",
     "您的银行卡余额不足。"),
])
def test_failing_cards_fail_with_a_localized_message(web: KassaServer, shop: Merchant,
                                                     payer: httpx.Client, card_settle: float,
                                                     card: str, code: str, english: str,
                                                     chinese: str) -> None:
    order_id = new_order(shop, "card")["order_id"]
    pay_by_card(payer, order_id, card)
    failed = web.wait_for_status(shop.test, order_id, "failed")
    assert failed["failure_code"] == code
    assert failed["card"] == {"brand": "visa", "last4": card[-4:]}
    assert failed["escrow"]["held_cents"] == 0
    page = open_page(payer, order_id)
    assert page.attr("checkout", "data-status") == "failed"
    assert page.text("message") == english
    assert status_of(payer, order_id)["message"] == english
    page = open_page(payer, order_id, lang="zh")
    assert page.text("message") == chinese
    assert status_of(payer, order_id, lang="zh") == {"status": "failed", "message": chinese,
                                                     "return_url": None}


@pytest.mark.parametrize(("card", "notice", "shown"), [
    (NOT_A_TEST_CARD, "card_not_test_card", "Test mode takes only the test cards"),
    ("4242424242424241", "card_invalid", "That is not a valid card number"),  # Luhn
    ("1234", "card_invalid", "That is not a valid card number"),
    ("", "card_invalid", "That is not a valid card number"),
    ("4242-4242-4242-424x", "card_invalid", "That is not a valid card number"),
])
def test_other_numbers_get_a_clear_message_and_change_nothing(
        web: KassaServer, shop: Merchant, payer: httpx.Client, card: str, notice: str,
        shown: str) -> None:
    order_id = new_order(shop, "card")["order_id"]
    r = pay_by_card(payer, order_id, card)
    assert r.headers["location"] == f"/checkout/{order_id}?notice={notice}"
    page = open_page(payer, order_id, notice=notice)
    assert page.text("message").startswith(shown)
    assert "card-form" in page  # still waiting for a card
    after = query(shop, order_id)
    assert (after["status"], after["card"]) == ("pending", None)
    # A notice that is not one of the page's own shows nothing.
    assert open_page(payer, order_id, notice="<script>x</script>").text("message") == ""


def test_the_card_number_is_kept_logged_and_shown_nowhere(
        web: KassaServer, shop: Merchant, payer: httpx.Client, card_settle: float,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    numbers = {SUCCESS_CARD: "completed", DECLINED_CARD: "failed", NO_FUNDS_CARD: "failed",
               NOT_A_TEST_CARD: "pending"}
    bodies: list[str] = []
    ids = {}
    for number, final in numbers.items():
        order_id = new_order(shop, "card")["order_id"]
        ids[number] = order_id
        r = pay_by_card(payer, order_id, spellings(number)[len(ids) % 3])
        bodies += [r.text, r.headers["location"]]
        if final != "pending":
            web.wait_for_status(shop.test, order_id, final)
        r = payer.get(r.headers["location"])
        bodies += [r.text, payer.get(f"/checkout/{order_id}/status").text,
                   shop.test.get("/api/v1/payment/query", params={"order_id": order_id}).text]
    # A broken request too: the 403 page repeats nothing of the form.
    r = post_form(payer, f"/checkout/{ids[SUCCESS_CARD]}/card",
                  {"csrf_token": "nope", "card_number": SUCCESS_CARD})
    assert r.status_code == 403
    bodies.append(r.text)

    stored = everything_stored(web)
    logged = caplog.text + "\n".join(str(rec.__dict__) for rec in caplog.records)
    # The capture works: the worker's settlement jobs are in it.
    assert f"order.settle_sandbox {ids[SUCCESS_CARD]}" in logged
    assert ids[SUCCESS_CARD] in stored and "4242" in stored
    # (The card form's hint lists the sandbox's test cards: it is the one place they are.)
    shown = [CARD_HINT.sub("", body) for body in bodies]
    assert len(shown) == len(bodies) and any(b != s for b, s in zip(bodies, shown, strict=True))
    for number in numbers:
        for spelling in spellings(number):
            assert spelling not in logged
            assert spelling not in stored
            assert [b for b in shown if spelling in b] == []
    row = web.db.write_sync(lambda conn: conn.execute(
        select(orders).where(orders.c.order_id == ids[DECLINED_CARD])).mappings().one())
    assert (row["card_brand"], row["card_last4"], row["sandbox_outcome"]) == (
        "visa", "0002", "payment_failed")


# --- simulated outcomes -----------------------------------------------------------------------

def test_simulate_success_completes_the_order_now(web: KassaServer, shop: Merchant,
                                                  payer: httpx.Client) -> None:
    order_id = new_order(shop, "wechat")["order_id"]
    r = simulate(payer, order_id, "succeeded")
    assert (r.status_code, r.headers["location"]) == (303, f"/checkout/{order_id}")
    done = query(shop, order_id)  # at once: no waiting for the sandbox
    assert done["status"] == "completed" and done["escrow"]["held_cents"] == 5000
    assert done["paid_at"] and done["transaction_id"]
    page = open_page(payer, order_id)
    assert page.attr("checkout", "data-status") == "completed"
    assert page.text("message") == "Payment received. Returning you to the merchant…"
    assert status_of(payer, order_id)["return_url"] == RETURN_URL
    kinds = [e.event_type for e in web.db.write_sync(
        lambda conn: events.for_object(conn, order_id))]
    assert kinds == ["payment.created", "payment.completed"]
    # Once is enough: the forms are gone and a replayed post changes nothing.
    assert "simulate-success" not in page and "simulate-failure" not in page
    r = post_form(payer, f"/checkout/{order_id}/simulate",
                  {"csrf_token": payer.cookies["kassa_csrf"], "outcome": "failed"})
    assert r.headers["location"] == f"/checkout/{order_id}?notice=not_allowed"
    assert query(shop, order_id)["status"] == "completed"


def test_simulate_failure_fails_the_order_now(web: KassaServer, shop: Merchant,
                                              payer: httpx.Client) -> None:
    order_id = new_order(shop, "alipay")["order_id"]
    r = simulate(payer, order_id, "failed")
    assert r.status_code == 303
    failed = query(shop, order_id)
    assert (failed["status"], failed["failure_code"]) == ("failed", "payment_failed")
    assert failed["transaction_id"] is None and failed["escrow"]["held_cents"] == 0
    page = open_page(payer, order_id)
    assert page.text("message") == "The payment failed."
    assert open_page(payer, order_id, lang="zh").text("message") == "支付失败。"
    assert status_of(payer, order_id)["return_url"] is None
    kinds = [e.event_type for e in web.db.write_sync(
        lambda conn: events.for_object(conn, order_id))]
    assert kinds == ["payment.created", "payment.failed"]


def test_simulate_is_refused_for_cards_and_bad_outcomes(web: KassaServer, shop: Merchant,
                                                        payer: httpx.Client) -> None:
    card_order = new_order(shop, "card")["order_id"]
    token = csrf_of(open_page(payer, card_order), "card-form")
    r = post_form(payer, f"/checkout/{card_order}/simulate",
                  {"csrf_token": token, "outcome": "succeeded"})
    assert r.headers["location"] == f"/checkout/{card_order}?notice=not_allowed"
    assert query(shop, card_order)["status"] == "pending"
    wallet_order = new_order(shop)["order_id"]
    for outcome in ("completed", "", "SUCCEEDED"):
        r = post_form(payer, f"/checkout/{wallet_order}/simulate",
                      {"csrf_token": token, "outcome": outcome})
        assert r.status_code == 400, r.text
    assert query(shop, wallet_order)["status"] == "pending"


def test_an_expired_order_takes_nothing(web: KassaServer, shop: Merchant,
                                        payer: httpx.Client) -> None:
    order_id = new_order(shop, expires_in_seconds=300)["order_id"]
    token = csrf_of(open_page(payer, order_id), "simulate-success")
    web.ctx.clock.advance(301)
    try:
        page = open_page(payer, order_id)  # the sweeper may not have been yet
        assert page.text("countdown") == "00:00"
        assert page.text("message") == "This payment has expired."
        assert "simulate-success" not in page
        r = post_form(payer, f"/checkout/{order_id}/simulate",
                      {"csrf_token": token, "outcome": "succeeded"})
        assert r.headers["location"] in (f"/checkout/{order_id}?notice=expired",
                                         f"/checkout/{order_id}?notice=not_allowed")
        assert query(shop, order_id)["status"] in ("pending", "expired")
        web.wait_for_status(shop.test, order_id, "expired")
        assert status_of(payer, order_id) == {"status": "expired",
                                              "message": "This payment has expired.",
                                              "return_url": None}
    finally:
        web.ctx.clock.advance(-301)


# --- the way back to the merchant -------------------------------------------------------------

def test_an_easypay_order_returns_through_its_signed_return(web: KassaServer, shop: Merchant,
                                                            payer: httpx.Client) -> None:
    cred = credential(shop)
    params = {"pid": cred.pid, "type": "alipay", "out_trade_no": "WEB-1",
              "notify_url": "http://127.0.0.1:9/notify", "return_url": RETURN_URL,
              "name": "VIP会员", "money": "10.00"}
    r = httpx.post(f"{web.base_url}/mapi.php", data=signed(params, cred.key))
    body = r.json()
    assert body["code"] == 1, body
    trade_no = body["trade_no"]
    assert body["payurl"] == f"{web.base_url}/checkout/{trade_no}"
    page = open_page(payer, trade_no)
    assert page.text("amount") == "¥10.00 CNY"
    assert page.text("description").endswith("VIP会员")
    assert simulate(payer, trade_no, "succeeded").status_code == 303
    back = status_of(payer, trade_no)["return_url"]
    assert back == f"{web.base_url}/epay/return/{trade_no}"
    r = payer.get(back, follow_redirects=False)
    assert r.status_code == 302
    target = urlsplit(r.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == RETURN_URL
    signed_back = dict(parse_qsl(target.query))
    assert (signed_back["trade_no"], signed_back["trade_status"]) == (trade_no,
                                                                     "TRADE_SUCCESS")


# --- languages --------------------------------------------------------------------------------

def test_lang_query_renders_chinese_and_is_remembered(web: KassaServer, shop: Merchant,
                                                      payer: httpx.Client) -> None:
    order_id = new_order(shop)["order_id"]
    r = payer.get(f"/checkout/{order_id}", params={"lang": "zh"})
    assert r.status_code == 200
    cookies = r.headers.get_list("set-cookie")
    assert any(c.startswith("kassa_lang=zh;") for c in cookies), cookies
    page = Dom(r.text)
    assert page.html_lang() == "zh"
    assert page.text("method") == "支付宝"
    assert page.text("status") == "等待支付"
    assert "模拟支付成功" in page.text("simulate-success")
    # Remembered: the next page is Chinese without asking, even if the browser prefers
    # English.
    page = open_page(payer, order_id)
    assert page.html_lang() == "zh"
    r = payer.get(f"/checkout/{order_id}", headers={"Accept-Language": "en-US"})
    assert Dom(r.text).html_lang() == "zh"
    # ?lang=en switches back, and is remembered in turn.
    assert open_page(payer, order_id, lang="en").html_lang() == "en"
    assert payer.cookies["kassa_lang"] == "en"
    assert open_page(payer, order_id).text("method") == "Alipay"
    # An unknown language is ignored, and sets nothing.
    r = payer.get(f"/checkout/{order_id}", params={"lang": "fr"})
    assert Dom(r.text).html_lang() == "en"
    assert not any(c.startswith("kassa_lang=") for c in r.headers.get_list("set-cookie"))


@pytest.mark.parametrize(("header", "lang"), [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("zh-TW", "zh"),
    ("fr-FR,zh;q=0.5,en;q=0.4", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("en;q=0.1,zh;q=0.2", "zh"),
    ("zh;q=0", "en"),
    ("de-DE", "en"),
    ("", "en"),
])
def test_accept_language_picks_the_language(web: KassaServer, shop: Merchant,
                                            header: str, lang: str) -> None:
    order_id = new_order(shop)["order_id"]
    with httpx.Client(base_url=web.base_url, timeout=30) as fresh:
        r = fresh.get(f"/checkout/{order_id}", headers={"Accept-Language": header})
        assert Dom(r.text).html_lang() == lang
        assert not any(c.startswith("kassa_lang=") for c in r.headers.get_list("set-cookie"))
        body = fresh.get(f"/checkout/{order_id}/status",
                         headers={"Accept-Language": header}).json()
        assert body["status"] == "pending"


# --- live mode: no test cards, no simulation ---------------------------------------------------

def test_live_orders_refuse_card_and_simulate(web: KassaServer, payer: httpx.Client) -> None:
    enterprise = web.merchant(tier="enterprise")
    r = enterprise.live.post("/api/v1/tasks", json={
        "title": "Audit the warehouse", "amount": 100_000, "currency": "CNY",
        "payment_method": "bank_transfer", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    order_id = r.json()["payment"]["order_id"]
    page = open_page(payer, order_id)
    assert page.attr("checkout", "data-status") == "processing"
    assert page.text("method") == "Bank transfer"
    assert not {"card-form", "simulate-success", "simulate-failure", "qr"} & set(page.by_id)
    assert "Test mode" not in payer.get(f"/checkout/{order_id}").text
    token = payer.cookies["kassa_csrf"]
    for path, data in ((f"/checkout/{order_id}/simulate", {"outcome": "succeeded"}),
                       (f"/checkout/{order_id}/simulate", {"outcome": "failed"}),
                       (f"/checkout/{order_id}/card", {"card_number": SUCCESS_CARD})):
        r = post_form(payer, path, {"csrf_token": token, **data})
        assert r.status_code == 404, r.text
        assert SUCCESS_CARD not in r.text
    after = query(enterprise, order_id, enterprise.live)
    assert (after["status"], after["card"]) == ("processing", None)
    web.check_ledger()


@pytest.mark.slow
def test_live_upstream_order_links_to_the_upstream(live: Pair) -> None:  # noqa: F811
    """A live alipay order at A, collected through B (EasyPay): A's page links to B's
    payment page, A's QR code says what B's does, and nothing can be simulated."""
    live.a.settings.upstream_notify_url = "http://127.0.0.1:9"  # A hears nothing: pending
    r = live.merchant.live.post("/api/v1/tasks", json={
        "title": "Photograph the storefront", "amount": 5000, "currency": "CNY",
        "payment_method": "alipay", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    order = r.json()["payment"]
    order_id = order["order_id"]
    with httpx.Client(base_url=live.a.base_url, timeout=30) as payer:
        page = open_page(payer, order_id)
        assert page.attr("checkout", "data-status") == "pending"
        assert page.attr("pay-link", "href") == order["payment_url"]
        assert order["payment_url"].startswith(live.b.base_url + "/checkout/")
        assert page.attr("qr", "src") == f"/qr/{order_id}.png"
        assert not {"card-form", "simulate-success", "simulate-failure"} & set(page.by_id)
        r = payer.get(f"/qr/{order_id}.png")
        assert decode_qr(r.content) == order["qr_code"]
        r = post_form(payer, f"/checkout/{order_id}/simulate",
                      {"csrf_token": payer.cookies["kassa_csrf"], "outcome": "succeeded"})
        assert r.status_code == 404
    r = live.merchant.live.get("/api/v1/payment/query", params={"order_id": order_id})
    assert r.json()["status"] == "pending"
