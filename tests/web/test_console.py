"""The merchant console (SPEC §10, issue 7), over HTTP on a real loopback server, on SQLite
and PostgreSQL: another account's (or the other mode's) objects are 404 as through the API;
every form refuses a missing, wrong or borrowed CSRF token and changes nothing; the session
cookie's attributes, a token the database never holds, and every way a session ends; the
sign-in rate limit; an API secret that is shown, logged and stored nowhere; transactions and
orders with their filters and paging; refunds; API key and webhook secret rotation; webhook
endpoints and resends; and every page in Chinese."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from sqlalchemy import select

from kassa.accounts import service as accounts
from kassa.db.tables import console_sessions, metadata
from kassa.web.i18n import CONSOLE_MESSAGES, MESSAGES
from tests.api.test_escrow import balance, dispatch, paid_tasks, query, refunded, transactions
from tests.conftest import own_database_url
from tests.support.dom import Dom
from tests.support.factories import RETURN_URL
from tests.support.harness import KassaServer, Merchant, make_settings
from tests.support.receivers import Receiver
from tests.support.webhook_log import get_event, wait_delivery

SESSION_COOKIE = "kassa_console"
HTML = "text/html; charset=utf-8"
HEX64 = re.compile(r"[0-9a-f]{64}")
PAGES = ("overview", "transactions", "orders", "invoices", "webhooks", "keys")
QUIET = 0.5  # how long "nothing more arrives" is watched (webhook retries are 0.2 s apart)


# --- a browser of its own: its own cookie jar ----------------------------------------------------

class Browser:
    def __init__(self, web: KassaServer, **headers: Any) -> None:
        self.client = httpx.Client(base_url=web.base_url, timeout=30, headers=headers)
        self.responses: list[httpx.Response] = []
        # The API secret of the key this browser signed in with (a rotation asks for it
        # again); a rotation made here shows the new one, which it is from then on.
        self.secret: str | None = None

    def close(self) -> None:
        self.client.close()

    def get(self, path: str, **params: str) -> httpx.Response:
        # (params={} would drop a query string already in the path)
        r = self.client.get(path, params=params or None, follow_redirects=False)
        self.responses.append(r)
        assert r.status_code < 500, r.text
        return r

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any
             ) -> httpx.Response:
        r = self.client.post(path, data=data, follow_redirects=False, **kwargs)
        self.responses.append(r)
        assert r.status_code < 500, r.text
        if r.status_code == 200 and 'id="new-api-secret"' in r.text:
            self.secret = Dom(r.text).text("new-api-secret")
        return r

    def page(self, path: str, /, **params: str) -> Dom:
        """A page that must be there (200)."""
        r = self.get(path, **params)
        assert r.status_code == 200, (path, params, r.status_code, r.text[:2000])
        assert r.headers["content-type"] == HTML
        assert r.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        return Dom(r.text)

    def login(self, key: str, secret: str) -> httpx.Response:
        form = self.page("/console/login").fields("login-form")
        assert form["csrf_token"] == self.client.cookies.get("kassa_csrf")
        self.secret = secret
        return self.post("/console/login", {"csrf_token": str(form["csrf_token"]),
                                            "api_key": key, "api_secret": secret})

    def form(self, path: str, form_id: str, **values: str) -> dict[str, str]:
        """What the page's form would send (its hidden fields too), with `values` chosen."""
        fields = {k: v or "" for k, v in self.page(path).fields(form_id).items()}
        if "api_secret" in fields and self.secret is not None:  # a rotation's confirmation
            fields["api_secret"] = self.secret
        return {**fields, **values}

    @property
    def token(self) -> str:
        return str(self.client.cookies[SESSION_COOKIE])

    def csrf(self) -> str:
        token = self.page("/console/overview").fields("logout-form")["csrf_token"]
        assert token
        return token

    def signed_in(self) -> bool:
        r = self.get("/console/overview")
        if r.status_code == 303:
            assert r.headers["location"] == "/console/login"
            return False
        assert r.status_code == 200, r.text
        return True


# --- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def web(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KassaServer]:
    """This module's own server; every sign-in comes from 127.0.0.1, so its sign-in limit
    is out of the way (the limit is tested on a server of its own)."""
    tmp = tmp_path_factory.mktemp(f"console-{backend}")
    with own_database_url(backend, tmp) as url:
        srv = KassaServer(make_settings(tmp, url,
                                        console_login_rate_limit="100000/minute")).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture
def shop(web: KassaServer) -> Iterator[Merchant]:
    """A fresh merchant; the ledger must balance after the test."""
    yield web.merchant()
    web.check_ledger()


@pytest.fixture(scope="module")
def stranger(web: KassaServer) -> tuple[Merchant, str]:
    """Another merchant, and a paid order of theirs."""
    other = web.merchant(name="A Stranger")
    (_, order_id), = paid_tasks(web, other.test, 2000)
    return other, order_id


@pytest.fixture
def browsers(web: KassaServer) -> Iterator[Callable[..., Browser]]:
    """browsers() -> a browser; browsers(key, secret) -> one signed in with them."""
    made: list[Browser] = []

    def make(key: str | None = None, secret: str | None = None, **headers: Any) -> Browser:
        b = Browser(web, **headers)
        made.append(b)
        if key is not None:
            assert secret is not None
            r = b.login(key, secret)
            assert (r.status_code, r.headers.get("location")) == (303, "/console/overview"), (
                r.text)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def clock(web: KassaServer) -> Iterator[Callable[[float], None]]:
    """clock(seconds) moves the server's clock on; it is moved back after the test."""
    moved = 0.0

    def advance(seconds: float) -> None:
        nonlocal moved
        web.ctx.clock.advance(seconds)
        moved += seconds

    yield advance
    web.ctx.clock.advance(-moved)


def without_csrf(form: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in form.items() if k != "csrf_token"}


def assert_problem(r: httpx.Response, status: int, kind: str) -> Dom:
    assert r.status_code == status, (status, r.status_code, r.text[:2000])
    assert r.headers["content-type"] == HTML
    page = Dom(r.text)
    assert page.attr("problem", "data-problem") == kind, r.text[:2000]
    return page


def to_login(r: httpx.Response) -> None:
    assert (r.status_code, r.headers.get("location")) == (303, "/console/login"), r.text


