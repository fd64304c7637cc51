"""CryptoGatewayUpstream (seed 002, USDT on BSC) on the wire: what it sends is checked against
the recorded requests in wire/ and its HMAC headers against this file's own reading of the seed
(never kassa.core.signing); what it is answered is served from the recorded replies through
httpx.MockTransport."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from kassa.channels.base import (
    InboundNotification,
    NotificationRejected,
    UpstreamError,
    UpstreamOrder,
    UpstreamPayment,
    UpstreamRefundRequest,
    UpstreamRefused,
    UpstreamState,
    UpstreamStatus,
)
from kassa.channels.cryptogw import CryptoGatewayUpstream
from tests.channels.recorded import (
    FakeUpstream,
    assert_no_secret,
    exception_texts,
    json_reply,
    recorded_body,
    recorded_reply,
    recording,
    run,
    url_without_query,
)

BASE = "https://gateway.example.com"
API_KEY = "ak_5c1e9d7f3a2b4860"
SECRET = "sk_9f2d4b6a8c0e1f3a5b7d9e1c3a5f7b9d"
OTHER_SECRET = "sk_0000000000000000aaaaaaaaaaaaaaaa"
REFERENCE = "KS7Q2W8E5R3T1Y0U4M6N9B02"
GATEWAY_ID = "5104887808"
PAY_URL = "https://zaepe.com/pay/377bcf79-c7af-438c-bd04-822254e218a7"
NOTIFY_URL = "https://kassa.example.com/notify/cryptogw"
RETURN_URL = "https://shop.example.com/paid"
NOW = 1756198910  # a pinned wall clock (seconds)

ORDER = UpstreamOrder(reference=REFERENCE, amount=7100, currency="USDT", payment_method="usdt",
                      description="Photograph the storefront", notify_url=NOTIFY_URL,
                      return_url=RETURN_URL)


# --- seed 002's signature, written from its text (SPEC §9) ------------------------------------
# X-Signature = hex HMAC-SHA256 keyed with the secret, over
#               X-Timestamp + "\n" + X-Nonce + "\n" + the raw request body.

def gateway_signature(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def test_the_tests_own_signer_is_hmac_sha256_over_the_three_lines() -> None:
    body = b'{"order_no":"Pay1678886400000"}'
    assert gateway_signature("secret", "1700000000", "abc", body) == (
        "83c9a7148591adbc2e2d26c1313fbce46af2f446badd8122fbbaf7be042aa873")


# --- helpers ----------------------------------------------------------------------------------

def gateway(fake: FakeUpstream, *, now: float | None = None) -> CryptoGatewayUpstream:
    if now is None:
        return CryptoGatewayUpstream(base_url=BASE + "/", api_key=API_KEY, secret=SECRET,
                                     client=fake.client())
    return CryptoGatewayUpstream(base_url=BASE + "/", api_key=API_KEY, secret=SECRET,
                                 client=fake.client(), now=lambda: now)


def assert_signed(request: httpx.Request, *, now: int | None = None) -> str:
    """The seed's headers, the signature checked on the raw bytes sent; returns the nonce."""
    headers = request.headers
    assert headers["content-type"].startswith("application/json")
    assert headers["x-api-key"] == API_KEY
    timestamp = headers["x-timestamp"]
    assert timestamp.isdigit()
    if now is None:
        assert abs(int(timestamp) - time.time()) <= 5
    else:
        assert int(timestamp) == now
    nonce = headers["x-nonce"]
    assert len(nonce) >= 16
    assert headers["x-signature"] == gateway_signature(SECRET, timestamp, nonce,
                                                       request.content)
    return nonce


def assert_no_credentials(exc: BaseException) -> None:
    texts = exception_texts(exc)
    assert_no_secret(texts, SECRET)
    assert_no_secret(texts, API_KEY)


def query_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {**recorded_body("cryptogw_query_paid.json")["data"], **changes}
    return data


def query_reply(**changes: Any) -> httpx.Response:
    return json_reply(200, {**recorded_body("cryptogw_query_paid.json"),
                            "data": query_data(**changes)})


# --- create: POST /v1/payment -----------------------------------------------------------------

