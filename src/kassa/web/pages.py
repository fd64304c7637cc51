"""What every page shares (the checkout's and the console's): the templates, the security
headers, the request's language, small urlencoded forms, and rendering a page."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response

from kassa.context import ServiceContext
from kassa.db.database import Database
from kassa.errors import PayloadTooLarge
from kassa.http.api import read_body
from kassa.web.i18n import LANG_COOKIE, LANG_COOKIE_MAX_AGE, LANGUAGES, pick_language, translator

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
FORM_MAX_BYTES = 4096
FORM_MAX_FIELDS = 16

# A page loads nothing from elsewhere, posts only to Kassa, and is never framed (a card
# form or a refund button must not be clickjacked).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _asset_version() -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file()):
        digest.update((STATIC_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals["asset_version"] = _asset_version()


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form, small; the first value of each field. Anything else (another
    content type, too large, broken) reads as an empty form: it has no CSRF token."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        text = (await read_body(request, FORM_MAX_BYTES)).decode()
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=FORM_MAX_FIELDS)
    except (PayloadTooLarge, ClientDisconnect, UnicodeDecodeError, ValueError):
        return {}
    form: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            return {}
        form.setdefault(name, value)
    return form


class Pages:
    """Server-rendered pages in English or Chinese, sent with PAGE_HEADERS."""

    def __init__(self, db: Database, ctx: ServiceContext) -> None:
        self.db = db
        self.ctx = ctx

    @property
    def _secure(self) -> bool:
        """Cookies are Secure when Kassa is reached over https."""
        return self.ctx.public_url.lower().startswith("https://")

    def _language(self, request: Request) -> tuple[str, bool]:
        """The request's language, and whether ?lang chose it (then it is remembered)."""
        query = request.query_params.get("lang")
        lang = pick_language(query, request.cookies.get(LANG_COOKIE),
                             request.headers.get("accept-language"))
        return lang, query in LANGUAGES

    def _remember_language(self, response: Response, lang: str) -> None:
        response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE, path="/",
                            secure=self._secure, httponly=True, samesite="lax")

    def _page(self, template: str, status: int, lang: str, remember: bool,
              **values: Any) -> HTMLResponse:
        t = translator(lang)
        html = templates.get_template(template).render(lang=lang, t=t, **values)
        response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
        if remember:
            self._remember_language(response, lang)
        return response