def session_cookie(r: httpx.Response) -> str | None:
    found = [c for c in r.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")]
    assert len(found) <= 1
    return found[0] if found else None


def cookie_attributes(header: str) -> dict[str, str]:
    """`name=value; Attr; Attr=x` -> {"name": value, "attr": "x" or ""} (names lower-cased)."""
    first, *rest = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    attrs = {name: value}
    for part in rest:
        key, _, val = part.partition("=")
        attrs[key.strip().lower()] = val.strip()
    return attrs


def stored_sessions(web: KassaServer, account_id: str) -> list[dict[str, Any]]:
    stmt = select(console_sessions).where(console_sessions.c.account_id == account_id)
    return web.db.write_sync(lambda conn: [dict(r) for r in conn.execute(stmt).mappings()])


def everything_stored(web: KassaServer) -> str:
    """Every row of every table of the server's database, as one text."""
    def dump(conn: Any) -> str:
        return "\n".join(repr(tuple(row)) for table in metadata.sorted_tables
                         for row in conn.execute(select(table)))
    return web.db.write_sync(dump)


def api_works(client: httpx.Client) -> bool:
    status = client.get("/api/v1/payment/balance").status_code
    assert status in (200, 401)
    return status == 200


def pending_orders(client: httpx.Client, n: int) -> list[str]:
    """Card orders nobody pays: they stay pending (newest last)."""
    return [dispatch(client, method="card")[1] for _ in range(n)]


def refund_form(amount: str = "", reason: str = "task_cancelled", method: str = "balance",
                **more: str) -> dict[str, str]:
    return {"amount": amount, "reason": reason, "refund_method": method, **more}


def walk(b: Browser, path: str, table: str, key: str, **params: str
         ) -> tuple[list[str], list[int]]:
    """Every row over every page, following #next-page: (row keys, rows per page)."""
    seen: list[str] = []
    sizes: list[int] = []
    page = b.page(path, **params)
    while True:
        rows = page.rows(table, key)
        seen += rows
        sizes.append(len(rows))
        if "next-page" not in page:
            return seen, sizes
        href = str(page.attr("next-page", "href"))
        assert href.startswith("?")
        r = b.get(urljoin(path, href))
        assert r.status_code == 200, r.text
        page = Dom(r.text)
        assert len(sizes) < 10


def events_of(client: httpx.Client, object_id: str) -> list[dict[str, Any]]:
    r = client.get("/api/v1/webhooks/events", params={"object_id": object_id})
    assert r.status_code == 200, r.text
    return sorted(r.json()["data"], key=lambda e: e["sequence"])


# --- 1. another account's objects, the other mode's ----------------------------------------

def test_another_accounts_objects_are_404_as_through_the_api(
        web: KassaServer, browsers: Callable[..., Browser]) -> None:
    mine = web.merchant(tier="enterprise", name="Mine")
    other = web.merchant(name="Somebody Else")
    (_, my_order), = paid_tasks(web, mine.test, 5000)
    (_, their_order), = paid_tasks(web, other.test, 7777)
    r = other.test.post("/api/v1/webhooks/endpoints",
                        json={"url": "http://127.0.0.1:9/theirs", "status": "disabled"})
    assert r.status_code == 201, r.text
    their_endpoint = r.json()["endpoint_id"]
    their_event = events_of(other.test, their_order)[0]["event_id"]
    r = mine.test.post("/api/v1/webhooks/endpoints",
                       json={"url": "http://127.0.0.1:9/mine", "status": "disabled"})
    my_endpoint = r.json()["endpoint_id"]
    my_event = events_of(mine.test, my_order)[0]["event_id"]
    # The same account's live mode: a bank transfer order (processing) and its event.
    r = mine.live.post("/api/v1/tasks", json={
        "title": "Audit the warehouse", "amount": 100_000, "currency": "CNY",
        "payment_method": "bank_transfer", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    live_order = r.json()["payment"]["order_id"]
    live_event = events_of(mine.live, live_order)[0]["event_id"]

    me = browsers(mine.test_key, mine.test_secret)
    token = me.csrf()
    # What is mine works (so the 404s below are about whose it is).
    assert me.page(f"/console/orders/{my_order}").attr("order-id", "id") == "order-id"
    r = me.get(f"/console/invoices/{my_order}.pdf")
    assert (r.status_code, r.headers["content-type"]) == (200, "application/pdf")
    assert r.content.startswith(b"%PDF")
    assert me.page(f"/console/webhooks/{my_endpoint}").text("endpoint-id") == my_endpoint

    for order_id in (their_order, live_order):
        page = assert_problem(me.get(f"/console/orders/{order_id}"), 404, "not_found")
        assert order_id not in page.texts
        assert_problem(me.get(f"/console/invoices/{order_id}.pdf"), 404, "not_found")
        assert_problem(me.post(f"/console/orders/{order_id}/refund",
                               {"csrf_token": token, **refund_form()}), 404, "not_found")
        # As through the API with this merchant's test key.
        assert mine.test.get("/api/v1/payment/query",
                             params={"order_id": order_id}).status_code == 404
        assert mine.test.get(f"/api/v1/invoices/{order_id}").status_code == 404
        # Nor is it a cursor of this account's lists.
        assert_problem(me.get("/console/orders", starting_after=order_id), 400, "bad_request")
        assert_problem(me.get("/console/invoices", starting_after=order_id), 400,
                       "bad_request")
    assert_problem(me.get(f"/console/webhooks/{their_endpoint}"), 404, "not_found")
    for event_id, endpoint_id in ((their_event, None), (live_event, None),
                                  (their_event, my_endpoint), (my_event, their_endpoint)):
        data = {"csrf_token": token} | ({"endpoint_id": endpoint_id} if endpoint_id else {})
        assert_problem(me.post(f"/console/events/{event_id}/resend", data), 404, "not_found")
    # The lists show none of it.
    everything = "".join(r.text for r in (me.get("/console/orders"), me.get("/console/webhooks"),
                                          me.get("/console/transactions"),
                                          me.get("/console/invoices"),
                                          me.get("/console/overview")))
    for theirs in (their_order, live_order, their_endpoint, their_event, live_event,
                   "Somebody Else"):
        assert theirs not in everything
    assert my_order in everything and my_endpoint in everything
    # Nothing changed: their order is not refunded, their event not sent again.
    after = query(other.test, their_order)
    assert (after["status"], after["refunded_cents"]) == ("completed", 0)
    assert query(mine.live, live_order)["status"] == "processing"
    assert get_event(other.test, their_event)["deliveries"] == []

    # And the live session sees none of the test mode's.
    live = browsers(mine.live_key, mine.live_secret)
    assert live.page(f"/console/orders/{live_order}").text("order-id") == live_order
    assert_problem(live.get(f"/console/orders/{my_order}"), 404, "not_found")
    assert_problem(live.get(f"/console/invoices/{my_order}.pdf"), 404, "not_found")
    assert_problem(live.get(f"/console/webhooks/{my_endpoint}"), 404, "not_found")
    assert_problem(live.post(f"/console/orders/{my_order}/refund",
                             {"csrf_token": live.csrf(), **refund_form()}), 404, "not_found")
    assert query(mine.test, my_order)["refunded_cents"] == 0
    web.check_ledger()


@pytest.mark.parametrize("path", [
    "/console/orders/ord_00000000000000000000",
    "/console/orders/%00",
    "/console/orders/ord_%00abc",
    "/console/orders/" + "a" * 5000,
    "/console/orders/ord_1'%22%3E%3Cscript%3E",
    "/console/orders/%F0%9F%92%B3",
    "/console/invoices/ord_00000000000000000000.pdf",
    "/console/invoices/%00.pdf",
    "/console/webhooks/we_00000000000000000000",
    "/console/webhooks/we_%00",
    "/console/webhooks/" + "e" * 3000,
])
def test_unknown_ids_are_a_404_page_never_a_500(web: KassaServer, shop: Merchant,
                                                 browsers: Callable[..., Browser],
                                                 path: str) -> None:
    b = browsers(shop.test_key, shop.test_secret)
    assert_problem(b.get(path), 404, "not_found")


# --- 2. CSRF ------------------------------------------------------------------------------------

def test_every_form_refuses_a_missing_wrong_or_borrowed_csrf_token(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser]) -> None:
    receiver = Receiver().up()
    r = shop.test.post("/api/v1/webhooks/endpoints", json={"url": receiver.url})
    assert r.status_code == 201, r.text
    endpoint_id = r.json()["endpoint_id"]
    try:
        (_, order_id), = paid_tasks(web, shop.test, 5000)
        event_id = events_of(shop.test, order_id)[0]["event_id"]
        delivered = wait_delivery(shop.test, event_id, endpoint_id,
                                  lambda d: d["status"] == "succeeded")
        receiver.wait_for_events(2)  # payment.created and payment.completed
        secret_before = shop.live.get("/api/v1/webhooks/secret").json()
        sent_before = len(receiver.received())

        a = browsers(shop.test_key, shop.test_secret)
        b = browsers(shop.test_key, shop.test_secret)
        live = browsers(shop.live_key, shop.live_secret)
        live_b = browsers(shop.live_key, shop.live_secret)
        a_token, b_token, live_token = a.csrf(), b.csrf(), live.csrf()
        assert len({a_token, b_token, live_token, live_b.csrf()}) == 4  # one per session
        assert a_token != a.token and a.token not in a_token
        login_token = browsers().page("/console/login").fields("login-form")["csrf_token"]

        def bad_tokens(good: str, borrowed: list[str]) -> list[dict[str, str]]:
            return [{}, {"csrf_token": ""}, {"csrf_token": "x" * 43},
                    {"csrf_token": good[:-1]}, {"csrf_token": good + "A"},
                    {"csrf_token": good.swapcase()}, {"csrf_token": str(login_token)},
                    {"csrf_token": "y" * 5000}, *({"csrf_token": t} for t in borrowed)]

        forms: list[tuple[str, dict[str, str]]] = [
            (f"/console/orders/{order_id}/refund", refund_form()),
            (f"/console/events/{event_id}/resend", {}),
            (f"/console/events/{event_id}/resend", {"endpoint_id": endpoint_id}),
            ("/console/webhooks", {"url": "http://127.0.0.1:9/new-hook"}),
            ("/console/keys/rotate", without_csrf(a.form("/console/keys", "rotate-key-form",
                                                           grace_seconds="0"))),
            ("/console/logout", {}),
        ]
        for path, data in forms:
            for token in bad_tokens(a_token, [b_token, live_token]):
                assert_problem(a.post(path, {**data, **token}), 403, "forbidden")
            # The right token, but not in the form: JSON, the query string, a header.
            assert_problem(a.post(path, json={**data, "csrf_token": a_token}), 403,
                           "forbidden")
            assert_problem(a.post(path + f"?csrf_token={a_token}", data), 403, "forbidden")
            assert_problem(a.post(path, data, headers={"X-CSRF-Token": a_token}), 403,
                           "forbidden")
            # The right token in a form with a bad byte in it is no form at all.
            assert_problem(a.post(path, content=f"csrf_token={a_token}&x=%00".encode(),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}),
                           403, "forbidden")
        secret_form = without_csrf(live.form("/console/keys", "rotate-secret-form"))
        for token in bad_tokens(live_token, [a_token, live_b.csrf()]):
            assert_problem(live.post("/console/webhook-secret/rotate",
                                     {**secret_form, **token}), 403, "forbidden")

        # Nothing changed.
        assert (query(shop.test, order_id)["refunded_cents"], balance(shop.test)[
            "balance_cents"]) == (0, 0)
        assert transactions(shop.test, type="refund")["data"] == []
        time.sleep(QUIET)
        assert len(receiver.received()) == sent_before
        after = get_event(shop.test, event_id)["deliveries"]
        assert [(d["delivery_id"], d["status"], d["attempt_count"]) for d in after] == [
            (delivered["delivery_id"], "succeeded", 1)]
        r = shop.test.get("/api/v1/webhooks/endpoints")
        assert [e["endpoint_id"] for e in r.json()["data"]] == [endpoint_id]
        assert api_works(shop.test) and api_works(shop.live)
        assert shop.live.get("/api/v1/webhooks/secret").json() == secret_before
        assert a.signed_in() and b.signed_in() and live.signed_in() and live_b.signed_in()
        assert len(stored_sessions(web, shop.account_id)) == 4

        # The right token works (so the refusals above were the token's).
        r = a.post(f"/console/orders/{order_id}/refund",
                   {"csrf_token": a_token, **refund_form("1.00")})
        assert r.status_code == 303, r.text
        assert query(shop.test, order_id)["refunded_cents"] == 100
        to_login(a.post("/console/logout", {"csrf_token": a_token}))
        assert not a.signed_in() and b.signed_in()
    finally:
        shop.test.delete(f"/api/v1/webhooks/endpoints/{endpoint_id}")
        receiver.down()


def test_sign_in_refuses_a_missing_or_wrong_csrf_token(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser]) -> None:
    creds = {"api_key": shop.test_key, "api_secret": shop.test_secret}
    b = browsers()
    token = str(b.page("/console/login").fields("login-form")["csrf_token"])
    other = browsers()
    other_token = str(other.page("/console/login").fields("login-form")["csrf_token"])
    assert token != other_token
    attempts: list[tuple[Browser, dict[str, str]]] = [
        (b, creds),  # no field
        (b, {**creds, "csrf_token": ""}),
        (b, {**creds, "csrf_token": "x" * 43}),
        (b, {**creds, "csrf_token": token[:-1]}),
        (b, {**creds, "csrf_token": other_token}),  # another browser's
        (browsers(), {**creds, "csrf_token": token}),  # a field, but no cookie
    ]
    for browser, data in attempts:
        r = browser.post("/console/login", data)
        assert r.status_code == 403, (data, r.text)
        page = Dom(r.text)
        assert page.text("login-error") == "This form was open too long. Please try again."
        assert session_cookie(r) is None
        assert SESSION_COOKIE not in browser.client.cookies
    r = b.post("/console/login", json={**creds, "csrf_token": token})
    assert r.status_code == 403 and session_cookie(r) is None
    assert stored_sessions(web, shop.account_id) == []
    # The page's own token signs in.
    r = b.post("/console/login", {**creds, "csrf_token": token})
    assert (r.status_code, r.headers["location"]) == (303, "/console/overview")
    assert b.signed_in()


