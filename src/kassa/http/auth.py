"""API credentials: `Authorization: Bearer <key>` plus `X-API-Secret` (SPEC §1).

Lookups are cached for a few seconds by keyed hash (never past a rotated key's end, and
forgotten at once when the console rotates a key in this process); the secret is compared
in constant time on every request.
"""

from __future__ import annotations

from collections import OrderedDict

from starlette.datastructures import Headers

from kassa.accounts import service as accounts
from kassa.accounts.schemas import Principal
from kassa.context import ServiceContext
from kassa.core.signing import keyed_hash
from kassa.db.database import Database
from kassa.errors import AuthError

_CACHE_SIZE = 10_000


class Authenticator:
    def __init__(self, db: Database, ctx: ServiceContext) -> None:
        self.db = db
        self.ctx = ctx
        self.ttl = ctx.settings.auth_cache_seconds
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    async def principal(self, headers: Headers, *, need_secret: bool) -> Principal:
        auth = headers.get("authorization", "")
        scheme, _, api_key = auth.partition(" ")
        api_key = api_key.strip()
        if scheme.lower() != "bearer" or not api_key or len(api_key) > 200:
            raise AuthError("Missing or malformed Authorization header (Bearer <api key>)")
        principal = await self._lookup(api_key)
        if principal is None:
            raise AuthError("Invalid API key or secret")
        secret = headers.get("x-api-secret")
        if secret is not None or need_secret:
            if not secret or len(secret) > 200:
                raise AuthError("X-API-Secret header is required for this request")
            accounts.check_secret(self.ctx, principal, secret)
        return principal

    def forget(self, account_id: str, mode: str) -> None:
        """Drop the cached keys of an account's mode (its key was just rotated)."""
        for key_hash, (_, principal) in list(self._cache.items()):
            if (principal.account_id, principal.mode) == (account_id, mode):
                self._cache.pop(key_hash, None)

    async def _lookup(self, api_key: str) -> Principal | None:
        key_hash = keyed_hash(self.ctx.server_key, api_key)
        now = self.ctx.clock.now().timestamp()
        hit = self._cache.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self.db.read(lambda conn: accounts.resolve_key(conn, self.ctx, api_key))
        if principal is not None:
            until = now + self.ttl
            if principal.key_expires_at is not None:  # a rotated key: not a moment longer
                until = min(until, principal.key_expires_at.timestamp())
            self._cache[key_hash] = (until, principal)
            self._cache.move_to_end(key_hash)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.pop(key_hash, None)
        return principal
