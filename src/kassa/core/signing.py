"""Keyed hashes for stored credentials, and secrets derived from the server key.

API keys and secrets are stored only as HMAC-SHA256(server key, value). Secrets
that Kassa must itself sign with (webhook secret, protocol keys) are not stored
at all: they are derived from the server key, the account and a version, so a
database dump reveals none of them and rotation is a version bump.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def keyed_hash(server_key: bytes, value: str) -> str:
    return hmac.new(server_key, value.encode(), hashlib.sha256).hexdigest()


def hashes_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def derive_secret(server_key: bytes, purpose: str, account_id: str, version: int,
                  prefix: str) -> str:
    mac = hmac.new(server_key, f"{purpose}:{account_id}:{version}".encode(), hashlib.sha256)
    return prefix + base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def webhook_secret(server_key: bytes, account_id: str, version: int) -> str:
    return derive_secret(server_key, "webhook", account_id, version, "whsec_")
