"""Wrap a unit of work so that one Idempotency-Key executes it once.

The key, the request's hash and the response are stored in the *same*
transaction as the work, so a replay can never disagree with what happened,
and a request that failed leaves no key behind (it changed nothing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Connection

from kassa.context import ServiceContext
from kassa.errors import IdempotencyKeyReused, RequestInProgress, ValidationError
from kassa.idempotency import repository

MAX_KEY_LENGTH = 255

Response = tuple[int, bytes]


def request_hash(method: str, path: str, body: bytes) -> str:
    h = hashlib.sha256()
    h.update(method.encode())
    h.update(b" ")
    h.update(path.encode())
    h.update(b"\n")
    h.update(body)
    return h.hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key


def idempotent(ctx: ServiceContext, *, account_id: str, mode: str, key: str, req_hash: str,
               work: Callable[[Connection], Response]) -> Callable[[Connection], Response]:
    def unit(conn: Connection) -> Response:
        now = ctx.clock.now()
        if not repository.claim(conn, account_id=account_id, mode=mode, key=key,
                                request_hash=req_hash, now=now):
            stored = repository.get(conn, account_id=account_id, mode=mode, key=key)
            assert stored is not None
            ttl = timedelta(seconds=ctx.settings.idempotency_ttl_seconds)
            if stored["created_at"] + ttl < now:
                repository.forget(conn, account_id=account_id, mode=mode, key=key)
                return unit(conn)
            if stored["request_hash"] != req_hash:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used with a different request",
                    idempotency_key=key)
            if stored["response_status"] == repository.IN_PROGRESS:
                raise RequestInProgress(
                    "A request with this Idempotency-Key is still being processed",
                    idempotency_key=key)
            return int(stored["response_status"]), str(stored["response_body"]).encode()
        status, body = work(conn)
        repository.store_response(conn, account_id=account_id, mode=mode, key=key,
                                  status=status, body=body.decode())
        return status, body

    return unit