# --- 3. the session cookie, and a token the database never holds -------------------------------

def test_session_cookie_attributes_and_only_a_hash_is_stored(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser]) -> None:
    b = browsers()
    r = b.get("/console/login")
    csrf_cookie = cookie_attributes(next(c for c in r.headers.get_list("set-cookie")
                                         if c.startswith("kassa_csrf=")))
    assert {"httponly", "path", "samesite"} <= set(csrf_cookie)
    assert (csrf_cookie["path"], csrf_cookie["samesite"].lower()) == ("/console", "strict")
    assert "secure" not in csrf_cookie
    r = b.login(shop.test_key, shop.test_secret)
    header = session_cookie(r)
    assert header is not None
    cookie = cookie_attributes(header)
    token = cookie[SESSION_COOKIE]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token), token
    assert "httponly" in cookie
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/console"
    assert "secure" not in cookie  # the server's public URL is http
    assert "domain" not in cookie
    assert int(cookie["max-age"]) == web.settings.console_max_age_seconds
    # The sign-in form's double-submit cookie is done with.
    assert any(c.startswith("kassa_csrf=") and ("max-age=0" in c.lower() or "expires" in c.lower())
               for c in r.headers.get_list("set-cookie"))
    assert b.signed_in()

    [row] = stored_sessions(web, shop.account_id)
    assert HEX64.fullmatch(row["session_hash"]), row
    assert row["session_hash"] != token
    assert row["session_hash"] != hashlib.sha256(token.encode()).hexdigest()  # keyed
    assert (row["mode"], row["account_id"]) == ("test", shop.account_id)
    stored = everything_stored(web)
    assert token not in stored
    assert b.csrf() not in stored
    # A copy of the database opens no session: its hash is no cookie.
    with httpx.Client(base_url=web.base_url, timeout=30,
                      headers={"Cookie": f"{SESSION_COOKIE}={row['session_hash']}"}) as c:
        to_login(c.get("/console/overview", follow_redirects=False))


def test_cookies_are_secure_when_the_public_url_is_https(
        web: KassaServer, shop: Merchant) -> None:
    before = web.settings.public_url
    web.settings.public_url = "https://console.example.com"
    try:
        with httpx.Client(base_url=web.base_url, timeout=30) as b:
            r = b.get("/console/login")
            [csrf_header] = r.headers.get_list("set-cookie")
            assert "secure" in cookie_attributes(csrf_header)
            token = str(Dom(r.text).fields("login-form")["csrf_token"])
            # (A Secure cookie is not sent back over http: it goes by hand.)
            r = b.post("/console/login", headers={"Cookie": f"kassa_csrf={token}"},
                       data={"csrf_token": token, "api_key": shop.test_key,
                             "api_secret": shop.test_secret})
            assert r.status_code == 303, r.text
            header = session_cookie(r)
            assert header is not None
            cookie = cookie_attributes(header)
            assert {"secure", "httponly"} <= set(cookie)
            assert (cookie["path"], cookie["samesite"].lower()) == ("/console", "strict")
    finally:
        web.settings.public_url = before


# --- 4. how a session ends ------------------------------------------------------------------

def test_a_session_ends_at_sign_out(web: KassaServer, shop: Merchant,
                                    browsers: Callable[..., Browser]) -> None:
    a = browsers(shop.test_key, shop.test_secret)
    other = browsers(shop.test_key, shop.test_secret)
    token, csrf_token = a.token, a.csrf()
    r = a.post("/console/logout", {"csrf_token": csrf_token})
    to_login(r)
    gone = session_cookie(r)
    assert gone is not None and "max-age=0" in gone.lower() and "path=/console" in gone.lower()
    assert SESSION_COOKIE not in a.client.cookies
    assert not a.signed_in()
    assert len(stored_sessions(web, shop.account_id)) == 1  # the other one
    # The old cookie, kept by hand, opens nothing, and its forms do nothing.
    (_, order_id), = paid_tasks(web, shop.test, 3000)
    with httpx.Client(base_url=web.base_url, timeout=30,
                      headers={"Cookie": f"{SESSION_COOKIE}={token}"}) as old:
        for path in ("/console", *(f"/console/{p}" for p in PAGES),
                     f"/console/orders/{order_id}"):
            to_login(old.get(path, follow_redirects=False))
        r = old.post(f"/console/orders/{order_id}/refund", follow_redirects=False,
                     data={"csrf_token": csrf_token, **refund_form()})
        to_login(r)
        to_login(old.post("/console/keys/rotate", follow_redirects=False,
                          data={"csrf_token": csrf_token, "grace_seconds": "0"}))
        assert old.get("/console/login").status_code == 200  # the sign-in form, again
    assert query(shop.test, order_id)["refunded_cents"] == 0
    assert api_works(shop.test)
    assert other.signed_in()  # another browser's session is its own
    # Signing out again, or without a session, is harmless.
    to_login(a.post("/console/logout", {"csrf_token": csrf_token}))


def test_a_session_ends_when_idle(web: KassaServer, shop: Merchant,
                                  browsers: Callable[..., Browser],
                                  clock: Callable[[float], None]) -> None:
    idle = web.settings.console_idle_seconds
    assert idle == 1800
    b = browsers(shop.test_key, shop.test_secret)
    # Used, it lives past the idle time since sign-in.
    for _ in range(3):
        clock(idle - 200)
        assert b.signed_in()
    clock(idle + 1)
    assert not b.signed_in()
    to_login(b.get("/console/keys"))
    # A new sign-in clears the ended one away.
    [ended] = [r["session_hash"] for r in stored_sessions(web, shop.account_id)]
    b2 = browsers(shop.test_key, shop.test_secret)
    [new] = [r["session_hash"] for r in stored_sessions(web, shop.account_id)]
    assert new != ended
    assert b2.signed_in() and not b.signed_in()


def test_a_session_ends_at_its_maximum_age_however_used(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser],
        clock: Callable[[float], None]) -> None:
    max_age = web.settings.console_max_age_seconds
    step = web.settings.console_idle_seconds - 100
    b = browsers(shop.test_key, shop.test_secret)
    elapsed = 0
    while elapsed + step < max_age - 30:
        clock(step)
        elapsed += step
        assert b.signed_in(), elapsed
    clock(max_age - 30 - elapsed)
    assert b.signed_in()
    clock(31)
    assert not b.signed_in()
    csrf_less = b.post("/console/keys/rotate", {"grace_seconds": "0"})
    to_login(csrf_less)
    assert api_works(shop.test)


@pytest.mark.parametrize("value", [
    "", "x", "a" * 42, "a" * 43, "A" * 43, "a" * 44, "a" * 5000, "-" * 43,
    "%00" * 15, "a" * 42 + "=", "a" * 42 + "%", "'; DROP TABLE console_sessions; --",
    "zr_test_0000000000000000000000000000000000000000", '"' + "a" * 41 + '"',
    "é" * 43, "\u202e" * 43,
])
def test_a_forged_cookie_goes_to_sign_in_never_a_500(web: KassaServer, value: str) -> None:
    raw = f"{SESSION_COOKIE}={value}".encode()
    with httpx.Client(base_url=web.base_url, timeout=30, headers={"Cookie": raw}) as c:
        for path in ("/console", "/console/overview", "/console/keys",
                     "/console/orders/ord_00000000000000000000"):
            to_login(c.get(path, follow_redirects=False))
        for path in ("/console/keys/rotate", "/console/webhook-secret/rotate",
                     "/console/webhooks"):
            to_login(c.post(path, data={"csrf_token": "a" * 43, "grace_seconds": "0"},
                            follow_redirects=False))
        to_login(c.post("/console/logout", follow_redirects=False))
        r = c.get("/console/login")
        assert r.status_code == 200 and "login-form" in Dom(r.text)


