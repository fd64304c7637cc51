"""Browser tests: Playwright (sync API) driving Debian's chromium against a real Kassa server.

The browser is Debian's `chromium` package (/usr/bin/chromium), installed by scripts/test
and .ci/run; no test tool downloads a browser of its own (never `playwright install`).
Without it the browser tests skip with the reason, except in CI (KASSA_REQUIRE_BROWSER=1)
where that is a failure.

The browser is shared by the whole package, not the whole session: while Playwright's sync
API is started it leaves its event loop marked as running in the main thread, so any later
test that calls asyncio.run() would fail. It is stopped after the last browser test.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from kassa.config import Settings
from tests.browser.support import (
    DEBIAN_CHROMIUM,
    DESKTOP,
    PHONE,
    SCREENSHOTS,
    Browsing,
    Shop,
    open_context,
)
from tests.support.harness import KassaServer, make_settings

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # the test extra pins it; without it the rest of the suite still runs
    sync_playwright = None

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def find_chromium() -> str | None:
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    return shutil.which("chromium")


def require_browser(reason: str) -> None:
    if os.environ.get("KASSA_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def screenshots() -> Path:
    """test-artifacts/screenshots/ at the repository root (ignored by git); a run starts
    without the failure screenshots of runs before."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("failed-*.png"):
        old.unlink()
    return SCREENSHOTS


@pytest.fixture(scope="package")
def browser(screenshots: Path) -> Iterator[Browser]:
    """Debian's headless chromium, launched once for all browser tests."""
    chromium = find_chromium()
    if chromium is None:
        require_browser(
            "Debian's chromium is not installed (no /usr/bin/chromium, none on PATH): "
            "`apt-get install chromium` as root, which scripts/test does when it can")
    if sync_playwright is None:
        require_browser("Playwright is not installed: pip install -e '.[test]'")
    assert chromium is not None and sync_playwright is not None
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # root: chromium's sandbox refuses
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            yield launched
        finally:
            launched.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """Keeps each phase's report on the item, for the page fixture's screenshot on failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def desktop(browser: Browser, request: pytest.FixtureRequest,
            screenshots: Path) -> Iterator[Browsing]:
    """A fresh 1280x800 context; on failure its pages are saved as failed-<test>-<n>.png."""
    browsing = open_context(browser, viewport=DESKTOP)
    yield from _closing(browsing, request, screenshots)


@pytest.fixture
def phone(browser: Browser, request: pytest.FixtureRequest,
          screenshots: Path) -> Iterator[Browsing]:
    """A fresh phone-sized context (375x812, mobile, touch)."""
    browsing = open_context(browser, viewport=PHONE, is_mobile=True, has_touch=True,
                            device_scale_factor=2)
    yield from _closing(browsing, request, screenshots)


@pytest.fixture
def page(desktop: Browsing) -> Page:
    return desktop.new_page()


def _closing(browsing: Browsing, request: pytest.FixtureRequest,
             screenshots: Path) -> Iterator[Browsing]:
    yield browsing
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        for n, p in enumerate(browsing.context.pages):
            try:
                p.screenshot(path=screenshots / f"failed-{name}-{n}.png", full_page=True)
            except Exception as exc:  # the page may be gone; the failure is what counts
                logging.getLogger(__name__).warning("no screenshot of %s: %s", p.url, exc)
    browsing.context.close()
    assert browsing.blocked == [], f"the page asked for off-loopback URLs: {browsing.blocked}"


class LoggedKassaServer(KassaServer):
    """KassaServer whose uvicorn logs everything, access lines included, to the root logger
    (no handlers of its own), so that caplog sees what an operator's log would."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, loop="asyncio",
                                lifespan="on", log_config=None, log_level="debug",
                                access_log=True)
        # The harness's own Config gave uvicorn's loggers stderr handlers of their own and
        # cut uvicorn.access off the root (access_log=False): all to the root instead.
        for lg in map(logging.getLogger, UVICORN_LOGGERS):
            lg.handlers[:] = []
            lg.propagate = True
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KassaServer]:
    """One Kassa server on SQLite for the checkout and console pages; sandbox payments settle
    after 1 s; console sign-ins are not limited in practice (tests/web tests the limit)."""
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers))
             for lg in map(logging.getLogger, UVICORN_LOGGERS)]
    tmp = tmp_path_factory.mktemp("kassa-browser")
    srv = LoggedKassaServer(make_settings(tmp, f"sqlite:///{tmp}/k.sqlite3",
                                          sandbox_settle_seconds=1.0,
                                          console_login_rate_limit="1000/minute"))
    srv.start()
    yield srv
    srv.stop()
    for lg, level, propagate, handlers in saved:
        lg.setLevel(level)
        lg.propagate = propagate
        lg.handlers[:] = handlers


@pytest.fixture(scope="package")
def shop() -> Iterator[Shop]:
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = b"<!doctype html><title>Thanks</title><h1>Thanks</h1>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield Shop(f"http://127.0.0.1:{httpd.server_address[1]}", paths)
    httpd.shutdown()
    httpd.server_close()
