"""Console sessions. A merchant signs in with an API key and its secret (the account's
credentials: Kassa has no passwords); the session is that account in that key's mode, as
the API would see the key. Services never commit.

- The browser holds a random token (32 bytes) in a cookie; the database holds only its
  keyed hash, so a copy of the database opens no session.
- A session ends after `console_idle_seconds` unused, `console_max_age_seconds` after
  sign-in in any case, at sign-out, when the API key it was opened with stops working,
  and when the mode's key is rotated from another session (a leaked key's sessions end
  with it). A key already rotated (in its grace period) opens no new session.
- Every form of a session carries `csrf_token(token)`, an HMAC of the session token with
  the server key: another site can make a browser post, but cannot know this value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection

from kassa.accounts import service as accounts
from kassa.accounts.schemas import Principal
from kassa.context import ServiceContext
from kassa.core.signing import keyed_hash
from kassa.errors import AuthError
from kassa.sessions import repository

CREDENTIAL_MAX = 200  # characters of a key or secret worth looking up
TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal  # with the secret hash of the session's key
    session_hash: str
    needs_touch: bool  # last seen long enough ago to write it down again


def _hash(ctx: ServiceContext, token: str) -> str:
    return keyed_hash(ctx.server_key, f"console-session:{token}")


def plausible_token(token: str | None) -> bool:
    """A token as sign_in makes them (token_urlsafe(32): 43 characters)."""
    return token is not None and len(token) == 43 and set(token) <= _TOKEN_CHARS


def sign_in(conn: Connection, ctx: ServiceContext, *, api_key: str, api_secret: str
            ) -> tuple[str, Principal]:
    """A new session for the account behind a valid key and secret: (cookie token,
    principal). Anything else is AuthError, the same for an unknown key as for a wrong
    secret; a key on its way out (rotated) is AuthError with reason "rotated"."""
    api_key, api_secret = api_key.strip(), api_secret.strip()
    if not (0 < len(api_key) <= CREDENTIAL_MAX and 0 < len(api_secret) <= CREDENTIAL_MAX):
        raise AuthError("Invalid API key or secret")
    principal = accounts.resolve_key(conn, ctx, api_key)
    if principal is None:
        raise AuthError("Invalid API key or secret")
    accounts.check_secret(ctx, principal, api_secret)
    if principal.key_expires_at is not None:
        raise AuthError("This API key has been rotated: sign in with the new one",
                        reason="rotated")
    now = ctx.clock.now()
    settings = ctx.settings
    repository.delete_ended(conn, now=now,
                            idle_before=now - timedelta(seconds=settings.console_idle_seconds))
    token = secrets.token_urlsafe(32)
    repository.insert_session(conn, {
        "session_hash": _hash(ctx, token), "account_id": principal.account_id,
        "mode": principal.mode, "key_hash": keyed_hash(ctx.server_key, api_key),
        "created_at": now, "last_seen_at": now,
        "expires_at": now + timedelta(seconds=settings.console_max_age_seconds)})
    return token, principal


def session(conn: Connection, ctx: ServiceContext, *, token: str | None) -> Session | None:
    """The live session of a cookie's token, or None (unknown, idle too long, too old, or
    its key no longer works)."""
    if token is None or not plausible_token(token):
        return None
    session_hash = _hash(ctx, token)
    now = ctx.clock.now()
    row = repository.get_session(conn, session_hash=session_hash, now=now)
    if row is None:
        return None
    idle = timedelta(seconds=ctx.settings.console_idle_seconds)
    if now >= row["expires_at"] or now - row["last_seen_at"] >= idle:
        return None
    principal = Principal(account_id=row["account_id"], mode=row["mode"], tier=row["tier"],
                          name=row["name"], secret_hash=row["secret_hash"],
                          key_expires_at=row["revoked_at"])
    return Session(principal=principal, session_hash=session_hash,
                   needs_touch=now - row["last_seen_at"] >= TOUCH_EVERY)


def touch(conn: Connection, ctx: ServiceContext, *, session_hash: str) -> None:
    repository.touch(conn, session_hash=session_hash, now=ctx.clock.now())


def sign_out(conn: Connection, ctx: ServiceContext, *, token: str | None) -> None:
    if token is not None and plausible_token(token):
        repository.delete_session(conn, _hash(ctx, token))


def after_rotation(conn: Connection, ctx: ServiceContext, *, current: Session,
                   new_api_key: str) -> int:
    """After the mode's key was rotated from `current`: it goes on with the new key, and
    every other session of the account and mode ends. Returns how many ended."""
    p = current.principal
    repository.rebind(conn, session_hash=current.session_hash,
                      key_hash=keyed_hash(ctx.server_key, new_api_key))
    return repository.delete_sessions_of(conn, account_id=p.account_id, mode=p.mode,
                                         keep=current.session_hash)


def csrf_token(ctx: ServiceContext, *, token: str) -> str:
    mac = hmac.new(ctx.server_key, f"console-csrf:{token}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def csrf_ok(ctx: ServiceContext, *, token: str, submitted: str | None) -> bool:
    if submitted is None or len(submitted) > 100:
        return False
    return hmac.compare_digest(csrf_token(ctx, token=token).encode(), submitted.encode())
