"""Live mode for real (SPEC §5, §8): instance A collects through instance B's EasyPay and
crypto-gateway facades. A payment made at B is seen at A by notification, by A's polling
when notifications are lost, and by a client asking A to verify; refunds travel A -> B and
back; an upstream that is down, a forged, replayed or wrong notification, and a payment for
an expired order each do what a payments engineer expects. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from kassa.db.tables import jobs, orders
from kassa.payments import service as payments
from tests.facades.cryptogw_shop import new_nonce, signature, unix_now
from tests.facades.epay_shop import credential, md5_sign, signed
from tests.support.factories import assert_error
from tests.support.harness import subprocess_env
from tests.upstreams.conftest import KASSA, NOWHERE, RETURN_URL, Pair

pytestmark = pytest.mark.slow


def reference(order_id: str, attempt: int = 1) -> str:
    """The order number A gives B for an attempt, as the README documents it."""
    return f"KS{order_id.removeprefix('ord_').upper()}{attempt:02d}"


def dispatch(p: Pair, method: str = "alipay", amount: int = 5000,
             task_id: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"title": "Photograph the storefront", "amount": amount,
                            "currency": "CNY", "payment_method": method,
                            "return_url": RETURN_URL}
    if task_id is not None:
        body["task_id"] = task_id
    return p.merchant.live.post("/api/v1/tasks", json=body)


def live_order(p: Pair, method: str = "alipay", amount: int = 5000) -> dict[str, Any]:
    r = dispatch(p, method, amount)
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()["payment"]
    assert order["status"] == "pending"
    return order


def query(p: Pair, order_id: str, **params: str) -> dict[str, Any]:
    r = p.merchant.live.get("/api/v1/payment/query", params={"order_id": order_id, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_status(p: Pair, order_id: str, status: str, timeout: float = 15.0
                ) -> dict[str, Any]:
    return p.a.wait_for_status(p.merchant.live, order_id, status, timeout=timeout)


def at_b(p: Pair, out_trade_no: str) -> dict[str, Any]:
    """B's own answer about an order (api.php?act=order, the plain KEY)."""
    r = httpx.get(f"{p.b.base_url}/api.php", params={
        "act": "order", "pid": p.epay.pid, "key": p.epay.key, "out_trade_no": out_trade_no})
    body: dict[str, Any] = r.json()
    return body


