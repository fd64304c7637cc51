"""EpayUpstream (seed 003, EasyPay) on the wire: what it sends is checked against the recorded
requests in wire/ and signed by this file's own reading of the seed (never kassa.core.signing);
what it is answered is served from the recorded replies through httpx.MockTransport."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import httpx
import pytest

from kassa.channels.base import (
    InboundNotification,
    NotificationRejected,
    UpstreamError,
    UpstreamOrder,
    UpstreamPayment,
    UpstreamRefundRequest,
    UpstreamRefundResult,
    UpstreamRefused,
    UpstreamState,
    UpstreamStatus,
)
from kassa.channels.epay import EpayUpstream
from kassa.cli import _setup_logging
from tests.channels.recorded import (
    FakeUpstream,
    Reply,
    assert_no_secret,
    exception_texts,
    form_fields,
    json_reply,
    query_fields,
    recorded_body,
    recorded_reply,
    recording,
    run,
    unique_fields,
    url_without_query,
)

BASE = "https://zpayz.cn"  # seed 003's 接口地址
PID = "20220726190052"  # seed 003's test merchant (测试商户ID)
KEY = "vg9ZRZN4FOKtDM06UfqH69GDJoG4gGIJ"  # and its test KEY (测试商户密钥)
OTHER_KEY = "0c3f7a9e1b5d2468ace013579bdf2468"
REFERENCE = "KS7Q2W8E5R3T1Y0U4M6N9B01"
TRADE_NO = "2022072619005200001"
NOTIFY_URL = "https://kassa.example.com/notify/epay"
RETURN_URL = "https://shop.example.com/paid"

ORDER = UpstreamOrder(reference=REFERENCE, amount=5000, currency="CNY", payment_method="alipay",
                      description="拍摄店面照片 storefront photo", notify_url=NOTIFY_URL,
                      return_url=RETURN_URL, client_ip="203.0.113.7")
REFUND = UpstreamRefundRequest(reference=REFERENCE, trade_no=TRADE_NO,
                               refund_id="ref_7Q2W8E5R3T1Y0U4M6N9B", amount=1250, currency="CNY")

HTML_503 = (b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n"
            b"<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
            b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


# --- seed 003's signature, written from its text ----------------------------------------------
# 1. every parameter sent or received, sorted by name (a-z, ASCII); sign, sign_type and empty
#    values take no part;
# 2. joined as a=b&c=d, the values NOT url-encoded;
# 3. sign = md5(that string + KEY), lowercase hex.
# Values may be bytes: a sender that is not UTF-8 (GBK) signs the bytes it sends.

def signing_string(params: Mapping[str, str | bytes]) -> bytes:
    kept = sorted(((name, value) for name, value in params.items()
                   if name not in ("sign", "sign_type") and value not in ("", b"")),
                  key=lambda item: item[0])
    return b"&".join(name.encode() + b"=" + (value if isinstance(value, bytes)
                                               else value.encode("utf-8"))
                     for name, value in kept)


def seed_sign(params: Mapping[str, str | bytes], key: str) -> str:
    return hashlib.md5(signing_string(params) + key.encode()).hexdigest()


def test_the_tests_own_signer_follows_the_seed_text() -> None:
    # The seed's submit.php example, parameter for parameter (plus an empty cid: left out).
    example = {"name": "iphone xs Max 一台", "money": "0.03",
               "out_trade_no": "201911914837526544601",
               "notify_url": "http://www.aaa.com/notify_url.php",
               "pid": "201901151314084206659771", "param": "金色 256G",
               "return_url": "http://www.baidu.com", "sign": "28f9583617d9caf66834292b6ab1cc89",
               "sign_type": "MD5", "type": "alipay", "cid": ""}
    assert signing_string(example) == (
        "money=0.03&name=iphone xs Max 一台&notify_url=http://www.aaa.com/notify_url.php"
        "&out_trade_no=201911914837526544601&param=金色 256G&pid=201901151314084206659771"
        "&return_url=http://www.baidu.com&type=alipay").encode()
    assert seed_sign(example, KEY) == "bd396135b550e4744a9b91a720a22833"


# --- helpers ----------------------------------------------------------------------------------

def epay(fake: FakeUpstream, *, use_mapi: bool = True) -> EpayUpstream:
    return EpayUpstream(base_url=BASE + "/", pid=PID, key=KEY,
                        methods=frozenset({"alipay", "wechat"}), use_mapi=use_mapi,
                        client=fake.client())


def order(**changes: Any) -> UpstreamOrder:
    return dataclasses.replace(ORDER, **changes)


def without(fields: Mapping[str, str], *names: str) -> dict[str, str]:
    return {name: value for name, value in fields.items() if name not in names}


def recorded_mapi_form() -> dict[str, str]:
    form: dict[str, str] = recording("epay_mapi_ok.json")["request"]["form"]
    return form


def assert_no_key(exc: BaseException) -> None:
    assert_no_secret(exception_texts(exc), KEY)


# --- create: mapi.php -------------------------------------------------------------------------

def test_create_posts_the_seed_form_to_mapi_and_maps_the_answer() -> None:
    recorded = recording("epay_mapi_ok.json")
    fake = FakeUpstream(recorded_reply("epay_mapi_ok.json"))

    payment = run(epay(fake).create_payment(ORDER))

    request = fake.only_request
    assert request.method == recorded["request"]["method"] == "POST"
    assert url_without_query(request) == recorded["request"]["url"]
    assert request.url.query == b""
    form = form_fields(request)
    # Exactly the seed's parameters, the recorded sign among them, and it checks here too.
    assert form == recorded["request"]["form"]
    assert form["sign"] == seed_sign(form, KEY)
    assert form["sign_type"] == "MD5"
    assert payment == UpstreamPayment(
        trade_no=TRADE_NO, pay_url="https://zpayz.cn/pay/alipay/2022072619005200001/",
        qr_code="https://qr.alipay.com/bax08431example2022072619005200001", quote=None)


@pytest.mark.parametrize(("method", "pay_type"), [("alipay", "alipay"), ("wechat", "wxpay")])
def test_create_sends_the_seeds_pay_type(method: str, pay_type: str) -> None:
    fake = FakeUpstream(recorded_reply("epay_mapi_ok.json"))
    run(epay(fake).create_payment(order(payment_method=method)))
    form = form_fields(fake.only_request)
    assert form["type"] == pay_type
    assert without(form, "type", "sign") == without(recorded_mapi_form(), "type", "sign")
    assert form["sign"] == seed_sign(form, KEY)


@pytest.mark.parametrize(("amount", "money"),
                         [(5000, "50.00"), (5, "0.05"), (567, "5.67"), (100, "1.00"),
                          (123456789, "1234567.89")])
def test_create_sends_money_in_yuan_with_two_places(amount: int, money: str) -> None:
    fake = FakeUpstream(recorded_reply("epay_mapi_ok.json"))
    run(epay(fake).create_payment(order(amount=amount)))
    form = form_fields(fake.only_request)
    assert form["money"] == money
    assert form["sign"] == seed_sign(form, KEY)


@pytest.mark.parametrize("return_url", [RETURN_URL + "?order=1", RETURN_URL + "#done", None])
def test_create_leaves_out_a_return_url_the_seed_does_not_allow(return_url: str | None) -> None:
    fake = FakeUpstream(recorded_reply("epay_mapi_ok.json"))
    run(epay(fake).create_payment(order(return_url=return_url)))
    form = form_fields(fake.only_request)
    assert "return_url" not in form
    assert without(form, "sign") == without(recorded_mapi_form(), "return_url", "sign")
    assert form["sign"] == seed_sign(form, KEY)


def test_create_refusal_carries_the_aggregators_message() -> None:
    fake = FakeUpstream(recorded_reply("epay_mapi_error.json"))
    with pytest.raises(UpstreamRefused) as caught:
        run(epay(fake).create_payment(ORDER))
    assert recorded_body("epay_mapi_error.json")["msg"] in str(caught.value)
    assert caught.value.retry_allowed is False
    assert len(fake.requests) == 1


def test_create_html_503_is_an_upstream_error_not_a_refusal() -> None:
    fake = FakeUpstream(httpx.Response(503, content=HTML_503,
                                       headers={"Content-Type": "text/html"}))
    with pytest.raises(UpstreamError) as caught:
        run(epay(fake).create_payment(ORDER))
    assert not isinstance(caught.value, UpstreamRefused)
    assert caught.value.retry_allowed is True
    assert "503" in str(caught.value)
    assert_no_key(caught.value)


def test_create_connect_error_is_an_upstream_error() -> None:
    fake = FakeUpstream(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(UpstreamError) as caught:
        run(epay(fake).create_payment(ORDER))
    assert not isinstance(caught.value, UpstreamRefused)
    assert "unreachable" in str(caught.value)
    assert_no_key(caught.value)


@pytest.mark.parametrize("reply", [
    {"code": 1, "msg": "下单成功", "trade_no": TRADE_NO},  # nowhere to pay
    {"code": True, "payurl": "https://zpayz.cn/pay/x/"},  # a boolean is no code 1
], ids=["no payurl", "code true"])
def test_create_answer_without_a_usable_payment_is_an_error(reply: dict[str, Any]) -> None:
    fake = FakeUpstream(json_reply(200, reply))
    with pytest.raises(UpstreamError) as caught:
        run(epay(fake).create_payment(ORDER))
    assert not isinstance(caught.value, UpstreamRefused)


# --- create: submit.php link (no mapi) --------------------------------------------------------

def test_without_mapi_create_makes_a_signed_submit_link_and_sends_nothing() -> None:
    fake = FakeUpstream()
    payment = run(epay(fake, use_mapi=False).create_payment(ORDER))

    assert fake.requests == []
    link = urlsplit(payment.pay_url)
    assert (link.scheme, link.netloc, link.path) == ("https", "zpayz.cn", "/submit.php")
    params = unique_fields(link.query)
    # submit.php's parameters: the mapi ones but clientip.
    assert without(params, "sign") == without(recorded_mapi_form(), "clientip", "sign")
    assert params["sign"] == seed_sign(params, KEY)
    assert params["sign_type"] == "MD5"
    assert payment.trade_no is None
    assert payment.qr_code == payment.pay_url


def test_without_mapi_a_link_gets_kassas_own_return_url_when_the_order_has_no_usable_one(
) -> None:
    fake = FakeUpstream()
    payment = run(epay(fake, use_mapi=False).create_payment(
        order(return_url=RETURN_URL + "?x=1")))
    params = unique_fields(urlsplit(payment.pay_url).query)
    assert params["return_url"] == "https://kassa.example.com/"  # submit.php requires one
    assert params["sign"] == seed_sign(params, KEY)
    assert fake.requests == []


@pytest.mark.parametrize("use_mapi", [True, False])
def test_a_non_cny_order_is_refused_without_asking(use_mapi: bool) -> None:
    fake = FakeUpstream()
    with pytest.raises(UpstreamRefused, match="CNY"):
        run(epay(fake, use_mapi=use_mapi).create_payment(order(currency="USD")))
    assert fake.requests == []


# --- query: api.php?act=order -----------------------------------------------------------------

def assert_query_request(fake: FakeUpstream, name: str) -> None:
    recorded = recording(name)["request"]
    request = fake.only_request
    assert request.method == recorded["method"] == "GET"
    assert url_without_query(request) == recorded["url"]
    assert query_fields(request) == recorded["query"]
    assert request.content == b""


def test_query_asks_api_php_and_maps_a_paid_order() -> None:
    fake = FakeUpstream(recorded_reply("epay_order_paid.json"))
    status = run(epay(fake).query(REFERENCE))
    assert_query_request(fake, "epay_order_paid.json")
    assert status == UpstreamStatus(reference=REFERENCE, state=UpstreamState.PAID,
                                    trade_no=TRADE_NO, amount=5000, currency="CNY")


@pytest.mark.parametrize(("recorded", "changes", "state"), [
    ("epay_order_unpaid.json", {}, UpstreamState.PENDING),
    ("epay_order_paid.json", {"status": 2}, UpstreamState.REFUNDED),
    ("epay_order_paid.json", {"status": "1"}, UpstreamState.PAID),  # sent as text
], ids=["0 pending", "2 refunded", "'1' paid"])
def test_query_maps_every_known_status(recorded: str, changes: dict[str, Any],
                                       state: UpstreamState) -> None:
    fake = FakeUpstream(recorded_reply(recorded, **changes))
    status = run(epay(fake).query(REFERENCE))
    assert_query_request(fake, recorded)
    assert status == UpstreamStatus(reference=REFERENCE, state=state, trade_no=TRADE_NO,
                                    amount=5000, currency="CNY")


@pytest.mark.parametrize("status", [7, -1, "TRADE_SUCCESS", None, True],
                         ids=["7", "-1", "TRADE_SUCCESS", "missing", "true"])
def test_query_unknown_status_is_an_error_never_success(status: Any) -> None:
    fake = FakeUpstream(recorded_reply("epay_order_paid.json", status=status))
    with pytest.raises(UpstreamError) as caught:
        run(epay(fake).query(REFERENCE))
    assert not isinstance(caught.value, UpstreamRefused)


def test_query_order_not_found() -> None:
    fake = FakeUpstream(recorded_reply("epay_order_not_found.json"))
    status = run(epay(fake).query(REFERENCE))
    assert_query_request(fake, "epay_order_not_found.json")
    assert status == UpstreamStatus(reference=REFERENCE, state=UpstreamState.NOT_FOUND)


def test_query_answer_about_another_order_is_an_error() -> None:
    fake = FakeUpstream(recorded_reply("epay_order_paid.json",
                                       out_trade_no="KS0000000000000000000099"))
    with pytest.raises(UpstreamError, match="KS0000000000000000000099") as caught:
        run(epay(fake).query(REFERENCE))
    assert not isinstance(caught.value, UpstreamRefused)


def test_query_paid_without_a_readable_amount_is_an_error() -> None:
    fake = FakeUpstream(recorded_reply("epay_order_paid.json", money="50.001"))
    with pytest.raises(UpstreamError):
        run(epay(fake).query(REFERENCE))


# --- refund: api.php?act=refund ---------------------------------------------------------------

def test_refund_posts_to_api_php_act_refund_with_the_refund_id() -> None:
    recorded = recording("epay_refund_ok.json")["request"]
    fake = FakeUpstream(recorded_reply("epay_refund_ok.json"))

    result = run(epay(fake).refund(REFUND))

    request = fake.only_request
    assert request.method == recorded["method"] == "POST"
    assert url_without_query(request) == recorded["url"]
    assert query_fields(request) == recorded["query"] == {"act": "refund"}
    form = form_fields(request)
    assert form == recorded["form"]
    assert form["out_refund_no"] == REFUND.refund_id
    assert form["money"] == "12.50"
    # Code 1: the aggregator took the refund (the result says so by being returned at all).
    assert result == UpstreamRefundResult(upstream_refund_no="R2022072619300000001")


def test_refund_error_is_a_refusal_carrying_the_message() -> None:
    fake = FakeUpstream(recorded_reply("epay_refund_error.json"))
    with pytest.raises(UpstreamRefused) as caught:
        run(epay(fake).refund(REFUND))
    assert recorded_body("epay_refund_error.json")["msg"] in str(caught.value)
    assert len(fake.requests) == 1


# --- check() ----------------------------------------------------------------------------------

def test_check_passes_when_the_probe_order_is_not_found() -> None:
    fake = FakeUpstream(recorded_reply("epay_order_not_found.json"))
    text = run(epay(fake).check())
    assert "credentials accepted" in text
    assert PID in text
    assert_no_secret(text, KEY)
    request = fake.only_request
    assert url_without_query(request) == f"{BASE}/api.php"
    probe = query_fields(request)
    assert without(probe, "out_trade_no") == {"act": "order", "pid": PID, "key": KEY}


def test_check_reports_rejected_credentials_without_the_key() -> None:
    fake = FakeUpstream(recorded_reply("epay_key_rejected.json"))
    with pytest.raises(UpstreamError) as caught:
        run(epay(fake).check())
    assert "credentials rejected" in str(caught.value)
    assert "商户密钥(key)错误" in str(caught.value)
    assert_no_key(caught.value)


def test_repr_never_shows_the_key() -> None:
    upstream = epay(FakeUpstream())
    assert PID in repr(upstream)
    assert_no_secret(repr(upstream), KEY)
    assert_no_secret(str(upstream), KEY)


OPERATIONS: dict[str, Callable[[EpayUpstream], Coroutine[Any, Any, object]]] = {
    "create": lambda upstream: upstream.create_payment(ORDER),
    "query": lambda upstream: upstream.query(REFERENCE),
    "refund": lambda upstream: upstream.refund(REFUND),
    "check": lambda upstream: upstream.check(),
}
FAILURES: dict[str, Callable[[], Reply]] = {
    "html 503": lambda: httpx.Response(503, content=HTML_503,
                                       headers={"Content-Type": "text/html"}),
    "connect error": lambda: httpx.ConnectError("[Errno 111] Connection refused"),
    "timeout": lambda: httpx.ReadTimeout("timed out"),
    "key rejected": lambda: recorded_reply("epay_key_rejected.json"),
    "json not an object": lambda: json_reply(200, ["code", 1]),
    "code true": lambda: json_reply(200, {"code": True, "msg": "ok"}),
}


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_no_failure_puts_the_key_in_an_exception(operation: str, failure: str) -> None:
    fake = FakeUpstream(FAILURES[failure]())
    with pytest.raises(UpstreamError) as caught:
        run(OPERATIONS[operation](epay(fake)))
    assert_no_key(caught.value)


@pytest.mark.parametrize("operation", ["query", "refund"])
def test_an_error_page_echoing_the_request_does_not_put_the_key_in_the_message(
        operation: str) -> None:
    """api.php carries the KEY on the wire (query string for act=order, form for refund, as
    seed 003 shows). A proxy or PHP error page that quotes the request it failed on must not
    carry the KEY into UpstreamError: its message is shown (verify=true answers to merchants,
    logs), and remote.py promises "no URL, no credential in it"."""
    def echo(request: httpx.Request) -> httpx.Response:
        echoed = f"{request.url.raw_path.decode()} {request.content.decode()}"
        return httpx.Response(502, content=f"Bad Gateway: {echoed}".encode(),
                              headers={"Content-Type": "text/plain"})
    fake = FakeUpstream(echo)
    with pytest.raises(UpstreamError) as caught:
        run(OPERATIONS[operation](epay(fake)))
    sent = fake.only_request
    assert KEY in f"{sent.url} {sent.content.decode()}"  # the KEY was on the wire
    assert_no_key(caught.value)


# --- notifications ----------------------------------------------------------------------------

def notification_params(**changes: str) -> dict[str, str]:
    params: dict[str, str] = {**recording("epay_notify_paid.json")["params"], **changes}
    return params


def signed(params: Mapping[str, str], key: str = KEY) -> dict[str, str]:
    return {**params, "sign": seed_sign(params, key), "sign_type": "MD5"}


def encoded(params: Mapping[str, str], quote_via: Callable[..., str] = quote) -> bytes:
    return urlencode(params, quote_via=quote_via).encode("ascii")


def raw_query(params: Mapping[str, str | bytes]) -> bytes:
    """A query with bytes values put on the wire as they are (not percent-encoded)."""
    return b"&".join(name.encode() + b"=" + (value if isinstance(value, bytes)
                                               else quote(value).encode())
                     for name, value in params.items())


def get(query: bytes) -> InboundNotification:
    return InboundNotification(method="GET", query=query, headers={}, body=b"")


def post(body: bytes) -> InboundNotification:
    return InboundNotification(
        method="POST", query=b"",
        headers={"content-type": "application/x-www-form-urlencoded"}, body=body)


PAID = UpstreamStatus(reference=REFERENCE, state=UpstreamState.PAID,
                      trade_no="2019011922001418111011411195", amount=567, currency="CNY")


@pytest.mark.parametrize("quote_via", [quote, quote_plus], ids=["%20", "+"])
def test_a_genuine_notification_verifies_to_paid(quote_via: Callable[..., str]) -> None:
    query = encoded(signed(notification_params()), quote_via)
    # The seed's non-ASCII values travel URL-encoded; the sign is over the decoded values.
    assert query.isascii()
    assert quote("一台").encode() in query
    assert quote("金色").encode() in query

    verified = epay(FakeUpstream()).verify_notification(get(query))

    assert verified.status == PAID


def test_empty_values_take_no_part_in_the_sign() -> None:
    # The seed's rule 1; an order without param is notified with param= (彩虹易支付, Kassa).
    query = encoded(signed(notification_params(param="")))
    assert b"param=&" in query
    verified = epay(FakeUpstream()).verify_notification(get(query))
    assert verified.status == PAID


def test_a_post_form_notification_verifies_like_the_get_query() -> None:
    body = encoded(signed(notification_params()))
    upstream = epay(FakeUpstream())
    by_post = upstream.verify_notification(post(body))
    assert by_post.status == PAID
    assert by_post == upstream.verify_notification(get(body))


def test_uppercase_sign_hex_is_accepted() -> None:
    params = signed(notification_params())
    params["sign"] = params["sign"].upper()
    assert epay(FakeUpstream()).verify_notification(get(encoded(params))).status == PAID


@pytest.mark.parametrize(("trade_status", "state"), [("WAIT_BUYER_PAY", UpstreamState.PENDING),
                                                     ("TRADE_CLOSED", UpstreamState.CLOSED)])
def test_only_trade_success_is_a_payment(trade_status: str, state: UpstreamState) -> None:
    query = encoded(signed(notification_params(trade_status=trade_status)))
    verified = epay(FakeUpstream()).verify_notification(get(query))
    assert verified.status.state is state


def signed_bytes(params: Mapping[str, str | bytes]) -> dict[str, str | bytes]:
    return {**params, "sign": seed_sign(params, KEY), "sign_type": "MD5"}


def encoded_bytes(params: Mapping[str, str | bytes]) -> bytes:
    return "&".join(f"{name}={quote(value)}" for name, value in params.items()).encode()


GBK_PARAM = "金色 256G".encode("gbk")  # not UTF-8: an aggregator that speaks GBK

REJECTED: dict[str, Callable[[], InboundNotification]] = {
    "wrong key": lambda: get(encoded(signed(notification_params(), key=OTHER_KEY))),
    "another pid": lambda: get(encoded(signed(notification_params(pid="20220715225121")))),
    "another pid, its own key": lambda: get(encoded(signed(
        notification_params(pid="20220715225121"), key=OTHER_KEY))),
    "tampered money": lambda: get(encoded({**signed(notification_params()), "money": "567.00"})),
    "missing sign": lambda: get(encoded(without(signed(notification_params()), "sign"))),
    "empty sign": lambda: get(encoded({**signed(notification_params()), "sign": ""})),
    "unknown trade_status": lambda: get(encoded(signed(
        notification_params(trade_status="TRADE_REVIEWING")))),
    "no trade_status": lambda: get(encoded(signed(without(notification_params(),
                                                          "trade_status")))),
    "no out_trade_no": lambda: get(encoded(signed(without(notification_params(),
                                                          "out_trade_no")))),
    "repeated parameter": lambda: get(encoded(signed(notification_params())) + b"&money=5.67"),
    "repeated, conflicting": lambda: get(encoded(signed(notification_params()))
                                         + b"&money=5000.00"),
    "invalid UTF-8": lambda: get(raw_query(signed_bytes({**notification_params(),
                                                         "param": GBK_PARAM}))),
    "percent-encoded invalid UTF-8": lambda: get(encoded_bytes(
        signed_bytes({**notification_params(), "param": GBK_PARAM}))),
}


@pytest.mark.parametrize("case", REJECTED)
def test_a_notification_that_is_not_genuine_is_rejected(case: str) -> None:
    with pytest.raises(NotificationRejected):
        epay(FakeUpstream()).verify_notification(REJECTED[case]())


def test_dedupe_key_is_the_same_for_a_repeat_and_differs_for_another_amount() -> None:
    upstream = epay(FakeUpstream())
    query = encoded(signed(notification_params()))
    first = upstream.verify_notification(get(query))
    again = upstream.verify_notification(get(query))
    reencoded = upstream.verify_notification(get(encoded(signed(notification_params()),
                                                         quote_plus)))
    other = upstream.verify_notification(get(encoded(signed(notification_params(money="5.68")))))
    assert first.dedupe_key == again.dedupe_key == reencoded.dedupe_key
    assert other.status.amount == 568
    assert other.dedupe_key != first.dedupe_key


def test_notification_reply_is_the_seeds_success() -> None:
    upstream = epay(FakeUpstream())
    assert upstream.notification_reply(True) == (200, b"success")
    assert upstream.notification_reply(False)[1] != b"success"


def test_kassa_logs_no_upstream_url_even_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    """The order query carries the KEY in its URL (seed 003), and httpx logs URLs at INFO:
    `kassa serve` and `kassa worker` log through cli._setup_logging, which keeps them out."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    root.handlers.clear()
    try:
        _setup_logging("DEBUG")
        fake = FakeUpstream(recorded_reply("epay_order_paid.json"))
        run(epay(fake).query(REFERENCE))
        assert KEY in str(fake.only_request.url)  # it was on the wire...
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert_no_secret(capsys.readouterr().err, KEY)  # ...and in no log line
