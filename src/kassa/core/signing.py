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


def webhook_signature(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body: what the seed's verifiers compute."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(secrets: list[str], body: bytes, timestamp: int) -> dict[str, str]:
    """The signature headers of one delivery. `secrets` is the current secret first, then
    any previous one still in its grace period.

    X-Signature: sha256=<hex HMAC(secret, body)>  (the seed's verifier; current secret)
    X-Signature-V2: t=<unix>,v1=<hex HMAC(secret, "<t>.<body>")>[,v1=<previous secret's>]
    """
    signed = f"{timestamp}.".encode() + body
    v2 = ",".join([f"t={timestamp}",
                   *(f"v1={webhook_signature(s, signed)}" for s in secrets)])
    headers = {
        "X-Signature": f"sha256={webhook_signature(secrets[0], body)}",
        "X-Signature-Timestamp": str(timestamp),
        "X-Signature-V2": v2,
    }
    if len(secrets) > 1:
        headers["X-Signature-Previous"] = f"sha256={webhook_signature(secrets[1], body)}"
    return headers


def protocol_key(server_key: bytes, protocol: str, account_id: str, mode: str,
                 version: int) -> str:
    """An account's EasyPay KEY or crypto-gateway secret: 32 hex characters, derived, never
    stored (SPEC §1)."""
    mac = hmac.new(server_key, f"{protocol}:{mode}:{account_id}:{version}".encode(),
                   hashlib.sha256)
    return mac.hexdigest()[:32]


# --- EasyPay (seed 003) -----------------------------------------------------------------------

def epay_signing_string(params: dict[str, str]) -> str:
    """Seed 003: every parameter but sign, sign_type and empty values, sorted by name (ASCII),
    joined as a=b&c=d with the values as they are (not URL-encoded)."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params)
                    if k not in ("sign", "sign_type") and params[k] != "")


def epay_sign(params: dict[str, str], key: str) -> str:
    """sign = md5(signing string + KEY), lowercase hex."""
    return hashlib.md5((epay_signing_string(params) + key).encode(),
                       usedforsecurity=False).hexdigest()


def epay_sign_matches(params: dict[str, str], key: str, sign: str) -> bool:
    """Liberal in what it accepts: the hex may come in either case."""
    return hmac.compare_digest(epay_sign(params, key).encode(), sign.strip().lower().encode())


# --- crypto gateway (seed 002) ----------------------------------------------------------------

def cryptogw_signature(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """SPEC §9: hex HMAC-SHA256(secret, timestamp + "\\n" + nonce + "\\n" + raw body)."""
    message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def cryptogw_signature_matches(secret: str, timestamp: str, nonce: str, body: bytes,
                               signature: str) -> bool:
    expected = cryptogw_signature(secret, timestamp, nonce, body)
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode())
