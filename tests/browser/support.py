"""What the browser tests share: where screenshots go, viewport sizes, browser contexts
that keep to loopback, and the shop that return_url points at."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only in annotations: conftest still loads without Playwright
    from playwright.sync_api import Browser, BrowserContext, Page, Route

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
DEBIAN_CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
TIMEOUT_MS = 10_000
# Only loopback: the checkout page must load nothing from anywhere else.
OFF_LOOPBACK = re.compile(r"^(?!(?:https?|wss?)://(?:127\.\d+\.\d+\.\d+|localhost|\[::1\])[:/])"
                          r"(?:https?|wss?)://")


@dataclass
class Browsing:
    """A browser context with its pages' off-loopback requests blocked and recorded."""

    context: BrowserContext
    blocked: list[str] = field(default_factory=list)

    def new_page(self) -> Page:
        return self.context.new_page()


def open_context(browser: Browser, **options: Any) -> Browsing:
    options.setdefault("locale", "en-US")
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    browsing = Browsing(context)

    def block(route: Route) -> None:
        browsing.blocked.append(route.request.url)
        route.abort()

    context.route(OFF_LOOPBACK, block)
    return browsing


@dataclass
class Shop:
    """The merchant's site on loopback: return_url lands here on a page saying Thanks."""

    base_url: str
    paths: list[str]

    def return_url(self, name: str) -> str:
        return f"{self.base_url}/thanks/{name}"
