"""SSRF (SPEC §7): a live-mode webhook reaches only public https addresses, in every
spelling of an address, by name (checked again before every attempt, so a DNS answer
that changes after registration can't steer it inside) and through redirects.

DNS is played by a fake resolver on a server of this module's own (no real DNS query
is ever made). A public name is registered only where no event can be sent to it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kassa.core.urls import UrlError
from kassa.webhooks.sender import post_event
from kassa.webhooks.ssrf import Target, check_target, parse_networks
from tests.conftest import own_database_url
from tests.support.factories import assert_error
from tests.support.harness import KassaServer, Merchant, make_settings
from tests.support.processes import wait_until

PUBLIC = "93.184.216.34"  # never connected to: every test that resolves to it sends nothing
PUBLIC_2 = "93.184.216.35"


class FakeDNS:
    """host -> addresses; an unknown host fails like NXDOMAIN. Records every question."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {
            "localhost": ["127.0.0.1"],
            "public.example": [PUBLIC],
            "hooks.example": [PUBLIC],
            "other.example": [PUBLIC_2],
            "internal.example": ["10.1.2.3"],
            "mixed.example": [PUBLIC, "127.0.0.1"],
            "v6-loopback.example": ["::1"],
            "mapped.example": ["::ffff:169.254.169.254"],
            "evil.example": ["10.0.0.5"],
            "metadata.google.internal": ["169.254.169.254"],
        }
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        try:
            return list(self.answers[host])
        except KeyError:
            raise OSError(f"fake DNS: no such name {host!r}") from None


@pytest.fixture(scope="module")
def ssrf(backend: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[KassaServer, FakeDNS]]:
    """A server of its own (own database) whose DNS is a FakeDNS."""
    tmp = tmp_path_factory.mktemp(f"kassa-ssrf-{backend}")
    with own_database_url(backend, tmp) as url:
        srv = KassaServer(make_settings(tmp, url)).start()
        dns = FakeDNS()
        srv.ctx.resolver = dns
        try:
            yield srv, dns
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def live_merchant(ssrf: tuple[KassaServer, FakeDNS]) -> Merchant:
    """A merchant whose live mode never records an event (so nothing is ever sent)."""
    return ssrf[0].merchant()


def create(client: httpx.Client, url: str, **fields: Any) -> httpx.Response:
    return client.post("/api/v1/webhooks/endpoints", json={"url": url, **fields})


def delete(client: httpx.Client, endpoint_id: str) -> None:
    r = client.delete(f"/api/v1/webhooks/endpoints/{endpoint_id}")
    assert r.status_code == 200, r.text


REFUSED_IN_LIVE_MODE = [
    "http://public.example/hook",  # not https (the name itself is public)
    "https://127.0.0.1/",
    "https://localhost/",
    "https://2130706433/",  # 127.0.0.1, decimal
    "https://0x7f000001/",  # hex
    "https://0177.0.0.1/",  # octal first part
    "https://127.1/",  # short form
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "https://[::ffff:7f00:1]/",  # IPv4-mapped, in hex
    "https://10.0.0.1/",
    "https://172.16.0.1/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://100.100.100.200/",  # Alibaba Cloud metadata
    "https://100.64.0.1/",  # carrier-grade NAT
    "https://[fe80::1]/",
    "https://224.0.0.1/",  # multicast
    "https://0.0.0.0/",
    "https://[fc00::1]/",
    "https://[::]/",
    "https://0/",  # 0.0.0.0, one number
    "https://127.0.0.1./",  # trailing dot
    "https://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 around 169.254.169.254
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://internal.example/hook",  # DNS: 10.1.2.3
    "https://mixed.example/hook",  # DNS: one public, one loopback address
    "https://v6-loopback.example/",  # DNS: ::1
    "https://mapped.example/",  # DNS: ::ffff:169.254.169.254
    "https://nxdomain.example/",  # doesn't resolve
]


