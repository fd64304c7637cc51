"""Two Kassa instances on loopback: B, in test mode, is the upstream; A, in live mode, uses
B's EasyPay (seed 003) and crypto-gateway (seed 002) facades as its upstreams, through a
proxy the fault tests can take down. B's sandbox pays every order it takes after half a
second: that is "the payer paid at B"."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import own_database_url
from tests.facades.epay_shop import EpayCredential, credential
from tests.support.fault_proxy import FaultProxy
from tests.support.harness import (
    KassaServer,
    Merchant,
    make_settings,
)

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a notification sent here is lost
RETURN_URL = "https://shop.example.com/paid"
KASSA = [sys.executable, "-m", "kassa"]


@dataclass
class Pair:
    a: KassaServer  # live mode, upstreams at B (through the proxy)
    b: KassaServer  # test mode, the upstream
    proxy: FaultProxy
    merchant: Merchant  # A's merchant (live keys used)
    shop: Merchant  # the account A has at B
    epay: EpayCredential  # its EasyPay PID/KEY at B
    crypto_key: str
    crypto_secret: str


@pytest.fixture(scope="module")
def pair(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        tmp_b = tmp_path_factory.mktemp(f"upstream-b-{backend}")
        b = KassaServer(make_settings(tmp_b, stack.enter_context(own_database_url(backend, tmp_b)),
                                      sandbox_settle_seconds=0.5,
                                      sandbox_refund_seconds=0.3)).start()
        stack.callback(b.stop)
        shop = b.merchant(tier="enterprise", name="A's account at B")
        epay = credential(shop, "test")
        [crypto] = [c for c in shop.account.protocol_credentials
                    if c.protocol == "cryptogw" and c.mode == "test"]
        proxy = FaultProxy(b.base_url).start()
        stack.callback(proxy.stop)
        tmp_a = tmp_path_factory.mktemp(f"upstream-a-{backend}")
        a = KassaServer(make_settings(
            tmp_a, stack.enter_context(own_database_url(backend, tmp_a)),
            epay_upstream_url=proxy.url, epay_upstream_pid=epay.pid,
            epay_upstream_key=epay.key, cryptogw_upstream_url=proxy.url,
            cryptogw_upstream_api_key=crypto.id, cryptogw_upstream_secret=crypto.secret,
            upstream_timeout_seconds=5.0, upstream_poll_min_seconds=1000.0,
            upstream_poll_max_seconds=1000.0)).start()
        stack.callback(a.stop)
        merchant = a.merchant(tier="enterprise", name="Marketplace on A")
        yield Pair(a=a, b=b, proxy=proxy, merchant=merchant, shop=shop, epay=epay,
                   crypto_key=crypto.id, crypto_secret=crypto.secret)


@pytest.fixture
def live(pair: Pair) -> Iterator[Pair]:
    """The pair as each test finds it: notifications reach A, A does not poll, B is up."""
    s = pair.a.settings
    s.upstream_notify_url = ""
    s.upstream_poll_min_seconds = s.upstream_poll_max_seconds = 1000.0
    max_attempts = s.job_max_attempts
    pair.proxy.down = False
    yield pair
    s.job_max_attempts = max_attempts
    pair.proxy.down = False
    s.upstream_notify_url = ""
    s.upstream_poll_min_seconds = s.upstream_poll_max_seconds = 1000.0
    pair.a.check_ledger()
    pair.b.check_ledger()