# --- 5. the sign-in rate limit -------------------------------------------------------------

@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KassaServer]:
    """A server with the default sign-in limit (10 a minute per client address), SQLite."""
    tmp = tmp_path_factory.mktemp("console-limited")
    with own_database_url("sqlite", tmp) as url:
        srv = KassaServer(make_settings(tmp, url)).start()
        try:
            yield srv
        finally:
            srv.stop()


def test_the_eleventh_sign_in_in_a_minute_is_refused(limited: KassaServer) -> None:
    assert limited.settings.console_login_rate_limit == "10/minute"
    shop = limited.merchant()
    first, second = Browser(limited), Browser(limited)  # one address, two browsers
    try:
        started = time.monotonic()
        for n in range(10):
            r = first.login(shop.test_key, shop.test_secret + ("" if n == 9 else "wrong"))
            if n < 9:
                assert r.status_code == 401, r.text
                assert Dom(r.text).text("login-error") == (
                    "That API key and secret do not match an account.")
            else:
                assert r.status_code == 303, r.text  # the 10th, right: signed in
        r = second.login(shop.test_key, shop.test_secret)  # the 11th, right as well
        assert time.monotonic() - started < 50  # all within the minute
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["content-type"] == HTML
        assert Dom(r.text).text("login-error") == (
            "Too many attempts. Wait a minute and try again.")
        assert session_cookie(r) is None
        # ... whatever it carries.
        assert second.login("zr_test_nobody", "sk_nothing").status_code == 429
        r = second.login(shop.live_key, shop.live_secret)
        assert r.status_code == 429 and session_cookie(r) is None
        assert not second.signed_in()
        assert len(stored_sessions(limited, shop.account_id)) == 1
        # A form without its token is refused before it counts; the session made before
        # the limit still works.
        assert second.post("/console/login", {"api_key": "x", "api_secret": "y"}
                           ).status_code == 403
        assert first.signed_in()
    finally:
        first.close()
        second.close()


# --- 6. the API secret is shown, logged and stored nowhere ----------------------------------