def test_create_posts_signed_json_and_maps_the_answer() -> None:
    recorded = recording("cryptogw_create_ok.json")["request"]
    fake = FakeUpstream(recorded_reply("cryptogw_create_ok.json"))

    payment = run(gateway(fake).create_payment(ORDER))

    request = fake.only_request
    assert request.method == recorded["method"] == "POST"
    assert url_without_query(request) == recorded["url"]
    body = json.loads(request.content)
    assert body == recorded["json"]
    assert body["amount"] == "71.00"  # a decimal string, never a number
    assert_signed(request)
    assert payment == UpstreamPayment(trade_no=GATEWAY_ID, pay_url=PAY_URL, qr_code=PAY_URL,
                                      quote="71.04")


def test_every_request_has_its_own_nonce() -> None:
    fake = FakeUpstream(recorded_reply("cryptogw_create_ok.json"),
                        recorded_reply("cryptogw_create_ok.json"),
                        recorded_reply("cryptogw_query_paid.json"))
    upstream = gateway(fake)
    run(upstream.create_payment(ORDER))
    run(upstream.create_payment(ORDER))
    run(upstream.query(REFERENCE))
    nonces = [assert_signed(request) for request in fake.requests]
    assert len(nonces) == 3
    assert len(set(nonces)) == 3


def test_a_pinned_clock_is_the_timestamp() -> None:
    fake = FakeUpstream(recorded_reply("cryptogw_create_ok.json"))
    run(gateway(fake, now=NOW + 0.9).create_payment(ORDER))
    assert_signed(fake.only_request, now=NOW)


def test_product_name_is_cut_to_32_characters() -> None:
    description = "拍摄店面照片 Photograph the storefront at 5 Main Street, then the street"
    fake = FakeUpstream(recorded_reply("cryptogw_create_ok.json"))
    run(gateway(fake).create_payment(dataclasses.replace(ORDER, description=description)))
    product_name = json.loads(fake.only_request.content)["product_name"]
    assert 0 < len(product_name) <= 32
    assert description.startswith(product_name)
    assert_signed(fake.only_request)


def test_redirect_url_is_left_out_without_a_return_url() -> None:
    fake = FakeUpstream(recorded_reply("cryptogw_create_ok.json"))
    run(gateway(fake).create_payment(dataclasses.replace(ORDER, return_url=None)))
    body = json.loads(fake.only_request.content)
    expected = {k: v for k, v in recording("cryptogw_create_ok.json")["request"]["json"].items()
                if k != "redirect_url"}
    assert body == expected


def test_10003_is_a_refusal_carrying_the_gateways_message() -> None:
    fake = FakeUpstream(recorded_reply("cryptogw_error_10003.json"))
    with pytest.raises(UpstreamRefused) as caught:
        run(gateway(fake).create_payment(ORDER))
    assert "Invalid parameter `currency`: currency does not exist" in str(caught.value)
    assert caught.value.retry_allowed is False


def test_10001_is_an_upstream_error_not_a_refusal() -> None:
    fake = FakeUpstream(recorded_reply("cryptogw_unauthorized_10001.json"))
    with pytest.raises(UpstreamError) as caught:
        run(gateway(fake).create_payment(ORDER))
    assert not isinstance(caught.value, UpstreamRefused)
    assert caught.value.retry_allowed is True
    assert_no_credentials(caught.value)


@pytest.mark.parametrize("reply", [
    json_reply(200, {"message": "OK", "data": recorded_body("cryptogw_create_ok.json")["data"]}),
    json_reply(200, {"code": True, "message": "OK"}),
    json_reply(200, {"code": "10000", "message": "OK",
                     "data": recorded_body("cryptogw_create_ok.json")["data"]}),
    json_reply(200, {"code": 10000.0, "message": "OK",
                     "data": recorded_body("cryptogw_create_ok.json")["data"]}),
    json_reply(200, {"code": 10000, "message": "OK"}),  # OK without data
    json_reply(200, [10000, "OK"]),
    json_reply(200, None),
    httpx.Response(502, content=b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                   headers={"Content-Type": "text/html"}),
], ids=["no code", "code true", "code text", "code float", "no data", "array", "null",
        "html 502"])
def test_a_reply_without_a_numeric_code_is_an_upstream_error(reply: httpx.Response) -> None:
    fake = FakeUpstream(reply)
    with pytest.raises(UpstreamError) as caught:
        run(gateway(fake).create_payment(ORDER))
    assert not isinstance(caught.value, UpstreamRefused)


