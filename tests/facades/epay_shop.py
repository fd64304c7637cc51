"""An EasyPay (seed 003) shop for tests, written from the seed alone: its own MD5 signer
(never kassa's), and a small HTTP server on loopback that receives the GET notifications
on its notify_url, checks each one with its own code against its own order book, and
answers `success` (or whatever the test says).

The seed's signing algorithm (签名算法):
  1. sort every parameter sent or received by name, ASCII ascending; sign, sign_type and
     empty values take no part;
  2. join them as a=b&c=d&e=f, values NOT URL-encoded;
  3. sign = md5(that string + KEY), lowercase hex.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.support import shops
from tests.support.harness import Merchant, free_port

UNSIGNED = ("sign", "sign_type")
# What the seed says a notification carries (异步通知参数).
NOTIFY_FIELDS = {"pid", "trade_no", "out_trade_no", "type", "name", "money", "trade_status",
                 "param", "sign", "sign_type"}


def signing_string(params: Mapping[str, str]) -> str:
    return "&".join(f"{k}={params[k]}" for k in sorted(params)
                    if k not in UNSIGNED and params[k] != "")


def md5_sign(params: Mapping[str, str], key: str) -> str:
    return hashlib.md5((signing_string(params) + key).encode("utf-8")).hexdigest()


def signed(params: Mapping[str, str], key: str) -> dict[str, str]:
    """The params with sign and sign_type=MD5 added, as an EasyPay client sends them."""
    return {**params, "sign": md5_sign(params, key), "sign_type": "MD5"}


@dataclass(frozen=True)
class EpayCredential:
    pid: str
    key: str


def credential(merchant: Merchant, mode: str = "test") -> EpayCredential:
    """The merchant's EasyPay PID and KEY for a mode (test or live)."""
    for c in merchant.account.protocol_credentials:
        if c.protocol == "epay" and c.mode == mode:
            return EpayCredential(pid=c.id, key=c.secret)
    raise AssertionError(f"the merchant has no epay credential in {mode} mode")


@dataclass(frozen=True)
class ShopOrder:
    out_trade_no: str
    money: Decimal  # yuan, as the shop priced it
    type: str
    name: str
    param: str


@dataclass(frozen=True)
class Notification:
    method: str  # GET, as the seed notifies (anything else is recorded too, and fails)
    path: str
    query: str  # as received, still URL-encoded
    params: dict[str, str]
    problems: tuple[str, ...]  # what the shop's own checks found wrong; () = genuine
    at: float  # time.monotonic()

    @property
    def ok(self) -> bool:
        return not self.problems


# Given a notification (and how many came before it): (HTTP status, body).
Answer = Callable[[Notification, int], tuple[int, bytes]]


def answer_success_if_genuine(n: Notification, _: int) -> tuple[int, bytes]:
    return (200, b"success") if n.ok else (200, b"fail")


@dataclass
class EpayShop:
    """A shop integrated with EasyPay: creates orders through mapi.php, receives the
    notifications, checks them (sign with its own signer, pid, its order's amount, type,
    trade_status, param echoed) and answers."""

    gateway: str  # the EasyPay base URL (Kassa's)
    pid: str
    key: str
    answer: Answer = answer_success_if_genuine
    port: int = field(default_factory=free_port)
    orders: dict[str, ShopOrder] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def notify_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    @property
    def return_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/return"

    # --- the shop's own verification ------------------------------------------------------

    def problems(self, params: Mapping[str, str]) -> list[str]:
        found = []
        given = params.get("sign", "")
        # Exact, lowercase: many shops compare the sign case-sensitively.
        if given != md5_sign(params, self.key):
            found.append(f"bad sign {given!r}")
        if params.get("sign_type") != "MD5":
            found.append(f"sign_type {params.get('sign_type')!r}")
        if params.get("pid") != self.pid:
            found.append(f"pid {params.get('pid')!r}")
        if params.get("trade_status") != "TRADE_SUCCESS":
            found.append(f"trade_status {params.get('trade_status')!r}")
        order = self.orders.get(params.get("out_trade_no", ""))
        if order is None:
            found.append(f"unknown out_trade_no {params.get('out_trade_no')!r}")
            return found
        money = params.get("money", "")
        try:
            same = Decimal(money) == order.money
        except ArithmeticError:
            same = False
        if not same:
            found.append(f"money {money!r} is not the order's {order.money}")
        if params.get("type") != order.type:
            found.append(f"type {params.get('type')!r}")
        if params.get("param", "") != order.param:
            found.append(f"param {params.get('param')!r} is not {order.param!r}")
        return found

    # --- creating orders through the gateway -----------------------------------------------

    def expect(self, out_trade_no: str, money: str, *, type: str = "alipay",
               name: str = "VIP会员", param: str = "") -> None:
        """Put an order in the shop's book (orders a client library creates for it)."""
        self.orders[out_trade_no] = ShopOrder(out_trade_no=out_trade_no, money=Decimal(money),
                                              type=type, name=name, param=param)

    def order_params(self, out_trade_no: str, money: str, *, type: str = "alipay",
                     name: str = "VIP会员", param: str = "", return_url: str | None = None,
                     ) -> dict[str, str]:
        self.expect(out_trade_no, money, type=type, name=name, param=param)
        params = {"pid": self.pid, "type": type, "out_trade_no": out_trade_no,
                  "notify_url": self.notify_url, "name": name, "money": money,
                  "clientip": "127.0.0.1", "device": "pc", "param": param}
        if return_url is not None:
            params["return_url"] = return_url
        return signed(params, self.key)

    def create(self, out_trade_no: str, money: str, **kw: Any) -> dict[str, Any]:
        """POST /mapi.php; the reply (which must be code 1)."""
        r = httpx.post(f"{self.gateway}/mapi.php", data=self.order_params(out_trade_no, money,
                                                                          **kw), timeout=30)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body.get("code") == 1, body
        return body

    # --- the notify_url ---------------------------------------------------------------------

    def start(self) -> EpayShop:
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._notified()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self._notified()

            def _notified(self) -> None:
                parts = urlsplit(self.path)
                params = dict(parse_qsl(parts.query, keep_blank_values=True,
                                        encoding="utf-8", errors="replace"))
                problems = shop.problems(params)
                if self.command != "GET":
                    problems.insert(0, f"method {self.command}")
                got = Notification(method=self.command, path=parts.path, query=parts.query,
                                   params=params, problems=tuple(problems),
                                   at=time.monotonic())
                with shop._lock:
                    n = len(shop.notifications)
                    shop.notifications.append(got)
                status, body = shop.answer(got, n)
                shops.reply(self, status, body, "text/plain; charset=utf-8")

            def log_message(self, *_: Any) -> None:
                pass

        self._server = shops.serve(self.port, Handler)
        return self

    def stop(self) -> None:
        shops.shut(self._server)
        self._server = None

    def received(self) -> list[Notification]:
        with self._lock:
            return list(self.notifications)

    def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Notification]:
        return shops.wait_for_count(self.received, count, timeout=timeout)


@contextmanager
def running_shop(gateway: str, cred: EpayCredential,
                 answer: Answer = answer_success_if_genuine) -> Iterator[EpayShop]:
    shop = EpayShop(gateway=gateway, pid=cred.pid, key=cred.key, answer=answer).start()
    try:
        yield shop
    finally:
        shop.stop()