def test_the_api_secret_leaks_nowhere(web: KassaServer, shop: Merchant,
                                      browsers: Callable[..., Browser],
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    (_, order_id), = paid_tasks(web, shop.test, 5000)
    typos = (shop.test_secret[:-1] + ("A" if shop.test_secret[-1] != "A" else "B"),
             "sk_" + "typed-by-mistake-0123456789")
    used: list[Browser] = []
    for key, secret in ((shop.test_key, typos[0]), ("zr_test_" + "0" * 48, typos[1]),
                        (shop.live_key, shop.test_secret)):
        b = browsers()
        used.append(b)
        r = b.login(key, secret)
        assert r.status_code == 401 and session_cookie(r) is None
        assert b.page("/console/login").by_id["api_secret"]["attrs"].get("value") is None
    for key, secret in ((shop.test_key, shop.test_secret), (shop.live_key, shop.live_secret)):
        b = browsers(key, secret)
        used.append(b)
        for name in PAGES:
            b.page(f"/console/{name}")
        b.get(f"/console/orders/{order_id}", lang="zh")
        b.get(f"/console/invoices/{order_id}.pdf")
        b.get("/console/transactions", type="bogus")
    # A rotated key's new secret is in the one answer that made it.
    rotator = used[-2]
    r = rotator.post("/console/keys/rotate",
                     rotator.form("/console/keys", "rotate-key-form", grace_seconds="3600"))
    assert r.status_code == 200, r.text
    new_secret = Dom(r.text).text("new-api-secret")
    assert new_secret.startswith("sk_") and new_secret in r.text
    rotator.responses.remove(r)
    rotator.page("/console/keys")

    secrets_typed = (shop.test_secret, shop.live_secret, *typos, new_secret)
    shown = []
    for b in used:
        for resp in b.responses:
            shown += [resp.text, str(resp.url), *(f"{k}: {v}" for k, v in resp.headers.items())]
    logged = caplog.text + "\n".join(str(rec.__dict__) for rec in caplog.records)
    stored = everything_stored(web)
    assert shop.account_id in stored and len(shown) > 50
    assert f"order.settle_sandbox {order_id}" in logged  # the capture works
    for secret in secrets_typed:
        assert [s for s in shown if secret in s] == [], secret
        assert secret not in logged
        assert secret not in stored
    # (Nor their keys' secrets in any cookie the browsers hold.)
    for b in used:
        for value in b.client.cookies.values():
            assert all(secret not in value for secret in secrets_typed)


# --- 7. transactions --------------------------------------------------------------------------

def test_transactions_filters_and_paging(web: KassaServer, shop: Merchant,
                                         browsers: Callable[..., Browser]) -> None:
    client = shop.test
    paid = paid_tasks(web, client, 5000, 6000)
    r = client.post("/api/v1/payment/deposit", json={
        "amount": 10_000, "payment_method": "alipay", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    web.wait_for_status(client, r.json()["order_id"], "completed")
    done = refunded(client, paid[0][1], amount=1000, refund_method="balance")
    pending_orders(client, 22)
    everything = [row["transaction_id"] for row in transactions(client, limit=100)["data"]]
    assert len(everything) == 26

    b = browsers(shop.test_key, shop.test_secret)
    seen, sizes = walk(b, "/console/transactions", "transactions", "transaction-id")
    assert sizes == [20, 6]
    assert seen == everything  # newest first, none twice, none left out

    def api_ids(**params: str) -> list[str]:
        return [row["transaction_id"]
                for row in transactions(client, limit=100, **params)["data"]]

    page = b.page("/console/transactions", type="refund")
    assert page.rows("transactions", "transaction-id") == api_ids(type="refund") == [
        done["transaction_id"]]
    assert set(page.rows("transactions", "type")) == {"refund"}
    assert "next-page" not in page
    selected = [e["attrs"].get("value") for e in page.elements
                if e["tag"] == "option" and "selected" in e["attrs"]]
    assert selected == ["refund", "all"]
    page = b.page("/console/transactions", status="completed")
    assert page.rows("transactions", "transaction-id") == api_ids(status="completed")
    assert set(page.rows("transactions", "status")) == {"completed"}
    assert len(page.rows("transactions", "status")) == 4  # 2 payments, a deposit, a refund
    page = b.page("/console/transactions", type="deposit", status="completed")
    assert page.rows("transactions", "type") == ["deposit"]
    # Paging keeps the filter.
    seen, sizes = walk(b, "/console/transactions", "transactions", "transaction-id",
                       type="payment", status="pending")
    assert sizes == [20, 2]
    assert seen == api_ids(type="payment", status="pending")
    # Blank or unknown parameters are no filter.
    assert b.page("/console/transactions", type="", status="", starting_after="", limit="1",
                  foo="bar").rows("transactions", "transaction-id") == everything[:20]


@pytest.mark.parametrize("query_string", [
    "type=bogus", "status=refunded", "type=Refund", "status=all%00", "type=" + "x" * 5000,
    "starting_after=txn_00000000000000000000", "starting_after=THEIRS",
    "starting_after=" + "x" * 41, "starting_after=txn_%00", "starting_after=%00",
    "starting_after=%27%20OR%201%3D1%20--", "starting_after=ord_" + "0" * 20,
    "starting_after=%ED%A0%80", "starting_after=%FF%FE", "type=%ED%A0%80",
    "starting_after=txn_%F0%9F",
])
def test_bad_transaction_filters_are_a_400_page_never_a_500(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser],
        stranger: tuple[Merchant, str], query_string: str) -> None:
    other, their_order = stranger
    their_txn = query(other.test, their_order)["transaction_id"]
    b = browsers(shop.test_key, shop.test_secret)
    r = b.get(f"/console/transactions?{query_string.replace('THEIRS', their_txn)}")
    assert r.status_code in (400, 404), (r.status_code, r.text[:2000])
    page = assert_problem(r, r.status_code,
                          "bad_request" if r.status_code == 400 else "not_found")
    assert "transactions" not in page  # no rows, theirs or any


# --- 8. orders -----------------------------------------------------------------------------

def test_orders_filter_paging_and_refunds_on_the_order_page(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser]) -> None:
    client = shop.test
    paid = [order_id for _, order_id in paid_tasks(web, client, 5000, 6000, 7000)]
    partly = refunded(client, paid[0], amount=1000, refund_method="balance")
    fully = refunded(client, paid[1], refund_method="balance")
    pending = pending_orders(client, 20)
    mine = set(paid) | set(pending)

    b = browsers(shop.test_key, shop.test_secret)
    seen, sizes = walk(b, "/console/orders", "orders", "order-id")
    assert sizes == [20, 3]
    assert len(seen) == len(set(seen)) == 23 and set(seen) == mine
    assert seen[:20] == list(reversed(pending))  # newest first
    # Filters: each status, and exactly a page of them (no next page).
    page = b.page("/console/orders", status="completed")
    assert page.rows("orders", "order-id") == [paid[2], paid[0]]
    assert {e["attrs"]["class"] for e in page.with_class("status")} == {
        "status status-completed"}
    assert b.page("/console/orders", status="refunded").rows("orders", "order-id") == [paid[1]]
    page = b.page("/console/orders", status="pending")
    assert page.rows("orders", "order-id") == list(reversed(pending))
    assert "next-page" not in page
    assert b.page("/console/orders", status="failed").rows("orders", "order-id") == []
    assert b.page("/console/orders", status="all").rows("orders", "order-id") == seen[:20]
    seen_completed, _ = walk(b, "/console/orders", "orders", "order-id", status="completed")
    assert seen_completed == [paid[2], paid[0]]
    for params in ({"status": "bogus"}, {"status": "COMPLETED"}, {"status": "\x00"},
                   {"starting_after": "ord_zz"}, {"starting_after": "ord_" + "0" * 20},
                   {"starting_after": "x" * 5000}, {"starting_after": "ord_\x00"},
                   {"status": "completed", "starting_after": "txn_" + "0" * 20}):
        assert_problem(b.get("/console/orders", **params), 400, "bad_request")
    # The invoices page: the paid orders (completed and refunded) only.
    page = b.page("/console/invoices")
    assert page.rows("invoices", "order-id") == list(reversed(paid))
    links = [e["attrs"]["href"] for e in page.with_class("invoice-download")]
    assert links == [f"/console/invoices/{o}.pdf" for o in reversed(paid)]
    r = b.get(links[0])
    assert (r.status_code, r.headers["content-type"]) == (200, "application/pdf")
    assert r.content.startswith(b"%PDF") and r.headers["cache-control"] == "no-store"
    assert r.headers["content-disposition"].startswith("attachment;")
    # An unpaid order has no invoice: a page saying so, not a 500.
    r = b.get(f"/console/invoices/{pending[0]}.pdf")
    assert r.status_code in (400, 409), r.text
    assert_problem(r, r.status_code, "bad_request")

    # The order page shows its refunds.
    page = b.page(f"/console/orders/{paid[0]}")
    assert page.rows("refunds", "refund-id") == [partly["refund_id"]]
    assert page.rows("refunds", "status") == ["completed"]
    assert page.text("order-refunded") == "¥10.00 CNY"
    assert page.text("order-amount") == "¥50.00 CNY"
    assert page.attr("order-status", "data-status") == "completed"
    assert "refund-form" in page and "invoice-link" in page
    page = b.page(f"/console/orders/{paid[1]}")
    assert page.rows("refunds", "refund-id") == [fully["refund_id"]]
    assert page.text("order-refunded") == "¥60.00 CNY"
    assert page.attr("order-status", "data-status") == "refunded"
    assert "refund-form" not in page and "invoice-link" in page
    page = b.page(f"/console/orders/{pending[0]}")
    assert page.rows("refunds", "refund-id") == []
    assert not {"refund-form", "invoice-link"} & set(page.by_id)


# --- 9. refunds ------------------------------------------------------------------------------

def test_refunds_from_the_console(web: KassaServer, shop: Merchant,
                                  browsers: Callable[..., Browser]) -> None:
    client = shop.test
    (_, order_id), = paid_tasks(web, client, 5000)
    b = browsers(shop.test_key, shop.test_secret)
    page = b.page(f"/console/orders/{order_id}")
    form = page.fields("refund-form")
    assert set(form) == {"csrf_token", "form_key", "amount", "reason", "reason_detail",
                         "refund_method"}
    token = str(form["csrf_token"])
    path = f"/console/orders/{order_id}/refund"

    def unchanged(refunded_cents: int) -> None:
        after = query(client, order_id)
        assert after["refunded_cents"] == refunded_cents
        refunds = transactions(client, type="refund")["data"]
        assert sum(row["amount"] for row in refunds) == refunded_cents

    def refused(data: dict[str, str], refunded_cents: int) -> Dom:
        r = b.post(path, {"csrf_token": token, **data})
        assert r.status_code == 400, (data, r.status_code, r.text[:2000])
        page = Dom(r.text)
        assert page.text("refund-error"), data
        assert page.attr("refund-error", "role") == "alert"
        unchanged(refunded_cents)
        return page

    bad_amounts = ("abc", "1.234", "0", "0.00", "-5", "1e3", "12,50", "١٢", "５", ".5", "5.",
                   "1.2.3", "NaN", "50.01", "5000", "99999999999999999999999999999999",
                   "<script>alert(1)</script>")
    for amount in bad_amounts:
        page = refused(refund_form(amount), 0)
        # What was typed is offered again, as text.
        assert page.by_id["refund-amount"]["attrs"]["value"] == amount
    r = b.post(path, {"csrf_token": token, **refund_form("<script>alert(1)</script>")})
    assert "<script>alert(1)</script>" not in r.text
    assert Dom(r.text).text("refund-error") == (
        "The amount must be a plain number with at most two decimals, such as 12.50.")
    refused(refund_form("1.00", reason="other"), 0)  # other needs a detail
    refused(refund_form("1.00", reason="other", reason_detail="   "), 0)
    refused(refund_form("1.00", reason="bogus"), 0)
    refused(refund_form("1.00", method="bogus"), 0)
    refused({"amount": "1.00", "refund_method": "balance"}, 0)  # no reason
    refused(refund_form("1.00", reason="other", reason_detail="x" * 501), 0)
    assert balance(client)["balance_cents"] == 0

    # Partial, to the balance.
    r = b.post(path, {"csrf_token": token, **refund_form("12.50")})
    assert (r.status_code, r.headers["location"]) == (
        303, f"/console/orders/{order_id}?notice=refund_requested")
    after = query(client, order_id)
    assert (after["status"], after["refunded_cents"]) == ("completed", 1250)
    page = b.page(r.headers["location"])
    assert page.text("notice") == "Refund requested."
    assert len(page.rows("refunds", "refund-id")) == 1
    assert page.text("order-refunded") == "¥12.50 CNY"
    assert balance(client)["balance_cents"] == 1250
    # More than is left: refused, and it says so.
    page = refused(refund_form("37.51"), 1250)
    assert "3751" in page.text("refund-error") or "37.51" in page.text("refund-error")
    refused(refund_form("1.00", reason="other"), 1250)
    # "other" with a detail is fine.
    r = b.post(path, {"csrf_token": token, **refund_form(
        "2.50", reason="other", reason_detail="Asked twice")})
    assert r.status_code == 303, r.text
    unchanged(1500)
    # The rest (blank amount).
    r = b.post(path, {"csrf_token": token, **refund_form("")})
    assert r.status_code == 303, r.text
    after = query(client, order_id)
    assert (after["status"], after["refunded_cents"]) == ("refunded", 5000)
    assert balance(client)["balance_cents"] == 5000
    page = b.page(f"/console/orders/{order_id}")
    assert len(page.rows("refunds", "refund-id")) == 3
    assert set(page.rows("refunds", "status")) == {"completed"}
    assert "refund-form" not in page
    # Nothing is left: refused, the page says why, nothing changed.
    r = b.post(path, {"csrf_token": token, **refund_form("")})
    assert r.status_code == 400, r.text
    page = Dom(r.text)
    assert page.text("refund-error") and "refund-form" not in page
    unchanged(5000)
    assert balance(client)["balance_cents"] == 5000
    web.check_ledger()


def test_a_deposit_is_not_refundable_from_the_console(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser]) -> None:
    r = shop.test.post("/api/v1/payment/deposit", json={
        "amount": 10_000, "payment_method": "alipay", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text
    order_id = r.json()["order_id"]
    web.wait_for_status(shop.test, order_id, "completed")
    b = browsers(shop.test_key, shop.test_secret)
    page = b.page(f"/console/orders/{order_id}")
    r = b.post(f"/console/orders/{order_id}/refund", {"csrf_token": b.csrf(), **refund_form()})
    assert r.status_code == 400, r.text
    assert Dom(r.text).text("refund-error")
    assert query(shop.test, order_id)["refunded_cents"] == 0
    assert balance(shop.test)["balance_cents"] == 10_000
    assert page.attr("order-status", "data-status") == "completed"
    r = b.get(f"/console/invoices/{order_id}.pdf")
    assert r.status_code < 500


# --- 10. API key rotation ----------------------------------------------------------------------

def test_rotating_the_api_key(web: KassaServer, shop: Merchant,
                              browsers: Callable[..., Browser],
                              clock: Callable[[float], None]) -> None:
    a = browsers(shop.test_key, shop.test_secret)
    b = browsers(shop.test_key, shop.test_secret)
    live = browsers(shop.live_key, shop.live_secret)
    page = a.page("/console/keys")
    assert len(page.with_class("key-hint")) == 1
    options = [e["attrs"]["value"] for e in page.elements
               if e["tag"] == "option" and "grace-seconds" in e["within"]]
    assert options == ["0", "3600", "86400"]

    # Grace 0: the old key stops at once; the new one works; the mode's other sessions end.
    r = a.post("/console/keys/rotate",
               a.form("/console/keys", "rotate-key-form", grace_seconds="0"))
    assert r.status_code == 200, r.text
    page = Dom(r.text)
    new_key, new_secret = page.text("new-api-key"), page.text("new-api-secret")
    assert new_key.startswith("zr_test_") and new_secret.startswith("sk_")
    assert new_key != shop.test_key and new_secret != shop.test_secret
    assert not api_works(shop.test)
    with web.client(new_key, new_secret) as c1:
        assert api_works(c1)
        assert a.signed_in()
        assert not b.signed_in()
        assert live.signed_in() and api_works(shop.live)
        # Shown once: never again.
        r = a.get("/console/keys")
        assert r.status_code == 200 and new_secret not in r.text and new_key not in r.text
        page = Dom(r.text)
        assert "new-key" not in page
        [hint] = page.with_class("key-hint")
        assert hint["text"].strip() == f"{new_key[:8]}…{new_key[-4:]}"
        # Sign-in follows: the old key no more, the new one yes.
        assert browsers().login(shop.test_key, shop.test_secret).status_code == 401
        c = browsers(new_key, new_secret)

        # Grace 3600: both work for an hour, then only the new one.
        r = a.post("/console/keys/rotate",
                   a.form("/console/keys", "rotate-key-form", grace_seconds="3600"))
        assert r.status_code == 200, r.text
        page = Dom(r.text)
        key2, secret2 = page.text("new-api-key"), page.text("new-api-secret")
        assert [h["text"].strip() for h in page.with_class("key-hint")] == [
            f"{key2[:8]}…{key2[-4:]}", f"{new_key[:8]}…{new_key[-4:]}"]  # newest first
        expiries = [e["text"].strip() for e in page.elements if e["tag"] == "td"
                    and "keys" in e["within"]][2::3]
        assert expiries[0] == "—" and expiries[1].endswith(" UTC"), expiries
        assert a.signed_in() and not c.signed_in()  # again, the others are signed out
        with web.client(key2, secret2) as c2:
            assert api_works(c1) and api_works(c2)
            clock(3599)
            assert api_works(c1)
            clock(2)
            assert not api_works(c1)
            assert api_works(c2)
    assert api_works(shop.live)


@pytest.mark.parametrize("grace", [
    None, "", "5", "-1", "abc", "3600.0", " 3600", "0x0", "86401", "604800",
    "99999999999999999999999", "3600\x00",
    # str.isdigit() says yes to each of these, int() to some; none is a value offered.
    pytest.param("²", id="superscript-2"),
    pytest.param("³⁶⁰⁰", id="superscript-3600"),
    pytest.param("٣٦٠٠", id="arabic-indic-3600"),
    pytest.param("３６００", id="fullwidth-3600"),
])
def test_a_grace_period_not_offered_is_refused(web: KassaServer, shop: Merchant,
                                               browsers: Callable[..., Browser],
                                               grace: str | None) -> None:
    a = browsers(shop.test_key, shop.test_secret)
    b = browsers(shop.test_key, shop.test_secret)
    data = a.form("/console/keys", "rotate-key-form")
    if grace is None:
        del data["grace_seconds"]
    else:
        data["grace_seconds"] = grace
    r = a.post("/console/keys/rotate", data)
    # (A form with a NUL byte is no form at all: it has no CSRF token either.)
    assert_problem(r, 403, "forbidden") if grace and "\x00" in grace else assert_problem(
        r, 400, "bad_request")
    assert "new-key" not in Dom(r.text)
    # Nothing rotated: the key works, the other session is still in, one key is listed.
    assert api_works(shop.test) and b.signed_in()
    assert len(a.page("/console/keys").with_class("key-hint")) == 1


# --- 11. webhook secret rotation ---------------------------------------------------------------

def test_rotating_the_webhook_secret_takes_a_live_session(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser]) -> None:
    before = shop.live.get("/api/v1/webhooks/secret").json()
    t = browsers(shop.test_key, shop.test_secret)
    page = t.page("/console/keys")
    assert "secret-live-only" in page and "rotate-secret-form" not in page
    r = t.post("/console/webhook-secret/rotate", {"csrf_token": t.csrf()})
    assert r.status_code == 403, r.text
    assert_problem(r, 403, "forbidden")
    assert "new-webhook-secret" not in Dom(r.text)
    assert shop.live.get("/api/v1/webhooks/secret").json() == before
    assert before["webhook_secret"] not in r.text

    live = browsers(shop.live_key, shop.live_secret)
    page = live.page("/console/keys")
    assert "rotate-secret-form" in page and "secret-live-only" not in page
    assert before["webhook_secret"] not in live.get("/console/keys").text
    r = live.post("/console/webhook-secret/rotate",
                  live.form("/console/keys", "rotate-secret-form"))
    assert r.status_code == 200, r.text
    shown = Dom(r.text).text("new-webhook-secret")
    after = shop.live.get("/api/v1/webhooks/secret").json()
    assert shown == after["webhook_secret"] != before["webhook_secret"]
    assert after["previous_secret_expires_at"] is not None
    assert "new-webhook-secret" not in live.page("/console/keys")
    assert shown not in live.get("/console/keys").text
    # The API key is untouched, and the test session too.
    assert api_works(shop.live) and api_works(shop.test) and t.signed_in()


def test_a_rotation_form_sent_twice_rotates_once(web: KassaServer, shop: Merchant,
                                                browsers: Callable[..., Browser]) -> None:
    """A reload of the page that showed a new key sends its form again: the key (or the
    webhook secret) is not rotated a second time, and the key shown stays the one in use."""
    a = browsers(shop.test_key, shop.test_secret)
    form = a.form("/console/keys", "rotate-key-form", grace_seconds="0")
    assert form["generation"].isdigit()
    r = a.post("/console/keys/rotate", form)
    assert r.status_code == 200, r.text
    new_key, new_secret = Dom(r.text).text("new-api-key"), Dom(r.text).text("new-api-secret")
    again = a.post("/console/keys/rotate", form)
    page = assert_problem(again, 409, "bad_request")
    assert "rotated since" in page.text("problem-message")
    assert new_secret not in again.text
    with web.client(new_key, new_secret) as client:
        assert api_works(client)
    # A form from the page as it is now rotates again.
    r = a.post("/console/keys/rotate", a.form("/console/keys", "rotate-key-form",
                                              grace_seconds="0"))
    assert r.status_code == 200 and Dom(r.text).text("new-api-key") != new_key

    live = browsers(shop.live_key, shop.live_secret)
    form = live.form("/console/keys", "rotate-secret-form")
    assert form["version"].isdigit()
    r = live.post("/console/webhook-secret/rotate", form)
    assert r.status_code == 200, r.text
    shown = Dom(r.text).text("new-webhook-secret")
    again = live.post("/console/webhook-secret/rotate", form)
    assert_problem(again, 409, "bad_request")
    assert shop.live.get("/api/v1/webhooks/secret").json()["webhook_secret"] == shown


def test_the_language_links_of_a_forms_answer_lead_to_a_page(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser]) -> None:
    """A page that answers a POST (a refused refund, a new key) is at the POST's URL; its
    language links lead to the page the form was on, never to a URL that takes no GET."""
    b = browsers(shop.test_key, shop.test_secret)
    [(_, order_id)] = paid_tasks(web, shop.test, 5000)
    r = b.post(f"/console/orders/{order_id}/refund",
               b.form(f"/console/orders/{order_id}", "refund-form", amount="abc"))
    assert r.status_code == 400 and "refund-error" in Dom(r.text)
    links = [e["attrs"]["href"] for e in Dom(r.text).elements
             if e["tag"] == "a" and e["attrs"].get("hreflang")]
    assert links == [f"/console/orders/{order_id}?lang=en", f"/console/orders/{order_id}?lang=zh"]
    assert b.get(links[1]).status_code == 200

    r = b.post("/console/keys/rotate", b.form("/console/keys", "rotate-key-form",
                                              grace_seconds="3600"))
    assert r.status_code == 200
    links = [e["attrs"]["href"] for e in Dom(r.text).elements
             if e["tag"] == "a" and e["attrs"].get("hreflang")]
    assert links == ["/console/keys?lang=en", "/console/keys?lang=zh"]
    for link in links:
        assert b.get(link).status_code == 200

    r = b.post("/console/webhooks", b.form("/console/webhooks", "endpoint-form",
                                           url="ftp://example.com/hook"))
    assert r.status_code == 400
    links = [e["attrs"]["href"] for e in Dom(r.text).elements
             if e["tag"] == "a" and e["attrs"].get("hreflang")]
    assert links == ["/console/webhooks?lang=en", "/console/webhooks?lang=zh"]
    assert b.get(links[1]).status_code == 200