@pytest.mark.parametrize("url", REFUSED_IN_LIVE_MODE)
def test_live_endpoint_refuses_internal_targets(ssrf: tuple[KassaServer, FakeDNS],
                                                live_merchant: Merchant, url: str) -> None:
    r = create(live_merchant.live, url)
    if r.status_code == 201:
        delete(live_merchant.live, r.json()["endpoint_id"])
    error = assert_error(r, 400, "validation_error")
    assert [d["field"] for d in error["details"]] == ["url"], error
    assert live_merchant.live.get("/api/v1/webhooks/endpoints").json()["data"] == []


def test_live_endpoint_accepts_a_public_name(ssrf: tuple[KassaServer, FakeDNS],
                                             live_merchant: Merchant) -> None:
    _, dns = ssrf
    asked = len(dns.asked)
    r = create(live_merchant.live, "https://public.example/hooks/kassa")
    assert r.status_code == 201, r.text
    endpoint_id = r.json()["endpoint_id"]
    try:
        assert dns.asked[asked:] == ["public.example"]  # checked with its DNS answer
        # An internal URL can't be patched in either; the endpoint keeps its URL.
        for url in ("https://10.0.0.1/", "https://internal.example/", "http://public.example/"):
            r = live_merchant.live.patch(f"/api/v1/webhooks/endpoints/{endpoint_id}",
                                         json={"url": url})
            error = assert_error(r, 400, "validation_error")
            assert [d["field"] for d in error["details"]] == ["url"], error
        r = live_merchant.live.get(f"/api/v1/webhooks/endpoints/{endpoint_id}")
        assert r.json()["url"] == "https://public.example/hooks/kassa"
        r = live_merchant.live.patch(f"/api/v1/webhooks/endpoints/{endpoint_id}",
                                     json={"url": "https://other.example/x"})
        assert r.status_code == 200, r.text
        assert r.json()["url"] == "https://other.example/x"
    finally:
        delete(live_merchant.live, endpoint_id)


def test_test_mode_allows_http_and_loopback(ssrf: tuple[KassaServer, FakeDNS],
                                            live_merchant: Merchant) -> None:
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]:9/"):
        r = create(live_merchant.test, url)
        assert r.status_code == 201, (url, r.text)
        assert r.json()["url"] == url
        delete(live_merchant.test, r.json()["endpoint_id"])
    # Still a URL, though.
    assert_error(create(live_merchant.test, "ftp://127.0.0.1/"), 400, "validation_error")
    # And never the operator's network or a metadata service, in any spelling.
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
                "http://2852039166/", "http://[::ffff:a9fe:a9fe]/", "http://192.168.0.1/"):
        assert_error(create(live_merchant.test, url), 400, "validation_error")