def test_create_connect_error_is_an_upstream_error() -> None:
    fake = FakeUpstream(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(UpstreamError) as caught:
        run(gateway(fake).create_payment(ORDER))
    assert not isinstance(caught.value, UpstreamRefused)
    assert_no_credentials(caught.value)


# --- query: POST /v1/payment/query ------------------------------------------------------------

def test_query_posts_the_order_no_signed_and_maps_a_paid_order() -> None:
    recorded = recording("cryptogw_query_paid.json")["request"]
    fake = FakeUpstream(recorded_reply("cryptogw_query_paid.json"))

    status = run(gateway(fake).query(REFERENCE))

    request = fake.only_request
    assert request.method == recorded["method"] == "POST"
    assert url_without_query(request) == recorded["url"]
    assert json.loads(request.content) == recorded["json"]
    assert_signed(request)
    assert status == UpstreamStatus(reference=REFERENCE, state=UpstreamState.PAID,
                                    trade_no=GATEWAY_ID, amount=7100, currency="USDT")


@pytest.mark.parametrize(("state", "expected"), [
    (1, UpstreamState.PENDING), (2, UpstreamState.PAID), (3, UpstreamState.CLOSED),
    (4, UpstreamState.CLOSED), (5, UpstreamState.REFUNDED)])
def test_query_maps_every_known_state(state: int, expected: UpstreamState) -> None:
    fake = FakeUpstream(query_reply(state=state))
    status = run(gateway(fake).query(REFERENCE))
    assert status == UpstreamStatus(reference=REFERENCE, state=expected, trade_no=GATEWAY_ID,
                                    amount=7100, currency="USDT")


@pytest.mark.parametrize("state", [9, 0, "2", True, None], ids=["9", "0", "'2'", "true", "null"])
def test_query_unknown_state_is_an_error_never_success(state: Any) -> None:
    fake = FakeUpstream(query_reply(state=state))
    with pytest.raises(UpstreamError) as caught:
        run(gateway(fake).query(REFERENCE))
    assert not isinstance(caught.value, UpstreamRefused)


def test_query_not_found() -> None:
    fake = FakeUpstream(recorded_reply("cryptogw_not_found_10004.json"))
    status = run(gateway(fake).query(REFERENCE))
    assert status == UpstreamStatus(reference=REFERENCE, state=UpstreamState.NOT_FOUND)
    assert json.loads(fake.only_request.content) == {"order_no": REFERENCE}


def test_query_answer_about_another_order_is_an_error() -> None:
    fake = FakeUpstream(query_reply(order_no="KS0000000000000000000099"))
    with pytest.raises(UpstreamError, match="KS0000000000000000000099"):
        run(gateway(fake).query(REFERENCE))


def test_query_amount_that_is_not_one_is_an_error() -> None:
    fake = FakeUpstream(query_reply(amount=71.0))
    with pytest.raises(UpstreamError):
        run(gateway(fake).query(REFERENCE))


def test_refund_is_refused_without_asking() -> None:
    fake = FakeUpstream()
    request = UpstreamRefundRequest(reference=REFERENCE, trade_no=GATEWAY_ID,
                                    refund_id="ref_7Q2W8E5R3T1Y0U4M6N9B", amount=7100,
                                    currency="USDT")
    with pytest.raises(UpstreamRefused):
        run(gateway(fake).refund(request))
    assert fake.requests == []


# --- check() ----------------------------------------------------------------------------------

def test_check_passes_when_the_probe_order_is_not_found() -> None:
    fake = FakeUpstream(recorded_reply("cryptogw_not_found_10004.json"))
    text = run(gateway(fake).check())
    assert "credentials accepted" in text
    assert_no_secret(text, SECRET)
    assert_no_secret(text, API_KEY)
    request = fake.only_request
    assert url_without_query(request) == f"{BASE}/v1/payment/query"
    assert_signed(request)


def test_check_reports_rejected_credentials() -> None:
    fake = FakeUpstream(recorded_reply("cryptogw_unauthorized_10001.json"))
    with pytest.raises(UpstreamError) as caught:
        run(gateway(fake).check())
    assert "credentials rejected" in str(caught.value)
    assert_no_credentials(caught.value)


def test_check_connection_refused_is_an_upstream_error() -> None:
    fake = FakeUpstream(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(UpstreamError) as caught:
        run(gateway(fake).check())
    assert "credentials rejected" not in str(caught.value)
    assert_no_credentials(caught.value)


def test_repr_never_shows_the_key_or_the_secret() -> None:
    text = repr(gateway(FakeUpstream()))
    assert BASE in text
    assert_no_secret(text, SECRET)
    assert_no_secret(text, API_KEY)


# --- notifications ----------------------------------------------------------------------------

def notification_body(**changes: Any) -> bytes:
    body = {**recording("cryptogw_notify_paid.json")["body"], **changes}
    return json.dumps(body, separators=(",", ":")).encode()


def signed_post(body: bytes, *, secret: str = SECRET, timestamp: int = NOW,
                method: str = "POST") -> InboundNotification:
    nonce = secrets.token_hex(16)
    return InboundNotification(
        method=method, query=b"",
        headers={"content-type": "application/json", "x-timestamp": str(timestamp),
                 "x-nonce": nonce,
                 "x-signature": gateway_signature(secret, str(timestamp), nonce, body)},
        body=body)


def receiver() -> CryptoGatewayUpstream:
    """Kassa receiving the notification a few seconds after it was signed."""
    return gateway(FakeUpstream(), now=NOW + 4)


PAID = UpstreamStatus(reference=REFERENCE, state=UpstreamState.PAID, trade_no=GATEWAY_ID,
                      amount=7100, currency="USDT")


def test_a_genuine_notification_verifies() -> None:
    verified = receiver().verify_notification(signed_post(notification_body()))
    assert verified.status == PAID


@pytest.mark.parametrize("skew", [-300, 300])
def test_a_notification_at_the_edge_of_the_window_verifies(skew: int) -> None:
    upstream = gateway(FakeUpstream(), now=NOW)
    notification = signed_post(notification_body(), timestamp=NOW + skew)
    assert upstream.verify_notification(notification).status == PAID


def tampered() -> InboundNotification:
    genuine = signed_post(notification_body())
    return InboundNotification(method="POST", query=b"", headers=genuine.headers,
                               body=notification_body(amount="7100.00"))


def without_header(name: str) -> InboundNotification:
    genuine = signed_post(notification_body())
    headers = {k: v for k, v in genuine.headers.items() if k != name}
    return InboundNotification(method="POST", query=b"", headers=headers, body=genuine.body)


REJECTED: dict[str, Callable[[], InboundNotification]] = {
    "tampered body": tampered,
    "stale timestamp": lambda: signed_post(notification_body(), timestamp=NOW - 3600),
    "just outside the window": lambda: signed_post(notification_body(), timestamp=NOW - 301),
    "future timestamp": lambda: signed_post(notification_body(), timestamp=NOW + 3600),
    "wrong secret": lambda: signed_post(notification_body(), secret=OTHER_SECRET),
    "GET": lambda: signed_post(notification_body(), method="GET"),
    "no x-timestamp": lambda: without_header("x-timestamp"),
    "no x-nonce": lambda: without_header("x-nonce"),
    "no x-signature": lambda: without_header("x-signature"),
    "array body": lambda: signed_post(b"[1,2]"),
    "string body": lambda: signed_post(b'"paid"'),
    "not JSON": lambda: signed_post(b"order_no=KS7Q2W8E5R3T1Y0U4M6N9B02&state=2"),
    "unknown state": lambda: signed_post(notification_body(state=9)),
    "state as text": lambda: signed_post(notification_body(state="2")),
    "no order_no": lambda: signed_post(notification_body(order_no="")),
}


@pytest.mark.parametrize("case", REJECTED)
def test_a_notification_that_is_not_genuine_is_rejected(case: str) -> None:
    upstream = gateway(FakeUpstream(), now=NOW)
    with pytest.raises(NotificationRejected):
        upstream.verify_notification(REJECTED[case]())


def test_dedupe_key_is_the_same_for_a_repeat_and_differs_for_another_amount() -> None:
    upstream = receiver()
    first = upstream.verify_notification(signed_post(notification_body()))
    # Sent again: the same event, signed afresh (another nonce, a later timestamp).
    again = upstream.verify_notification(signed_post(notification_body(), timestamp=NOW + 2))
    other = upstream.verify_notification(signed_post(notification_body(amount="71.01")))
    assert first.dedupe_key == again.dedupe_key
    assert other.status.amount == 7101
    assert other.dedupe_key != first.dedupe_key


def test_notification_reply_is_success() -> None:
    upstream = receiver()
    assert upstream.notification_reply(True) == (200, b"success")
    assert upstream.notification_reply(False)[1] != b"success"