# --- 12. webhook endpoints and resends ---------------------------------------------------------

def test_endpoints_and_resends_from_the_console(web: KassaServer, shop: Merchant,
                                                browsers: Callable[..., Browser]) -> None:
    receiver = Receiver().up()
    b = browsers(shop.test_key, shop.test_secret)
    token = b.csrf()
    endpoint_id = None
    try:
        page = b.page("/console/webhooks")
        assert page.rows("endpoints", "endpoint-id") == []
        for url in ("ftp://x", "", "javascript:alert(1)", "http://", "not a url",
                    "http://127.0.0.1:9/" + "a" * 3000, "https://[::1/"):
            r = b.post("/console/webhooks", {"csrf_token": token, "url": url,
                                             "description": "Nope"})
            assert r.status_code == 400, (url, r.status_code, r.text[:2000])
            page = Dom(r.text)
            assert page.text("endpoint-error"), url
            assert shop.test.get("/api/v1/webhooks/endpoints").json()["data"] == []
        r = b.post("/console/webhooks", {"csrf_token": token, "url": "ftp://<b>x</b>"})
        assert r.status_code == 400 and "<b>x</b>" not in r.text

        r = b.post("/console/webhooks", {"csrf_token": token, "url": receiver.url,
                                         "description": "Orders in"})
        assert (r.status_code, r.headers["location"]) == (
            303, "/console/webhooks?notice=endpoint_created")
        [endpoint] = shop.test.get("/api/v1/webhooks/endpoints").json()["data"]
        endpoint_id = endpoint["endpoint_id"]
        assert (endpoint["url"], endpoint["description"], endpoint["status"]) == (
            receiver.url, "Orders in", "enabled")
        page = b.page(r.headers["location"])
        assert page.text("notice") == "Endpoint added."
        assert page.rows("endpoints", "endpoint-id") == [endpoint_id]

        (_, order_id), = paid_tasks(web, shop.test, 5000)
        first = events_of(shop.test, order_id)[0]["event_id"]
        d = wait_delivery(shop.test, first, endpoint_id, lambda d: d["status"] == "succeeded")
        assert d["attempt_count"] == 1
        receiver.wait_for_events(2)
        page = b.page("/console/webhooks")
        assert first in page.rows("events", "event-id")
        assert f"/console/events/{first}/resend" in [
            f["attrs"]["action"] for f in page.with_class("resend-form")]

        # Resend (to every target).
        r = b.post(f"/console/events/{first}/resend", {"csrf_token": token})
        assert (r.status_code, r.headers["location"]) == (
            303, "/console/webhooks?notice=resent")
        d = wait_delivery(shop.test, first, endpoint_id,
                          lambda d: d["status"] == "succeeded" and d["attempt_count"] == 2)
        assert len([x for x in receiver.received() if x.json["event_id"] == first]) == 2
        assert b.page(r.headers["location"]).text("notice") == "Event queued to be sent again."

        # Resend to the one endpoint, from its delivery log.
        page = b.page(f"/console/webhooks/{endpoint_id}")
        assert page.text("endpoint-url") == receiver.url
        assert first in page.rows("deliveries", "event-id")
        [form] = [f for f in page.forms_posting_to(f"/console/events/{first}/resend")]
        assert {e["attrs"].get("name"): e["attrs"].get("value") for e in form["inputs"]
                if e["attrs"].get("name")} == {"csrf_token": token, "endpoint_id": endpoint_id}
        r = b.post(f"/console/events/{first}/resend",
                   {"csrf_token": token, "endpoint_id": endpoint_id})
        assert (r.status_code, r.headers["location"]) == (
            303, f"/console/webhooks/{endpoint_id}?notice=resent")
        wait_delivery(shop.test, first, endpoint_id,
                      lambda d: d["status"] == "succeeded" and d["attempt_count"] == 3)
        page = b.page(f"/console/webhooks/{endpoint_id}")
        attempts = [e for e in page.elements if e["tag"] == "li" and "data-attempt" in e["attrs"]]
        assert len(attempts) >= 3
        for bad in ("evt_zz", "evt_" + "0" * 20):
            assert_problem(b.post(f"/console/events/{bad}/resend", {"csrf_token": token}),
                           404, "not_found")
        assert_problem(b.post(f"/console/events/{first}/resend",
                              {"csrf_token": token, "endpoint_id": "we_" + "0" * 20}),
                       404, "not_found")
        assert_problem(b.get("/console/webhooks", starting_after="evt_zz"), 400, "bad_request")
        assert_problem(b.get(f"/console/webhooks/{endpoint_id}", starting_after="!"), 400,
                       "bad_request")
        assert_problem(b.get(f"/console/webhooks/{endpoint_id}",
                             starting_after="wd_" + "0" * 20), 400, "bad_request")

        # Live mode takes only https to a public address.
        live = browsers(shop.live_key, shop.live_secret)
        for url in ("http://127.0.0.1:9/hook", "https://localhost/hook",
                    "https://127.0.0.1/hook"):
            r = live.post("/console/webhooks", {"csrf_token": live.csrf(), "url": url})
            assert r.status_code == 400, (url, r.text[:2000])
            assert Dom(r.text).text("endpoint-error")
        assert shop.live.get("/api/v1/webhooks/endpoints").json()["data"] == []
    finally:
        if endpoint_id is not None:
            shop.test.delete(f"/api/v1/webhooks/endpoints/{endpoint_id}")
        receiver.down()