def wait_paid_at_b(p: Pair, out_trade_no: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = at_b(p, out_trade_no)
        if body.get("status") == 1:
            return body
        time.sleep(0.1)
    raise AssertionError(f"B never paid {out_trade_no}")


def balances(p: Pair) -> dict[str, Any]:
    r = p.merchant.live.get("/api/v1/payment/balance")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def notify_params(p: Pair, out_trade_no: str, money: str, *, key: str | None = None,
                  pid: str | None = None, trade_no: str = "B-TRADE-1") -> dict[str, str]:
    """A notification as B sends one, signed by the test's own MD5 signer."""
    params = {"pid": pid or p.epay.pid, "trade_no": trade_no, "out_trade_no": out_trade_no,
              "type": "alipay", "name": "Photograph the storefront", "money": money,
              "trade_status": "TRADE_SUCCESS", "param": ""}
    return {**params, "sign": md5_sign(params, key or p.epay.key), "sign_type": "MD5"}


def kassa_cli(p: Pair, *args: str) -> subprocess.CompletedProcess[str]:
    """`kassa …` run by A's operator: A's database and A's upstreams."""
    s = p.a.settings
    env = subprocess_env(s)
    env.update({"KASSA_EPAY_UPSTREAM_URL": s.epay_upstream_url,
                "KASSA_EPAY_UPSTREAM_PID": s.epay_upstream_pid,
                "KASSA_EPAY_UPSTREAM_KEY": p.epay.key,
                "KASSA_CRYPTOGW_UPSTREAM_URL": s.cryptogw_upstream_url,
                "KASSA_CRYPTOGW_UPSTREAM_API_KEY": p.crypto_key,
                "KASSA_CRYPTOGW_UPSTREAM_SECRET": p.crypto_secret})
    return subprocess.run([*KASSA, *args], check=False, env=env, capture_output=True, text=True,
                          timeout=60)


def block_notifications(p: Pair) -> None:
    p.a.settings.upstream_notify_url = NOWHERE


# --- a payment made at B, seen at A -----------------------------------------------------------

def test_alipay_paid_at_b_is_seen_at_a_by_its_notification(live: Pair) -> None:
    order = live_order(live)
    ref = reference(order["order_id"])
    # The payer is sent to B's checkout: the link and the QR code are B's, for B's order.
    assert order["payment_url"].startswith(live.b.base_url + "/checkout/")
    assert order["qr_code"]
    assert at_b(live, ref)["money"] == "50.00"
    done = wait_status(live, order["order_id"], "completed")
    assert done["escrow"]["held_cents"] == 5000
    paid_at_b = at_b(live, ref)
    assert paid_at_b["status"] == 1 and paid_at_b["trade_status"] == "TRADE_SUCCESS"


def test_usdt_paid_at_the_crypto_gateway_is_seen_at_a(live: Pair) -> None:
    order = live_order(live, "usdt", 7100)
    assert order["payment_url"].startswith(live.b.base_url + "/checkout/")
    done = wait_status(live, order["order_id"], "completed")
    assert done["payment_method"] == "usdt" and done["escrow"]["held_cents"] == 7100


def test_polling_completes_an_order_whose_notifications_are_lost(live: Pair) -> None:
    block_notifications(live)
    live.a.settings.upstream_poll_min_seconds = 0.3
    live.a.settings.upstream_poll_max_seconds = 0.5
    order = live_order(live)
    wait_paid_at_b(live, reference(order["order_id"]))
    done = wait_status(live, order["order_id"], "completed", timeout=20)
    assert done["escrow"]["held_cents"] == 5000


def test_a_client_can_ask_for_verification_now(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live, "wechat")
    wait_paid_at_b(live, reference(order["order_id"]))
    time.sleep(0.3)
    assert query(live, order["order_id"])["status"] == "pending"  # nobody told A yet
    assert query(live, order["order_id"], verify="true")["status"] == "completed"


def test_refund_travels_to_b_and_back(live: Pair) -> None:
    order = live_order(live)
    wait_status(live, order["order_id"], "completed")
    r = live.merchant.live.post("/api/v1/payment/refund", json={
        "order_id": order["order_id"], "amount": 2000, "reason": "quality_issue",
        "refund_method": "original"})
    assert r.status_code == 200, r.text
    refund = r.json()
    assert refund["status"] == "processing"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = live.merchant.live.get("/api/v1/payment/transactions",
                                     params={"type": "refund", "limit": 50}).json()
        mine = [t for t in got["data"] if t.get("refund_id") == refund["refund_id"]]
        if mine and mine[0]["status"] == "completed":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"refund {refund['refund_id']} never completed at A")
    assert at_b(live, reference(order["order_id"]))["refund_money"] == "20.00"
    assert query(live, order["order_id"])["escrow"]["held_cents"] == 3000


def test_retry_gets_a_new_link_from_the_upstream_for_the_same_order(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live)
    r = live.merchant.live.post("/api/v1/payment/retry", json={"order_id": order["order_id"]})
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["order_id"] == order["order_id"] and again["status"] == "pending"
    assert again["payment_url"] != order["payment_url"]  # B's second order
    assert again["expires_at"] >= order["expires_at"]
    assert at_b(live, reference(order["order_id"], 2))["code"] == 1
    wait_paid_at_b(live, reference(order["order_id"], 2))
    assert query(live, order["order_id"], verify="true")["status"] == "completed"
    r = live.merchant.live.post("/api/v1/payment/retry", json={"order_id": order["order_id"]})
    assert_error(r, 409, "invalid_order_state")


