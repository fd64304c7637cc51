"""The merchant's side of the crypto gateway (seed 002), written from the seed and SPEC §9
alone, never from Kassa's code: an HMAC-SHA256 signer for requests, a small client, and a
fake shop on loopback that creates orders, keeps its own order book and receives the
signed POST notifications, checking each one with its own code before it answers.

Signing (SPEC §9): X-Signature = hex HMAC-SHA256(secret, timestamp + "\\n" + nonce + "\\n"
+ raw body), with X-API-Key, X-Timestamp (Unix seconds) and X-Nonce beside it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.support import shops
from tests.support.harness import free_port

WINDOW_SECONDS = 300  # the shop accepts notifications stamped within 5 minutes of its clock
CREATE = "/v1/payment"
QUERY = "/v1/payment/query"


def signature(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """hex HMAC-SHA256(secret, timestamp + "\\n" + nonce + "\\n" + raw body), lower case."""
    message = timestamp.encode("ascii") + b"\n" + nonce.encode("ascii") + b"\n" + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(16)


def unix_now(offset: int = 0) -> int:
    """Unix seconds `offset` from now, rounded AWAY from the window's edge for a stamp that
    must be refused (|offset| > window) and TOWARDS now for one that must be accepted, so
    the second boundary the request crosses in flight cannot flip the outcome."""
    t = time.time()
    if abs(offset) > WINDOW_SECONDS:
        return math.ceil(t) + offset if offset > 0 else math.floor(t) + offset
    return math.floor(t) + offset if offset > 0 else math.ceil(t) + offset


def encode(payload: bytes | dict[str, Any] | list[Any]) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


@dataclass
class CryptoClient:
    """A merchant's integration: signs every request it sends with its own HMAC code."""

    base_url: str
    api_key: str
    secret: str
    _http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, timeout=30)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def headers(self, body: bytes, *, timestamp: int | str | None = None,
                nonce: str | None = None, upper: bool = False, secret: str | None = None,
                api_key: str | None = None) -> dict[str, str]:
        ts = str(unix_now() if timestamp is None else timestamp)
        n = new_nonce() if nonce is None else nonce
        sig = signature(self.secret if secret is None else secret, ts, n, body)
        return {"Content-Type": "application/json",
                "X-API-Key": self.api_key if api_key is None else api_key,
                "X-Timestamp": ts, "X-Nonce": n,
                "X-Signature": sig.upper() if upper else sig}

    def send(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Exactly these bytes and headers (a replay sends the same twice)."""
        return self.http.post(path, content=body, headers=headers)

    def post(self, path: str, payload: bytes | dict[str, Any] | list[Any],
             **sign: Any) -> httpx.Response:
        body = encode(payload)
        return self.send(path, body, self.headers(body, **sign))

    def create(self, payload: bytes | dict[str, Any] | list[Any], **sign: Any
               ) -> httpx.Response:
        return self.post(CREATE, payload, **sign)

    def query(self, payload: dict[str, Any], **sign: Any) -> httpx.Response:
        return self.post(QUERY, payload, **sign)


# --- the fake shop ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Notification:
    """One POST the shop received, and what its own checks found wrong with it."""

    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float
    problems: tuple[str, ...]
    reply: bytes

    @property
    def verified(self) -> bool:
        return not self.problems

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class BookEntry:
    """What the shop itself remembers of an order it created."""

    order_no: str
    currency: str
    amount: str
    order_amount: str | None = None
    id: str | None = None
    paid: int = 0  # how many times the shop credited its customer (must stay <= 1)


# Given how many notifications came before, what the shop answers: (HTTP status, body).
Answer = Callable[[int], tuple[int, bytes]]


def replies(*answers: tuple[int, bytes]) -> Answer:
    """These answers in turn, then the last one for ever."""
    return lambda n: answers[min(n, len(answers) - 1)]


SUCCESS: Answer = replies((200, b"success"))


@dataclass
class FakeShop:
    """A shop on 127.0.0.1 that creates crypto-gateway orders and receives their
    notifications. A notification that fails its checks is answered 400 `fail`; a good one
    with what `answer` says, and credits the order in the book once."""

    client: CryptoClient
    answer: Answer = SUCCESS
    path: str = "/shop/cryptogw/notify"
    port: int = field(default_factory=free_port)
    book: dict[str, BookEntry] = field(default_factory=dict)
    received: list[Notification] = field(default_factory=list)
    _nonces: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    # --- the shop as a client ---

    def create_order(self, order_no: str, currency: str, amount: str, **extra: Any
                     ) -> httpx.Response:
        entry = BookEntry(order_no=order_no, currency=currency, amount=amount)
        self.book[order_no] = entry
        r = self.client.create({"order_no": order_no, "currency": currency, "amount": amount,
                                "chain_type": "bsc", "notify_url": self.url, **extra})
        if r.status_code == 200:
            data = r.json()["data"]
            entry.id, entry.order_amount = data["id"], data["order_amount"]
        return r

    # --- the shop as the notification's receiver ---

    def check(self, headers: dict[str, str], body: bytes) -> list[str]:
        """The shop's own verification: signature, freshness, replay, and the order's terms
        against its book."""
        problems: list[str] = []
        ts = headers.get("x-timestamp", "")
        nonce = headers.get("x-nonce", "")
        sig = headers.get("x-signature", "")
        if not (ts and nonce and sig):
            return ["a signing header is missing"]
        expected = signature(self.client.secret, ts, nonce, body)
        if not hmac.compare_digest(expected, sig.lower()):
            problems.append("bad signature")
        if not ts.isdigit() or abs(time.time() - int(ts)) > WINDOW_SECONDS:
            problems.append(f"stale timestamp {ts}")
        if nonce in self._nonces:
            problems.append(f"nonce {nonce} seen before")
        try:
            data = json.loads(body)
        except ValueError:
            return [*problems, "body is not JSON"]
        if not isinstance(data, dict):
            return [*problems, "body is not a JSON object"]
        entry = self.book.get(str(data.get("order_no")))
        if entry is None:
            return [*problems, f"unknown order_no {data.get('order_no')!r}"]
        for key, mine in (("id", entry.id), ("currency", entry.currency),
                          ("amount", entry.amount), ("order_amount", entry.order_amount)):
            if data.get(key) != mine:
                problems.append(f"{key} {data.get(key)!r} is not the book's {mine!r}")
        if data.get("state") != 2:
            problems.append(f"state {data.get('state')!r} is not paid")
        return problems

    def start(self) -> FakeShop:
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with shop._lock:
                    problems = shop.check(headers, body) if self.path == shop.path else [
                        f"wrong path {self.path}"]
                    if headers.get("x-nonce"):
                        shop._nonces.add(headers["x-nonce"])
                    good = [n for n in shop.received if n.verified]
                    status, reply = (400, b"fail") if problems else shop.answer(len(good))
                    if not problems and reply.strip() == b"success":
                        entry = shop.book[json.loads(body)["order_no"]]
                        entry.paid += 1
                    shop.received.append(Notification(headers=headers, body=body,
                                                      at=time.monotonic(),
                                                      problems=tuple(problems), reply=reply))
                shops.reply(self, status, reply, "text/plain")

            def log_message(self, *_: Any) -> None:
                pass

        self._server = shops.serve(self.port, Handler)
        return self

    def stop(self) -> None:
        shops.shut(self._server)
        self._server = None

    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Notification]:
        return shops.wait_for_count(self.notifications, count, timeout=timeout,
                                    describe=lambda got: f": {[n.problems for n in got]}")