# --- 13. every page in Chinese -------------------------------------------------------------------

def _english_only() -> list[re.Pattern[str]]:
    """Each English console text whose Chinese differs, as a pattern of a whole text."""
    english, chinese = MESSAGES["en"], MESSAGES["zh"]
    keys = [k for k in CONSOLE_MESSAGES["en"]] + [
        k for k in english if k.startswith(("status.", "method.")) or k == "language"]
    patterns = []
    for key in keys:
        text = english[key]
        if chinese.get(key) == text:
            continue
        parts = re.split(r"\{[a-z_]+\}", text)
        patterns.append(re.compile(".+".join(re.escape(p) for p in parts)))
    return patterns


def test_every_chinese_message_is_there() -> None:
    assert set(CONSOLE_MESSAGES["en"]) - set(CONSOLE_MESSAGES["zh"]) == set()
    assert set(CONSOLE_MESSAGES["zh"]) - set(CONSOLE_MESSAGES["en"]) == set()
    for key, text in CONSOLE_MESSAGES["en"].items():
        placeholders = set(re.findall(r"\{([a-z_]+)\}", text))
        assert set(re.findall(r"\{([a-z_]+)\}", CONSOLE_MESSAGES["zh"][key])) == placeholders


def test_every_page_in_chinese(web: KassaServer, shop: Merchant,
                               browsers: Callable[..., Browser]) -> None:
    client = shop.test
    receiver = Receiver().up()
    r = client.post("/api/v1/webhooks/endpoints",
                    json={"url": receiver.url, "description": "订单通知"})
    endpoint_id = r.json()["endpoint_id"]
    try:
        (_, order_id), (_, other_id) = [
            (t, o) for t, o in paid_tasks(web, client, 5000, 3000)]
        refunded(client, order_id, amount=1000, refund_method="balance",
                 reason="quality_issue")
        refunded(client, other_id, refund_method="balance")
        r = client.post("/api/v1/payment/deposit", json={
            "amount": 10_000, "payment_method": "wechat", "return_url": RETURN_URL})
        deposit_id = r.json()["order_id"]
        web.wait_for_status(client, deposit_id, "completed")
        [pending] = pending_orders(client, 1)
        first = events_of(client, order_id)[0]["event_id"]
        wait_delivery(client, first, endpoint_id, lambda d: d["status"] == "succeeded")
        pages_made = []

        english_only = _english_only()

        def english_left(page: Dom) -> list[str]:
            """Texts of the page that are an English console message (a missing Chinese
            one falls back to English)."""
            pieces = [p.strip() for text in page.texts for p in re.split("[·←]", text)]
            pieces += [str(e["attrs"][a]) for e in page.elements
                       for a in ("aria-label", "title", "alt", "placeholder")
                       if e["attrs"].get(a)]
            return [p for p in pieces if p and any(pat.fullmatch(p) for pat in english_only)]

        def chinese(r: httpx.Response, status: int = 200) -> Dom:
            assert r.status_code == status, (r.url, r.status_code, r.text[:2000])
            page = Dom(r.text)
            assert page.html_lang() == "zh", r.url
            assert english_left(page) == [], str(r.url)
            pages_made.append(str(r.url))
            return page

        fresh = browsers()
        page = chinese(fresh.get("/console/login", lang="zh"))
        assert page.text("login-submit") == "登录"
        r = fresh.login(shop.test_key, shop.test_secret + "x")
        assert chinese(r, 401).text("login-error") == "API 密钥与 Secret 不匹配任何账户。"

        b = browsers(shop.test_key, shop.test_secret)
        page = chinese(b.get("/console/overview", lang="zh"))  # remembered from here on
        assert page.text("mode-badge") == "测试模式"
        for path in (*(f"/console/{p}" for p in PAGES), f"/console/orders/{order_id}",
                     f"/console/orders/{other_id}", f"/console/orders/{deposit_id}",
                     f"/console/orders/{pending}", f"/console/webhooks/{endpoint_id}",
                     "/console/orders?status=refunded", "/console/transactions?type=refund",
                     f"/console/orders/{order_id}?notice=refund_requested",
                     "/console/webhooks?notice=resent",
                     "/console/webhooks?notice=endpoint_created"):
            chinese(b.get(path))
        assert b.page("/console/overview").html_lang() == "zh"
        # Problem pages, form errors, and what a POST shows.
        page = chinese(b.get("/console/orders/ord_00000000000000000000"), 404)
        assert page.text("problem-message") == "该账户下没有此内容。"
        chinese(b.get("/console/transactions", type="bogus"), 400)
        chinese(b.post("/console/keys/rotate", {"csrf_token": "x"}), 403)
        page = chinese(b.post(f"/console/orders/{order_id}/refund",
                              {"csrf_token": b.csrf(), **refund_form("abc")}), 400)
        assert page.text("refund-error") == "金额须为普通数字，最多两位小数，例如 12.50。"
        r = b.post("/console/webhooks", {"csrf_token": b.csrf(), "url": "ftp://x"})
        assert r.status_code == 400 and Dom(r.text).html_lang() == "zh"
        page = chinese(b.post("/console/keys/rotate", b.form(
            "/console/keys", "rotate-key-form", grace_seconds="86400")))
        assert page.text("new-api-secret").startswith("sk_")
        live = browsers(shop.live_key, shop.live_secret)
        chinese(live.get("/console/keys", lang="zh"))
        page = chinese(live.post("/console/webhook-secret/rotate",
                                 live.form("/console/keys", "rotate-secret-form")))
        assert page.text("new-webhook-secret")
        assert len(pages_made) >= 25
        # English again with ?lang=en (where the same check finds English, of course).
        page = b.page(f"/console/orders/{order_id}", lang="en")
        assert page.html_lang() == "en"
        assert {"Sign out", "Overview", "Refunds", "Quality issue", "Refund"} <= set(
            english_left(page))
    finally:
        client.delete(f"/api/v1/webhooks/endpoints/{endpoint_id}")
        receiver.down()