class Listener:
    """A bare TCP listener on 127.0.0.1 that counts the connections made to it (any
    connection: an https attempt would never get as far as an HTTP request)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def test_dns_rebinding_after_registration_is_refused(ssrf: tuple[KassaServer, FakeDNS]
                                                     ) -> None:
    srv, dns = ssrf
    merchant = srv.merchant()
    listener = Listener()
    dns.answers["rebind.example"] = [PUBLIC]
    endpoint_id = None
    try:
        r = create(merchant.live, f"https://rebind.example:{listener.port}/hook",
                   events=["task.cancelled"])
        assert r.status_code == 201, r.text
        endpoint_id = r.json()["endpoint_id"]
        # The name now points at this machine, where a listener waits.
        dns.answers["rebind.example"] = ["127.0.0.1"]
        asked = len(dns.asked)

        # A live event: a live task (no payment, so no channel needed), cancelled.
        r = merchant.live.post("/api/v1/tasks", json={
            "task_id": "rebind-task", "title": "Live task", "amount": 5000,
            "currency": "CNY", "dispatch": False})
        assert r.status_code == 201, r.text
        r = merchant.live.post("/api/v1/tasks/rebind-task/cancel", json={})
        assert r.status_code == 200, r.text

        def attempted() -> dict[str, Any] | None:
            r = merchant.live.get("/api/v1/webhooks/events", params={"type": "task.cancelled"})
            assert r.status_code == 200, r.text
            events = r.json()["data"]
            deliveries = [d for e in events for d in e["deliveries"]]
            if deliveries and len(deliveries[0]["attempts"]) >= 2:
                return dict(deliveries[0])
            return None

        delivery = wait_until(attempted, timeout=10, message="no attempts logged")
        assert delivery["endpoint_id"] == endpoint_id
        assert delivery["status"] in {"pending", "failed"}, delivery
        assert delivery["last_status_code"] is None
        assert delivery["last_error"].startswith("refused"), delivery
        for attempt in delivery["attempts"]:
            assert attempt["error"].startswith("refused"), attempt
            assert "127.0.0.1" in attempt["error"], attempt
            assert attempt["status_code"] is None and attempt["response_excerpt"] is None
        assert "rebind.example" in dns.asked[asked:]  # looked up again before sending
        assert listener.connections == 0
    finally:
        if endpoint_id is not None:
            delete(merchant.live, endpoint_id)
        listener.close()


# --- the checks themselves, without a server ----------------------------------------------------

def check(url: str, *, live: bool, dns: FakeDNS | None = None, exempt: tuple[str, ...] = ()
          ) -> Target:
    return asyncio.run(check_target(url, live=live, resolver=dns or FakeDNS(),
                                    exempt=parse_networks(exempt)))


@pytest.mark.parametrize("url", REFUSED_IN_LIVE_MODE)
def test_check_target_refuses_in_live_mode(url: str) -> None:
    with pytest.raises(UrlError):
        check(url, live=True)


@pytest.mark.parametrize(("url", "address"), [
    ("http://127.0.0.1:8080/hook", "127.0.0.1"),
    ("http://localhost/hook", "127.0.0.1"),
    ("http://2130706433/", "127.0.0.1"),
    ("http://0x7f000001/", "127.0.0.1"),
    ("http://127.1/", "127.0.0.1"),
    ("http://[::1]:9/", "::1"),
    ("http://[::ffff:7f00:1]/", "127.0.0.1"),
    ("http://public.example/", PUBLIC),
])
def test_check_target_allows_loopback_and_http_in_test_mode(url: str, address: str) -> None:
    assert check(url, live=False).address == address


@pytest.mark.parametrize("url", [
    "https://internal.example/",  # resolves to 10.1.2.3
    "http://10.0.0.1/", "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/", "http://0xa9fe.0xa9fe/", "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/", "http://[fe80::1]/", "http://[fc00::1]/",
])
def test_check_target_refuses_private_and_metadata_addresses_in_test_mode_too(url: str
                                                                            ) -> None:
    """Test keys are easy to come by (the demo's are published): test mode may reach the
    merchant's own machine (loopback) and public addresses, never the operator's network
    or a cloud's metadata service."""
    with pytest.raises(UrlError):
        check(url, live=False)


def test_check_target_sends_to_the_resolved_address() -> None:
    target = check("https://public.example/hooks?x=1", live=True)
    assert target == Target(url="https://public.example/hooks?x=1", scheme="https",
                            host="public.example", port=443, address=PUBLIC)
    target = check("https://other.example:8443/", live=True)
    assert (target.host, target.port, target.address) == ("other.example", 8443, PUBLIC_2)
    target = check("http://localhost:9/", live=False)
    assert (target.scheme, target.port, target.address) == ("http", 9, "127.0.0.1")


def test_check_target_asks_dns_every_time() -> None:
    dns = FakeDNS()
    dns.answers["flip.example"] = [PUBLIC]
    assert check("https://flip.example/", live=True, dns=dns).address == PUBLIC
    dns.answers["flip.example"] = ["127.0.0.1"]
    with pytest.raises(UrlError, match="internal"):
        check("https://flip.example/", live=True, dns=dns)
    assert dns.asked == ["flip.example", "flip.example"]


def test_allowed_networks_exempt_an_operators_own_addresses() -> None:
    assert check("https://internal.example/", live=True,
                 exempt=("10.0.0.0/8",)).address == "10.1.2.3"
    assert check("https://10.9.8.7/", live=True, exempt=("10.0.0.0/8",)).address == "10.9.8.7"
    with pytest.raises(UrlError):
        check("https://192.168.1.1/", live=True, exempt=("10.0.0.0/8",))
    with pytest.raises(UrlError):  # still https only
        check("http://10.9.8.7/", live=True, exempt=("10.0.0.0/8",))
    # An exemption lets in only its own network, whatever the spelling or the name.
    for url in ("https://localhost/", "https://metadata.google.internal/",
                "https://0x7f000001/", "https://[::ffff:a9fe:a9fe]/", "https://mixed.example/"):
        with pytest.raises(UrlError):
            check(url, live=True, exempt=("10.0.0.0/8",))


# --- redirects: every hop is checked -------------------------------------------------------------

BODY = b'{"event_id":"evt_x","event":"payment.completed"}'
HEADERS = {"Content-Type": "application/json", "X-Event-Id": "evt_x",
           "X-Signature": "sha256=" + "ab" * 32}


def deliver(replies: dict[str, httpx.Response], url: str = "https://hooks.example/x"
            ) -> tuple[Any, list[httpx.Request]]:
    """post_event through a mock transport: `replies` by the name in the Host header."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return replies.get(request.headers["host"], httpx.Response(200, text="reached"))

    async def run() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await post_event(client, url, body=BODY, headers=HEADERS, live=True,
                                    resolver=FakeDNS(), exempt=(), timeout=5.0)

    return asyncio.run(run()), seen


def redirect(status: int, location: str) -> httpx.Response:
    return httpx.Response(status, headers={"Location": location})


@pytest.mark.parametrize("location", [
    "https://127.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "https://evil.example/steal",  # DNS: 10.0.0.5
    "https://[::ffff:a9fe:a9fe]/",
    "http://other.example/x",  # public, but not https
])
def test_a_redirect_to_an_internal_target_is_refused(location: str) -> None:
    result, seen = deliver({"hooks.example": redirect(302, location)})
    assert len(seen) == 1
    assert result.error is not None and result.error.startswith("refused"), result
    assert not result.succeeded


def test_redirects_to_public_names_are_followed_with_the_same_request() -> None:
    result, seen = deliver({"hooks.example": redirect(307, "https://other.example/y?z=1"),
                            "other.example": httpx.Response(200, text="ok")})
    assert (result.status_code, result.error, result.response_excerpt) == (200, None, "ok")
    assert result.url == "https://other.example/y?z=1"
    assert len(seen) == 2
    # Each request went to the checked address, with the name in Host and for TLS.
    assert [(r.url.host, r.headers["host"], r.extensions.get("sni_hostname")) for r in seen] == [
        (PUBLIC, "hooks.example", "hooks.example"), (PUBLIC_2, "other.example", "other.example")]
    assert [r.url.path for r in seen] == ["/x", "/y"]
    assert all(r.method == "POST" and r.content == BODY for r in seen)
    for name, value in HEADERS.items():
        assert [r.headers[name] for r in seen] == [value, value]


def test_the_request_goes_to_the_checked_address_with_the_name_as_host() -> None:
    result, seen = deliver({"hooks.example:8443": httpx.Response(204)},
                           url="https://hooks.example:8443/in?a=1")
    assert (result.status_code, result.error) == (204, None)
    (request,) = seen
    assert str(request.url) == f"https://{PUBLIC}:8443/in?a=1"
    assert request.headers["host"] == "hooks.example:8443"
    assert request.extensions["sni_hostname"] == "hooks.example"


def test_a_relative_redirect_is_checked_too() -> None:
    result, seen = deliver({"hooks.example": redirect(302, "//evil.example/x")})
    assert len(seen) == 1 and result.error is not None and result.error.startswith("refused")


def test_at_most_three_redirects() -> None:
    result, seen = deliver({"hooks.example": redirect(301, "https://hooks.example/again")})
    assert len(seen) == 4
    assert result.error == "more than 3 redirects" and not result.succeeded


def test_a_first_target_that_resolves_inside_is_never_requested() -> None:
    result, seen = deliver({}, url="https://evil.example/x")
    assert seen == []
    assert result.error is not None and result.error.startswith("refused"), result
    assert result.status_code is None
