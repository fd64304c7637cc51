"""Webhook receivers for tests: real HTTP servers on loopback that record every request
(raw body and headers) and answer as the test says (status, delay, hang, down)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.harness import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


# Given the request (and how many came before it), what to answer: (status, body, delay s).
Answer = Callable[[Received, int], tuple[int, bytes, float]]


def ok(_: Received, __: int) -> tuple[int, bytes, float]:
    return 200, b'{"status":"received"}', 0.0


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1. `answer` decides each reply; `down()` closes the
    port (connection refused) and `up()` opens it again on the same port."""

    answer: Answer = ok
    host: str = "127.0.0.1"
    path: str = "/webhooks/payment"
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                got = Received(path=self.path, headers={k.lower(): v for k, v in
                                                        self.headers.items()},
                               body=body, at=time.monotonic())
                with receiver._lock:
                    n = len(receiver.requests)
                    receiver.requests.append(got)
                status, reply, delay = receiver.answer(got, n)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self._server = server
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def events(self) -> list[dict[str, Any]]:
        return [r.json for r in self.received()]

    def wait_for(self, predicate: Callable[[list[Received]], bool], *, timeout: float = 10.0
                 ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if predicate(got):
                return got
            if time.monotonic() > deadline:
                summary = [(r.json.get("event"), r.json.get("event_id")) for r in got]
                raise AssertionError(f"receiver got {len(got)} requests: {summary}")
            time.sleep(0.02)

    def wait_for_events(self, count: int, *, timeout: float = 10.0) -> list[Received]:
        """Until `count` distinct event_ids have arrived."""
        return self.wait_for(lambda got: len({r.json["event_id"] for r in got}) >= count,
                             timeout=timeout)
