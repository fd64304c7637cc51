"""Double-submit CSRF tokens for the checkout's forms.

A page gets a random token in the `kassa_csrf` cookie (HttpOnly, SameSite=Strict, Secure
when Kassa's public URL is https) and the same value in each form's hidden `csrf_token`
field. A POST whose field does not match its cookie, compared in constant time, is refused
(403) before anything else is read or changed. Another site can make a browser post a
form, but can neither read nor set this cookie, so it cannot know the value to put in it.
"""

from __future__ import annotations

import hmac
import re
import secrets

COOKIE = "kassa_csrf"
FIELD = "csrf_token"
COOKIE_PATH = "/checkout"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def valid_token(value: str | None) -> str | None:
    """`value` if it looks like a token of ours, else None."""
    return value if value is not None and _TOKEN.fullmatch(value) else None


def tokens_match(cookie_value: str | None, form_value: str | None) -> bool:
    cookie_token = valid_token(cookie_value)
    form_token = valid_token(form_value)
    if cookie_token is None or form_token is None:
        return False
    return hmac.compare_digest(cookie_token.encode(), form_token.encode())