# --- keys on their way out, sessions bound to their key, forms sent twice ------------------

def rotated(r: httpx.Response) -> tuple[str, str]:
    assert r.status_code == 200, r.text
    page = Dom(r.text)
    return page.text("new-api-key"), page.text("new-api-secret")


def test_a_rotated_key_opens_no_session_and_rotating_again_ends_its_grace(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser]) -> None:
    a = browsers(shop.test_key, shop.test_secret)
    key1, secret1 = rotated(a.post("/console/keys/rotate", a.form(
        "/console/keys", "rotate-key-form", grace_seconds="86400")))
    assert api_works(shop.test)  # in its grace period for the API...
    r = browsers().login(shop.test_key, shop.test_secret)  # ... but not for the console
    assert r.status_code == 401 and session_cookie(r) is None
    assert Dom(r.text).text("login-error") == (
        "This API key has been rotated. Sign in with the new one.")
    # Rotating again (now) ends every older key at once, a day's grace or not.
    key2, secret2 = rotated(a.post("/console/keys/rotate", a.form(
        "/console/keys", "rotate-key-form", grace_seconds="0")))
    assert not api_works(shop.test)
    with web.client(key1, secret1) as c1, web.client(key2, secret2) as c2:
        assert not api_works(c1) and api_works(c2)
    assert a.signed_in()  # the rotating session goes on with the newest key


def test_a_session_lasts_no_longer_than_its_key(web: KassaServer, shop: Merchant,
                                                browsers: Callable[..., Browser],
                                                clock: Callable[[float], None]) -> None:
    """A key ended otherwise than from this session (here by the service itself) ends the
    sessions opened with it when it stops working."""
    b = browsers(shop.test_key, shop.test_secret)
    principal = web.db.write_sync(
        lambda conn: accounts.resolve_key(conn, web.ctx, shop.test_key))
    assert principal is not None
    web.db.write_sync(lambda conn: accounts.rotate_api_key(
        conn, web.ctx, principal=principal, grace_seconds=60))
    clock(59)
    assert b.signed_in()
    clock(2)
    assert not b.signed_in() and not api_works(shop.test)


def test_a_rotation_asks_for_the_secret_again(web: KassaServer, shop: Merchant,
                                              browsers: Callable[..., Browser]) -> None:
    """A stolen session cookie alone makes no API key or webhook secret of its own."""
    a = browsers(shop.test_key, shop.test_secret)
    for wrong in ("", "sk_wrong", shop.live_secret, shop.test_secret + "x", "s" * 201):
        r = a.post("/console/keys/rotate", a.form("/console/keys", "rotate-key-form",
                                                  grace_seconds="0", api_secret=wrong))
        assert r.status_code == 403, (wrong, r.text)
        page = Dom(r.text)
        assert "Nothing was rotated" in page.text("rotate-error")
        assert "new-api-key" not in page and (not wrong or wrong not in r.text)
        assert api_works(shop.test)
    live = browsers(shop.live_key, shop.live_secret)
    before = shop.live.get("/api/v1/webhooks/secret").json()
    r = live.post("/console/webhook-secret/rotate", live.form(
        "/console/keys", "rotate-secret-form", api_secret=shop.test_secret))
    assert r.status_code == 403 and "new-webhook-secret" not in Dom(r.text)
    assert shop.live.get("/api/v1/webhooks/secret").json() == before


def test_the_demo_accounts_published_key_cannot_be_rotated(
        web: KassaServer, browsers: Callable[..., Browser]) -> None:
    """Anyone may sign in with the seed's sandbox key; none may take it from the others."""
    web.db.write_sync(lambda conn: accounts.ensure_demo_account(conn, web.ctx))
    demo = browsers(accounts.DEMO_TEST_KEY, accounts.DEMO_TEST_SECRET)
    r = demo.post("/console/keys/rotate", demo.form("/console/keys", "rotate-key-form",
                                                    grace_seconds="0"))
    page = assert_problem(r, 400, "bad_request")
    assert "cannot be rotated" in page.text("problem-message")
    with web.client(accounts.DEMO_TEST_KEY, accounts.DEMO_TEST_SECRET) as client:
        assert api_works(client)
    assert demo.signed_in()


def test_a_refund_form_sent_twice_refunds_once(web: KassaServer, shop: Merchant,
                                               browsers: Callable[..., Browser]) -> None:
    """A double click or a reload sends the same form again: one refund. A form shown
    again is a new refund; the same form with another amount is refused."""
    (_, order_id), = paid_tasks(web, shop.test, 5000)
    b = browsers(shop.test_key, shop.test_secret)
    page_path, path = f"/console/orders/{order_id}", f"/console/orders/{order_id}/refund"
    form = b.form(page_path, "refund-form", amount="10.00", reason="quality_issue",
                  refund_method="balance")
    for _ in range(2):
        r = b.post(path, form)
        assert (r.status_code, r.headers["location"]) == (
            303, f"{page_path}?notice=refund_requested")
    assert query(shop.test, order_id)["refunded_cents"] == 1000
    assert len(Dom(b.get(page_path).text).rows("refunds", "refund-id")) == 1
    r = b.post(path, b.form(page_path, "refund-form", amount="10.00",
                            reason="quality_issue", refund_method="balance"))
    assert r.status_code == 303
    assert query(shop.test, order_id)["refunded_cents"] == 2000
    r = b.post(path, {**form, "amount": "5.00"})
    assert r.status_code == 400 and "refund-error" in Dom(r.text)
    assert query(shop.test, order_id)["refunded_cents"] == 2000


def test_ended_sessions_are_swept_at_any_sign_in(web: KassaServer, shop: Merchant,
                                                 browsers: Callable[..., Browser],
                                                 clock: Callable[[float], None]) -> None:
    browsers(shop.test_key, shop.test_secret)
    assert len(stored_sessions(web, shop.account_id)) == 1
    clock(web.settings.console_idle_seconds + 1)
    other = web.merchant(name="Another Sweeper")
    browsers(other.test_key, other.test_secret)
    assert stored_sessions(web, shop.account_id) == []


def test_sign_ins_and_rotations_are_logged_without_secrets(
        web: KassaServer, shop: Merchant, browsers: Callable[..., Browser],
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kassa.console"):
        assert browsers().login(shop.test_key, "sk_wrong_" + shop.test_secret
                                ).status_code == 401
        a = browsers(shop.test_key, shop.test_secret)
        key, secret = rotated(a.post("/console/keys/rotate", a.form(
            "/console/keys", "rotate-key-form", grace_seconds="3600")))
    lines = [r.getMessage() for r in caplog.records if r.name == "kassa.console"]
    assert any("sign-in refused" in line for line in lines), lines
    assert any(f"sign-in: account {shop.account_id}, test mode" in line for line in lines)
    assert any(f"API key of account {shop.account_id} was rotated" in line
               and "3600 s" in line for line in lines), lines
    for secret_text in (shop.test_key, shop.test_secret, key, secret):
        assert not any(secret_text in line for line in lines)


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KassaServer]:
    """A server whose API caches key lookups for a minute, as in production (SQLite)."""
    tmp = tmp_path_factory.mktemp("console-cached")
    with own_database_url("sqlite", tmp) as url:
        srv = KassaServer(make_settings(tmp, url, auth_cache_seconds=60.0)).start()
        try:
            yield srv
        finally:
            srv.stop()


def test_the_api_does_not_take_a_rotated_key_from_its_cache(cached: KassaServer) -> None:
    shop = cached.merchant()
    assert api_works(shop.test)  # looked up, cached for a minute
    b = Browser(cached)
    try:
        assert b.login(shop.test_key, shop.test_secret).status_code == 303
        key1, secret1 = rotated(b.post("/console/keys/rotate", b.form(
            "/console/keys", "rotate-key-form", grace_seconds="0")))
        assert not api_works(shop.test)  # forgotten by the process that rotated it
        # A key rotated elsewhere with a grace shorter than the cache's minute: cached no
        # longer than it works.
        principal = cached.db.write_sync(
            lambda conn: accounts.resolve_key(conn, cached.ctx, key1))
        assert principal is not None
        cached.db.write_sync(lambda conn: accounts.rotate_api_key(
            conn, cached.ctx, principal=principal, grace_seconds=30))
        with cached.client(key1, secret1) as c1:
            assert api_works(c1)
            cached.ctx.clock.advance(31)
            try:
                assert not api_works(c1)
            finally:
                cached.ctx.clock.advance(-31)
    finally:
        b.close()
