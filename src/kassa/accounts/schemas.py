from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Tier(StrEnum):
    STANDARD = "standard"
    VERIFIED = "verified"
    ENTERPRISE = "enterprise"


class Protocol(StrEnum):
    """The merchant-facing protocols Kassa speaks besides its own API (SPEC §9)."""

    EPAY = "epay"  # seed 003, EasyPay / ZPay
    CRYPTOGW = "cryptogw"  # seed 002, the crypto gateway


class Mode(StrEnum):
    LIVE = "live"
    TEST = "test"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the account behind an API key, and the key's mode."""

    account_id: str
    mode: str
    tier: str
    name: str
    secret_hash: str
    # When the key stops working: set once it has been rotated (its grace period), else None.
    key_expires_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.mode == Mode.LIVE


@dataclass(frozen=True, slots=True)
class KeyPair:
    mode: str
    api_key: str
    api_secret: str


@dataclass(frozen=True, slots=True)
class ProtocolCredential:
    """A protocol facade's credential pair: EasyPay PID and KEY, or crypto-gateway API key
    and secret. `secret` is derived from the server key, never stored."""

    protocol: str  # "epay" or "cryptogw"
    mode: str
    id: str  # the PID, or the API key (shown once: only its keyed hash is kept)
    secret: str


@dataclass(frozen=True, slots=True)
class NewAccount:
    """Credentials as created: shown once, never stored in the clear."""

    account_id: str
    name: str
    tier: str
    keys: tuple[KeyPair, ...]
    webhook_secret: str
    protocol_credentials: tuple[ProtocolCredential, ...] = ()
