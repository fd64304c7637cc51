"""Key and webhook-secret rotations from two console sessions at the same moment, on
SQLite and PostgreSQL: the account's lock (keys) and the conditional update (secret) let
one through; the other hears it was rotated since. Never two keys without an end."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kassa.accounts import service as accounts
from kassa.accounts.repository import get_account
from tests.support.dom import Dom
from tests.support.harness import KassaServer, make_settings
from tests.web.test_console import Browser

ROUNDS = 5
Post = tuple[Browser, str, dict[str, str]]


@pytest.fixture
def kassa(database_url: str, tmp_path: Path) -> Iterator[KassaServer]:
    srv = KassaServer(make_settings(tmp_path, database_url), run_worker=False).start()
    yield srv
    srv.stop()


def at_once(*posts: Post) -> list[httpx.Response]:
    """Each (browser, path, form) posted from a thread of its own, all released together."""
    barrier = threading.Barrier(len(posts))
    replies: list[httpx.Response | None] = [None] * len(posts)

    def run(n: int) -> None:
        browser, path, form = posts[n]
        barrier.wait()
        replies[n] = browser.post(path, form)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(posts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r is not None for r in replies)
    return [r for r in replies if r is not None]


def rotate_from_two_sessions(server: KassaServer, key: str, secret: str) -> tuple[str, str]:
    """Two sessions of the key rotate it at once (no grace): one new key comes out."""
    a, b = Browser(server), Browser(server)
    try:
        for browser in (a, b):
            assert browser.login(key, secret).status_code == 303
        replies = at_once(*[(x, "/console/keys/rotate",
                             x.form("/console/keys", "rotate-key-form", grace_seconds="0"))
                            for x in (a, b)])
    finally:
        a.close()
        b.close()
    codes = sorted(r.status_code for r in replies)
    # One rotates; the other hears it was rotated since (409), or, when the winner had
    # already ended its session, is sent to sign in (303).
    assert codes[0] == 200 and codes[1] in (303, 409), codes
    page = Dom(next(r for r in replies if r.status_code == 200).text)
    return page.text("new-api-key"), page.text("new-api-secret")


def test_two_sessions_rotating_the_key_at_once_make_one_key(kassa: KassaServer) -> None:
    shop = kassa.merchant()
    key, secret = shop.live_key, shop.live_secret
    for _ in range(ROUNDS):
        key, secret = rotate_from_two_sessions(kassa, key, secret)
        principal = kassa.db.write_sync(
            lambda conn, k=key: accounts.resolve_key(conn, kassa.ctx, k))
        assert principal is not None
        keys = kassa.db.write_sync(lambda conn, p=principal: accounts.key_hints(
            conn, kassa.ctx, principal=p))
        assert [k["expires_at"] for k in keys] == [None], keys  # one key, no end
        with kassa.client(key, secret) as client:
            assert client.get("/api/v1/payment/balance").status_code == 200
    assert shop.live.get("/api/v1/payment/balance").status_code == 401


def test_two_sessions_rotating_the_webhook_secret_at_once_rotate_once(
        kassa: KassaServer) -> None:
    shop = kassa.merchant()

    def version() -> int:
        account = kassa.db.write_sync(lambda conn: get_account(conn, shop.account_id))
        assert account is not None
        return int(account.webhook_secret_version)

    a, b = Browser(kassa), Browser(kassa)
    try:
        for browser in (a, b):
            assert browser.login(shop.live_key, shop.live_secret).status_code == 303
        first = version()
        for n in range(1, ROUNDS + 1):
            replies = at_once(*[(x, "/console/webhook-secret/rotate",
                                 x.form("/console/keys", "rotate-secret-form"))
                                for x in (a, b)])
            assert sorted(r.status_code for r in replies) == [200, 409]
            assert version() == first + n
            shown = Dom(next(r for r in replies if r.status_code == 200).text)
            secret = shop.live.get("/api/v1/webhooks/secret").json()["webhook_secret"]
            assert shown.text("new-webhook-secret") == secret
    finally:
        a.close()
        b.close()