def test_an_expired_order_can_be_retried_and_then_paid(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live)
    _expire_now(live, order["order_id"])
    assert query(live, order["order_id"])["status"] == "expired"
    r = live.merchant.live.post("/api/v1/payment/retry", json={"order_id": order["order_id"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending"
    wait_paid_at_b(live, reference(order["order_id"], 2))
    assert query(live, order["order_id"], verify="true")["status"] == "completed"


def test_a_live_easypay_facade_order_is_collected_through_the_upstream(live: Pair) -> None:
    """Kassa as an aggregator in live mode: a shop's mapi.php order at A opens B's order, and
    B's payment completes it at A (and credits the shop's balance there)."""
    shop_at_a = credential(live.merchant, "live")
    params = signed({"pid": shop_at_a.pid, "type": "wxpay",
                     "out_trade_no": f"shop{uuid.uuid4().hex[:12]}",
                     "notify_url": "https://shop.example.com/notify", "name": "VIP会员",
                     "money": "30", "clientip": "203.0.113.9"}, shop_at_a.key)
    created = httpx.post(f"{live.a.base_url}/mapi.php", data=params).json()
    assert created["code"] == 1, created
    assert created["payurl"].startswith(live.b.base_url + "/checkout/")
    ref = reference(created["trade_no"])
    assert at_b(live, ref)["money"] == "30.00"
    wait_status(live, created["trade_no"], "completed")
    query_params = {"act": "order", "pid": shop_at_a.pid, "key": shop_at_a.key,
                    "out_trade_no": params["out_trade_no"]}
    assert httpx.get(f"{live.a.base_url}/api.php", params=query_params).json()["status"] == 1
    live.proxy.down = True
    again = signed({**{k: v for k, v in params.items() if k not in ("sign", "sign_type")},
                    "out_trade_no": f"shop{uuid.uuid4().hex[:12]}"}, shop_at_a.key)
    refused = httpx.post(f"{live.a.base_url}/mapi.php", data=again).json()
    assert refused["code"] == "error" and "nothing was created" in refused["msg"]


# --- faults -----------------------------------------------------------------------------------

def test_upstream_down_during_create_is_a_clear_error_and_creates_nothing(live: Pair) -> None:
    live.proxy.down = True
    task_id = str(uuid.uuid4())
    before, refused = balances(live), live.proxy.refused
    r = dispatch(live, task_id=task_id)
    error = assert_error(r, 503, "payment_method_unavailable")
    assert error["retry_allowed"] is True and error["suggested_actions"]
    assert "nothing was created" in error["message"]
    assert live.proxy.refused > refused  # it was asked
    assert_error(live.merchant.live.get(f"/api/v1/tasks/{task_id}"), 404, "task_not_found")
    assert balances(live) == before
    live.proxy.down = False
    assert dispatch(live, task_id=task_id).status_code == 201  # the same request, now fine


def test_upstream_refusing_an_order_is_payment_failed(live: Pair) -> None:
    # B refuses an order number it already holds with another amount: A asks with the same
    # reference only for its own orders, so make B hold one first, for 10 yuan.
    order = live_order(live)
    _expire_now(live, order["order_id"])
    params = {"pid": live.epay.pid, "type": "alipay",
              "out_trade_no": reference(order["order_id"], 2),
              "notify_url": NOWHERE + "/n", "name": "squatter", "money": "10.00",
              "clientip": "127.0.0.1"}
    params["sign"] = md5_sign(params, live.epay.key)
    params["sign_type"] = "MD5"
    squatted = httpx.post(f"{live.b.base_url}/mapi.php", data=params).json()
    assert squatted["code"] == 1, squatted
    r = live.merchant.live.post("/api/v1/payment/retry", json={"order_id": order["order_id"]})
    error = assert_error(r, 502, "payment_failed")
    assert error["retry_allowed"] is False
    assert query(live, order["order_id"])["status"] == "expired"  # unchanged


def test_upstream_down_during_refund_keeps_it_processing_and_retries(live: Pair) -> None:
    order = live_order(live)
    wait_status(live, order["order_id"], "completed")
    live.proxy.down = True
    live.a.settings.job_max_attempts = 1  # an outage outlasts any job's attempts
    refused = live.proxy.refused
    r = live.merchant.live.post("/api/v1/payment/refund", json={
        "order_id": order["order_id"], "amount": 5000, "reason": "task_cancelled",
        "refund_method": "original"})
    assert r.status_code == 200, r.text
    refund_id = r.json()["refund_id"]
    deadline = time.monotonic() + 10
    while live.proxy.refused == refused and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.proxy.refused > refused
    time.sleep(0.5)
    assert query(live, order["order_id"])["status"] == "completed"  # refund in flight
    live.proxy.down = False
    deadline = time.monotonic() + 20
    while query(live, order["order_id"])["status"] != "refunded":
        assert time.monotonic() < deadline, f"refund {refund_id} was not retried"
        time.sleep(0.2)
    assert at_b(live, reference(order["order_id"]))["refund_money"] == "50.00"


def test_forged_and_replayed_notifications_never_credit_twice(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live)
    ref = reference(order["order_id"])
    notify = f"{live.a.base_url}/notify/epay"
    forged = notify_params(live, ref, "50.00", key="not-the-key-at-all-0123456789abc")
    r = httpx.get(notify, params=forged)
    assert r.text == "fail"
    other_pid = notify_params(live, ref, "50.00", pid="10001")
    assert httpx.get(notify, params=other_pid).text == "fail"
    tampered = {**notify_params(live, ref, "50.00"), "money": "0.01"}
    assert httpx.get(notify, params=tampered).text == "fail"
    assert query(live, order["order_id"])["status"] == "pending"

    genuine = notify_params(live, ref, "50.00")
    assert httpx.get(notify, params=genuine).text == "success"
    assert query(live, order["order_id"])["status"] == "completed"
    after_first = balances(live)
    for _ in range(3):  # the upstream may send it again: answered, applied once
        assert httpx.get(notify, params=genuine).text == "success"
    assert balances(live) == after_first
    assert query(live, order["order_id"])["escrow"]["held_cents"] == 5000


def test_a_notification_with_the_wrong_amount_credits_nothing_and_is_flagged(live: Pair
                                                                             ) -> None:
    block_notifications(live)
    order = live_order(live)
    ref = reference(order["order_id"])
    before = balances(live)
    r = httpx.get(f"{live.a.base_url}/notify/epay", params=notify_params(live, ref, "0.50"))
    assert r.text == "success"  # recorded (and flagged): the upstream need not send it again
    assert query(live, order["order_id"])["status"] == "pending"
    assert balances(live) == before
    out = kassa_cli(live, "orders", "reviews")
    assert out.returncode == 0, out.stderr
    [line] = [x for x in out.stdout.splitlines() if order["order_id"] in x]
    assert "amount_mismatch" in line and "reported 50" in line
    review_id = line.split("\t")[0]
    out = kassa_cli(live, "orders", "resolve-review", review_id, "--accept")
    assert out.returncode == 1 and "another amount" in out.stderr
    out = kassa_cli(live, "orders", "resolve-review", review_id, "--reject", "--note", "fraud")
    assert out.returncode == 0, out.stderr
    assert "rejected" in out.stdout
    assert query(live, order["order_id"])["status"] == "pending"


def test_a_payment_for_an_expired_order_goes_to_review(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live)
    ref = reference(order["order_id"])
    _expire_now(live, order["order_id"])
    r = httpx.get(f"{live.a.base_url}/notify/epay", params=notify_params(live, ref, "50.00"))
    assert r.text == "success"
    assert query(live, order["order_id"])["status"] == "expired"  # not silently completed
    out = kassa_cli(live, "orders", "reviews")
    [line] = [x for x in out.stdout.splitlines() if order["order_id"] in x]
    assert "late_payment" in line and "via notification" in line
    out = kassa_cli(live, "orders", "resolve-review", line.split("\t")[0], "--accept")
    assert out.returncode == 0, out.stderr
    done = query(live, order["order_id"])
    assert done["status"] == "completed" and done["escrow"]["held_cents"] == 5000
    out = kassa_cli(live, "orders", "reviews")
    assert order["order_id"] not in out.stdout


def test_crypto_notifications_are_checked_on_the_raw_body(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live, "usdt", 7100)

    body = json.dumps({"id": "ord_b", "order_no": reference(order["order_id"]),
                       "currency": "CNY", "amount": "71.00", "state": 2}).encode()
    ts, nonce = str(unix_now()), new_nonce()
    headers = {"Content-Type": "application/json", "X-Timestamp": ts, "X-Nonce": nonce,
               "X-Signature": signature(live.crypto_secret, ts, nonce, body)}
    url = f"{live.a.base_url}/notify/cryptogw"
    tampered = body.replace(b"71.00", b"710.0")
    assert httpx.post(url, content=tampered, headers=headers).status_code == 400
    old = str(unix_now(-3600))
    stale = {**headers, "X-Timestamp": old,
             "X-Signature": signature(live.crypto_secret, old, nonce, body)}
    assert httpx.post(url, content=body, headers=stale).status_code == 400
    assert query(live, order["order_id"])["status"] == "pending"
    r = httpx.post(url, content=body, headers=headers)
    assert r.status_code == 200 and r.text == "success"
    assert query(live, order["order_id"])["status"] == "completed"


# --- bank transfer and the operator's commands ----------------------------------------------

def test_live_bank_transfer_waits_for_the_operator(live: Pair) -> None:
    r = dispatch(live, "bank_transfer", 99_999)
    assert_error(r, 400, "limit_exceeded")
    order = live_order_processing(live)
    time.sleep(0.3)
    assert query(live, order["order_id"])["status"] == "processing"
    out = kassa_cli(live, "orders", "confirm-transfer", order["order_id"], "--amount", "1")
    assert out.returncode == 1 and "not the order's amount" in out.stderr
    out = kassa_cli(live, "orders", "confirm-transfer", order["order_id"])
    assert out.returncode == 0, out.stderr
    done = query(live, order["order_id"])
    assert done["status"] == "completed" and done["escrow"]["held_cents"] == 100_000
    out = kassa_cli(live, "orders", "confirm-transfer", order["order_id"])
    assert out.returncode == 1 and "not processing" in out.stderr
    verified = live.a.merchant(tier="verified", name="not enterprise")
    r = verified.live.post("/api/v1/tasks", json={
        "title": "t", "amount": 100_000, "currency": "CNY", "payment_method": "bank_transfer",
        "return_url": RETURN_URL})
    assert_error(r, 400, "payment_method_unavailable")


def live_order_processing(p: Pair) -> dict[str, Any]:
    r = dispatch(p, "bank_transfer", 100_000)
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()["payment"]
    assert order["status"] == "processing"
    return order


def test_channels_check_says_what_works(live: Pair) -> None:
    out = kassa_cli(live, "channels", "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok ") == 2, out.stdout
    env = subprocess_env(live.a.settings)
    env.update({"KASSA_EPAY_UPSTREAM_URL": live.proxy.url,
                "KASSA_EPAY_UPSTREAM_PID": live.epay.pid,
                "KASSA_EPAY_UPSTREAM_KEY": "wrong-key-0123456789abcdef012345",
                "KASSA_CRYPTOGW_UPSTREAM_URL": NOWHERE,
                "KASSA_CRYPTOGW_UPSTREAM_API_KEY": live.crypto_key,
                "KASSA_CRYPTOGW_UPSTREAM_SECRET": live.crypto_secret})
    out = subprocess.run([*KASSA, "channels", "check"], check=False, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "FAIL  epay" in out.stdout and "credentials rejected" in out.stdout
    assert "FAIL  cryptogw" in out.stdout and "unreachable" in out.stdout
    assert "wrong-key" not in out.stdout + out.stderr


def test_live_orders_need_a_configured_upstream(live: Pair) -> None:
    r = dispatch(live, "card")
    error = assert_error(r, 400, "payment_method_unavailable")
    assert error["suggested_actions"]


def _expire_now(p: Pair, order_id: str) -> None:
    """Time passes for one order: its expiry is moved into the past, the sweeper's work
    done at once."""
    def unit(conn: Any) -> str:
        now = p.a.ctx.clock.now()
        conn.execute(update(orders).where(orders.c.order_id == order_id).values(
            expires_at=now - timedelta(seconds=1)))
        return payments.expire_order(conn, p.a.ctx, order_id=order_id, now=now)
    assert p.a.db.write_sync(unit) == "expired"


def reviews_of(p: Pair, order_id: str, *flags: str) -> list[str]:
    """The operator's `kassa orders reviews` lines about one order."""
    out = kassa_cli(p, "orders", "reviews", *flags)
    assert out.returncode == 0, out.stderr
    return [x for x in out.stdout.splitlines() if order_id in x]


def wait_review(p: Pair, order_id: str, reason: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [x for x in reviews_of(p, order_id) if reason in x]
        if found:
            return found[0]
        time.sleep(0.3)
    raise AssertionError(f"no {reason} review for {order_id}")


def refund_at_b(p: Pair, out_trade_no: str, money: str) -> dict[str, Any]:
    """The shop refunds at B itself (B's api.php, the plain KEY), behind A's back."""
    r = httpx.post(f"{p.b.base_url}/api.php", params={"act": "refund"}, data={
        "pid": p.epay.pid, "key": p.epay.key, "out_trade_no": out_trade_no, "money": money})
    body: dict[str, Any] = r.json()
    return body


def refund_status(p: Pair, refund_id: str) -> str:
    got = p.merchant.live.get("/api/v1/payment/transactions",
                              params={"type": "refund", "limit": 100}).json()
    [mine] = [t for t in got["data"] if t.get("refund_id") == refund_id]
    return str(mine["status"])


def test_a_second_payment_through_an_older_link_is_flagged_not_swallowed(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live)
    r = live.merchant.live.post("/api/v1/payment/retry", json={"order_id": order["order_id"]})
    assert r.status_code == 200, r.text
    for attempt in (1, 2):  # the payer paid through both links
        wait_paid_at_b(live, reference(order["order_id"], attempt))
    before = balances(live)
    assert query(live, order["order_id"], verify="true")["status"] == "completed"
    after = balances(live)
    assert after["escrow_cents"] - before["escrow_cents"] == 5000  # credited once
    line = wait_review(live, order["order_id"], "duplicate_payment")
    assert "reported 5000" in line and "via verify" in line
    out = kassa_cli(live, "orders", "resolve-review", line.split("\t")[0], "--accept")
    assert out.returncode == 1 and "paid already" in out.stderr
    out = kassa_cli(live, "orders", "resolve-review", line.split("\t")[0], "--reject")
    assert out.returncode == 0, out.stderr


def test_a_refund_the_upstream_refuses_fails_and_the_money_returns_to_escrow(live: Pair
                                                                            ) -> None:
    order = live_order(live)
    wait_status(live, order["order_id"], "completed")
    assert refund_at_b(live, reference(order["order_id"]), "50.00")["code"] == 1
    r = live.merchant.live.post("/api/v1/payment/refund", json={
        "order_id": order["order_id"], "amount": 2000, "reason": "quality_issue",
        "refund_method": "original"})
    assert r.status_code == 200, r.text
    refund_id = r.json()["refund_id"]
    deadline = time.monotonic() + 15
    while refund_status(live, refund_id) != "failed":
        assert time.monotonic() < deadline, "the refused refund never failed"
        time.sleep(0.1)
    assert query(live, order["order_id"])["escrow"]["held_cents"] == 5000


def test_a_refund_refused_after_an_unclear_attempt_waits_for_the_operator(live: Pair
                                                                         ) -> None:
    order = live_order(live)
    wait_status(live, order["order_id"], "completed")
    live.proxy.down = True  # the first attempt gets no answer from B...
    refused = live.proxy.refused
    r = live.merchant.live.post("/api/v1/payment/refund", json={
        "order_id": order["order_id"], "amount": 5000, "reason": "task_cancelled",
        "refund_method": "original"})
    assert r.status_code == 200, r.text
    refund_id = r.json()["refund_id"]
    deadline = time.monotonic() + 10
    while live.proxy.refused == refused:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # ... and meanwhile B refunded it (as if that attempt had got through), so the next
    # attempt is refused: "refunded already", which is no failure of the refund.
    assert refund_at_b(live, reference(order["order_id"]), "50.00")["code"] == 1
    live.proxy.down = False
    line = wait_review(live, order["order_id"], "refund_unconfirmed")
    assert refund_id in line
    assert refund_status(live, refund_id) == "pending"  # (the history's word for in flight)
    assert query(live, order["order_id"])["escrow"]["held_cents"] == 0  # still in flight
    out = kassa_cli(live, "orders", "resolve-review", line.split("\t")[0], "--accept",
                    "--note", "B shows it refunded")
    assert out.returncode == 0, out.stderr
    assert refund_status(live, refund_id) == "completed"
    assert query(live, order["order_id"])["status"] == "refunded"


def test_a_payment_made_just_before_expiry_is_found_by_the_last_poll(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live)
    wait_paid_at_b(live, reference(order["order_id"]))
    _expire_now(live, order["order_id"])  # the notification was lost, the order expired

    def poll_now(conn: Any) -> None:  # the poll that follows the expiry
        conn.execute(update(jobs).where(jobs.c.kind == payments.JOB_POLL_UPSTREAM,
                                        jobs.c.ref == order["order_id"]).values(
            run_at=live.a.ctx.clock.now()))
    live.a.db.write_sync(poll_now)
    line = wait_review(live, order["order_id"], "late_payment")
    assert "via poll" in line
    assert query(live, order["order_id"])["status"] == "expired"


def test_a_late_payment_is_not_accepted_for_a_task_that_moved_on(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live)
    _expire_now(live, order["order_id"])
    r = live.merchant.live.post("/api/v1/payment/create", json={
        "task_id": order["task_id"], "amount": 5000, "currency": "CNY",
        "payment_method": "wechat", "return_url": RETURN_URL})
    assert r.status_code == 201, r.text  # the task is paid by a new order
    r = httpx.get(f"{live.a.base_url}/notify/epay",
                  params=notify_params(live, reference(order["order_id"]), "50.00"))
    assert r.text == "success"
    line = wait_review(live, order["order_id"], "late_payment")
    out = kassa_cli(live, "orders", "resolve-review", line.split("\t")[0], "--accept")
    assert out.returncode == 1 and "moved on" in out.stderr
    assert query(live, order["order_id"])["status"] == "expired"


def test_a_bank_transfer_that_never_arrives_can_be_failed(live: Pair) -> None:
    order = live_order_processing(live)
    out = kassa_cli(live, "orders", "fail-transfer", order["order_id"], "--note", "no money")
    assert out.returncode == 0, out.stderr
    failed = query(live, order["order_id"])
    assert failed["status"] == "failed"
    out = kassa_cli(live, "orders", "fail-transfer", order["order_id"])
    assert out.returncode == 1 and "not processing" in out.stderr


def test_seed_004_payments_verify_and_retry_a_live_order(live: Pair) -> None:
    block_notifications(live)
    order = live_order(live)
    r = live.merchant.live.post("/api/v1/payments", json={
        "orderId": order["order_id"], "subject": "Storefront photo"})
    assert r.status_code == 201, r.text
    payment = r.json()["data"]
    assert payment["status"] == "PENDING" and payment["orderString"] == order["payment_url"]
    assert payment["vendorTradeId"]  # B's trade number for the order
    retried = live.merchant.live.get(f"/api/v1/payments/retry/{payment['id']}")
    assert retried.status_code == 200, retried.text
    assert retried.json()["data"]["orderString"] != order["payment_url"]  # B's second order
    wait_paid_at_b(live, reference(order["order_id"], 2))
    verified = live.merchant.live.get(f"/api/v1/payments/verify/{payment['id']}")
    assert verified.status_code == 200 and verified.json() == {"data": True}
    got = live.merchant.live.get(f"/api/v1/payments/{payment['id']}").json()["data"]
    assert got["status"] == "CONFIRMED" and got["confirmed"] is True


def test_cancelling_a_task_paid_in_usdt_refunds_it_to_the_balance(live: Pair) -> None:
    """The crypto gateway has no refund API: a cancelled task's escrow still goes back by
    itself, to the balance, when the merchant names no refund method."""
    order = live_order(live, "usdt", 7100)
    wait_status(live, order["order_id"], "completed")
    before = balances(live)
    r = live.merchant.live.post(f"/api/v1/tasks/{order['task_id']}/cancel", json={})
    assert r.status_code == 200, r.text
    assert r.json()["refund"]["status"] == "completed"
    after = balances(live)
    assert after["balance_cents"] - before["balance_cents"] == 7100
    assert after["escrow_cents"] - before["escrow_cents"] == -7100
    r = live.merchant.live.post("/api/v1/payment/refund", json={
        "order_id": live_order_paid(live, "usdt")["order_id"], "amount": 100,
        "reason": "other", "reason_detail": "asked for", "refund_method": "original"})
    error = assert_error(r, 400, "payment_method_unavailable")
    assert error["retry_allowed"] is False  # asked for explicitly: no refund API upstream


def live_order_paid(p: Pair, method: str) -> dict[str, Any]:
    order = live_order(p, method, 7100)
    return wait_status(p, order["order_id"], "completed")


def test_an_order_over_the_daily_limit_never_reaches_the_upstream(live: Pair) -> None:
    standard = live.a.merchant(tier="standard", name="standard tier on A")
    body = {"title": "Big job", "amount": 5_000_000, "currency": "CNY",
            "payment_method": "alipay", "return_url": RETURN_URL}
    for _ in range(2):  # 2 x 5,000,000: the standard tier's day, used up
        r = standard.live.post("/api/v1/tasks", json=body)
        assert r.status_code == 201, r.text
    asked = len(live.proxy.forwarded)
    error = assert_error(standard.live.post("/api/v1/tasks", json=body), 400, "limit_exceeded")
    assert error["limit"] == "daily"
    assert len(live.proxy.forwarded) == asked  # B was never asked to open an order
