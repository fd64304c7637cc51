"""What the fake shops of the protocol tests share: a threaded HTTP server on loopback,
a plain-text reply, and waiting for notifications to arrive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

T = TypeVar("T")


def serve(port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server


def shut(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes,
          content_type: str = "text/plain; charset=utf-8") -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:  # Kassa gave up on the request (its timeout): nothing to answer
        pass


def wait_for_count(seen: Callable[[], Sequence[T]], count: int, *, timeout: float,
                   describe: Callable[[Sequence[T]], str] = lambda _: "") -> list[T]:
    """What `seen()` returns once it has at least `count` items (AssertionError after
    `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        got = list(seen())
        if len(got) >= count:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"the shop got {len(got)} notifications, wanted {count}"
                                 f"{describe(got)}")
        time.sleep(0.02)
